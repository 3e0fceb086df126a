"""Webhooks through /api.php: AddWebhook, GetWebhooks, DeleteWebhook, RegenerateSigningKey."""

import re

import pytest
from sqlalchemy import select

from commands.webhooks.handlers import url_problem
from core.settings import load_config
from models import Domain

HOOK = "http://127.0.0.1:8999/hook"

NOT_DISABLED = {"FailingSince": None, "DisabledDate": None, "DisabledReason": None}
POSTERN = {"Format": "postern"}


def test_add_and_get_webhooks(api, user, add_domain):
    domain_id = add_domain()
    first = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event="bounce",
        WebhookURL=HOOK,
    )
    assert first == {"Success": True, "ErrorCode": 0, "NewWebhookID": first["NewWebhookID"]}
    assert isinstance(first["NewWebhookID"], str)
    second = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event="delivered, opened,CLICKED",
        WebhookURL="https://hooks.example.com/x",
    )
    body = api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain_id)
    assert re.fullmatch(r"[0-9A-F]{64}", body["SigningKey"])
    assert body["Webhooks"] == [
        {
            "WebhookID": first["NewWebhookID"],
            "URL": HOOK,
            "Events": ["bounce"],
            "Status": "Active",
            **POSTERN,
            **NOT_DISABLED,
        },
        {
            "WebhookID": second["NewWebhookID"],
            "URL": "https://hooks.example.com/x",
            "Events": ["delivered", "opened", "clicked"],
            "Status": "Active",
            **POSTERN,
            **NOT_DISABLED,
        },
    ]


@pytest.mark.parametrize(
    "event",
    [
        "delivery",
        "bounce",
        "open",
        "click",
        "unsubscribe",
        "complaint",
        "delivered",
        "bounced",
        "opened",
        "clicked",
        "unsubscribed",
        "complained",
    ],
)
def test_both_vocabularies(api, user, add_domain, event):
    domain_id = add_domain()
    body = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event=event,
        WebhookURL=HOOK,
    )
    assert body["Success"] is True


def test_add_webhook_errors_are_lists_as_the_seed_shows(api, user, add_domain, make_user):
    domain_id = add_domain()
    other_domain = add_domain("other.example", key=make_user("mallory").api_key)
    cases = [
        ({"Event": "bounce", "WebhookURL": HOOK}, 1),
        ({"DomainID": domain_id, "WebhookURL": HOOK}, 2),
        ({"DomainID": domain_id, "Event": "explode", "WebhookURL": HOOK}, 3),
        ({"DomainID": domain_id, "Event": "bounce,explode", "WebhookURL": HOOK}, 3),
        ({"DomainID": 424242, "Event": "bounce", "WebhookURL": HOOK}, 4),
        ({"DomainID": other_domain, "Event": "bounce", "WebhookURL": HOOK}, 4),
        ({"DomainID": domain_id, "Event": "bounce"}, 5),
        ({"DomainID": domain_id, "Event": "bounce", "WebhookURL": "ftp://x.example/"}, 6),
        ({"DomainID": domain_id, "Event": "bounce", "WebhookURL": "not a url"}, 6),
    ]
    for params, code in cases:
        body = api("EmailGateway.AddWebhook", APIKey=user.api_key, **params)
        assert body["Success"] is False and body["ErrorCode"] == [code], params


def test_private_targets_are_refused_unless_allowed():
    config = load_config(environ={}).replace(
        smtp__hostname="mx.postern.example", http__public_url="https://postern.example"
    )
    for url in (
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://192.168.0.5/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
        "http://localhost:8080/",
        "http://app.localhost/",
        "https://mx.postern.example/",
        "https://postern.example/",
        "http://0.0.0.0/",
        "https://hooks.example.com:99999/",
    ):
        assert url_problem(url, config), url
    for url in (
        "https://hooks.example.com/x",
        "http://93.184.216.34:8080/hook",
        "https://user:pw@hooks.example.com/x",
    ):
        assert url_problem(url, config) is None, url
    assert url_problem("http://127.0.0.1/x", config.replace(webhooks__allow_private=True)) is None


def test_get_webhooks_errors(api, user):
    assert api("EmailGateway.GetWebhooks", APIKey=user.api_key)["ErrorCode"] == 1
    assert api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=8)["ErrorCode"] == 2


def test_delete_webhook(api, user, add_domain, make_user):
    domain_id = add_domain()
    hook = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event="open",
        WebhookURL=HOOK,
    )["NewWebhookID"]
    other_domain = add_domain("b.example")
    cases = [
        ({"DomainID": domain_id}, 1),
        ({"WebhookID": hook}, 1),
        ({"WebhookID": hook, "DomainID": "abc"}, 2),
        ({"WebhookID": hook, "DomainID": 999999}, 3),
        ({"WebhookID": hook, "DomainID": other_domain}, 4),
        ({"WebhookID": 999999, "DomainID": domain_id}, 4),
    ]
    for params, code in cases:
        assert (
            api("EmailGateway.DeleteWebhook", APIKey=user.api_key, **params)["ErrorCode"] == code
        ), params
    assert (
        api("EmailGateway.DeleteWebhook", APIKey=user.api_key, WebhookID=hook, DomainID=domain_id)[
            "Success"
        ]
        is True
    )
    assert (
        api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain_id)["Webhooks"] == []
    )


