"""Personalized sends end to end: a template and each recipient's values, through
/api/v1/email and /api.php, arrive as one DKIM-valid message per recipient."""

import email
import email.policy

import dkim
import pytest

from tests import smtppeer
from tests.app.workers import test_delivery as delivery_tests
from tests.dnsserver import dns_txt

smtp_peer = smtppeer.smtp_peer
mx, domain, worker_for = delivery_tests.mx, delivery_tests.domain, delivery_tests.worker_for
deliveries = delivery_tests.deliveries

HTML = (
    "<p>Hello {{ name|default('friend') }},</p>"
    "{% if plan == 'gold' %}<p>Gold member</p>{% elif plan %}<p>Plan {{ plan }}</p>"
    "{% else %}<p>No plan</p>{% endif %}<p>Code $$code$$</p>"
)
PLAIN = (
    "Hello {{ name|default('friend') }}, your code is $$code$$ (since {{ since|date('d/m/Y') }})"
)
TO = [
    {
        "email": "ann@dest.example",
        "name": "Ann",
        "Personalization": {"name": "<Ann & Co>", "plan": "gold"},
    },
    {
        "email": "bob@dest.example",
        "name": "Bob",
        "Personalization": {"plan": "silver", "code": "B-2"},
    },
]


def received(mx, dns_server):
    """Each recipient's message, parsed, once its DKIM signature verified."""
    out = {}
    for m in mx.messages:
        assert dkim.verify(m.data, dnsfunc=dns_txt(dns_server))
        out[m.rcpt_tos[0]] = email.message_from_bytes(m.data, policy=email.policy.default)
    return out


def check_two(messages):
    ann, bob = messages["ann@dest.example"], messages["bob@dest.example"]
    assert ann["Subject"] == "Welcome <Ann & Co>, A-1"
    assert bob["Subject"] == "Welcome friend, B-2"
    ann_html = ann.get_body(("html",)).get_content()
    bob_html = bob.get_body(("html",)).get_content()
    assert "Hello &lt;Ann &amp; Co&gt;," in ann_html and "<p>Gold member</p>" in ann_html
    assert "Code A-1" in ann_html
    assert "Hello friend," in bob_html and "<p>Plan silver</p>" in bob_html
    assert "Code B-2" in bob_html
    ann_text = ann.get_body(("plain",)).get_content().strip()
    bob_text = bob.get_body(("plain",)).get_content().strip()
    assert ann_text == "Hello <Ann & Co>, your code is A-1 (since 14/11/2023)"
    assert bob_text == "Hello friend, your code is B-2 (since 14/11/2023)"


@pytest.fixture
def template(api, user):
    made = api(
        "EmailGateway.CreateTemplate",
        APIKey=user.api_key,
        Name="Welcome",
        Subject="Welcome {{ name|default('friend') }}, $$code$$",
        HTMLContent=HTML,
        PlainContent=PLAIN,
    )
    assert made["Success"], made
    return made["TemplateID"]


def test_a_template_with_personalization_through_api_v1(
    client, domain, template, mx, worker_for, dns_server, database
):
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "TemplateID": template,
            "From": {"email": "news@example.com", "name": "News"},
            "To": TO,
            "Personalization": {"code": "A-1", "since": 1700000000},
        },
    )
    assert resp.status_code == 200, resp.get_json()
    assert worker_for(mx).run_once() == 2
    check_two(received(mx, dns_server))


def test_a_template_with_personalization_through_api_php(
    api, user, domain, template, mx, worker_for, dns_server
):
    sent = api(
        "EmailGateway.SendEmail",
        APIKey=user.api_key,
        DomainID=domain.id,
        TemplateID=str(template),
        From={"email": "news@example.com", "name": "News"},
        To=TO,
        Personalization={"code": "A-1", "since": "2023-11-14 22:13:20"},
        TrackLinks="true",
        TrackOpens="true",
    )
    assert sent["Success"] is True, sent
    assert worker_for(mx).run_once() == 2
    check_two(received(mx, dns_server))


def test_fields_given_override_the_templates(client, domain, template, mx, worker_for, dns_server):
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "TemplateID": template,
            "Subject": "Own subject for {{ name }}",
            "ContentType": "plain",
            "PlainContent": "Own text $$name$$",
            "From": {"email": "news@example.com", "name": "News"},
            "To": [{"email": "ann@dest.example", "Personalization": {"name": "Ann"}}],
        },
    )
    assert resp.status_code == 200, resp.get_json()
    worker_for(mx).run_once()
    ann = received(mx, dns_server)["ann@dest.example"]
    assert ann["Subject"] == "Own subject for Ann"
    assert ann.get_body(("plain",)).get_content().strip() == "Own text Ann"
    assert "Gold member" not in ann.get_body(("html",)).get_content()  # the template's HTML


def test_another_users_template_is_error_15(client, domain, make_user, api):
    other = make_user("other")
    theirs = api(
        "EmailGateway.CreateTemplate", APIKey=other.api_key, Name="t", Subject="s", PlainContent="x"
    )
    for template_id in (theirs["TemplateID"], 987654, "abc"):
        resp = client.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {domain.key}"},
            json={
                "TemplateID": template_id,
                "From": {"email": "news@example.com", "name": "News"},
                "To": [{"email": "ann@dest.example"}],
            },
        )
        assert resp.status_code == 400
        assert resp.get_json() == {"Errors": [{"Code": 15, "Message": "Invalid TemplateID"}]}


@pytest.mark.parametrize(
    "extra, code, words",
    [
        ({"Personalization": "x"}, 42, "must be an object"),
        ({"Personalization": {"a": {"b": 1}}}, 42, "Personalization.a must be text"),
        ({"Personalization": {"a-b": 1}}, 42, "is not a name"),
        (
            {"To": [{"email": "a@dest.example", "Personalization": [1]}]},
            42,
            "To[0].Personalization",
        ),
        ({"Personalization": {"a": 1}, "PlainContent": "x\n{{ a.__class__ }}"}, 43, "line 2"),
        (
            {"Personalization": {"a": 1}, "PlainContent": "{% for x in a %}{% endfor %}"},
            43,
            "loops",
        ),
        (
            {"Personalization": {"a": "x"}, "PlainContent": "{% if a > 1 %}{% endif %}"},
            43,
            "a@dest.example",
        ),
    ],
)
def test_personalization_and_template_errors(client, domain, extra, code, words):
    body = {
        "Subject": "s",
        "ContentType": "plain",
        "PlainContent": "hello",
        "From": {"email": "news@example.com", "name": "News"},
        "To": [{"email": "a@dest.example"}],
        **extra,
    }
    resp = client.post(
        "/api/v1/email", headers={"Authorization": f"Bearer {domain.key}"}, json=body
    )
    assert resp.status_code == 400
    error = resp.get_json()["Errors"][0]
    assert error["Code"] == code and words in error["Message"], error


def test_a_send_without_personalization_keeps_its_braces(
    client, domain, mx, worker_for, dns_server
):
    """Without TemplateID or Personalization, nothing is a template: sent as given."""
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "Subject": "{{ x }} $$y$$",
            "ContentType": "plain",
            "PlainContent": "{% for %} {{ ''.__class__ }}",
            "From": {"email": "news@example.com", "name": "News"},
            "To": [{"email": "a@dest.example"}],
        },
    )
    assert resp.status_code == 200
    worker_for(mx).run_once()
    got = received(mx, dns_server)["a@dest.example"]
    assert got["Subject"] == "{{ x }} $$y$$"
    assert got.get_body(("plain",)).get_content().strip() == "{% for %} {{ ''.__class__ }}"
