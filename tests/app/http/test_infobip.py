"""Infobip's email send (POST /email/2/send, /email/3/send, /email/4/messages): answers,
every 400 and 401 shape, placeholders, templates, preserveRecipients and what is stored."""

import base64
import io
import json

import pytest
from sqlalchemy import select
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from models import Delivery, InfobipMessage, Message

V3 = "/email/3/send"
V4 = "/email/4/messages"
UNAUTHORIZED = {
    "requestError": {
        "serviceException": {"messageId": "UNAUTHORIZED", "text": "Invalid login details"}
    }
}
PENDING_ACCEPTED = {
    "groupId": 1,
    "groupName": "PENDING",
    "id": 26,
    "name": "PENDING_ACCEPTED",
    "description": "Message accepted, pending for delivery.",
}


def app_key(key):
    return {"Authorization": f"App {key}"}


def basic(username, password):
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def form(**changes):
    f = {
        "from": "News <news@example.com>",
        "to": "ann@dest.example",
        "subject": "Hi",
        "text": "Hello",
    }
    f.update(changes)
    return {k: v for k, v in f.items() if v is not None}


def validation_errors(resp):
    assert resp.status_code == 400, resp.get_data(as_text=True)
    exc = resp.get_json()["requestError"]["serviceException"]
    assert exc["messageId"] == "BAD_REQUEST" and exc["text"] == "Bad request"
    return exc["validationErrors"]


@pytest.fixture
def domain(active_domain):
    return active_domain()


def stored(database, message_id=None):
    with database.transaction(readonly=True) as s:
        q = (
            select(InfobipMessage, Delivery, Message)
            .join(Delivery, Delivery.id == InfobipMessage.delivery_id)
            .join(Message, Message.id == Delivery.message_id)
        )
        if message_id is not None:
            q = q.where(InfobipMessage.message_id == message_id)
        rows = s.execute(q.order_by(Delivery.id)).all()
        s.expunge_all()
        return rows


