"""Hostile input over HTTP: each case once answered 500; now a 4xx (or a clean answer) in its
API's shape, one bounded log line, and well-formed XML."""

from __future__ import annotations

import json
import logging

import pytest
from lxml import etree

from app.http.envelope import to_xml
from app.logs import MAX_LINE, JSONFormatter, TextFormatter


def _post_json(client, path, text, **kw):
    return client.post(path, data=text, content_type="application/json", **kw)


def _no_traceback(records):
    for r in records:
        assert r.exc_info is None, r.getMessage()
        assert "Traceback" not in r.getMessage()


# -- numbers that are digits to Python but not to us -----------------------------------------


@pytest.mark.parametrize("value", ["²", "١", "١٢", "𝟙", "1" * 5000, "0" * 30 + "1"])
def test_a_domain_id_of_other_digits_is_not_found(client, user, active_domain, value, postern_log):
    active_domain()
    resp = client.post(
        "/api.php",
        json={"Command": "EmailGateway.GetDomain", "APIKey": user.api_key, "DomainID": value},
    )
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["Success"] is False and body["ErrorCode"] in (1, 2), body
    _no_traceback(postern_log)


# -- dates whose arithmetic overflows --------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "EmailGateway.DomainStats",
        "EmailGateway.DailySeries",
        "EmailGateway.AggrEvents",
        "EmailGateway.GetEvents",
    ],
)
@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01", "9999-12-31"),
        ("1970-01-01", "9998-12-31"),
        ("1970-01-01 00:00:00", "9998-12-31 23:59:59"),
        ("0", "253370764799"),
        ("-1", "99999999999999999999"),
        ("9999-12-31", None),
        (None, "1970-01-01"),
    ],
)
def test_far_apart_dates_are_answered(
    client, user, active_domain, command, start, end, postern_log
):
    domain = active_domain()
    params = {"Command": command, "APIKey": user.api_key, "DomainID": domain.id}
    if start is not None:
        params["StartDate"] = start
    if end is not None:
        params["EndDate"] = end
    resp = client.post("/api.php", json=params)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert isinstance(body["Success"], bool)
    if not body["Success"]:
        assert body["ErrorCode"] in (3, 4, 5, 6, 7), body
    _no_traceback(postern_log)


def test_the_comparison_period_of_a_long_period_starts_at_the_epoch(client, user, active_domain):
    domain = active_domain()
    body = client.post(
        "/api.php",
        json={
            "Command": "EmailGateway.DomainStats",
            "APIKey": user.api_key,
            "DomainID": domain.id,
            "StartDate": "1970-01-01",
            "EndDate": "9998-12-31",
        },
    ).get_json()
    assert body["Success"] is True, body
    assert body["StartDate"] == "1970-01-01 00:00:00"
    assert body["EndDate"] == "9998-12-31 23:59:59"


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/api/v1/events", {"StartDate": "0001-01-01", "EndDate": "9999-12-31"}),
        ("/api/v1/events", {"StartDate": "99999999999999999999"}),
    ],
)
def test_far_apart_dates_on_v1(client, active_domain, route, params, postern_log):
    domain = active_domain()
    resp = client.get(route, query_string=params, headers={"Authorization": f"Bearer {domain.key}"})
    assert resp.status_code in (200, 400), resp.get_data(as_text=True)
    if resp.status_code == 400:
        assert resp.get_json()["Errors"][0]["Code"] in (6, 7)
    _no_traceback(postern_log)


# -- lone surrogates, in fields and in the texts echoed back ---------------------------------

