"""Postal's legacy API (/api/v1/send/*, /api/v1/messages/*): the envelope, every answer in
Postal's order, the parameter forms, expansions and attempts after real deliveries to a
loopback MX, tenant isolation, and Postal's own clients against a live local Postern."""

import base64
import email
import email.policy
import hashlib
import json
import re
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from app.workers.delivery import Worker
from core.crypto import SecretBox
from models import Delivery, Message
from tests import djangoconf, smtppeer
from tests.app.workers import test_delivery as delivery_tests
from tests.clientvenv import client_python, run_client
from tests.conftest import SECRET_KEY

smtp_peer = smtppeer.smtp_peer

SEND = "/api/v1/send/message"
RAW = "/api/v1/send/raw"
MESSAGE = "/api/v1/messages/message"
DELIVERIES = "/api/v1/messages/deliveries"


def key(k):
    return {"X-Server-API-Key": k}


def body(**changes):
    b = {
        "to": ["john@dest.example", "Mary <mary@dest.example>"],
        "from": "News <news@example.com>",
        "subject": "Hello",
        "plain_body": "Hello there",
    }
    b.update(changes)
    return b


def post(client, path, k, payload):
    resp = client.post(path, headers=key(k), json=payload)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert set(answer) == {"status", "time", "flags", "data"}
    assert answer["flags"] == {} and isinstance(answer["time"], float)
    return answer


@pytest.fixture
def domain(active_domain):
    return active_domain()


def test_the_seeds_example(client, domain, database, api, user):
    answer = post(client, SEND, domain.key, body())
    assert answer["status"] == "success", answer
    data = answer["data"]
    assert set(data["messages"]) == {"john@dest.example", "mary@dest.example"}
    with database.transaction(readonly=True) as s:
        rows = {d.recipient: d for d in s.scalars(select(Delivery))}
        [message] = s.scalars(select(Message)).all()
    for address, entry in data["messages"].items():
        assert entry == {"id": rows[address].id, "token": rows[address].token}
    assert data["message_id"] == f"{message.id}@example.com"
    assert message.source == "postal"
    # Seen by Octeth's GetEvents, with the same Message-ID.
    events = api("EmailGateway.GetEvents", APIKey=user.api_key, StartFrom=0, RetrieveCount=10)[
        "Events"
    ]
    assert {e["message"]["headers"]["message-id"] for e in events} == {f"<{data['message_id']}>"}


def test_authentication_answers(client, domain):
    resp = client.post(SEND, json=body())
    assert resp.status_code == 200
    assert resp.get_json()["data"] == {
        "message": "Must be authenticated as a server.",
        "code": "AccessDenied",
    }
    assert resp.get_json()["status"] == "error"
    answer = post(client, SEND, "nope-123", body())
    assert answer["status"] == "error"
    assert answer["data"] == {
        "message": "The API token provided in X-Server-API-Key was not valid.",
        "token": "nope-123",
        "code": "InvalidServerAPIKey",
    }


def test_a_disabled_users_keys(client, domain, user, database, clock):
    from commands.users import set_enabled

    with database.transaction() as s:
        set_enabled(s, user.username, False, clock())
    assert post(client, SEND, domain.key, body())["data"] == {
        "message": "Your mail server has been suspended",
        "code": "ServerSuspended",
    }
    assert post(client, SEND, user.api_key, body())["data"]["code"] == "InvalidServerAPIKey"


FIFTY_ONE = [f"a{i}@dest.example" for i in range(51)]


