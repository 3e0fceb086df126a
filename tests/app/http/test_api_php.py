"""/api.php: bodies, names, envelopes, generic errors, transactions and the request log."""

import json
import xml.etree.ElementTree as ET

from marshmallow import fields
from sqlalchemy import func, select

from commands.errors import CommandError
from commands.registry import Auth, command
from commands.schema import CommandSchema, param
from commands.users import create_user
from models import User


class _HalfDoneSchema(CommandSchema):
    Username = param(fields.String(required=True), missing=(1, "Missing Username"))


@command("Test.HalfDone", schema=_HalfDoneSchema, auth=Auth.USER)
def _half_done(ctx, Username):
    """Writes a row, then fails: the row must not survive."""
    create_user(ctx.db, Username, "long enough password")
    raise CommandError(7, "failed after writing")


@command("Test.Boom", schema=CommandSchema, auth=Auth.PUBLIC)
def _boom(ctx):
    raise RuntimeError("secret internals")


def login(client, user, **kw):
    body = client.post(
        "/api.php",
        json={"Command": "User.Login", "Username": user.username, "Password": user.password, **kw},
    ).get_json()
    assert body["Success"] is True, body
    return body["SessionID"]


def test_json_body(client, user):
    sid = login(client, user)
    resp = client.post("/api.php", json={"Command": "User.APIKey.List", "SessionID": sid})
    body = resp.get_json()
    assert resp.status_code == 200
    assert body["Success"] is True and body["ErrorCode"] == 0
    assert [k["Key"] for k in body["APIKeys"]] == [user.api_key]


def test_json_body_without_content_type_and_labelled_as_form(client, user):
    raw = json.dumps(
        {"Command": "User.Login", "Username": user.username, "Password": user.password}
    )
    for ctype in (None, "application/x-www-form-urlencoded", "text/plain"):
        resp = client.post("/api.php", data=raw, content_type=ctype)
        assert resp.get_json()["Success"] is True, ctype


def test_form_body(client, user):
    resp = client.post("/api.php", data={"Command": "User.APIKey.List", "APIKey": user.api_key})
    assert resp.get_json()["APIKeys"][0]["Key"] == user.api_key


def test_form_body_without_content_type(client, user):
    resp = client.post(
        "/api.php", data=f"Command=User.APIKey.List&APIKey={user.api_key}", content_type=None
    )
    assert resp.get_json()["Success"] is True


def test_multipart_body(client, user):
    resp = client.post(
        "/api.php",
        data={"Command": "User.APIKey.List", "APIKey": user.api_key},
        content_type="multipart/form-data",
    )
    assert resp.get_json()["Success"] is True


def test_get_query_string(client, user):
    resp = client.get(
        "/api.php", query_string={"Command": "User.APIKey.List", "APIKey": user.api_key}
    )
    assert resp.get_json()["Success"] is True


def test_command_and_parameter_names_are_case_insensitive(client, user):
    body = client.post(
        "/api.php",
        json={"command": "user.login", "USERNAME": user.username, "password": user.password},
    ).get_json()
    assert body["Success"] is True
    body = client.post(
        "/api.php", data={"COMMAND": "USER.APIKEY.LIST", "apikey": user.api_key}
    ).get_json()
    assert body["Success"] is True


def test_xml_response(client, user):
    resp = client.post(
        "/api.php",
        data={"Command": "User.APIKey.List", "APIKey": user.api_key, "ResponseFormat": "XML"},
    )
    assert resp.mimetype == "text/xml"
    root = ET.fromstring(resp.data)
    assert root.tag == "response"
    assert root.findtext("Success") == "1"
    assert root.findtext("ErrorCode") == "0"
    assert root.findtext("APIKeys/item/Key") == user.api_key


def test_xml_error_response(client):
    resp = client.get(
        "/api.php", query_string={"Command": "User.Login", "Username": "x", "responseformat": "xml"}
    )
    root = ET.fromstring(resp.data)
    assert root.findtext("Success") == ""
    assert root.findtext("ErrorCode") == "2"
    assert root.findtext("ErrorText") == "Missing required parameter: Password"


def test_unknown_command_is_http_400(client):
    resp = client.post("/api.php", json={"Command": "EmailGateway.NoSuchThing"})
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["ErrorCode"] == 100003 and body["Success"] is False
    assert "EmailGateway.NoSuchThing" in body["ErrorText"]


def test_missing_command_is_http_400(client):
    resp = client.post("/api.php", data={"Username": "x"})
    assert resp.status_code == 400
    assert resp.get_json()["ErrorCode"] == 100003
    assert "Command" in resp.get_json()["ErrorText"]


def test_unreadable_json_is_http_400(client):
    for raw, ctype in (
        ('{"Command": "User.Login",', "application/json"),
        ("{not json", None),
        ("[1, 2]", "application/json"),
        (b"{\xff\xfe}", "application/json"),
    ):
        resp = client.post("/api.php", data=raw, content_type=ctype)
        assert resp.status_code == 400, raw
        body = resp.get_json()
        assert body["ErrorCode"] == 100000 and "JSON" in body["ErrorText"], raw


def test_authentication_failures(client, user):
    for creds in (
        {},
        {"SessionID": "nope"},
        {"APIKey": "nope"},
        {"APIKey": ["a", "b"]},
        {"SessionID": "", "APIKey": "  "},
    ):
        body = client.post("/api.php", json={"Command": "User.APIKey.List", **creds}).get_json()
        assert body["ErrorCode"] == 99998 and body["Success"] is False, creds