SEND = {
    "Subject": "Hi",
    "ContentType": "html",
    "HTMLContent": "<p>Hello</p>",
    "PlainContent": "Hello",
    "From": {"email": "news@example.com", "name": "News"},
    "To": [{"email": "rcpt@dest.example", "name": "Rcpt"}],
}


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("Subject", "Hi \ud800", 8),
        ("HTMLContent", "<p>\udfff</p>", 10),
        ("PlainContent", "x\ud83d", 11),
        ("Headers", {"X-Thing": "a\udc00"}, 35),
        ("Headers", {"X-\ud800": "a"}, 35),
        ("Tags", ["a\ud800"], 36),
        ("Attachments", [{"filename": "a\ud800", "content": "aGk="}], 39),
    ],
)
@pytest.mark.parametrize("transport", ["api.php", "v1", "api.php XML"])
def test_a_lone_surrogate_in_a_send(client, user, active_domain, field, value, code, transport):
    domain = active_domain()
    fields = {**SEND, field: value}
    if transport == "v1":
        resp = _post_json(
            client,
            "/api/v1/email",
            json.dumps(fields),
            headers={"Authorization": f"Bearer {domain.key}"},
        )
        assert resp.status_code == 400, resp.get_data(as_text=True)
        errors = json.loads(resp.get_data())["Errors"]
        assert errors[0]["Code"] == code
        assert "\ud800" not in errors[0]["Message"]
        return
    fields |= {"Command": "EmailGateway.SendEmail", "APIKey": user.api_key, "DomainID": domain.id}
    if transport.endswith("XML"):
        fields["ResponseFormat"] = "XML"
    resp = _post_json(client, "/api.php", json.dumps(fields))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    if transport.endswith("XML"):
        root = etree.fromstring(resp.get_data())
        assert root.findtext("ErrorCode") == str(code)
    else:
        assert json.loads(resp.get_data())["ErrorCode"] == code


@pytest.mark.parametrize("fmt", ["JSON", "XML"])
def test_a_lone_surrogate_echoed_in_an_error_text(client, fmt, postern_log):
    resp = _post_json(
        client, "/api.php", json.dumps({"Command": "Nope\ud800\x01", "ResponseFormat": fmt})
    )
    assert resp.status_code == 400
    raw = resp.get_data()
    raw.decode("utf-8")  # strict: what was sent is UTF-8
    if fmt == "XML":
        root = etree.fromstring(raw)
        assert root.findtext("ErrorCode") == "100003"
        assert root.findtext("ErrorText") == "Unknown command: Nope\ufffd\ufffd"
    else:
        assert json.loads(raw)["ErrorText"] == "Unknown command: Nope\ufffd\x01"
    _no_traceback(postern_log)


def test_a_lone_surrogate_in_a_v1_error_text(client, active_domain):
    domain = active_domain()
    resp = _post_json(
        client,
        "/api/v1/webhooks",
        json.dumps({"Event": "nope\ud800", "WebhookURL": "http://127.0.0.1:9/"}),
        headers={"Authorization": f"Bearer {domain.key}"},
    )
    assert resp.status_code == 400
    assert b"\\ud800" not in resp.get_data()
    assert json.loads(resp.get_data())["Errors"][0]["Code"] == 3


# -- nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api.php", "/api/v1/email", "/api/v1/webhooks"])
@pytest.mark.parametrize(
    "body",
    [
        "[" * 100000,
        '{"a":' * 100000,
        '{"Command": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"a":' + "[" * 100 + "]" * 100 + "}",
    ],
)
def test_deeply_nested_json_is_refused(client, active_domain, path, body, postern_log):
    domain = active_domain()
    resp = _post_json(client, path, body, headers={"Authorization": f"Bearer {domain.key}"})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    if path == "/api.php":
        assert resp.get_json()["ErrorCode"] == 100000
    else:
        assert resp.get_json()["Errors"][0]["Code"] == 100000
    assert "nested" in resp.get_data(as_text=True)
    _no_traceback(postern_log)


def test_json_nested_32_deep_is_read(client, user):
    value: object = "x"
    for _ in range(30):
        value = [value]
    body = {"Command": "User.APIKey.List", "APIKey": user.api_key, "Extra": value}
    assert client.post("/api.php", json=body).get_json()["Success"] is True


