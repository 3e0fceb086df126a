"""Postal-format webhooks: registering them through both APIs, their event names, and the
installation's RSA signing key (kept encrypted, made once however many processes start)."""

import base64
import hashlib
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, func, select

from commands.webhooks.handlers import event_name, parse_events
from commands.webhooks.postal import SignerCache, load_signer
from core.crypto import SecretBox
from models import Database, WebhookSigningKey
from tests.conftest import SECRET_KEY

HOOK = "https://hooks.example.com/postal"


@pytest.fixture
def domain(active_domain):
    return active_domain()


def add(api, user, domain, **params):
    return api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain.id,
        WebhookURL=HOOK,
        **params,
    )


def test_format_postal_through_api_php_and_listed(api, user, domain):
    postal = add(api, user, domain, Event="delivered,deferred,failed,held,bounce", Format="Postal")
    assert postal["Success"] is True, postal
    own = add(api, user, domain, Event="delivery")
    assert own["Success"] is True
    hooks = api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain.id)["Webhooks"]
    assert [(w["WebhookID"], w["Format"], w["Events"]) for w in hooks] == [
        (postal["NewWebhookID"], "postal", ["delivered", "deferred", "failed", "held", "bounce"]),
        (own["NewWebhookID"], "postern", ["delivery"]),
    ]


def test_format_postal_through_api_v1_and_listed(client, domain):
    auth = {"Authorization": f"Bearer {domain.key}"}
    resp = client.post(
        "/api/v1/webhooks",
        headers=auth,
        json={"Event": ["open", "click", "failed"], "WebhookURL": HOOK, "Format": "postal"},
    )
    assert resp.status_code == 200, resp.get_json()
    new_id = resp.get_json()["NewWebhookID"]
    resp = client.post(
        "/api/v1/webhooks", headers=auth, json={"Event": "delivered", "WebhookURL": HOOK}
    )
    assert resp.status_code == 200
    listed = client.get("/api/v1/webhooks", headers=auth).get_json()["Webhooks"]
    assert [(w["WebhookID"], w["Format"], w["Event"]) for w in listed] == [
        (new_id, "postal", "open,click,failed"),
        (resp.get_json()["NewWebhookID"], "postern", "delivered"),
    ]


@pytest.mark.parametrize(
    ("params", "code", "text"),
    [
        (
            {"Event": "delivered,unsubscribe", "Format": "postal"},
            3,
            "Invalid event type specified: Postal has no webhook event for unsubscribe, "
            "complaint, not_spam or auth_failure",
        ),
        (
            {"Event": "complained", "Format": "postal"},
            3,
            "Invalid event type specified: Postal has no webhook event for unsubscribe, "
            "complaint, not_spam or auth_failure",
        ),
        (
            {"Event": "deferred"},
            3,
            "Invalid event type specified: deferred, failed and held need Format=postal",
        ),
        ({"Event": "sent", "Format": "postal"}, 3, "Invalid event type specified"),
        (
            {"Event": "delivered", "Format": "sendgrid"},
            8,
            "Invalid Format: it must be postern or postal",
        ),
        (
            {"Event": "delivered", "Format": ["postal"]},
            8,
            "Invalid Format: it must be postern or postal",
        ),
    ],
)
def test_refused_events_and_formats(api, user, domain, client, params, code, text):
    body = add(api, user, domain, **params)
    assert (body["Success"], body["ErrorCode"], body["ErrorText"]) == (False, [code], text)
    resp = client.post(
        "/api/v1/webhooks",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={"WebhookURL": HOOK, **params},
    )
    assert resp.status_code == 400
    (error,) = resp.get_json()["Errors"]
    assert error["Code"] == code
    assert error["Message"] == text.replace("Invalid event type specified", "Invalid Event value")


def test_event_names_of_a_postal_webhook():
    assert parse_events("deferred,FAILED,held", "postal") == ["deferred", "failed", "held"]
    assert parse_events("deferred") is None
    assert parse_events("unsubscribed", "postal") is None
    assert event_name("failed", "blocked", "postal") == "failed"  # MessageDeliveryFailed
    assert event_name("failed", "blocked", "postern") is None
    assert event_name("block", "blocked", "postal") == "block"
    assert event_name("delivery,held", "held", "postal") == "held"


def test_the_key_is_made_once_kept_encrypted_and_survives_restarts(database, box, base_config):
    first = load_signer(database, box, base_config)
    with database.transaction(readonly=True) as s:
        (row,) = s.scalars(select(WebhookSigningKey)).all()
    assert row.purpose == "postal"
    assert "PRIVATE KEY" not in row.key_encrypted and "MII" not in row.key_encrypted
    pem = box.decrypt(row.key_encrypted)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    # Another process (a new Database and SecretBox on the same database): the same key.
    other_db = Database(base_config.database.url)
    try:
        again = load_signer(other_db, SecretBox(SECRET_KEY.encode()), base_config)
    finally:
        other_db.dispose()
    assert again.kid == first.kid and again.jwks() == first.jwks()
    # The kid is Postal's: SHA-256 of the DER of SEQUENCE {n, e}.
    der = first.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    assert first.kid == hashlib.sha256(der).hexdigest() and len(first.kid) == 64
    spki = base64.b64decode(first.public_key_b64())
    assert serialization.load_der_public_key(spki).public_numbers() == (
        first.key.public_key().public_numbers()
    )


def test_processes_starting_at_once_end_with_one_key(database, base_config):
    dbs = [Database(base_config.database.url) for _ in range(4)]
    start = threading.Barrier(len(dbs))
    kids: list[str] = []
    errors: list[BaseException] = []

    def run(db):
        try:
            start.wait()
            kids.append(load_signer(db, SecretBox(SECRET_KEY.encode()), base_config).kid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for db in dbs:
        db.dispose()
    assert errors == []
    assert len(kids) == 4 and len(set(kids)) == 1
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(WebhookSigningKey)) == 1


def test_a_replaced_key_is_used_from_then_on(database, box, base_config):
    cache = SignerCache()
    first = cache.get(database, box, base_config)
    assert cache.get(database, box, base_config) is first
    with database.transaction() as s:
        s.execute(delete(WebhookSigningKey))
    second = cache.get(database, box, base_config)
    assert second.kid != first.kid


def test_a_key_file_names_the_key(database, box, base_config, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "postal.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    config = base_config.replace(webhooks__postal_key_file=str(path))
    signer = load_signer(database, box, config)
    assert signer.key.public_key().public_numbers() == key.public_key().public_numbers()
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(WebhookSigningKey)).all() == []  # none made
    path.write_text("not a key")
    with pytest.raises(ValueError):
        load_signer(database, box, config)
