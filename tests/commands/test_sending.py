"""Accepting mail: POST /api/v1/email and EmailGateway.SendEmail, every error code, in order."""

import base64
import json
import re
import time
import uuid

import pytest
from sqlalchemy import func, select

from commands.users import set_enabled
from models import Delivery, Domain, Event, Message, User
from models.domains import ENABLED, PENDING
from models.messages import PACK_ABOVE, pack_payload, unpack_payload


def payload(**changes):
    body = {
        "Subject": "Hello",
        "ContentType": "html",
        "HtmlContent": "<p>Hello <b>you</b></p>",
        "From": {"email": "news@example.com", "name": "News"},
        "To": [{"email": "rcpt@dest.example", "name": "Rcpt"}],
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@pytest.fixture
def domain(active_domain):
    return active_domain()


@pytest.fixture
def send(client, domain):
    def do(body=None, key=None, **changes):
        resp = client.post(
            "/api/v1/email",
            json=body if body is not None else payload(**changes),
            headers={"Authorization": f"Bearer {key or domain.key}"},
        )
        return resp

    return do


def error_of(resp):
    body = resp.get_json()
    assert "Errors" in body, body
    return body["Errors"][0]["Code"]


def rows(database, model, *where):
    """Matching rows in the order they were written (by primary key)."""
    with database.transaction(readonly=True) as s:
        key = model.__mapper__.primary_key[0]
        return s.scalars(select(model).where(*where).order_by(key)).all()


def test_send_is_committed_before_the_answer(send, database, domain):
    resp = send(
        CC=[{"email": "cc@dest.example"}],
        BCC=[{"email": "bcc@other.example"}],
        Tags=["welcome", "v2"],
    )
    assert resp.status_code == 200
    message_id = resp.get_json()["MessageID"]
    assert resp.get_json() == {"MessageID": message_id}
    assert re.fullmatch(r"[0-9a-f-]{36}", message_id)
    [message] = rows(database, Message, Message.id == message_id)
    assert message.domain_id == domain.id and message.from_email == "news@example.com"
    deliveries = rows(database, Delivery, Delivery.message_id == message_id)
    assert sorted((d.recipient, d.kind, d.status) for d in deliveries) == [
        ("bcc@other.example", "bcc", "queued"),
        ("cc@dest.example", "cc", "queued"),
        ("rcpt@dest.example", "to", "queued"),
    ]
    assert all(d.due_at is not None and re.fullmatch(r"[0-9a-f]{32}", d.token) for d in deliveries)
    assert len({d.token for d in deliveries}) == 3
    accepted = rows(database, Event, Event.message_id == message_id)
    assert sorted(e.type for e in accepted) == ["accepted"] * 3
    by_recipient = {d.recipient: d.id for d in deliveries}
    assert all(e.delivery_id == by_recipient[e.recipient] for e in accepted)
    assert accepted[0].tags == '["welcome", "v2"]'


def test_message_ids_and_event_uids_are_uuids_ordered_by_time(send, database):
    ids = [send().get_json()["MessageID"] for _ in range(3)]
    assert [uuid.UUID(i).version for i in ids] == [7, 7, 7]
    assert ids == sorted(ids) and len(set(ids)) == 3  # each new key at the end of its index
    events = rows(database, Event)
    uids = [e.uid for e in events]
    assert {uuid.UUID(u).version for u in uids} == {7}
    assert uids == sorted(uids)


def test_nulls_count_as_absent(send, database):
    # Client libraries often send every field, the unused ones as null.
    nulls = dict.fromkeys(
        ["PlainContent", "CC", "BCC", "ReplyTo", "Attachments", "Headers", "Tags"]
        + ["TrackLinks", "TrackOpens", "SendAt", "TemplateID", "TargetListID"]
    )
    resp = send(body={**payload(), **nulls})
    assert resp.status_code == 200, resp.get_json()
    resp = send(body={**payload(), "Subject": None})
    assert resp.status_code == 400 and error_of(resp) == 8


def test_sender_key_in_the_body(client, domain):
    body = payload()
    body["SenderAPIKey"] = domain.key
    resp = client.post("/api/v1/email", json=body)
    assert resp.status_code == 200 and "MessageID" in resp.get_json()


def test_send_email_through_api_php_as_a_php_style_form(client, user, domain, database):
    resp = client.post(
        "/api.php",
        data={
            "Command": "EmailGateway.SendEmail",
            "APIKey": user.api_key,
            "DomainID": domain.id,
            "Subject": "Form",
            "ContentType": "plain",
            "PlainContent": "  Hi there\n",
            "From[email]": "news@example.com",
            "From[name]": "News",
            "To[0][email]": "a@dest.example",
            "To[0][name]": "A",
            "To[1][email]": "b@dest.example",
            "Tags[]": ["x", "y"],
        },
    )
    body = resp.get_json()
    assert body["Success"] is True, body
    [message] = rows(database, Message, Message.id == body["MessageID"])
    assert unpack_payload(message.payload)["text"] == "  Hi there\n"  # bodies are kept as sent
    assert len(rows(database, Delivery, Delivery.message_id == message.id)) == 2
    bad = client.post(
        "/api.php",
        json={
            "Command": "EmailGateway.SendEmail",
            "APIKey": user.api_key,
            "DomainID": 999,
            **payload(),
        },
    )
    assert bad.get_json()["ErrorCode"] == 2
    missing = client.post(
        "/api.php", json={"Command": "EmailGateway.SendEmail", "APIKey": user.api_key, **payload()}
    )
    assert missing.get_json()["ErrorCode"] == 2


B64 = base64.b64encode(b"hello").decode()

ERRORS = [
    (dict(Subject=None), 8),
    (dict(Subject="a\nb"), 8),
    (dict(ContentType=None), 9),
    (dict(ContentType="pdf"), 9),
    (dict(HtmlContent=None), 10),
    (dict(ContentType="plain"), 11),
    (dict(From=None), 3),
    (dict(From={"name": "x"}), 3),
    (dict(From=[1]), 3),
    (dict(From={"email": "not an address"}), 23),
    (dict(From={"email": "x@elsewhere.example", "name": "X"}), 3),
    (dict(To=None), 20),
    (dict(To=[]), 20),
    (dict(To=[{"name": "x"}]), 18),
    (dict(To=[{"email": "nope"}]), 19),
    (dict(To=["a@b.example", {"email": "bad@"}]), 19),
    (dict(To=[{"email": ["a@b.example"]}]), 18),
    (dict(To=[{"email": 5}]), 18),
    (dict(From={"email": ["news@example.com"]}), 3),
    (dict(CC=[{"name": "x"}]), 21),
    (dict(CC=[{"email": "x@@y"}]), 22),
    (dict(BCC={"email": "a@b.example"}), 24),
    (dict(BCC=[{"name": "x"}]), 25),
    (dict(BCC=[{"email": "bad"}]), 26),
    (dict(ReplyTo={"email": "a@b.example"}), 28),
    (dict(ReplyTo=[{"name": "x"}]), 29),
    (dict(ReplyTo=[{"email": "bad"}]), 30),
    (dict(ReplyTo=[{"email": f"r{i}@b.example"} for i in range(6)]), 31),
    (dict(TemplateID="12"), 15),
    (dict(TargetListID=3), 16),
    (dict(Headers={"From": "x@y.example"}), 35),
    (dict(Headers={"X-A": "a\r\nBcc: x@y"}), 35),
    (dict(Headers={"Bad Name": "x"}), 35),
    (dict(Headers=["X-A"]), 35),
    (dict(Headers={"X-Postern-Tags": "x"}), 35),
    (dict(Headers={"From ": "x@y.example"}), 35),
    (dict(Headers={"X-A": "x", "Authentication-Results": "mx; dkim=pass"}), 41),
    (dict(Headers={"X-A": "a\r\n", "Received": "from x"}), 35),
    *[
        (dict(Headers={name: "x"}), 41)
        for name in [
            "DKIM-Signature",
            "Authentication-Results",
            "arc-seal",
            "ARC-Message-Signature",
            "ARC-Authentication-Results",
            "ARC-Anything",
            "Received",
            "RECEIVED",
            "Return-Path",
            "Received-SPF",
            "Delivered-To",
            "X-Original-To",
            "DomainKey-Signature",
        ]
    ],
    (dict(Tags="x" * 200), 36),
    (dict(Tags=5), 36),
    (dict(Tags=[f"t{i}" for i in range(21)]), 36),
    (dict(TrackLinks="maybe"), 37),
    (dict(TrackOpens=[]), 37),
    (dict(SendAt="tomorrow"), 38),
    (dict(SendAt=int(time.time()) + 40 * 86400), 38),
    (dict(Attachments={"filename": "a"}), 39),
    (dict(Attachments=[{"content": B64}]), 39),
    (dict(Attachments=[{"filename": "a.txt", "content": "@@@"}]), 39),
    (dict(Attachments=[{"filename": "a.txt", "content": B64, "disposition": "x"}]), 39),
    # The order is fixed: the first failing check answers.
    (dict(Subject=None, From=None, To=None), 8),
    (dict(From=None, To=None), 3),
    (dict(To=[{"name": "x"}], BCC={"x": 1}), 18),
]


@pytest.mark.parametrize("changes, code", ERRORS)
def test_send_error_codes(send, changes, code):
    resp = send(**changes)
    assert resp.status_code == 400
    assert error_of(resp) == code, resp.get_json()


def test_authentication_errors(client, send, user, database, clock, domain):
    assert error_of(client.post("/api/v1/email", json=payload())) == 1
    assert error_of(send(key="ps_nope")) == 13
    with database.transaction() as s:
        set_enabled(s, user.username, False, clock())
    resp = send()
    assert (resp.status_code, error_of(resp)) == (403, 12)
    assert resp.get_json()["Errors"][0]["Message"] == "Invalid or deactivated user account"


def test_domain_not_activated(send, database, domain):
    with database.transaction() as s:
        s.get(Domain, domain.id).status = PENDING
    assert error_of(send()) == 32


def test_caps_and_size_are_settings(make_app, domain):
    client = make_app(
        sending__max_recipients=2, sending__max_bcc=1, sending__max_message_bytes=2000
    ).client

    def post(**changes):
        return client.post(
            "/api/v1/email",
            json=payload(**changes),
            headers={"Authorization": f"Bearer {domain.key}"},
        )

    two = [{"email": "a@d.example"}, {"email": "b@d.example"}]
    assert post(To=two).status_code == 200
    assert error_of(post(To=two, CC=[{"email": "c@d.example"}])) == 20
    assert error_of(post(BCC=two)) == 27
    big = base64.b64encode(b"x" * 3000).decode()
    resp = post(Attachments=[{"filename": "a.bin", "content": big}])
    assert error_of(resp) == 40 and "at most 2000" in resp.get_json()["Errors"][0]["Message"]


def test_suppressed_recipients(send, api, user, database, domain):
    api("Suppression.Add", APIKey=user.api_key, EmailAddress="Gone@Dest.example")
    resp = send(To=[{"email": "gone@dest.example"}, {"email": "here@dest.example"}])
    message_id = resp.get_json()["MessageID"]
    deliveries = {
        d.recipient: d for d in rows(database, Delivery, Delivery.message_id == message_id)
    }
    assert deliveries["gone@dest.example"].status == "suppressed"
    assert deliveries["gone@dest.example"].due_at is None
    assert deliveries["here@dest.example"].status == "queued"
    kinds = sorted(
        (e.recipient, e.type) for e in rows(database, Event, Event.message_id == message_id)
    )
    assert kinds == [("gone@dest.example", "suppressed"), ("here@dest.example", "accepted")]
    # Each event names its own recipient's delivery.
    for e in rows(database, Event, Event.message_id == message_id):
        assert e.delivery_id == deliveries[e.recipient].id
        assert e.recipient_lower == e.recipient.lower()
    # Everyone suppressed: refused with 14, and the refusal is in the event log.
    resp = send(To=[{"email": "gone@dest.example"}])
    assert error_of(resp) == 14
    rejected = rows(database, Event, Event.type == "rejected")
    assert [e.recipient for e in rejected] == ["gone@dest.example"]
    assert not rows(database, Message, Message.id == rejected[0].message_id)


def test_domain_scoped_suppression(send, api, user, domain, active_domain):
    other = active_domain("other.example")
    api("Suppression.Add", APIKey=user.api_key, EmailAddress="x@dest.example", DomainID=other.id)
    assert send(To=["x@dest.example"]).status_code == 200
    resp = send(
        key=other.key, To=["x@dest.example"], From={"email": "a@other.example", "name": "A"}
    )
    assert error_of(resp) == 14


def test_quota(make_app, domain, database, user):
    client = make_app(sending__quota=3).client

    def post(n):
        return client.post(
            "/api/v1/email",
            json=payload(To=[f"r{i}@d.example" for i in range(n)]),
            headers={"Authorization": f"Bearer {domain.key}"},
        )

    assert post(2).status_code == 200
    resp = post(2)
    assert error_of(resp) == 17
    assert resp.get_json()["Errors"][0]["Message"] == "Email sending limit reached"
    assert post(1).status_code == 200
    with database.transaction() as s:
        s.get(User, user.id).send_quota = 10
    assert post(5).status_code == 200


def test_send_at_holds_the_deliveries(send, database):
    later = int(time.time()) + 3600
    message_id = send(SendAt=later).get_json()["MessageID"]
    [d] = rows(database, Delivery, Delivery.message_id == message_id)
    assert int(d.due_at.timestamp()) == later
    past = send(SendAt=int(time.time()) - 50).get_json()["MessageID"]
    [d] = rows(database, Delivery, Delivery.message_id == past)
    assert d.due_at.timestamp() <= time.time() + 1


def test_duplicate_recipients_get_one_delivery(send, database):
    message_id = send(
        To=["a@d.example", "A@d.example"], CC=["a@d.example"], BCC=["a@d.example"]
    ).get_json()["MessageID"]
    assert len(rows(database, Delivery, Delivery.message_id == message_id)) == 1


def test_rate_limit_applies_to_sending(make_app, domain, clock):
    client = make_app(ratelimit__requests=2).client
    clock.freeze()  # the requests fall in one rate-limit window
    codes = [
        client.post(
            "/api/v1/email", json=payload(), headers={"Authorization": f"Bearer {domain.key}"}
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]


def test_clear_domain_queue(send, api, user, domain, database):
    ids = [send().get_json()["MessageID"] for _ in range(2)]
    with database.transaction() as s:  # one is in a worker's hands
        first = s.scalars(select(Delivery).where(Delivery.message_id == ids[0])).one()
        first.status = "sending"
    body = api("EmailGateway.ClearDomainQueue", APIKey=user.api_key, DomainID=domain.id)
    assert body == {"Success": True, "ErrorCode": 0, "ClearedCount": 1}
    [d] = rows(database, Delivery, Delivery.message_id == ids[1])
    assert (d.status, d.due_at) == ("failed", None)
    assert [e.type for e in rows(database, Event, Event.message_id == ids[1])] == [
        "accepted",
        "failed",
    ]
    assert api("EmailGateway.ClearDomainQueue", APIKey=user.api_key)["ErrorCode"] == 1
    assert (
        api("EmailGateway.ClearDomainQueue", APIKey=user.api_key, DomainID=424242)["ErrorCode"] == 2
    )


def test_delete_domain_fails_its_queue_and_keeps_history(send, api, user, domain, database):
    message_id = send().get_json()["MessageID"]
    assert api("EmailGateway.DeleteDomain", APIKey=user.api_key, DomainID=domain.id)["Success"]
    [d] = rows(database, Delivery, Delivery.message_id == message_id)
    assert d.status == "failed" and "deleted" in d.last_text
    assert rows(database, Message, Message.id == message_id)
    with database.transaction(readonly=True) as s:
        assert (
            s.scalar(select(func.count()).select_from(Event).where(Event.message_id == message_id))
            == 2
        )


def test_a_large_payload_is_kept_compressed_and_read_back_whole(client, domain, database):
    html = "".join(f"<p>Line {i}: your order has shipped.</p>" for i in range(400))
    resp = client.post(
        "/api/v1/email",
        json=payload(HtmlContent=html),
        headers={"Authorization": f"Bearer {domain.key}"},
    )
    assert resp.status_code == 200, resp.get_json()
    [message] = rows(database, Message, Message.id == resp.get_json()["MessageID"])
    assert set(json.loads(message.payload)) == {"jz"}
    assert len(message.payload) < len(html) / 4
    assert unpack_payload(message.payload)["html"] == html


def test_pack_payload_leaves_small_and_precompressed_payloads_as_json():
    small = {"html": "<p>hi</p>", "text": None, "headers": {}}
    assert json.loads(pack_payload(small)) == small
    smtp = {"rawz": "x" * (PACK_ABOVE * 2), "track_links": None, "track_opens": None}
    assert json.loads(pack_payload(smtp)) == smtp
    large = {"html": "é" * PACK_ABOVE, "text": "t", "attachments": [{"content": "AAAA"}]}
    packed = pack_payload(large)
    assert "jz" in json.loads(packed) and unpack_payload(packed) == large
    # Rows stored before payloads were packed are plain JSON, and read as they are.
    assert unpack_payload(json.dumps(large)) == large


# -- the send checks, one per error code, in the documented order -----------------------------

DOCUMENTED_ORDER = [32, 15, 8, 9, 10, 11, 3, 23, 3, 18, 19, 20, 21, 22, 20]
DOCUMENTED_ORDER += [24, 25, 26, 27, 28, 29, 30, 31, 16, 42, 43, 35, 41, 36, 37, 38, 39, 40]


def test_the_checks_run_in_the_documented_order():
    from commands.sending.checks import CHECKS

    assert [c.code for c in CHECKS] == DOCUMENTED_ORDER


def test_each_check_answers_its_code_before_the_checks_after_it(make_app, domain, database):
    """A send failing every check at once, mended one check at a time: each answer is the
    next check's code, in order, until the send is accepted."""
    client = make_app(
        sending__max_recipients=2,
        sending__max_bcc=1,
        sending__max_reply_to=1,
        sending__max_message_bytes=2000,
    ).client
    two = [{"email": "a@dest.example"}, {"email": "b@dest.example"}]
    body = {
        "Subject": None,
        "ContentType": "pdf",
        "HtmlContent": "<p>\ud800</p>",
        "PlainContent": "\udfff",
        "From": {"name": "News"},
        "To": [{"name": "x"}],
        "CC": [{"name": "x"}],
        "BCC": {"email": "a@b.example"},
        "ReplyTo": {"email": "a@b.example"},
        "TemplateID": "1",
        "TargetListID": 2,
        "Personalization": ["not", "an", "object"],
        "Headers": {"X-A": "a\x0cb"},
        "Tags": 5,
        "TrackLinks": "maybe",
        "SendAt": "tomorrow",
        "Attachments": [{"filename": "\ud800.txt", "content": B64}],
    }
    mends = [
        dict(TemplateID=None),
        dict(Subject="Hello"),
        dict(ContentType="html"),
        dict(HtmlContent="<p>Hello</p>"),
        dict(PlainContent=None),
        dict(From={"email": "news@example.com", "name": "\ud800"}),
        dict(From={"email": "news@elsewhere.example", "name": "News"}),
        dict(From={"email": "news@example.com", "name": "News"}),
        dict(To=[{"email": "r@dest.example", "name": "R\udc00"}]),
        dict(To=[]),
        dict(To=two),
        dict(CC=[{"email": "bad"}]),
        dict(CC=[{"email": "c@dest.example"}]),
        dict(CC=None),
        dict(BCC=[{"name": "x"}]),
        dict(BCC=[{"email": "bad"}]),
        dict(BCC=two),
        dict(BCC=two[:1]),
        dict(ReplyTo=[{"name": "x"}]),
        dict(ReplyTo=[{"email": "bad"}]),
        dict(ReplyTo=two),
        dict(ReplyTo=two[:1]),
        dict(TargetListID=None),
        dict(Personalization={"name": "Ann"}, HtmlContent="<p>Hello {{ name </p>"),
        dict(HtmlContent="<p>Hello {{ name }}</p>"),
        dict(Headers={"X-A": "b", "ARC-Seal": "i=1; cv=none"}),
        dict(Headers={"X-A": "b"}),
        dict(Tags=["ok"]),
        dict(TrackLinks="false"),
        dict(SendAt=None),
        dict(
            Attachments=[{"filename": "a.bin", "content": base64.b64encode(b"x" * 3000).decode()}]
        ),
        dict(Attachments=[{"filename": "a.txt", "content": B64}]),
    ]

    def answer():
        resp = client.post(
            "/api/v1/email",
            json={k: v for k, v in body.items() if v is not None},
            headers={"Authorization": f"Bearer {domain.key}"},
        )
        return 0 if resp.status_code == 200 else error_of(resp)

    with database.transaction() as s:
        s.get(Domain, domain.id).status = PENDING
    codes = [answer()]
    with database.transaction() as s:
        s.get(Domain, domain.id).status = ENABLED
    for mend in mends:
        codes.append(answer())
        body.update(mend)
    codes.append(answer())
    assert codes == [*DOCUMENTED_ORDER, 0]


SURROGATES = [
    # Lone surrogates (a JSON \ud800 escape that is not half of a pair) cannot be written into
    # a message: each is refused with its field's code.
    (dict(To=[{"email": "rcpt@dest.example", "name": "\ud800"}]), 19),
    (dict(CC=[{"email": "cc@dest.example", "name": "x\udfff"}]), 22),
    (dict(BCC=[{"email": "bcc@dest.example", "name": "\ud800"}]), 26),
    (dict(ReplyTo=[{"email": "r@dest.example", "name": "\ud800"}]), 30),
    (dict(From={"email": "news@example.com", "name": "News \ud800"}), 23),
    (dict(Subject="Hello \ud800"), 8),
    (dict(HtmlContent="<p>\ud800</p>"), 10),
    (dict(HtmlContent='<a href="https://x.example/\ud800">x</a>', TrackLinks="true"), 10),
    (dict(ContentType="plain", PlainContent="Hi \udc00"), 11),
    (dict(PlainContent="\ud800"), 11),  # a plain part sent along the HTML is checked too
    (dict(Headers={"X-A": "\ud800"}), 35),
    (dict(Attachments=[{"filename": "\ud800.txt", "content": B64}]), 39),
    # Characters the email package breaks a header line at, other than CR and LF.
    (dict(Headers={"X-A": "a\x1cb"}), 35),
    (dict(Headers={"X-A": "a\x0bb"}), 35),
    (
        dict(
            Attachments=[
                {
                    "filename": "a.png",
                    "content": B64,
                    "contentid": "a\x0cb",
                    "disposition": "inline",
                }
            ]
        ),
        39,
    ),
]


@pytest.mark.parametrize("changes, code", SURROGATES)
def test_what_could_not_be_written_into_the_message_is_refused(send, database, changes, code):
    resp = send(**changes)
    assert resp.status_code == 400
    assert error_of(resp) == code, resp.get_json()
    assert rows(database, Message) == []


def test_a_header_name_with_a_lone_surrogate_is_quoted_escaped(client, user, domain):
    """The answer names the header: with its lone surrogate escaped, since no response
    could be encoded with it (the JSON and XML envelopes of /api.php, /api/v1's list)."""
    changes = payload(Headers={"X-\ud800": "x"})
    for fmt in ("JSON", "XML"):
        resp = client.post(
            "/api.php",
            json={
                "Command": "EmailGateway.SendEmail",
                "APIKey": user.api_key,
                "DomainID": domain.id,
                "ResponseFormat": fmt,
                **changes,
            },
        )
        assert resp.status_code == 200
        answer = resp.get_data(as_text=True).replace("\\\\", "\\")  # JSON escapes the "\"
        assert "Invalid header X-\\ud800: the name" in answer
    resp = client.post(
        "/api/v1/email", json=changes, headers={"Authorization": f"Bearer {domain.key}"}
    )
    assert resp.status_code == 400 and error_of(resp) == 35


def test_a_surrogate_name_is_refused_through_api_php_too(client, user, domain, database):
    body = {
        "Command": "EmailGateway.SendEmail",
        "APIKey": user.api_key,
        "DomainID": domain.id,
        **payload(To=[{"email": "rcpt@dest.example", "name": "\ud800"}]),
    }
    answer = client.post("/api.php", json=body).get_json()
    assert (answer["Success"], answer["ErrorCode"]) == (False, 19)
    assert rows(database, Message) == []


def test_what_the_checks_accept_can_be_built_and_signed():
    """Random values from characters that have broken messages before, in each field: a
    send the checks accept is one the message builder and the DKIM signer take."""
    import random
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from commands.errors import CommandError
    from commands.sending.checks import check_send
    from core.settings import load_config
    from models.domains import ENABLED
    from mta import tracking
    from mta.message import Address, Attachment, MessageSpec, build_message
    from mta.signing import SigningKey, sign_message

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    keys = [SigningKey("sl.example.com", "key1", "ed25519", pem)]
    track = tracking.Tracking("https://t.example.com", b"k" * 32, "ab" * 16, True, True, True)
    config = load_config(environ={})
    domain = SimpleNamespace(status=ENABLED, name="example.com")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pieces = ["a", "é", " ", "\t", "\x00", "\x01", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]
    pieces += ["\ud800", "\udc00", "\U0001f600", "\ufeff", "=?", "?=", ":", ";", '"', "\\", "<"]
    pieces += [">", "(", ",", "@", "x" * 80, "y" * 500, "\r\n", "http://x.example/", "</body>"]
    pieces += ["<a href='http://h.example/", "'>"]
    rnd = random.Random(11)

    def text():
        return "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 6)))

    def person(email):
        return [{"email": email, "name": text()}]

    makers = {
        "To": lambda: person("r@dest.example"),
        "CC": lambda: person("c@dest.example"),
        "ReplyTo": lambda: person("reply@dest.example"),
        "From": lambda: {"email": "news@example.com", "name": text()},
        "Subject": text,
        "HTMLContent": text,
        "PlainContent": text,
        "Headers": lambda: {rnd.choice(["X-A", text()]): text()},
        "Tags": lambda: [text()],
        "Attachments": lambda: [
            {
                "filename": text() or "a",
                "content": B64,
                "type": rnd.choice([text(), "text/plain"]),
                "contentid": text(),
                "disposition": rnd.choice(["inline", "attachment"]),
            }
        ],
    }
    accepted = 0
    for _ in range(1500):
        name = rnd.choice(list(makers))
        params = {
            "Subject": "Hi",
            "ContentType": "html",
            "HTMLContent": "<p>x</p>",
            "From": {"email": "news@example.com", "name": "N"},
            "To": [{"email": "r@dest.example"}],
            name: makers[name](),
        }
        try:
            send = check_send(params, domain, config, now)
        except CommandError:
            continue
        accepted += 1
        for tracked in (None, track):
            html, text_part, extra = send.html, send.text, {}
            if tracked is not None:
                html, text_part, extra = tracking.apply(tracked, html, text_part)
            spec = MessageSpec(
                sender=Address(send.sender["email"], send.sender["name"]),
                to=[Address(r.email, r.name) for r in send.recipients if r.kind == "to"],
                cc=[Address(r.email, r.name) for r in send.recipients if r.kind == "cc"],
                reply_to=[Address(p["email"], p["name"]) for p in send.reply_to],
                subject=send.subject,
                html=html,
                text=text_part,
                attachments=[
                    Attachment(
                        a["filename"],
                        base64.b64decode(a["content"]),
                        a["type"],
                        a["disposition"],
                        a["contentid"],
                    )
                    for a in send.attachments
                ],
                headers=send.headers,
                tags=send.tags,
                message_id="<m@example.com>",
                date=now,
                extra_headers=extra,
            )
            sign_message(build_message(spec), keys)  # raises for a message it cannot take
    assert accepted > 300  # the values are not all refused


def test_a_header_name_with_a_space_before_its_colon_is_refused_clearly(send):
    resp = send(Headers={"From ": "boss@example.com"})
    assert error_of(resp) == 35
    assert "`From :` form is refused" in resp.get_json()["Errors"][0]["Message"]


def test_a_trace_header_is_refused_with_41_and_says_why(send):
    resp = send(Headers={"ARC-Seal": "i=1"})
    assert error_of(resp) == 41
    assert resp.get_json()["Errors"][0]["Message"] == (
        "Invalid header ARC-Seal: only the servers a message passes through write this "
        "header (a trace or authentication header), so a sender may not set it"
    )