@pytest.mark.parametrize("fmt", ["JSON", "XML"])
def test_a_9kb_nested_form_key_is_refused_with_one_short_log_line(client, user, fmt, postern_log):
    key = "a" + "[a]" * 3000  # 9 KB
    resp = client.post(
        "/api.php",
        data={
            "Command": "User.APIKey.List",
            "APIKey": user.api_key,
            key: "x",
            "ResponseFormat": fmt,
        },
    )
    assert resp.status_code == 400
    if fmt == "XML":
        assert etree.fromstring(resp.get_data()).findtext("ErrorCode") == "100001"
    else:
        assert resp.get_json()["ErrorCode"] == 100001
    _no_traceback(postern_log)
    assert len(postern_log) == 1  # the request line
    for formatter in (JSONFormatter(), TextFormatter()):
        line = formatter.format(postern_log[0])
        assert "\n" not in line and len(line) < 1000 and key not in line


def test_a_9kb_nested_form_key_on_v1(client, active_domain, postern_log):
    domain = active_domain()
    resp = client.post(
        "/api/v1/email",
        data={"a" + "[a]" * 3000: "x"},
        headers={"Authorization": f"Bearer {domain.key}"},
    )
    assert resp.status_code == 400
    assert resp.get_json()["Errors"][0]["Code"] == 100001
    _no_traceback(postern_log)


def test_a_big_key_leaves_a_bounded_log_and_no_traceback(client, user, caplog):
    logger = logging.getLogger("postern")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="postern"):
            client.post("/api.php", data={"Command": "User.Login", "a" + "[a]" * 3000: "x"})
    finally:
        logger.removeHandler(caplog.handler)
    assert len(caplog.records) == 1
    assert "Traceback" not in caplog.text and len(caplog.text) < 1000
    assert all(r.exc_info is None for r in caplog.records)


# -- the log line bound ----------------------------------------------------------------------


def _record(msg, exc=False, **extra):
    exc_info = None
    if exc:
        try:
            raise RuntimeError("x" * 50000)
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("postern.test", logging.ERROR, __file__, 1, msg, (), exc_info)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("formatter", [JSONFormatter(), TextFormatter()], ids=["json", "text"])
def test_log_lines_are_bounded(formatter):
    record = _record("m" * 100000, exc=True, path="/" + "p" * 100000, other=["q" * 100000])
    line = formatter.format(record)
    assert len(line) <= MAX_LINE
    if isinstance(formatter, JSONFormatter):
        out = json.loads(line)
        assert out["msg"].startswith("mmm") and "RuntimeError" in out["exc"]
    else:
        assert line.count("\n") <= MAX_LINE // 40
        assert "RuntimeError" in line


def test_a_short_log_line_is_unchanged():
    record = _record("request", path="/api.php", status=200)
    out = json.loads(JSONFormatter().format(record))
    assert out["msg"] == "request" and out["path"] == "/api.php" and out["status"] == 200


def test_a_lone_surrogate_in_a_log_line_is_written():
    for formatter in (JSONFormatter(), TextFormatter()):
        formatter.format(_record("a\ud800", path="\udfff")).encode("utf-8")


# -- XML answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"µ": 1},
        {"1abc": "x"},
        {"a b": "x", "": "empty", "<x>": "&", "xml": 1, "a:b": 2},
        {"Subject": "a\x01b\x0bc\x1f\ud800\ufffe\uffff"},
        {"Tags": {"my tag": 1, "ünï": {"ok": [1, "\x00"]}}},
        {"ok": "\r\n\t <&>\"'"},
    ],
)
def test_xml_is_well_formed(body):
    root = etree.fromstring(to_xml(body).encode("utf-8"))
    assert root.tag == "response"