def test_a_multipart_send_to_two_addresses(client, domain, database):
    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data={
            **form(to=["ann@dest.example", "bob@dest.example"]),
            "attachment": [(io.BytesIO(b"hello"), "a.txt", "text/plain")],
            "bulkId": "bulk-1",
            "notifyUrl": "https://hooks.example/dlr",
            "notifyContentType": "application/json",
            "callbackData": "cb",
            "intermediateReport": "true",
            "trackingUrl": "https://hooks.example/track",
            "ipPoolId": "pool",
            "landingPageId": "lp",
            "clientPriority": "HIGH",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200, resp.get_json()
    answer = resp.get_json()
    assert answer["bulkId"] == "bulk-1"
    assert [m["to"] for m in answer["messages"]] == ["ann@dest.example", "bob@dest.example"]
    assert all(m["status"] == PENDING_ACCEPTED for m in answer["messages"])
    rows = stored(database)
    assert [r.InfobipMessage.message_id for r in rows] == [
        m["messageId"] for m in answer["messages"]
    ]
    first = rows[0].InfobipMessage
    assert first.bulk_id == "bulk-1" and first.callback_data == "cb"
    assert first.notify_url == "https://hooks.example/dlr" and first.intermediate_report
    assert json.loads(first.ignored) == {
        "ipPoolId": "pool",
        "landingPageId": "lp",
        "clientPriority": "HIGH",
    }
    assert rows[0].Message.source == "infobip"
    assert len({r.Message.id for r in rows}) == 2


def test_version_2_answers_pending_enroute_and_version_4_its_json(client, domain):
    resp = client.post("/email/2/send", headers=app_key(domain.key), data=form())
    assert resp.status_code == 200, resp.get_json()
    ((m),) = resp.get_json()["messages"]
    assert m["status"]["id"] == 7 and m["status"]["name"] == "PENDING_ENROUTE"
    resp = client.post(
        V4,
        headers=app_key(domain.key),
        json={
            "messages": [
                {
                    "sender": "News <news@example.com>",
                    "destinations": [
                        {
                            "to": [
                                {"destination": "ann@dest.example", "messageId": "m-ann"},
                                {"destination": "bob@dest.example"},
                            ]
                        }
                    ],
                    "content": {"subject": "Hi", "text": "Hello"},
                    "webhooks": {
                        "delivery": {"url": "https://hooks.example/dlr", "notify": False},
                        "callbackData": "cb4",
                    },
                }
            ],
            "options": {"schedule": {"bulkId": "b4"}},
        },
    )
    assert resp.status_code == 200, resp.get_json()
    answer = resp.get_json()
    assert answer["bulkId"] == "b4"
    ann, bob = answer["messages"]
    assert ann == {
        "messageId": "m-ann",
        "status": PENDING_ACCEPTED,
        "destination": "ann@dest.example",
    }
    assert bob["destination"] == "bob@dest.example" and bob["messageId"]


def test_basic_auth_with_the_users_password(client, domain, user):
    resp = client.post(V3, headers=basic(user.username, user.password), data=form())
    assert resp.status_code == 200, resp.get_json()
    resp = client.post(V3, headers=basic(user.username, "wrong password"), data=form())
    assert resp.status_code == 401 and resp.get_json() == UNAUTHORIZED


@pytest.mark.parametrize(
    "headers",
    [
        {},
        app_key("nope"),
        {"Authorization": "App "},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
        {"Authorization": "Digest x"},
    ],
)
def test_401(client, domain, headers):
    resp = client.post(V3, headers=headers, data=form())
    assert resp.status_code == 401 and resp.get_json() == UNAUTHORIZED
    assert resp.content_type == "application/json"
    resp = client.post(V4, headers=headers, json={"messages": []})
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["errorCode"] == "E401" and body["violations"] == [] and body["resources"] == []


def test_every_problem_is_named(client, domain):
    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data={
            "from": "not an address",
            "to": ["ok@dest.example", "bad", '{"to": "x@dest.example", "placeholders": [1]}'],
            "cc": "{not json",
            "subject": "s",
            "text": "t",
            "track": "maybe",
            "sendAt": "yesterday-ish",
            "headers": "[1]",
            "defaultPlaceholders": "nope",
            "callbackData": "x" * 4001,
            "notifyUrl": "ftp://x",
            "notifyContentType": "text/html",
            "templateId": "abc",
            "bulkId": "b" * 101,
            "messageId": "m" * 201,
        },
    )
    errors = validation_errors(resp)
    for name in [
        "from",
        "to[1]",
        "to[2].placeholders",
        "cc",
        "track",
        "sendAt",
        "headers",
        "defaultPlaceholders",
        "callbackData",
        "notifyUrl",
        "notifyContentType",
        "templateId",
        "bulkId",
        "messageId",
    ]:
        assert name in errors, (name, errors)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"to": None}, "to"),
        ({"from": None}, "from"),
        ({"subject": None}, "subject"),
        ({"text": None}, "text"),
        ({"from": "a@elsewhere.example"}, "from"),
        ({"to": [f"a{i}@dest.example" for i in range(1001)]}, "to"),
        ({"sendAt": "2999-01-01T00:00:00.000+00:00"}, "sendAt"),
        ({"templateId": "999999"}, "templateId"),
        ({"subject": "a\nb"}, "subject"),
        ({"html": "<p>{% if x %}never closed</p>"}, "html"),
        ({"text": "{% for x in y %}{% endfor %}"}, "text"),
        ({"subject": "{{ a.b }}"}, "subject"),
        ({"headers": '{"DKIM-Signature": "x"}'}, "headers"),
        ({"to": '{"to": "a@dest.example", "placeholders": {"a-b": 1}}'}, "to"),
        ({"replyTo": "nope"}, "replyTo"),
    ],
)
def test_each_400(client, domain, changes, field):
    resp = client.post(V3, headers=app_key(domain.key), data=form(**changes))
    errors = validation_errors(resp)
    assert field in errors, errors