def test_either_credential_is_enough(client, user):
    sid = login(client, user)
    for creds in (
        {"SessionID": sid},
        {"APIKey": user.api_key},
        {"SessionID": "stale", "APIKey": user.api_key},
        {"SessionID": sid, "APIKey": "wrong"},
    ):
        body = client.post("/api.php", json={"Command": "User.APIKey.List", **creds}).get_json()
        assert body["Success"] is True, creds


def test_unexpected_error_is_a_generic_500_with_request_id(client, postern_log):
    resp = client.post("/api.php", json={"Command": "Test.Boom"})
    assert resp.status_code == 500
    body = resp.get_json()
    assert body["Success"] is False and body["ErrorCode"] == 100500
    rid = body["RequestID"]
    assert rid and rid in body["ErrorText"] and resp.headers["X-Request-ID"] == rid
    assert "secret internals" not in resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)
    logged = [r for r in postern_log if getattr(r, "request_id", None) == rid]
    assert any(r.exc_info for r in logged)


def test_a_failing_command_leaves_nothing_behind(client, user, database):
    body = client.post(
        "/api.php", json={"Command": "Test.HalfDone", "APIKey": user.api_key, "Username": "ghost"}
    ).get_json()
    assert body["ErrorCode"] == 7
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1


def test_request_log_line_has_no_secrets(client, user, postern_log):
    sid = login(client, user)
    client.get(
        "/api.php",
        query_string={"Command": "User.APIKey.List", "APIKey": user.api_key, "SessionID": sid},
        headers={"X-Request-ID": "req-0123456789"},
    )
    lines = [r for r in postern_log if r.getMessage() == "request"]
    assert len(lines) == 2
    last = vars(lines[-1])
    assert last["method"] == "GET" and last["path"] == "/api.php" and last["status"] == 200
    assert last["request_id"] == "req-0123456789"
    assert isinstance(last["duration_ms"], float)
    from app.logs import JSONFormatter

    text = "\n".join(JSONFormatter().format(r) for r in postern_log)
    for secret in (user.api_key, sid, user.password):
        assert secret not in text


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"Status": "ok", "Database": "ok"}


def test_oversized_body_is_refused(flask_app, base_config):
    from app.http.factory import create_app

    small = create_app(
        base_config.replace(http__max_body_bytes=1000), flask_app.extensions["postern.gateway"]
    )
    resp = small.test_client().post(
        "/api.php", data={"Command": "User.Login", "Username": "x" * 5000}
    )
    assert resp.status_code == 413
    assert resp.get_json()["Success"] is False


def test_a_lone_surrogate_in_a_send_is_refused_with_its_field_code(client, user, active_domain):
    domain = active_domain()
    body = (
        f'{{"Command": "EmailGateway.SendEmail", "APIKey": "{user.api_key}",'
        f' "DomainID": {domain.id}, "Subject": "Hi \\ud800", "ContentType": "plain",'
        ' "PlainContent": "Hello", "From": {"email": "news@example.com", "name": "News"},'
        ' "To": [{"email": "rcpt@dest.example", "name": "Rcpt"}]}'
    )
    answer = client.post("/api.php", data=body, content_type="application/json").get_json()
    assert (answer["Success"], answer["ErrorCode"]) == (False, 8)
    assert "lone surrogate" in answer["ErrorMessage"]


def test_a_users_commands_are_limited_per_period(make_app, make_user, clock):
    """ratelimit.user_requests commands a user_period per user, reads, writes and refused
    parameters alike; then 429 with error 100004 in the envelope, and nothing is kept."""
    from datetime import UTC, datetime, timedelta

    start = datetime.fromtimestamp(1_800_000_000, UTC)  # a window of 60 s begins there
    clock.freeze(start)
    call = make_app(ratelimit__user_requests=3)
    alice, bob = make_user("alice"), make_user("bob")
    assert call("EmailGateway.GetDomains", APIKey=alice.api_key)["Success"] is True
    assert call("EmailGateway.AddDomain", APIKey=alice.api_key, DomainName="a.example")["Success"]
    assert call("EmailGateway.GetDomain", APIKey=alice.api_key)["ErrorCode"] == 1
    resp = call.client.post(
        "/api.php",
        json={"Command": "EmailGateway.AddDomain", "APIKey": alice.api_key, "DomainName": "b.ex"},
    )
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "60"
    body = resp.get_json()
    assert (body["Success"], body["ErrorCode"]) == (False, 100004)
    assert body["ErrorText"] == "Too many requests. Wait for 60 seconds for another 3 attempts."
    # XML says the same.
    resp = call.client.post(
        "/api.php",
        data={
            "Command": "EmailGateway.GetDomains",
            "APIKey": alice.api_key,
            "ResponseFormat": "XML",
        },
    )
    assert resp.status_code == 429 and b"<ErrorCode>100004</ErrorCode>" in resp.data
    # Another user is not limited by alice's commands; login is not a user's command.
    assert call("EmailGateway.GetDomains", APIKey=bob.api_key)["Success"] is True
    assert call("User.Login", Username="alice", Password=alice.password)["Success"] is True
    clock.freeze(start + timedelta(seconds=60))
    domains = call("EmailGateway.GetDomains", APIKey=alice.api_key)["Domains"]
    assert [d["DomainName"] for d in domains] == ["a.example"]  # b.ex was not kept