@pytest.mark.parametrize(
    "changes, code",
    [
        ({"to": None}, "NoRecipients"),
        ({"to": [], "cc": [], "bcc": [], "from": None, "plain_body": None}, "NoRecipients"),
        ({"to": FIFTY_ONE, "plain_body": None}, "TooManyToAddresses"),
        ({"cc": FIFTY_ONE, "plain_body": None}, "TooManyCCAddresses"),
        ({"bcc": FIFTY_ONE, "plain_body": None}, "TooManyBCCAddresses"),
        ({"plain_body": None, "from": None}, "NoContent"),
        ({"plain_body": "  ", "html_body": ""}, "NoContent"),
        ({"from": None, "attachments": [{}]}, "FromAddressMissing"),
        ({"from": "x@elsewhere.example", "attachments": [{}]}, "UnauthenticatedFromAddress"),
        ({"sender": "x@elsewhere.example"}, "UnauthenticatedFromAddress"),
        ({"attachments": [{"data": ""}]}, "AttachmentMissingName"),
        ({"attachments": ["skipped", {"name": "a.txt"}]}, "AttachmentMissingData"),
    ],
)
def test_the_first_failing_check_answers(client, domain, changes, code):
    answer = post(client, SEND, domain.key, body(**changes))
    assert answer["status"] == "error"
    assert answer["data"]["code"] == code, answer
    texts = {
        "NoRecipients": "There are no recipients defined to receive this message",
        "TooManyToAddresses": "The maximum number of To addresses has been reached (maximum 50)",
        "TooManyCCAddresses": "The maximum number of CC addresses has been reached (maximum 50)",
        "TooManyBCCAddresses": "The maximum number of BCC addresses has been reached (maximum 50)",
        "NoContent": "There is no content defined for this e-mail",
        "FromAddressMissing": "The From address is missing and is required",
        "UnauthenticatedFromAddress": (
            "The From address is not authorised to send mail from this server"
        ),
        "AttachmentMissingName": "An attachment is missing a name",
        "AttachmentMissingData": "An attachment is missing data",
    }
    assert answer["data"] == {"message": texts[code], "code": code}


def test_postern_refusals_are_validation_errors(client, domain, api, user):
    answer = post(client, SEND, domain.key, body(headers={"Received": "from x"}))
    assert answer["status"] == "error" and answer["data"]["code"] == "ValidationError"
    assert "Received" in answer["data"]["message"]
    api(
        "Suppression.Add",
        APIKey=user.api_key,
        DomainID=domain.id,
        EmailAddress="only@dest.example",
    )
    answer = post(client, SEND, domain.key, body(to=["only@dest.example"]))
    assert answer["data"] == {
        "message": "Email address is in the suppression list. Email delivery is blocked.",
        "code": "ValidationError",
    }


def test_params_as_a_form_field_and_in_the_query(client, domain):
    resp = client.post(SEND, headers=key(domain.key), data={"params": json.dumps(body())})
    assert resp.get_json()["status"] == "success", resp.get_json()
    resp = client.get(
        f"{SEND}?params={quote(json.dumps(body(to='a@dest.example')))}", headers=key(domain.key)
    )
    assert resp.status_code == 200
    assert list(resp.get_json()["data"]["messages"]) == ["a@dest.example"]
    # No parameters at all: Postal's first check.
    resp = client.put(SEND, headers=key(domain.key))
    assert resp.get_json()["data"]["code"] == "NoRecipients"
    # A JSON body that is not JSON.
    resp = client.patch(
        SEND, headers={**key(domain.key), "Content-Type": "application/json"}, data="{nope"
    )
    assert resp.status_code == 200 and resp.get_json()["status"] == "parameter-error"


def test_postal_php_nulls_comma_strings_and_names(client, domain, database):
    answer = post(
        client,
        SEND,
        domain.key,
        {
            "to": "john@dest.example, Ann Smith <ann@dest.example>",
            "cc": None,
            "bcc": ["hidden@dest.example"],
            "from": "news@example.com",
            "sender": "Bot <bot@example.com>",
            "subject": "s",
            "reply_to": "Help <help@example.com>",
            "plain_body": None,
            "html_body": "<p>hi</p>",
            "headers": None,
            "attachments": None,
            "tag": "welcome",
            "bounce": None,
        },
    )
    assert answer["status"] == "success", answer
    assert set(answer["data"]["messages"]) == {
        "john@dest.example",
        "ann@dest.example",
        "hidden@dest.example",
    }
    with database.transaction(readonly=True) as s:
        [message] = s.scalars(select(Message)).all()
        assert json.loads(message.tags) == ["welcome"]


def test_a_user_key_sends_from_any_of_its_domains_only(
    client, domain, user, make_user, active_domain
):
    active_domain("other.example")
    answer = post(client, SEND, user.api_key, body(**{"from": "x@mail.other.example"}))
    assert answer["status"] == "success", answer
    stranger = make_user("bob")
    answer = post(client, SEND, stranger.api_key, body())
    assert answer["data"]["code"] == "UnauthenticatedFromAddress"
    # A sender key: its own domain only.
    answer = post(client, SEND, domain.key, body(**{"from": "x@other.example"}))
    assert answer["data"]["code"] == "UnauthenticatedFromAddress"


