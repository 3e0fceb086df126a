"""DKIM key rotation end to end: AddDomain, the records in the loopback DNS, VerifyDomain,
mail signed and checked with dkimpy against that DNS at every step of RotateDKIMKey."""

import dkim
import pytest
from sqlalchemy import select

from app.workers.delivery import Worker
from commands.domains.rotation import housekeeping, next_selector
from core.crypto import SecretBox
from models import DKIMKey
from tests import smtppeer
from tests.conftest import SECRET_KEY
from tests.dnsserver import dns_txt

smtp_peer = smtppeer.smtp_peer

RP = "sl.example.com"


@pytest.fixture
def mx(dns_server, smtp_peer):
    dns_server.add("dest.example", "MX", "10 mx.dest.example")
    dns_server.add("mx.dest.example", "A", "127.0.0.1")
    return smtp_peer


@pytest.fixture
def worker(base_config, database, clock, mx):
    config = base_config.replace(delivery__mx_port=mx.port, delivery__timeout=5.0)
    w = Worker(config, database, SecretBox(SECRET_KEY.encode()), clock=clock)
    yield w
    w.close()


@pytest.fixture
def domain(api, user, add_domain, publish):
    domain_id = add_domain()
    publish(domain_id)
    body = api("EmailGateway.VerifyDomain", APIKey=user.api_key, DomainID=domain_id)
    assert body["Domain"]["Status"] == "Enabled", body
    key = api("EmailGateway.AddAPI", APIKey=user.api_key, DomainID=domain_id, Description="a")
    return domain_id, key["APIKey"]["Key"]


@pytest.fixture
def send_and_check(client, domain, worker, mx, dns_server):
    """Send one message, deliver it, check its signature with dkimpy against the loopback
    DNS; the selector (s=) it was signed with."""
    lookup = dns_txt(dns_server)

    def do(subject="hello"):
        body = {
            "Subject": subject,
            "ContentType": "plain",
            "PlainContent": "Hello there",
            "From": {"email": "news@example.com"},
            "To": [{"email": "rcpt@dest.example"}],
        }
        resp = client.post(
            "/api/v1/email", json=body, headers={"Authorization": f"Bearer {domain[1]}"}
        )
        assert resp.status_code == 200, resp.get_json()
        before = len(mx.messages)
        assert worker.run_once() == 1
        assert len(mx.messages) == before + 1
        data = mx.messages[-1].data
        assert data.count(b"DKIM-Signature:") == 1
        assert dkim.verify(data, dnsfunc=lookup), data[:600]
        sig = dkim.DKIM(data)
        sig.verify(dnsfunc=lookup)
        return sig.signature_fields[b"s"].decode()

    return do


def get_domain(api, user, domain_id):
    body = api("EmailGateway.GetDomain", APIKey=user.api_key, DomainID=domain_id)
    assert body["Success"] is True, body
    return body["Domain"]


def dkim_records(api, user, domain_id):
    records = get_domain(api, user, domain_id)["DNSRecords"]
    return {r["Host"]: r for r in records if r["Purpose"] == "dkim"}


def rotate(api, user, domain_id):
    body = api("EmailGateway.RotateDKIMKey", APIKey=user.api_key, DomainID=domain_id)
    assert body["Success"] is True, body
    return body


def verify(api, user, domain_id):
    body = api("EmailGateway.VerifyDomain", APIKey=user.api_key, DomainID=domain_id)
    assert body["Success"] is True, body
    return body


def run_housekeeping(database, base_config, clock, **changes):
    config = base_config.replace(**changes)
    return housekeeping(database, SecretBox(SECRET_KEY.encode()), config, clock())