def test_version_4_problems_are_violations_with_property_paths(client, domain):
    resp = client.post(
        V4,
        headers=app_key(domain.key),
        json={
            "messages": [
                {
                    "sender": "bad",
                    "destinations": [{"to": [{"destination": "nope"}]}],
                    "content": {"subject": "s", "text": "t", "headers": "x"},
                }
            ],
            "options": {"tracking": {"track": "sometimes"}},
        },
    )
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["errorCode"] == "E400"
    properties = {v["property"] for v in body["violations"]}
    assert {
        "messages[0].sender",
        "messages[0].destinations[0].to[0].destination",
        "messages[0].content.headers",
        "options.tracking.track",
    } <= properties, properties


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[1]", b'{"messages": "x"}', b"\xff\xfe", b"[" * 5000]
)
def test_bad_json_bodies_are_400s(client, domain, data):
    resp = client.post(V4, headers=app_key(domain.key), data=data)
    assert resp.status_code == 400 and resp.get_json()["errorCode"] == "E400"


def test_a_part_whose_name_is_not_utf8_is_passed_over(client, domain):
    """Seen: 500 (schemathesis), the part's name read as None."""
    data = (
        b'--x\r\nContent-Disposition: form-data; name="\xf4\x85\x9e\xa4"\r\n\r\n{}\r\n'
        b'--x\r\nContent-Disposition: form-data; name="to"\r\n\r\n\xc3\xbc\r\n--x--\r\n'
    )
    for route in ("/email/2/send", V3):
        resp = client.post(
            route,
            headers={**app_key(domain.key), "Content-Type": "multipart/form-data; boundary=x"},
            data=data,
        )
        assert resp.status_code == 400, resp.get_data()
        assert "validationErrors" in resp.get_json()["requestError"]["serviceException"]


@pytest.mark.parametrize(
    "data, content_type",
    [
        (b"", "multipart/form-data; boundary=x"),
        (b"--x\r\nContent-Disposition: form-data\r\n\r\nbroken", "multipart/form-data; boundary=x"),
        (b"to=%ff%fe", "application/x-www-form-urlencoded"),
        (b"{}", "application/json"),
    ],
)
def test_unreadable_forms_are_400s(client, domain, data, content_type):
    resp = client.post(V3, headers={**app_key(domain.key), "Content-Type": content_type}, data=data)
    assert resp.status_code == 400
    assert "validationErrors" in resp.get_json()["requestError"]["serviceException"]


def test_other_methods_paths_and_sizes_answer_in_infobips_shape(client, domain, make_app):
    resp = client.get(V3, headers=app_key(domain.key))
    assert resp.status_code == 405
    assert resp.get_json()["requestError"]["serviceException"]["messageId"] == "BAD_REQUEST"
    resp = client.post("/email/9/nothing", headers=app_key(domain.key))
    assert resp.status_code == 404
    assert resp.get_json()["requestError"]["serviceException"]["messageId"] == "NOT_FOUND"
    resp = client.get(V4)
    assert resp.status_code == 405 and resp.get_json()["errorCode"] == "E405"
    small = make_app(http__max_body_bytes=1000).client
    resp = small.post(V3, headers=app_key(domain.key), data=form(text="x" * 5000))
    assert resp.status_code == 413
    assert "serviceException" in resp.get_json()["requestError"]


def test_field_names_in_any_case_node_indexes_and_client_booleans(client, domain, database):
    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data={
            "FROM": "news@example.com",
            "to['0']": "ann@dest.example",
            "to['1']": "bob@dest.example",
            "cc['0']": "cy@dest.example",
            "Subject": "s",
            "HTML": "<p>x</p>",
            "text": "undefined",
            "trackclicks": "False",
            "TrackOpens": "True",
            "preserverecipients": "true",
            "replyto": "help@example.com",
        },
    )
    assert resp.status_code == 200, resp.get_json()
    assert [m["to"] for m in resp.get_json()["messages"]] == [
        "ann@dest.example",
        "bob@dest.example",
        "cy@dest.example",
    ]
    rows = stored(database)
    assert len({r.Message.id for r in rows}) == 1  # preserveRecipients: one message
    assert [r.Delivery.kind for r in rows] == ["to", "to", "cc"]
    assert len({r.InfobipMessage.message_id for r in rows}) == 3


