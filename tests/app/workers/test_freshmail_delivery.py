"""FreshMail v3 sends end to end: one DKIM-valid message per recipient, personalized."""

import base64
import os

import pytest

from tests import smtppeer
from tests.app.workers import test_delivery as delivery_tests
from tests.app.workers import test_personalized_delivery as personalized

smtp_peer = smtppeer.smtp_peer
mx, domain, worker_for = delivery_tests.mx, delivery_tests.domain, delivery_tests.worker_for
received = personalized.received

ROUTE = "/v3/messaging/emails"


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_two_personalized_recipients_arrive_as_two_signed_messages(
    client, domain, mx, worker_for, dns_server
):
    body = {
        "recipients": [
            {"email": "ann@dest.example", "name": "Ann", "personalization": {"name": "Ann"}},
            {"email": "bob@dest.example", "personalization": {"name": "<Bob>", "code": "B"}},
        ],
        "from": {"email": "news@example.com", "name": "News"},
        "subject": "Hi $$name$$",
        "contents": [
            {"type": "text/html", "body": "<p>Hello {{ name }} {{ code|default('none') }}</p>"},
            {"type": "text/plain", "body": "Hello $$name$$ {{ code|default('none') }}"},
        ],
    }
    resp = client.post(ROUTE, headers=bearer(domain.key), data=__import__("json").dumps(body))
    assert resp.status_code == 201, resp.get_json()
    answer = resp.get_json()
    assert [a["email"] for a in answer] == ["ann@dest.example", "bob@dest.example"]
    assert answer[0]["id"] != answer[1]["id"]
    assert worker_for(mx).run_once() == 2
    got = received(mx, dns_server)
    ann, bob = got["ann@dest.example"], got["bob@dest.example"]
    assert ann["Subject"] == "Hi Ann" and bob["Subject"] == "Hi <Bob>"
    assert ann["Message-ID"] != bob["Message-ID"]
    assert "<p>Hello Ann none</p>" in ann.get_body(("html",)).get_content()
    assert "<p>Hello &lt;Bob&gt; B</p>" in bob.get_body(("html",)).get_content()
    assert ann.get_body(("plain",)).get_content().strip() == "Hello Ann none"
    assert bob.get_body(("plain",)).get_content().strip() == "Hello <Bob> B"
    assert "bob@dest.example" not in ann.as_string()  # each sees only its own recipient


def test_a_template_by_hash_with_conditions_and_default(
    client, api, user, domain, mx, worker_for, dns_server
):
    made = api(
        "EmailGateway.CreateTemplate",
        APIKey=user.api_key,
        Name="t",
        Subject="{% if vip %}VIP {% endif %}news for {{ name|default('you') }}",
        HTMLContent="<p>{% if vip %}Gold{% elif name %}Hi {{ name }}{% else %}Anon{% endif %}</p>",
        PlainContent="{{ name|default('friend') }}",
    )
    resp = client.post(
        ROUTE,
        headers=bearer(domain.key),
        json={
            "recipients": [
                {"email": "ann@dest.example", "personalization": {"vip": True, "name": "Ann"}},
                {"email": "bob@dest.example", "personalization": {"name": "Bob"}},
                {"email": "cy@dest.example"},
            ],
            "from": {"email": "news@example.com", "name": "News"},
            "templateHash": made["TemplateHash"],
        },
    )
    assert resp.status_code == 201, resp.get_json()
    assert worker_for(mx).run_once() == 3
    got = received(mx, dns_server)
    assert got["ann@dest.example"]["Subject"] == "VIP news for Ann"
    assert got["bob@dest.example"]["Subject"] == "news for Bob"
    assert got["cy@dest.example"]["Subject"] == "news for you"
    assert "<p>Gold</p>" in got["ann@dest.example"].get_body(("html",)).get_content()
    assert "<p>Hi Bob</p>" in got["bob@dest.example"].get_body(("html",)).get_content()
    assert "<p>Anon</p>" in got["cy@dest.example"].get_body(("html",)).get_content()
    assert got["cy@dest.example"].get_body(("plain",)).get_content().strip() == "friend"


def test_recipient_headers_override_and_an_attachment_arrives_intact(
    client, domain, mx, worker_for, dns_server
):
    data = os.urandom(3000) + b"\x00\r\n\xff"
    resp = client.post(
        ROUTE,
        headers=bearer(domain.key),
        json={
            "recipients": [
                {"email": "ann@dest.example", "headers": {"X-Campaign": "ann-own"}},
                {"email": "bob@dest.example"},
            ],
            "from": {"email": "news@example.com", "name": "News"},
            "subject": "s",
            "contents": [{"type": "text/plain", "body": "x"}],
            "headers": {"X-Campaign": "common", "X-Other": "o"},
            "attachments": [{"name": "blob.bin", "content": base64.b64encode(data).decode()}],
            "replyTo": {"email": "help@example.com", "name": "Help"},
        },
    )
    assert resp.status_code == 201, resp.get_json()
    assert worker_for(mx).run_once() == 2
    got = received(mx, dns_server)
    ann, bob = got["ann@dest.example"], got["bob@dest.example"]
    assert ann["X-Campaign"] == "ann-own" and bob["X-Campaign"] == "common"
    assert ann["X-Other"] == bob["X-Other"] == "o"
    assert "help@example.com" in ann["Reply-To"]
    for m in (ann, bob):
        (part,) = list(m.iter_attachments())
        assert part.get_filename() == "blob.bin"
        assert part.get_content() == data


@pytest.mark.parametrize("path", [ROUTE, ROUTE + "/"])
def test_a_user_api_key_sends_from_its_domains(client, user, domain, mx, worker_for, path):
    resp = client.post(
        path,
        headers=bearer(user.api_key),
        data='{"recipients":[{"email":"ann@dest.example"}],"from":{"email":"a@example.com",'
        '"name":"A"},"subject":"s","contents":[{"type":"text/plain","body":"x"}]}',
        content_type=None,
    )
    assert resp.status_code == 201, resp.get_json()
    assert worker_for(mx).run_once() == 1