RAW_MESSAGE = (
    b"From: News <news@example.com>\r\nTo: john@dest.example\r\nSubject: Raw\r\n"
    b"Message-ID: <raw-1@example.com>\r\n\r\nHello\r\n"
)


def test_send_raw(client, domain):
    for missing, payload in [
        ("mail_from", {"rcpt_to": ["a@dest.example"], "data": "eA=="}),
        ("rcpt_to", {"mail_from": "news@example.com", "data": "eA=="}),
        ("data", {"mail_from": "news@example.com", "rcpt_to": ["a@dest.example"]}),
    ]:
        answer = post(client, RAW, domain.key, payload)
        assert answer["status"] == "parameter-error"
        assert answer["data"] == {"message": f"`{missing}` parameter is required but is missing"}
    data = base64.b64encode(RAW_MESSAGE).decode()
    answer = post(
        client,
        RAW,
        domain.key,
        {
            "mail_from": "news@example.com",
            "rcpt_to": ["a@dest.example", "b@dest.example"],
            "data": data,
        },
    )
    assert answer["status"] == "success", answer
    assert answer["data"]["message_id"] == "raw-1@example.com"
    assert set(answer["data"]["messages"]) == {"a@dest.example", "b@dest.example"}
    plain = RAW_MESSAGE.replace(b"Message-ID: <raw-1@example.com>\r\n", b"")
    answer = post(
        client,
        RAW,
        domain.key,
        {"mail_from": "x", "rcpt_to": ["a@dest.example"], "data": base64.b64encode(plain).decode()},
    )
    assert answer["status"] == "success" and answer["data"]["message_id"] is None
    foreign = RAW_MESSAGE.replace(b"news@example.com", b"news@elsewhere.example")
    answer = post(
        client,
        RAW,
        domain.key,
        {
            "mail_from": "x",
            "rcpt_to": ["a@dest.example"],
            "data": base64.b64encode(foreign).decode(),
        },
    )
    assert answer["data"] == {
        "message": "The From address is not authorised to send mail from this server",
        "code": "UnauthenticatedFromAddress",
    }


def test_message_lookups_and_tenants(client, domain, user, make_user, active_domain):
    sent = post(client, SEND, domain.key, body())["data"]["messages"]["john@dest.example"]
    answer = post(client, MESSAGE, domain.key, {"id": sent["id"]})
    assert answer == {**answer, "status": "success", "data": sent}
    assert post(client, MESSAGE, user.api_key, {"id": sent["id"]})["data"] == sent
    assert post(client, MESSAGE, domain.key, {})["status"] == "parameter-error"
    assert post(client, DELIVERIES, domain.key, {})["data"] == {
        "message": "`id` parameter is required but is missing"
    }
    # Another tenant's message, one that does not exist, an id that is not a number: alike.
    bob = make_user("bob")
    theirs = active_domain("bob.example", key=bob.api_key)
    for k, given in [
        (theirs.key, sent["id"]),
        (bob.api_key, sent["id"]),
        (domain.key, sent["id"] + 1000),
        (domain.key, "abc"),
    ]:
        for path in (MESSAGE, DELIVERIES):
            answer = post(client, path, k, {"id": given})
            assert answer["status"] == "error"
            assert answer["data"] == {
                "message": "No message found matching provided ID",
                "id": given,
                "code": "MessageNotFound",
            }


def test_a_message_sent_through_api_v1_is_read_here(client, domain, database):
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "Subject": "From Octeth",
            "ContentType": "plain",
            "PlainContent": "hi",
            "From": {"email": "news@example.com", "name": "News"},
            "To": [{"email": "rcpt@dest.example"}],
        },
    )
    message_id = resp.get_json()["MessageID"]
    with database.transaction(readonly=True) as s:
        d = s.scalars(select(Delivery).where(Delivery.message_id == message_id)).one()
        delivery_id = d.id
    data = post(client, MESSAGE, domain.key, {"id": delivery_id, "_expansions": ["details"]})[
        "data"
    ]
    assert data["details"]["message_id"] == f"{message_id}@example.com"
    assert data["details"]["subject"] == "From Octeth"


def test_http_errors_keep_the_envelope(client, domain, make_app):
    resp = client.post("/api/v1/send/nothing", headers=key(domain.key))
    assert resp.status_code == 404
    assert resp.get_json()["status"] == "error" and resp.get_json()["data"]["code"] == "NotFound"
    resp = client.delete(SEND, headers=key(domain.key))
    assert resp.status_code == 405 and resp.get_json()["flags"] == {}
    small = make_app(http__max_body_bytes=1000).client
    resp = small.post(SEND, headers=key(domain.key), json=body(plain_body="x" * 5000))
    assert resp.status_code == 413 and resp.get_json()["status"] == "error"