@pytest.mark.parametrize(
    "when",
    ["2030-01-02T03:04:05.000+00:00", "2030-01-02T03:04:05.123Z", "2030-01-02T03:04:05.000+0000"],
)
def test_send_at_formats(client, domain, database, clock, when):
    from datetime import UTC, datetime

    clock.freeze(datetime(2030, 1, 1, tzinfo=UTC))
    resp = client.post(V3, headers=app_key(domain.key), data=form(sendAt=when))
    assert resp.status_code == 200, resp.get_json()
    (row,) = stored(database)
    assert row.Message.send_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_placeholders_per_recipient_over_the_defaults(client, domain, database):
    from models.payload import decode_payload

    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data=form(
            to=[
                json.dumps({"to": "ann@dest.example", "placeholders": {"name": "Ann"}}),
                "bob@dest.example",
            ],
            subject="Hi {{name}}",
            text="Code {{code}}",
            defaultPlaceholders=json.dumps({"name": "friend", "code": "C"}),
        ),
    )
    assert resp.status_code == 200, resp.get_json()
    rows = stored(database)
    values = {
        r.Delivery.recipient: decode_payload(r.Message.payload).personalization.values for r in rows
    }
    assert values == {
        "ann@dest.example": {"name": "Ann", "code": "C"},
        "bob@dest.example": {"name": "friend", "code": "C"},
    }


def test_a_template_by_id(client, api, user, domain, make_user):
    made = api(
        "EmailGateway.CreateTemplate",
        APIKey=user.api_key,
        Name="t",
        Subject="For {{name}}",
        PlainContent="Hi {{name}}",
    )
    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data={
            "from": "news@example.com",
            "to": "a@dest.example",
            "templateId": str(made["TemplateID"]),
        },
    )
    assert resp.status_code == 200, resp.get_json()
    other = make_user("other")
    theirs = api(
        "EmailGateway.CreateTemplate", APIKey=other.api_key, Name="t", Subject="s", PlainContent="x"
    )
    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data={
            "from": "news@example.com",
            "to": "a@dest.example",
            "templateId": str(theirs["TemplateID"]),
        },
    )
    assert "templateId" in validation_errors(resp)


def test_a_user_key_sends_only_from_the_users_domains(client, domain, user, make_user):
    resp = client.post(V3, headers=app_key(user.api_key), data=form())
    assert resp.status_code == 200
    other = make_user("other")
    resp = client.post(V3, headers=app_key(other.api_key), data=form())
    assert validation_errors(resp) == {
        "from": ["The sender's domain is not one of your enabled domains."]
    }


def test_a_suppressed_recipient_is_accepted_and_never_sent(client, domain, api, user, database):
    api(
        "Suppression.Add", APIKey=user.api_key, DomainID=domain.id, EmailAddress="gone@dest.example"
    )
    resp = client.post(
        V3, headers=app_key(domain.key), data=form(to=["ok@dest.example", "gone@dest.example"])
    )
    assert resp.status_code == 200
    assert [r.Delivery.status for r in stored(database)] == ["queued", "suppressed"]


def test_the_rate_limit_answers_429(make_app, active_domain):
    call = make_app(ratelimit__requests=1)
    d = active_domain()
    first = call.client.post(V3, headers=app_key(d.key), data=form())
    second = call.client.post(V3, headers=app_key(d.key), data=form())
    assert first.status_code == 200
    assert second.status_code == 429
    exc = second.get_json()["requestError"]["serviceException"]
    assert exc["messageId"] == "TOO_MANY_REQUESTS"
    assert int(second.headers["Retry-After"]) > 0


