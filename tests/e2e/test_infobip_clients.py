"""Infobip sends end to end: raw multipart requests and Infobip's own clients (Python 5.1.1
in this environment, Python 6.0.0 in a venv of its own, the Node SDK with node) against a
live local Postern; what they send delivered by the worker to a loopback MX, DKIM-valid."""

import base64
import io
import json
import os
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests import httpreceiver, smtppeer
from tests.app.workers import test_delivery as delivery_tests
from tests.app.workers import test_personalized_delivery as personalized
from tests.clientvenv import client_python, node_package

smtp_peer = smtppeer.smtp_peer
http_receiver = httpreceiver.http_receiver
mx, domain, worker_for = delivery_tests.mx, delivery_tests.domain, delivery_tests.worker_for
received = personalized.received

HERE = Path(__file__).parent
NODE_DIR = HERE / "infobip_node"
# infobip-api-python-client 6.0.0 runs in an environment of its own (it cannot share this
# one's 5.1.1): POSTERN_INFOBIP6_PYTHON names a Python that has it, else tests/clientvenv.py
# makes one.
INFOBIP6 = ["infobip-api-python-client==6.0.0"]


def app_key(key):
    return {"Authorization": f"App {key}"}


@pytest.fixture
def live(flask_app):
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def attachment_of(message):
    (part,) = list(message.iter_attachments())
    return part.get_filename(), part.get_content()


# -- raw HTTP ---------------------------------------------------------------------------------