def test_the_rate_limit_keeps_the_envelope(make_app, active_domain):
    call = make_app(ratelimit__requests=1)
    d = active_domain()
    first = call.client.post(SEND, headers=key(d.key), json=body())
    second = call.client.post(SEND, headers=key(d.key), json=body())
    assert first.get_json()["status"] == "success"
    assert second.status_code == 429
    answer = second.get_json()
    assert answer["status"] == "error" and answer["data"]["code"] == "TooManyRequests"
    assert int(second.headers["Retry-After"]) > 0


# -- after real deliveries -------------------------------------------------------------------


mx = delivery_tests.mx


@pytest.fixture
def worker(base_config, database, clock, mx):
    config = base_config.replace(delivery__mx_port=mx.port, delivery__timeout=5.0)
    w = Worker(config, database, SecretBox(SECRET_KEY.encode()), clock=clock)
    yield w
    w.close()


def test_expansions_and_attempts_after_a_deferral_then_delivery(client, domain, mx, worker, clock):
    mx.fail_rcpt("john@dest.example", 451, "4.7.1 Greylisted, try later", times=1)
    attachment = b"hello attachment"
    sent = post(
        client,
        SEND,
        domain.key,
        body(
            to=["john@dest.example"],
            sender="Bot <bot@example.com>",
            html_body="<p>Hello <a href='https://example.com/x'>there</a></p>",
            headers={"X-Campaign": "c1"},
            attachments=[
                {
                    "name": "a.txt",
                    "content_type": "text/plain",
                    "data": base64.b64encode(attachment).decode(),
                }
            ],
            tag="welcome",
            bounce=True,
        ),
    )["data"]
    entry = sent["messages"]["john@dest.example"]
    pending = post(client, MESSAGE, domain.key, {"id": entry["id"], "_expansions": ["status"]})
    assert pending["data"]["status"]["status"] == "Pending"
    assert isinstance(pending["data"]["status"]["last_delivery_attempt"], float)

    worker.run_once()
    clock.advance(seconds=120)
    worker.run_once()
    [received] = mx.messages
    seen = email.message_from_bytes(received.data, policy=email.policy.default)
    assert seen["Message-ID"] == f"<{sent['message_id']}>"
    assert seen["Sender"] == "Bot <bot@example.com>"

    data = post(client, MESSAGE, domain.key, {"id": entry["id"], "_expansions": True})["data"]
    assert data["id"] == entry["id"] and data["token"] == entry["token"]
    assert data["status"]["status"] == "Sent" and data["status"]["held"] is False
    details = data["details"]
    assert details["rcpt_to"] == "john@dest.example"
    assert details["message_id"] == sent["message_id"]
    assert details["tag"] == "welcome" and details["bounce"] is True
    assert details["received_with_ssl"] is False and details["direction"] == "outgoing"
    assert data["inspection"]["inspected"] is False
    headers = data["headers"]
    assert headers["message-id"] == [f"<{sent['message_id']}>"]
    assert headers["x-campaign"] == ["c1"]
    assert headers["sender"] == ["Bot <bot@example.com>"]
    assert all(name == name.lower() for name in headers)
    [a] = data["attachments"]
    assert a == {
        "filename": "a.txt",
        "content_type": "text/plain",
        "data": base64.b64encode(attachment).decode(),
        "size": len(attachment),
        "hash": hashlib.sha1(attachment).hexdigest(),  # noqa: S324 - Postal's digest
    }
    raw = base64.b64decode(data["raw_message"])
    assert f"Message-ID: <{sent['message_id']}>".encode() in raw
    assert data["activity_entries"] == {"loads": [], "clicks": []}
    assert data["plain_body"] and "Hello" in data["html_body"]

    attempts = post(client, DELIVERIES, domain.key, {"id": entry["id"]})["data"]
    assert [a["status"] for a in attempts] == ["SoftFail", "Sent"]
    assert attempts[0]["output"].startswith("451 4.7.1 Greylisted")
    for a in attempts:
        assert isinstance(a["id"], int) and isinstance(a["log_id"], str)
        assert isinstance(a["time"], float) and isinstance(a["timestamp"], float)
        assert a["sent_with_ssl"] is False and a["details"]
    status = post(client, MESSAGE, domain.key, {"id": entry["id"], "_expansions": ["status"]})
    assert status["data"]["status"]["last_delivery_attempt"] == attempts[-1]["timestamp"]