def test_the_quota_answers_403(make_app, active_domain):
    call = make_app(sending__quota=1)
    d = active_domain()
    resp = call.client.post(
        V3, headers=app_key(d.key), data=form(to=["a@dest.example", "b@dest.example"])
    )
    assert resp.status_code == 403
    assert resp.get_json()["requestError"]["serviceException"]["messageId"] == "FORBIDDEN"


@pytest.mark.parametrize(
    "where",
    [
        '"webhooks": {"callbackData": "\\ud800"}',
        '"content": {"subject": "\\ud800", "text": "t"}',
        '"options": {"campaignReferenceId": "\\udfff"}',
        '"content": {"subject": "s", "text": "t", "ampHtml": "\\ud800"}',
    ],
)
def test_lone_surrogates_are_refused_or_kept_escaped_never_a_500(client, domain, where):
    body = (
        '{"messages": [{"sender": "news@example.com", '
        '"destinations": [{"to": [{"destination": "a@dest.example"}]}], '
        '"content": {"subject": "s", "text": "t"}, ' + where + "}]}"
    )
    resp = client.post(
        V4, headers={**app_key(domain.key), "Content-Type": "application/json"}, data=body
    )
    assert resp.status_code in (200, 400), resp.get_data(as_text=True)


def test_recorded_only_fields_are_kept_bounded(client, domain, database):
    resp = client.post(V3, headers=app_key(domain.key), data=form(ampHtml="<p>é</p>" * 5000))
    assert resp.status_code == 200
    (row,) = stored(database)
    assert len(json.loads(row.InfobipMessage.ignored)["ampHtml"]) == 4000


def test_basic_auth_shares_the_failed_login_throttle(make_app, active_domain, user):
    call = make_app(security__login_failures_per_user=2)
    active_domain()
    for _ in range(2):
        resp = call.client.post(V3, headers=basic(user.username, "wrong"), data=form())
        assert resp.status_code == 401
    resp = call.client.post(V3, headers=basic(user.username, user.password), data=form())
    assert resp.status_code == 429
    assert resp.get_json()["requestError"]["serviceException"]["messageId"] == "TOO_MANY_REQUESTS"
    login = call("User.Login", Username=user.username, Password=user.password)
    assert login["Success"] is False  # User.Login counts the same failures


def test_a_thousand_recipients_and_a_large_part_in_one_multipart_form(client, domain):
    # Encoded in memory: the test client would spool a body this large to a temporary file.
    boundary, body = encode_multipart(
        MultiDict(
            [
                *form(html="<p>x</p>" * 80_000).items(),
                *(("to", f"r{i}@dest.example") for i in range(1, 1000)),
                ("attachment", FileStorage(io.BytesIO(b"a"), "a.txt")),
            ]
        )
    )
    resp = client.post(
        V3,
        headers=app_key(domain.key),
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    assert len(resp.get_json()["messages"]) == 1000


def test_a_part_with_an_unreadable_name_is_ignored(client, domain):
    """A part whose name's closing quote is escaped (``name="a\\"``) has no name for
    werkzeug: it is skipped like an unknown field, never a 500."""
    boundary = "b0undary"
    parts = [
        ('name="a\\"', "{}"),
        ('name="from"', "news@example.com"),
        ('name="to"', "ann@dest.example"),
        ('name="subject"', "Hi"),
        ('name="text"', "Hello"),
    ]
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; {n}\r\n\r\n{v}\r\n".encode()
            for n, v in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    resp = client.post(
        V3,
        data=body,
        headers={
            **app_key(domain.key),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)


@pytest.mark.parametrize(
    "field",
    ["bulkId", "messageId", "callbackData", "subject", "applicationId", "campaignReferenceId"],
)
def test_a_nul_in_a_kept_field_is_refused_or_dropped_never_a_500(client, domain, field):
    """Seen: 500 on PostgreSQL, whose text cannot hold NUL."""
    data = {"from": "news@example.com", "to": "a@dest.example", "subject": "s", "text": "t"}
    data[field] = "a\x00b"
    resp = client.post(V3, headers=app_key(domain.key), data=data)
    assert resp.status_code in (200, 400), resp.get_data()