def test_rotation_end_to_end(
    api, user, domain, send_and_check, dns_server, database, base_config, clock, postern_log
):
    domain_id = domain[0]
    assert send_and_check("before") == "key1"

    body = rotate(api, user, domain_id)
    assert body["NewDKIMSelectors"] == ["key2"]
    records = dkim_records(api, user, domain_id)
    assert set(records) == {f"key1._domainkey.{RP}", f"key2._domainkey.{RP}"}
    assert records[f"key1._domainkey.{RP}"]["KeyStatus"] == "Active"
    assert records[f"key2._domainkey.{RP}"]["KeyStatus"] == "Pending"
    assert records[f"key2._domainkey.{RP}"]["Required"] is False
    d = get_domain(api, user, domain_id)
    assert d["DKIMSelectors"] == ["key1"]
    assert [(k["Selector"], k["Status"]) for k in d["DKIMKeys"]] == [
        ("key1", "Active"),
        ("key2", "Pending"),
    ]

    # A second rotation waits for this one.
    again = api("EmailGateway.RotateDKIMKey", APIKey=user.api_key, DomainID=domain_id)
    assert (again["Success"], again["ErrorCode"]) == (False, 3)

    # Not published yet: still signed with key1; VerifyDomain neither switches nor fails.
    assert send_and_check("pending") == "key1"
    body = verify(api, user, domain_id)
    assert body["Domain"]["Status"] == "Enabled" and "DKIMKeyActivated" not in body
    assert get_domain(api, user, domain_id)["DKIMStatus"] == "Verified"
    assert send_and_check("still pending") == "key1"
    run_housekeeping(database, base_config, clock)  # the record is not there: no switch
    assert send_and_check("after housekeeping") == "key1"

    # Published and verified: signing switches to key2; key1 stays published and listed.
    dns_server.add(f"key2._domainkey.{RP}", "TXT", records[f"key2._domainkey.{RP}"]["Value"])
    body = verify(api, user, domain_id)
    assert body["DKIMKeyActivated"] == ["key2"]
    assert body["Domain"]["Status"] == "Enabled"
    assert send_and_check("switched") == "key2"
    records = dkim_records(api, user, domain_id)
    assert records[f"key1._domainkey.{RP}"]["KeyStatus"] == "Retiring"
    assert records[f"key2._domainkey.{RP}"]["KeyStatus"] == "Active"
    assert get_domain(api, user, domain_id)["DKIMSelectors"] == ["key2"]

    # Within the grace period nothing is retired.
    clock.advance(days=6)
    assert run_housekeeping(database, base_config, clock).retired == 0
    assert f"key1._domainkey.{RP}" in dkim_records(api, user, domain_id)

    # Past it, key1 is retired: no longer listed, its private key erased.
    clock.advance(days=1, seconds=1)
    assert run_housekeeping(database, base_config, clock).retired == 1
    records = dkim_records(api, user, domain_id)
    assert set(records) == {f"key2._domainkey.{RP}"}
    keys = get_domain(api, user, domain_id)["DKIMKeys"]
    assert [(k["Selector"], k["Status"]) for k in keys] == [("key1", "Retired"), ("key2", "Active")]
    assert keys[0]["RetiredDate"] and keys[1]["ActivationDate"]
    with database.transaction(readonly=True) as s:
        assert (
            s.scalar(select(DKIMKey.private_key_encrypted).where(DKIMKey.selector == "key1")) == ""
        )
    # The user takes the old record down: mail still verifies.
    dns_server.set(f"key1._domainkey.{RP}", "TXT", [])
    assert send_and_check("after retirement") == "key2"
    body = verify(api, user, domain_id)
    assert body["Domain"]["Status"] == "Enabled"

    # Each step was logged, secrets never.
    messages = [r.getMessage() for r in postern_log if r.name == "postern.dkim"]
    assert messages == [
        "DKIM key rotation started",
        "DKIM key activated",
        "DKIM key retired",
    ]
    for r in postern_log:
        assert "PRIVATE KEY" not in str(r.__dict__)
    # ...and each is an event of the domain in its event log, oldest first.
    log = api(
        "EmailGateway.GetEvents",
        APIKey=user.api_key,
        DomainID=domain_id,
        StartFrom=0,
        RetrieveCount=100,
        Event="dkim_rotating,dkim_activated,dkim_retired",
    )
    steps = [(e["event_type"], e["details"]["selectors"]) for e in reversed(log["Events"])]
    assert steps == [
        ("dkim_rotating", ["key2"]),
        ("dkim_activated", ["key2"]),
        ("dkim_retired", ["key1"]),
    ]
    assert all(e["message_id"] == "" and e["recipient"] == "" for e in log["Events"])

    # The next rotation takes a selector never used: key3.
    assert rotate(api, user, domain_id)["NewDKIMSelectors"] == ["key3"]