def test_regenerate_signing_key(api, user, add_domain, database):
    domain_id = add_domain()
    before = api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain_id)["SigningKey"]
    body = api("EmailGateway.RegenerateSigningKey", APIKey=user.api_key, DomainID=domain_id)
    assert body["Success"] is True and re.fullmatch(r"[0-9A-F]{64}", body["SigningKey"])
    assert body["SigningKey"] != before
    after = api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain_id)["SigningKey"]
    assert after == body["SigningKey"]
    with database.transaction(readonly=True) as s:
        stored = s.scalar(select(Domain.signing_key_encrypted))
    assert after not in stored
    assert api("EmailGateway.RegenerateSigningKey", APIKey=user.api_key)["ErrorCode"] == 1
    assert (
        api("EmailGateway.RegenerateSigningKey", APIKey=user.api_key, DomainID=31337)["ErrorCode"]
        == 2
    )


def test_a_domain_has_at_most_max_per_domain_webhooks(api, user, add_domain, client, database):
    domain_id = add_domain()
    added = []
    for n in range(10):  # webhooks.max_per_domain
        body = api(
            "EmailGateway.AddWebhook",
            APIKey=user.api_key,
            DomainID=domain_id,
            Event="bounce",
            WebhookURL=f"{HOOK}/{n}",
        )
        assert body["Success"] is True, body
        added.append(body["NewWebhookID"])
    over = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event="bounce",
        WebhookURL=HOOK,
    )
    assert (over["Success"], over["ErrorCode"], over["ErrorText"]) == (
        False,
        [7],
        "Webhook limit reached: a domain may have at most 10 webhooks",
    )
    # /api/v1/webhooks, for the same domain: 400 with the same code.
    key = api("EmailGateway.AddAPI", APIKey=user.api_key, DomainID=domain_id, Description="a")[
        "APIKey"
    ]["Key"]
    resp = client.post(
        "/api/v1/webhooks",
        headers={"Authorization": f"Bearer {key}"},
        json={"Event": "delivered", "WebhookURL": HOOK},
    )
    assert resp.status_code == 400
    assert resp.get_json()["Errors"][0]["Code"] == 7
    # Another domain has its own allowance; a deleted webhook frees a place.
    other = add_domain("other.example")
    assert api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=other,
        Event="open",
        WebhookURL=HOOK,
    )["Success"]
    api("EmailGateway.DeleteWebhook", APIKey=user.api_key, WebhookID=added[0], DomainID=domain_id)
    assert api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event="bounce",
        WebhookURL=HOOK,
    )["Success"]


def test_enable_webhook_errors(api, user, add_domain):
    domain_id = add_domain()
    hook_id = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event="bounce",
        WebhookURL=HOOK,
    )["NewWebhookID"]
    missing = api("EmailGateway.EnableWebhook", APIKey=user.api_key)
    assert (missing["Success"], missing["ErrorCode"]) == (False, 1)
    for bad in (424242, "abc", 0):
        body = api("EmailGateway.EnableWebhook", APIKey=user.api_key, WebhookID=bad)
        assert (body["ErrorCode"], body["ErrorText"]) == (
            2,
            "Webhook not found or user does not have permission to access it",
        )
    wrong_domain = api(
        "EmailGateway.EnableWebhook", APIKey=user.api_key, WebhookID=hook_id, DomainID=424242
    )
    assert wrong_domain["ErrorCode"] == 2
    # An active webhook: enabling it again changes nothing and succeeds.
    body = api(
        "EmailGateway.EnableWebhook", APIKey=user.api_key, WebhookID=hook_id, DomainID=domain_id
    )
    assert body["Success"] is True
    assert body["Webhook"] == {
        "WebhookID": hook_id,
        "URL": HOOK,
        "Events": ["bounce"],
        "Status": "Active",
        **POSTERN,
        **NOT_DISABLED,
    }


SEEN_FORMS = [  # 127.0.0.1 carried in IPv6, and Teredo with a loopback client
    "::7f00:1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "2001:0:808:808:0:0:80ff:fffe",
]


def test_add_webhook_refuses_ipv4_carried_in_ipv6_like_the_ipv4(
    base_config, database, clock, user, add_domain
):
    from app.http.factory import create_app
    from commands import Gateway

    domain_id = add_domain()
    strict = base_config.replace(webhooks__allow_private=False)
    client = create_app(strict, Gateway(strict, database, clock=clock)).test_client()
    for address in SEEN_FORMS:
        body = client.post(
            "/api.php",
            json={
                "Command": "EmailGateway.AddWebhook",
                "APIKey": user.api_key,
                "DomainID": domain_id,
                "Event": "bounce",
                "WebhookURL": f"http://[{address}]:8080/hook",
            },
        ).get_json()
        assert (body["Success"], body["ErrorCode"]) == (False, [6]), address
        assert "loopback, private or reserved" in body["ErrorText"]
    body = client.post(
        "/api.php",
        json={
            "Command": "EmailGateway.AddWebhook",
            "APIKey": user.api_key,
            "DomainID": domain_id,
            "Event": "bounce",
            "WebhookURL": "http://[2002:808:808::1]/hook",  # 6to4 of a public address
        },
    ).get_json()
    assert body["Success"] is True, body