def test_xml_encoding_of_names_and_text():
    root = etree.fromstring(
        to_xml(
            {"Good_Name-1.x": "ok", "µ": "\x01a\ud800", "1abc": "x", "TagStats": {"my tag": 2}}
        ).encode()
    )
    assert root.findtext("Good_Name-1.x") == "ok"
    items = root.findall("item")
    assert [(i.get("name"), i.text) for i in items] == [("µ", "\ufffda\ufffd"), ("1abc", "x")]
    (tag,) = root.find("TagStats")
    assert (tag.tag, tag.get("name"), tag.text) == ("item", "my tag", "2")
    assert to_xml({"ok": "a\rb"}).count("&#13;") == 1
    assert etree.fromstring(to_xml({"ok": "a\rb"}).encode()).findtext("ok") == "a\rb"


def test_xml_answer_with_user_text_parses(client, user, active_domain):
    """A tag name a user chose comes back in TagStats as an <item name=...>."""
    domain = active_domain()
    resp = client.post(
        "/api.php",
        json={
            "Command": "EmailGateway.DomainStats",
            "APIKey": user.api_key,
            "DomainID": domain.id,
            "ResponseFormat": "XML",
        },
    )
    etree.fromstring(resp.get_data())


# -- found by the fuzz (tests/app/http/test_fuzz_api_php.py) ---------------------------------


@pytest.mark.parametrize("command", ["User.APIKey.List", "Nope"])
def test_a_multipart_part_without_a_name_is_ignored(client, user, command):
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=Command\r\n\r\n{command}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=APIKey\r\n\r\n{user.api_key}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="\n"\r\n\r\nx\r\n'
        f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\ny\r\n"
        f"--{boundary}--\r\n"
    )
    resp = client.post(
        "/api.php", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert resp.status_code == (200 if command != "Nope" else 400)
    assert resp.get_json()["Success"] is (command != "Nope")


@pytest.mark.parametrize("index", ["²", "١", "9" * 5000])
def test_a_form_key_index_of_other_digits_is_a_name(client, user, index):
    resp = client.post(
        "/api.php",
        data={"Command": "User.APIKey.List", "APIKey": user.api_key, f"X[{index}]": "1"},
    )
    assert resp.status_code == 200 and resp.get_json()["Success"] is True


@pytest.mark.parametrize(
    ("command", "params", "code"),
    [
        ("EmailGateway.AddAPI", {"Description": "\ud800"}, 1),
        ("EmailGateway.AddAPI", {"Description": "ok", "ListID": ["a"]}, 4),
        ("EmailGateway.AddAPI", {"Description": "ok", "JourneyID": {"a": 1}}, 4),
        ("EmailGateway.AddDomain", {"DomainName": "a\udfff.example"}, None),
        ("Suppression.Browse", {"SearchPattern": ["x"]}, 5),
        ("Suppression.Browse", {"StartFrom": 10**30}, 3),
        ("Suppression.Browse", {"StartFrom": 2**31}, 3),
        ("EmailGateway.GetWebhookDeliveries", {"StartFrom": 10**30}, 5),
        ("Suppression.Add", {"EmailAddress": "a\ud800@example.com"}, None),
        ("User.Login", {"Username": "\ud800", "Password": "x"}, None),
        ("User.APIKey.List", {"APIKey": "\ud800"}, 99998),
        ("User.APIKey.List", {"APIKey": None, "SessionID": "a\udfff"}, 99998),
    ],
)
def test_values_the_fuzz_found(client, user, active_domain, command, params, code, postern_log):
    domain = active_domain()
    body = {"Command": command, "APIKey": user.api_key, "DomainID": domain.id, **params}
    resp = _post_json(client, "/api.php", json.dumps(body))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert answer["Success"] is False
    if code is not None:
        assert answer["ErrorCode"] == code, answer
    _no_traceback(postern_log)


def test_a_sender_key_with_a_lone_surrogate_is_invalid(client, postern_log):
    resp = _post_json(client, "/api/v1/email", json.dumps({"SenderAPIKey": "ps_\ud800"}))
    assert resp.status_code == 401
    assert resp.get_json()["Errors"][0]["Code"] == 13
    _no_traceback(postern_log)