def test_automatic_rotation(
    api, user, domain, send_and_check, dns_server, database, base_config, clock
):
    domain_id = domain[0]
    assert send_and_check() == "key1"
    # Off by default, and not due before N days.
    clock.advance(days=40)
    assert run_housekeeping(database, base_config, clock).started == 0
    clock.reset()
    clock.advance(days=29)
    assert run_housekeeping(database, base_config, clock, domains__dkim_rotate_days=30).started == 0
    clock.advance(days=1, seconds=1)
    done = run_housekeeping(database, base_config, clock, domains__dkim_rotate_days=30)
    assert done.started == 1 and done.activated == 0
    records = dkim_records(api, user, domain_id)
    assert records[f"key2._domainkey.{RP}"]["KeyStatus"] == "Pending"
    assert send_and_check("pending") == "key1"
    # Once the user publishes it, the housekeeping itself finds it and switches.
    dns_server.add(f"key2._domainkey.{RP}", "TXT", records[f"key2._domainkey.{RP}"]["Value"])
    # (the grace period is the setting's when the new key begins to sign)
    auto = {"domains__dkim_rotate_days": 30, "domains__dkim_retire_after_days": 2}
    done = run_housekeeping(database, base_config, clock, **auto)
    assert (done.started, done.activated) == (0, 1)
    assert send_and_check("switched") == "key2"
    # Retired after the grace period (a setting); not rotated again before N more days.
    clock.advance(days=2, seconds=1)
    done = run_housekeeping(database, base_config, clock, **auto)
    assert (done.retired, done.started) == (1, 0)
    assert set(dkim_records(api, user, domain_id)) == {f"key2._domainkey.{RP}"}
    assert send_and_check("after") == "key2"


def test_ed25519_keys_rotate_together(make_app, user, dns_server, database, base_config):
    call = make_app(domains__dkim_ed25519=True)
    domain_id = call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="example.com")[
        "NewSenderDomainID"
    ]
    body = call("EmailGateway.RotateDKIMKey", APIKey=user.api_key, DomainID=domain_id)
    # key1 (rsa) and key2 (ed25519) are followed by key3 and key4.
    assert body["NewDKIMSelectors"] == ["key3", "key4"]
    keys = {k["Selector"]: k for k in body["Domain"]["DKIMKeys"]}
    assert (keys["key3"]["Algorithm"], keys["key4"]["Algorithm"]) == ("rsa", "ed25519")


def test_errors(api, user):
    body = api("EmailGateway.RotateDKIMKey", APIKey=user.api_key)
    assert (body["Success"], body["ErrorCode"]) == (False, 1)
    body = api("EmailGateway.RotateDKIMKey", APIKey=user.api_key, DomainID=999999)
    assert (body["Success"], body["ErrorCode"]) == (False, 2)
    body = api("EmailGateway.RotateDKIMKey", APIKey=user.api_key, DomainID="abc")
    assert (body["Success"], body["ErrorCode"]) == (False, 2)


@pytest.mark.parametrize(
    "selector, used, expected",
    [
        ("key1", {"key1"}, "key2"),
        ("key1", {"key1", "key2"}, "key3"),
        ("key9", {"key9"}, "key10"),
        ("default", {"default"}, "default2"),
    ],
)
def test_next_selector(selector, used, expected):
    assert next_selector(selector, used) == expected


def test_the_webhook_worker_runs_the_rotation_housekeeping(
    api, user, domain, dns_server, database, base_config, clock
):
    from app.workers.webhooks import WebhookSender

    domain_id = domain[0]
    records = {r["Host"]: r for r in rotate(api, user, domain_id)["Domain"]["DNSRecords"]}
    dns_server.add(f"key2._domainkey.{RP}", "TXT", records[f"key2._domainkey.{RP}"]["Value"])
    sender = WebhookSender(base_config, database, SecretBox(SECRET_KEY.encode()), clock=clock)
    sender.dkim_housekeeping()  # activates key2
    clock.advance(days=8)
    sender.dkim_housekeeping()  # retires key1
    assert set(dkim_records(api, user, domain_id)) == {f"key2._domainkey.{RP}"}
