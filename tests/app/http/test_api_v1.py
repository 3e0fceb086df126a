"""/api/v1/webhooks with sender API keys: answers, errors, and the per-key rate limit."""

import json
import re

import pytest

from commands.users import set_enabled

HOOK = "http://127.0.0.1:8999/hook"


@pytest.fixture
def sender_key(api, user, add_domain):
    def make(domain="example.com", key=None):
        key = key or user.api_key
        domain_id = add_domain(domain, key=key)
        body = api("EmailGateway.AddAPI", APIKey=key, DomainID=domain_id, Description="app")
        return body["APIKey"]["Key"], domain_id

    return make


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_create_list_delete(client, sender_key, api, user):
    key, domain_id = sender_key()
    resp = client.post(
        "/api/v1/webhooks", headers=bearer(key), json={"Event": "delivered", "WebhookURL": HOOK}
    )
    assert resp.status_code == 200
    new_id = resp.get_json()["NewWebhookID"]
    assert resp.get_json() == {"NewWebhookID": new_id} and isinstance(new_id, str)
    assert resp.headers["X-RateLimit-Limit"] == "100"
    # The key in the body works too, and the /api.php view shows the same webhooks.
    resp = client.post(
        "/api/v1/webhooks", data={"SenderAPIKey": key, "Event": "bounced", "WebhookURL": HOOK}
    )
    assert resp.status_code == 200
    listed = client.get("/api/v1/webhooks", headers=bearer(key)).get_json()["Webhooks"]
    assert [(w["Event"], w["URL"], w["Status"]) for w in listed] == [
        ("delivered", HOOK, "Active"),
        ("bounced", HOOK, "Active"),
    ]
    hooks = api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain_id)["Webhooks"]
    assert [h["WebhookID"] for h in hooks] == [w["WebhookID"] for w in listed]
    # DELETE with a JSON body, as curl -X DELETE -d sends it.
    resp = client.delete(
        "/api/v1/webhooks", headers=bearer(key), data=json.dumps({"WebhookID": new_id})
    )
    assert resp.status_code == 200
    assert resp.get_json() == {"Message": "Webhook successfully deleted."}
    assert len(client.get("/api/v1/webhooks", headers=bearer(key)).get_json()["Webhooks"]) == 1


def error(resp):
    errors = resp.get_json()["Errors"]
    assert len(errors) == 1
    return resp.status_code, errors[0]["Code"], errors[0]["Message"]


def test_post_errors(client, sender_key):
    key, _ = sender_key()
    cases = [
        ({"WebhookURL": HOOK}, (400, 2, "Event is missing")),
        ({"Event": "nope", "WebhookURL": HOOK}, (400, 3, "Invalid Event value")),
        ({"Event": "open"}, (400, 5, "WebhookURL is missing")),
        ({"Event": "open", "WebhookURL": "gopher://x"}, (400, 6, None)),
    ]
    for body, expected in cases:
        got = error(client.post("/api/v1/webhooks", headers=bearer(key), json=body))
        assert got[:2] == expected[:2] and (expected[2] is None or got[2] == expected[2]), body


def test_bad_keys(client, sender_key, api, user, database, clock):
    key, _ = sender_key()
    assert error(client.get("/api/v1/webhooks")) == (401, 1, "Missing SenderAPIKey")
    assert error(client.get("/api/v1/webhooks", headers=bearer("ps_nope"))) == (
        401,
        13,
        "Invalid SenderAPIKey",
    )
    assert error(client.get("/api/v1/webhooks", headers=bearer(user.api_key)))[1] == 13
    with database.transaction() as s:
        set_enabled(s, user.username, False, clock())
    assert error(client.get("/api/v1/webhooks", headers=bearer(key))) == (
        403,
        2,
        "Invalid user account",
    )
    with database.transaction() as s:
        set_enabled(s, user.username, True, clock())
    assert client.get("/api/v1/webhooks", headers=bearer(key)).status_code == 200


def test_delete_errors(client, sender_key, make_user):
    key, _ = sender_key()
    other_key, _ = sender_key("other.example", key=make_user("mallory").api_key)
    theirs = client.post(
        "/api/v1/webhooks", headers=bearer(other_key), json={"Event": "open", "WebhookURL": HOOK}
    ).get_json()["NewWebhookID"]
    assert error(client.delete("/api/v1/webhooks", headers=bearer(key))) == (
        400,
        1,
        "WebhookID is missing",
    )
    for target in (theirs, "999999", "abc"):
        assert error(
            client.delete("/api/v1/webhooks", headers=bearer(key), json={"WebhookID": target})
        ) == (404, 4, "Invalid WebhookID")
    assert (
        len(client.get("/api/v1/webhooks", headers=bearer(other_key)).get_json()["Webhooks"]) == 1
    )


def test_unreadable_json(client, sender_key):
    key, _ = sender_key()
    resp = client.post(
        "/api/v1/webhooks", headers=bearer(key), data="{oops", content_type="application/json"
    )
    assert error(resp)[:2] == (400, 100000)


def test_rate_limit_per_key(make_app, sender_key, make_user, clock):
    key, _ = sender_key()
    other_key, _ = sender_key("b.example")
    client = make_app(ratelimit__requests=5).client
    clock.freeze()  # the requests fall in one window, wherever it starts
    for i in range(5):
        resp = client.get("/api/v1/webhooks", headers=bearer(key))
        assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining"] == str(4 - i)
    resp = client.get("/api/v1/webhooks", headers=bearer(key))
    status, code, message = error(resp)
    assert (status, code) == (429, 429)
    assert re.fullmatch(
        r"Too many requests\. Wait for \d+ seconds for another 5 attempts\.", message
    )
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert client.get("/api/v1/webhooks", headers=bearer(other_key)).status_code == 200
    # The window ends on the gateway's clock.
    clock.advance(seconds=int(resp.headers["Retry-After"]))
    resp = client.get("/api/v1/webhooks", headers=bearer(key))
    assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining"] == "4"


def test_default_limit_is_100_per_minute(client, sender_key, clock):
    key, _ = sender_key()
    clock.freeze()
    codes = [client.get("/api/v1/webhooks", headers=bearer(key)).status_code for _ in range(101)]
    assert codes.count(200) == 100 and codes[-1] == 429


def test_a_lone_surrogate_in_a_recipient_name_is_refused_with_400(client, active_domain):
    """The JSON escape \\ud800 alone decodes to a lone surrogate, which no message can hold:
    refused at the edge with the recipient's code, not accepted to fail its build later."""
    domain = active_domain()
    body = (
        '{"Subject": "Hi", "ContentType": "plain", "PlainContent": "Hello",'
        ' "From": {"email": "news@example.com", "name": "News"},'
        ' "To": [{"email": "rcpt@dest.example", "name": "\\ud800"}]}'
    )
    resp = client.post(
        "/api/v1/email", data=body, content_type="application/json", headers=bearer(domain.key)
    )
    assert resp.status_code == 400
    [error] = resp.get_json()["Errors"]
    assert error["Code"] == 19 and "lone surrogate" in error["Message"]
    fixed = body.replace("\\ud800", "Rcpt")
    assert fixed != body
    ok = client.post(
        "/api/v1/email", data=fixed, content_type="application/json", headers=bearer(domain.key)
    )
    assert ok.status_code == 200, ok.get_json()