def test_multipart_with_an_attachment_to_two_addresses_with_placeholders(
    client, domain, mx, worker_for, dns_server
):
    data = os.urandom(2000) + b"\x00\r\n"
    resp = client.post(
        "/email/3/send",
        headers=app_key(domain.key),
        data={
            "from": "News <news@example.com>",
            "to": [
                json.dumps({"to": "ann@dest.example", "placeholders": {"name": "<Ann>"}}),
                "bob@dest.example",
            ],
            "subject": "Hi {{name}}",
            "html": "<p>Hello {{name}}, code {{code}}</p>",
            "text": "Hello {{name}}",
            "defaultPlaceholders": json.dumps({"name": "friend", "code": "C1"}),
            "headers": json.dumps({"X-Campaign": "c1"}),
            "replyTo": "help@example.com",
            "attachment": [(io.BytesIO(data), "blob.bin", "application/octet-stream")],
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200, resp.get_json()
    assert worker_for(mx).run_once() == 2
    got = received(mx, dns_server)  # each DKIM-verified against the loopback DNS
    ann, bob = got["ann@dest.example"], got["bob@dest.example"]
    assert ann["Subject"] == "Hi <Ann>" and bob["Subject"] == "Hi friend"
    assert "<p>Hello &lt;Ann&gt;, code C1</p>" in ann.get_body(("html",)).get_content()
    assert "<p>Hello friend, code C1</p>" in bob.get_body(("html",)).get_content()
    assert ann["X-Campaign"] == "c1" and "help@example.com" in bob["Reply-To"]
    assert "bob@dest.example" not in ann.as_string()
    for m in (ann, bob):
        assert attachment_of(m) == ("blob.bin", data)


def test_a_template_by_id_delivered(client, api, user, domain, mx, worker_for, dns_server):
    made = api(
        "EmailGateway.CreateTemplate",
        APIKey=user.api_key,
        Name="welcome",
        Subject="Welcome {{name}}",
        PlainContent="Hi {{name}}, plan {{plan}}",
    )
    resp = client.post(
        "/email/3/send",
        headers=app_key(domain.key),
        data={
            "from": "news@example.com",
            "to": [
                json.dumps({"to": "ann@dest.example", "placeholders": {"name": "Ann"}}),
                json.dumps({"to": "bob@dest.example", "placeholders": {"name": "Bob"}}),
            ],
            "templateId": str(made["TemplateID"]),
            "defaultPlaceholders": json.dumps({"plan": "gold"}),
        },
    )
    assert resp.status_code == 200, resp.get_json()
    assert worker_for(mx).run_once() == 2
    got = received(mx, dns_server)
    assert got["ann@dest.example"]["Subject"] == "Welcome Ann"
    assert got["bob@dest.example"].get_body(("plain",)).get_content().strip() == (
        "Hi Bob, plan gold"
    )


def test_preserve_recipients_sends_one_message_that_names_them_all(
    client, domain, mx, worker_for, dns_server
):
    resp = client.post(
        "/email/3/send",
        headers=app_key(domain.key),
        data={
            "from": "news@example.com",
            "to": ["ann@dest.example", "bob@dest.example"],
            "cc": "cy@dest.example",
            "bcc": "dee@dest.example",
            "subject": "Together",
            "text": "All of us",
            "preserveRecipients": "true",
        },
    )
    assert resp.status_code == 200, resp.get_json()
    assert len(resp.get_json()["messages"]) == 4
    assert worker_for(mx).run_once() == 4
    got = received(mx, dns_server)
    assert set(got) == {
        "ann@dest.example",
        "bob@dest.example",
        "cy@dest.example",
        "dee@dest.example",
    }
    ann = got["ann@dest.example"]
    assert "ann@dest.example" in ann["To"] and "bob@dest.example" in ann["To"]
    assert "cy@dest.example" in ann["Cc"]
    assert "dee@dest.example" not in ann.as_string()  # Bcc stays hidden


# -- Infobip's Python client 5.1.1 -------------------------------------------------------------


def email_api_5(base_url, key):
    from infobip_api_client.api.email_api import EmailApi
    from infobip_api_client.api_client import ApiClient
    from infobip_api_client.configuration import Configuration

    config = Configuration(
        host=base_url,
        api_key={"APIKeyHeader": key},
        api_key_prefix={"APIKeyHeader": "App"},
    )
    return EmailApi(ApiClient(config))


def test_python_client_5(live, domain, mx, worker_for, dns_server, tmp_path, clock):
    from infobip_api_client.exceptions import BadRequestException, UnauthorizedException

    path = tmp_path / "report.txt"
    path.write_bytes(b"quarterly figures\n")
    api = email_api_5(live, domain.key)
    answer = api.send_email(
        to=[
            json.dumps({"to": "ann@dest.example", "placeholders": {"name": "Ann"}}),
            "bob@dest.example",
        ],
        var_from="News <news@example.com>",
        subject="Report for {{name}}",
        text="Hello {{name}}",
        default_placeholders=json.dumps({"name": "reader"}),
        attachment=[str(path)],
        track_clicks=False,
        intermediate_report=True,
        notify_url="https://hooks.example/dlr",
        callback_data="cb-5",
        bulk_id="bulk-5",
    )
    assert answer.bulk_id == "bulk-5"
    assert [m.to for m in answer.messages] == ["ann@dest.example", "bob@dest.example"]
    assert answer.messages[0].status.name == "PENDING_ACCEPTED"
    assert answer.messages[0].status.group_id == 1
    assert worker_for(mx).run_once() == 2
    got = received(mx, dns_server)
    assert got["ann@dest.example"]["Subject"] == "Report for Ann"
    assert got["bob@dest.example"]["Subject"] == "Report for reader"
    assert attachment_of(got["bob@dest.example"])[0] == "report.txt"

    with pytest.raises(BadRequestException) as refused:
        api.send_email(to=["not an address"], var_from="news@example.com", subject="s", text="t")
    errors = refused.value.data.request_error.service_exception
    assert errors.message_id == "BAD_REQUEST" and "to" in errors.validation_errors
    with pytest.raises(UnauthorizedException) as unauthorised:
        email_api_5(live, "wrong").send_email(
            to=["a@dest.example"], var_from="news@example.com", subject="s", text="t"
        )
    assert unauthorised.value.data.request_error.service_exception.message_id == "UNAUTHORIZED"


# -- Infobip's Python client 6.0.0, in a venv of its own --------------------------------------


def run_infobip6(base_url, key, request):
    given = os.environ.get("POSTERN_INFOBIP6_PYTHON")
    python = Path(given) if given else client_python("infobip6", INFOBIP6)
    done = subprocess.run(
        [str(python), str(HERE / "infobip6_send.py"), base_url, key, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_python_client_6(live, domain, mx, worker_for, dns_server):
    content = base64.b64encode(b"inline data").decode()
    request = {
        "messages": [
            {
                "sender": "News <news@example.com>",
                "destinations": [
                    {
                        "to": [
                            {
                                "destination": "ann@dest.example",
                                "messageId": "ann-1",
                                "placeholders": json.dumps({"name": "Ann"}),
                            },
                            {"destination": "bob@dest.example"},
                        ],
                        "replyTo": "help@example.com",
                    }
                ],
                "content": {
                    "subject": "Hi {{name}}",
                    "text": "Hello {{name}}",
                    "defaultPlaceholders": json.dumps({"name": "there"}),
                    "attachments": [
                        {
                            "type": "binary",
                            "content": content,
                            "contentType": "text/plain",
                            "fileName": "a.txt",
                        }
                    ],
                },
                "webhooks": {
                    "delivery": {"url": "https://hooks.example/dlr"},
                    "callbackData": "cb",
                },
                "options": {"platform": {"applicationId": "app-1", "entityId": "ent-1"}},
            }
        ],
        "options": {"schedule": {"bulkId": "bulk-6"}, "tracking": {"trackClicks": False}},
    }
    out = run_infobip6(live, domain.key, request)
    assert out.get("type") == "EmailResponse", out
    answer = out["answer"]
    assert answer["bulkId"] == "bulk-6"
    assert [m["destination"] for m in answer["messages"]] == [
        "ann@dest.example",
        "bob@dest.example",
    ]
    assert answer["messages"][0]["messageId"] == "ann-1"
    assert answer["messages"][0]["status"]["groupName"] == "PENDING"
    assert worker_for(mx).run_once() == 2
    got = received(mx, dns_server)
    assert got["ann@dest.example"]["Subject"] == "Hi Ann"
    assert got["bob@dest.example"]["Subject"] == "Hi there"
    assert attachment_of(got["ann@dest.example"]) == ("a.txt", "inline data")

    bad = {
        "messages": [
            {
                "sender": "news@example.com",
                "destinations": [{"to": [{"destination": "nope"}]}],
                "content": {"subject": "s", "text": "t"},
            }
        ]
    }
    out = run_infobip6(live, domain.key, bad)
    assert out["error"] == "BadRequestException" and out["data_type"] == "ApiError", out
    assert out["data"]["errorCode"] == "E400"
    assert (
        out["data"]["violations"][0]["property"] == "messages[0].destinations[0].to[0].destination"
    )
    out = run_infobip6(live, "wrong", request)
    assert out["error"] == "UnauthorizedException" and out["data_type"] == "ApiError", out
    assert out["data"]["errorCode"] == "E401"


# -- Infobip's Node SDK ------------------------------------------------------------------------


def run_node(base_url, auth, email, attachment=None):
    node = node_package(NODE_DIR, "@infobip-api/sdk")
    if node is None:
        pytest.skip("node and npm are not installed (the Node SDK runs with them)")
    args = [node, str(NODE_DIR / "send.js"), base_url, json.dumps(auth), json.dumps(email)]
    if attachment is not None:
        args += [attachment[0], base64.b64encode(attachment[1]).decode()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_node_sdk(live, domain, user, mx, worker_for, dns_server):
    email = {
        "from": "News <news@example.com>",
        "to": [
            json.dumps({"to": "ann@dest.example", "placeholders": {"name": "Ann"}}),
            "bob@dest.example",
        ],
        "cc": "cy@dest.example",
        "subject": "From node to {{name}}",
        "defaultPlaceholders": json.dumps({"name": "you"}),
        "text": "Hello from node",
        # No booleans: the SDK refuses them as strings and hands them to form-data as they
        # are, which cannot write a boolean (the request never completes).
        "bulkId": "bulk-node",
    }
    out = run_node(live, {"apiKey": domain.key}, email, ("notes.txt", b"node notes"))
    assert out["error"] is False and out["status"] == 200, out
    assert out["data"]["bulkId"] == "bulk-node"
    assert [m["to"] for m in out["data"]["messages"]] == [
        "ann@dest.example",
        "bob@dest.example",
        "cy@dest.example",
    ]
    assert worker_for(mx).run_once() == 3
    got = received(mx, dns_server)
    assert got["ann@dest.example"]["Subject"] == "From node to Ann"
    assert got["bob@dest.example"]["Subject"] == "From node to you"
    assert attachment_of(got["ann@dest.example"]) == ("notes.txt", "node notes")

    basic = run_node(
        live, {"username": user.username, "password": user.password}, {**email, "bulkId": "b2"}
    )
    assert basic["error"] is False and basic["data"]["bulkId"] == "b2", basic

    refused = run_node(live, {"apiKey": domain.key}, {**email, "to": ["bad address"]})
    assert refused["error"] is True and refused["status"] == 400, refused
    exception = refused["data"]["requestError"]["serviceException"]
    assert exception["messageId"] == "BAD_REQUEST" and "to" in exception["validationErrors"]
    unauthorised = run_node(live, {"apiKey": "wrong"}, email)
    assert unauthorised["error"] is True and unauthorised["status"] == 401
    assert unauthorised["data"]["requestError"]["serviceException"]["messageId"] == "UNAUTHORIZED"


# -- Reports, logs and pushes with Infobip's clients ------------------------------------------


@pytest.fixture
def webhook_sender(base_config, database, clock, box):
    from app.workers.webhooks import WebhookSender

    return WebhookSender(base_config, database, box, clock=clock)


def drain(sender):
    total = 0
    while n := sender.run_once():
        total += n
    return total


def test_python_client_5_reports_logs_and_a_pushed_report(
    live, domain, mx, worker_for, tmp_path, clock, http_receiver, webhook_sender
):
    from infobip_api_client.exceptions import BadRequestException, UnauthorizedException

    path = tmp_path / "report.txt"
    path.write_bytes(b"quarterly figures\n")
    api = email_api_5(live, domain.key)
    sent = api.send_email(
        to=["ann@dest.example", "bob@dest.example"],
        var_from="News <news@example.com>",
        subject="Figures",
        text="Attached",
        attachment=[str(path)],
        bulk_id="bulk-r5",
    )
    pushed = api.send_email(
        to=["cy@dest.example"],
        var_from="news@example.com",
        subject="Pushed",
        text="Hello",
        notify_url=http_receiver.url("/dlr"),
        callback_data="cb-push",
    )
    assert api.get_email_delivery_reports().results == []  # nothing has ended yet
    logs = api.get_email_logs(bulk_id="bulk-r5").results
    assert {log.status.name for log in logs} == {"PENDING_ACCEPTED"}
    assert worker_for(mx).run_once() == 3

    reports = api.get_email_delivery_reports(bulk_id="bulk-r5").results
    assert {r.to for r in reports} == {"ann@dest.example", "bob@dest.example"}
    assert {r.message_id for r in reports} == {m.message_id for m in sent.messages}
    for r in reports:
        assert r.status.group_name == "DELIVERED" and r.status.id == 5
        assert r.error.name == "NO_ERROR" and r.error.permanent is False
        assert r.message_count == 1 and r.sent_at.tzinfo is not None and r.done_at >= r.sent_at
    assert api.get_email_delivery_reports().results == []  # once, never again
    # The pushed one: POSTed to its notifyUrl with its callbackData, not handed out here.
    assert drain(webhook_sender) == 1
    (push,) = http_receiver.wait_for(1)
    (result,) = push.json()["results"]
    assert result["messageId"] == pushed.messages[0].message_id
    assert result["callbackData"] == "cb-push" and result["smsCount"] == 1

    for _ in range(2):  # logs: as often as asked
        logs = api.get_email_logs(bulk_id="bulk-r5").results
        assert {(log.to, log.status.name) for log in logs} == {
            ("ann@dest.example", "DELIVERED_TO_HANDSET"),
            ("bob@dest.example", "DELIVERED_TO_HANDSET"),
        }
    (ann,) = api.get_email_logs(message_id=reports[0].message_id).results
    assert ann.var_from == "news@example.com" and ann.text == "Figures"
    since = clock() - timedelta(minutes=5)
    assert len(api.get_email_logs(sent_since=since, general_status="DELIVERED").results) == 3
    clock.advance(hours=49)
    assert api.get_email_logs().results == []

    with pytest.raises(BadRequestException) as refused:
        api.get_email_logs(general_status="LOST")
    assert refused.value.status == 400
    assert (
        "generalStatus"
        in json.loads(refused.value.body)["requestError"]["serviceException"]["validationErrors"]
    )
    with pytest.raises(BadRequestException):
        api.get_email_delivery_reports(limit=0)
    with pytest.raises(UnauthorizedException) as unauthorised:
        email_api_5(live, "wrong").get_email_delivery_reports()
    assert unauthorised.value.status == 401
    with pytest.raises(UnauthorizedException):
        email_api_5(live, "wrong").get_email_logs()


def run_infobip6_reports(base_url, key, what, params):
    given = os.environ.get("POSTERN_INFOBIP6_PYTHON")
    python = Path(given) if given else client_python("infobip6", INFOBIP6)
    script = HERE / "infobip6_reports.py"
    done = subprocess.run(
        [str(python), str(script), base_url, key, what, json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_python_client_6_reports_and_logs(live, domain, mx, worker_for, clock):
    request = {
        "messages": [
            {
                "sender": "News <news@example.com>",
                "destinations": [
                    {
                        "to": [
                            {"destination": "ann@dest.example", "messageId": "ann-6"},
                            {"destination": "bob@dest.example", "messageId": "bob-6"},
                        ]
                    }
                ],
                "content": {
                    "subject": "Six",
                    "text": "Hello",
                    "attachments": [
                        {
                            "type": "binary",
                            "content": base64.b64encode(b"data").decode(),
                            "contentType": "text/plain",
                            "fileName": "a.txt",
                        }
                    ],
                },
                "webhooks": {"callbackData": "cb6"},
            }
        ],
        "options": {"schedule": {"bulkId": "bulk-r6"}},
    }
    assert run_infobip6(live, domain.key, request).get("type") == "EmailResponse"
    assert worker_for(mx).run_once() == 2
    out = run_infobip6_reports(live, domain.key, "reports", {"bulk_id": "bulk-r6"})
    assert out.get("type") == "EmailReportsResult", out
    results = out["answer"]["results"]
    assert {r["messageId"] for r in results} == {"ann-6", "bob-6"}
    for r in results:
        assert r["status"]["groupName"] == "DELIVERED" and r["error"]["groupName"] == "OK"
        assert r["sender"] == "news@example.com" and r["callbackData"] == "cb6"
    again = run_infobip6_reports(live, domain.key, "reports", {})
    assert again["answer"]["results"] == []
    for _ in range(2):
        logs = run_infobip6_reports(live, domain.key, "logs", {"bulk_id": ["bulk-r6"]})
        assert logs.get("type") == "EmailLogsResponse", logs
        assert {(r["destination"], r["status"]["name"]) for r in logs["answer"]["results"]} == {
            ("ann@dest.example", "DELIVERED_TO_HANDSET"),
            ("bob@dest.example", "DELIVERED_TO_HANDSET"),
        }
    both = run_infobip6_reports(
        live, domain.key, "logs", {"message_id": ["ann-6", "bob-6"], "general_status": "DELIVERED"}
    )
    assert len(both["answer"]["results"]) == 2
    clock.advance(hours=49)
    assert run_infobip6_reports(live, domain.key, "logs", {})["answer"]["results"] == []

    for what in ("reports", "logs"):
        # The client's spec names no type for these calls' 400: its body is read as it came.
        bad = run_infobip6_reports(live, domain.key, what, {"limit": 0})
        assert bad["error"] == "BadRequestException" and bad["status"] == 400, bad
        body = json.loads(bad["body"])
        assert body["errorCode"] == "E400" and body["violations"][0]["property"] == "limit"
    for what in ("reports", "logs"):
        out = run_infobip6_reports(live, "wrong", what, {})
        assert out["error"] == "UnauthorizedException" and out["data_type"] == "ApiError", out
        assert out["data"]["errorCode"] == "E401"


def run_node_reports(base_url, auth, what, filters):
    node = node_package(NODE_DIR, "@infobip-api/sdk")
    if node is None:
        pytest.skip("node and npm are not installed (the Node SDK runs with them)")
    args = [node, str(NODE_DIR / "reports.js"), base_url, json.dumps(auth), what]
    done = subprocess.run([*args, json.dumps(filters)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_node_sdk_reports_and_logs(live, domain, user, mx, worker_for):
    email = {
        "from": "news@example.com",
        "to": ["ann@dest.example", "bob@dest.example"],
        "subject": "Node",
        "text": "Hello",
        "bulkId": "bulk-nr",
    }
    sent = run_node(live, {"apiKey": domain.key}, email, ("n.txt", b"node"))
    assert sent["error"] is False, sent
    ids = [m["messageId"] for m in sent["data"]["messages"]]
    assert worker_for(mx).run_once() == 2
    key = {"apiKey": domain.key}
    first = run_node_reports(live, key, "report", {"bulkId": "bulk-nr"})
    assert first["error"] is False and first["status"] == 200, first
    assert sorted(r["messageId"] for r in first["data"]["results"]) == sorted(ids)
    again = run_node_reports(live, key, "report", {})
    assert again["data"]["results"] == []
    logs = run_node_reports(live, key, "log", {"messageId": ids, "generalStatus": "DELIVERED"})
    assert logs["error"] is False and len(logs["data"]["results"]) == 2, logs
    basic = {"username": user.username, "password": user.password}
    assert len(run_node_reports(live, basic, "log", {"bulkId": "bulk-nr"})["data"]["results"]) == 2
    refused = run_node_reports(live, key, "log", {"limit": 5000})
    assert refused["error"] is True and refused["status"] == 400, refused
    exception = refused["data"]["requestError"]["serviceException"]
    assert exception["messageId"] == "BAD_REQUEST" and "limit" in exception["validationErrors"]
    unauthorised = run_node_reports(live, {"apiKey": "wrong"}, "report", {})
    assert unauthorised["error"] is True and unauthorised["status"] == 401
    assert unauthorised["data"]["requestError"]["serviceException"]["messageId"] == "UNAUTHORIZED"