def test_opens_and_clicks_are_activity_entries(client, domain, mx, worker, database):
    from sqlalchemy import update

    from models import Domain

    with database.transaction() as s:
        s.execute(update(Domain).values(open_tracking=True, link_tracking=True))
    sent = post(
        client,
        SEND,
        domain.key,
        body(to=["john@dest.example"], html_body="<p><a href='https://example.com/x'>x</a></p>"),
    )["data"]["messages"]["john@dest.example"]
    worker.run_once()
    [received] = mx.messages
    html = email.message_from_bytes(received.data, policy=email.policy.default)
    html = html.get_body(preferencelist=("html",)).get_content()
    urls = re.findall(r'(?:href|src)="(http[^"]+)"', html)
    for url in urls:
        path = url.split("://", 1)[1].split("/", 1)[1]
        client.get("/" + path, headers={"User-Agent": "Reader/1.0"})
    data = post(
        client, MESSAGE, domain.key, {"id": sent["id"], "_expansions": ["activity_entries"]}
    )["data"]["activity_entries"]
    assert [c["url"] for c in data["clicks"]] == ["https://example.com/x"]
    assert len(data["loads"]) == 1 and data["loads"][0]["user_agent"] == "Reader/1.0"
    assert isinstance(data["loads"][0]["timestamp"], str)


# -- Postal's clients ------------------------------------------------------------------------


@pytest.fixture
def live(served):
    return f"http://{served}"


POSTAL_PY = ["postal-py==0.0.5"]  # in an environment of its own: see tests/clientvenv.py


def test_postal_py(live, domain, mx, worker):
    python = client_python("postal-py", POSTAL_PY)
    raw = base64.b64encode(RAW_MESSAGE).decode()
    sent = run_client(
        python, "postal_py_client.py", step="send", base=live, key=domain.key, raw=raw
    )
    assert sent == {
        "sent": "success",
        "raw": "success",
        "not_authorised": "PostalPyUnauthenticatedFromAddressError",
        "bad_key": "PostalPyInvalidServerAPIKeyError",
    }
    worker.run_once()
    # postal-py keeps only the fields it knows of a send's answer: the ids are read raw.
    answer = httpx.post(
        f"{live}{SEND}",
        headers=key(domain.key),
        json=body(to=["ann@dest.example"]),
    ).json()
    delivery_id = answer["data"]["messages"]["ann@dest.example"]["id"]
    worker.run_once()
    read = run_client(
        python, "postal_py_client.py", step="read", base=live, key=domain.key, id=delivery_id
    )
    assert read == {
        "status": "Sent",
        "rcpt_to": "ann@dest.example",
        "message_id": [f"<{answer['data']['message_id']}>"],
        "attempts": ["Sent"],
        "missing": "PostalPyMessageNotFoundError",
    }


def test_django_anymail(live, domain, database):
    djangoconf.configure()
    from django.core.mail import EmailMessage
    from django.test.utils import override_settings

    with override_settings(ANYMAIL={"POSTAL_API_URL": live, "POSTAL_API_KEY": domain.key}):
        msg = EmailMessage(
            "Hello from Django",
            "Plain body",
            "News <news@example.com>",
            ["john@dest.example"],
            cc=["mary@dest.example"],
        )
        msg.attach("report.csv", b"a,b\n1,2\n", "text/csv")
        msg.tags = ["django"]
        assert msg.send() == 1
    status = msg.anymail_status
    assert status.status == {"queued"}
    with database.transaction(readonly=True) as s:
        ids = {d.recipient: d.id for d in s.scalars(select(Delivery))}
        [message] = s.scalars(select(Message)).all()
        assert json.loads(message.tags) == ["django"]
    assert status.recipients["john@dest.example"].message_id == ids["john@dest.example"]
    assert status.recipients["mary@dest.example"].message_id == ids["mary@dest.example"]


def test_a_nul_in_the_subject_is_a_validation_error(client, domain):
    """Seen: 500 on PostgreSQL, whose text cannot hold NUL."""
    answer = post(client, SEND, domain.key, body(subject="a\x00b"))
    assert answer["status"] == "error" and answer["data"]["code"] == "ValidationError"
    assert "NUL" in answer["data"]["message"]
