"""Tenancy: another user's ids get exactly the answer of ids that do not exist."""

import pytest

from models import Domain
from models.domains import ENABLED

MISSING = 987654
MINE = object()  # stands for the caller's own domain


@pytest.fixture
def victim(api, make_user, add_domain, database):
    """A user with one of everything."""
    owner = make_user("victim")
    domain_id = add_domain("victim.example", key=owner.api_key)
    k = owner.api_key
    key_id = api("EmailGateway.AddAPI", APIKey=k, DomainID=domain_id, Description="d")[
        "NewAPIKeyID"
    ]
    smtp_id = api("EmailGateway.AddSMTP", APIKey=k, DomainID=domain_id)["NewSMTPID"]
    hook_id = api(
        "EmailGateway.AddWebhook",
        APIKey=k,
        DomainID=domain_id,
        Event="open",
        WebhookURL="http://127.0.0.1:9/h",
    )["NewWebhookID"]
    template_id = api(
        "EmailGateway.CreateTemplate", APIKey=k, Name="t", Subject="Hi", PlainContent="{{ a }}"
    )["TemplateID"]
    user_key_id = api("User.APIKey.Create", APIKey=k, Description="second")["NewAPIKeyID"]
    with database.transaction() as s:
        s.get(Domain, int(domain_id)).status = ENABLED
    sent = api(
        "EmailGateway.SendEmail",
        APIKey=k,
        DomainID=domain_id,
        Subject="Hello",
        ContentType="plain",
        PlainContent="Hi",
        From={"email": "shop@victim.example", "name": "Shop"},
        To=[{"email": "buyer@dest.example"}],
    )
    assert sent["Success"] is True, sent
    assert api("Suppression.Add", APIKey=k, EmailAddress="gone@dest.example", DomainID=domain_id)[
        "Success"
    ]
    return {
        "user": owner,
        "DomainID": domain_id,
        "ApiKeyId": key_id,
        "smtpid": smtp_id,
        "WebhookID": hook_id,
        "APIKeyID": user_key_id,
        "MessageID": sent["MessageID"],
        "TemplateID": template_id,
    }


def snapshot(api, victim):
    k = victim["user"].api_key
    d = victim["DomainID"]
    return (
        api("EmailGateway.GetDomain", APIKey=k, DomainID=d),
        api("EmailGateway.GetAPIs", APIKey=k, DomainID=d),
        api("EmailGateway.GetSMTPs", APIKey=k, DomainID=d),
        api("EmailGateway.GetWebhooks", APIKey=k, DomainID=d),
        api("User.APIKey.List", APIKey=k),
        api("Suppression.Browse", APIKey=k),
        api("EmailGateway.GetEvents", APIKey=k, DomainID=d),
        api("EmailGateway.GetWebhookDeliveries", APIKey=k, DomainID=d),
        api("EmailGateway.GetTemplates", APIKey=k),
        api("EmailGateway.GetTemplate", APIKey=k, TemplateID=victim["TemplateID"]),
    )


# (command, the id parameter to aim at the victim, other parameters)
ID_COMMANDS = [
    ("EmailGateway.GetDomain", "DomainID", {}),
    ("EmailGateway.UpdateDomain", "DomainID", {"LinkTracking": "1", "Subdomain": "evil"}),
    ("EmailGateway.VerifyDomain", "DomainID", {}),
    ("EmailGateway.RotateDKIMKey", "DomainID", {}),
    ("EmailGateway.DeleteDomain", "DomainID", {}),
    ("EmailGateway.AddAPI", "DomainID", {"Description": "x"}),
    ("EmailGateway.GetAPIs", "DomainID", {}),
    ("EmailGateway.DeleteAPI", "ApiKeyId", {}),
    ("EmailGateway.AddSMTP", "DomainID", {}),
    ("EmailGateway.GetSMTPs", "DomainID", {}),
    ("EmailGateway.DeleteSMTP", "smtpid", {}),
    ("EmailGateway.ResetSMTPPassword", "smtpid", {}),
    ("EmailGateway.AddWebhook", "DomainID", {"Event": "open", "WebhookURL": "http://1.2.3.4/"}),
    ("EmailGateway.GetWebhooks", "DomainID", {}),
    ("EmailGateway.RegenerateSigningKey", "DomainID", {}),
    ("EmailGateway.ClearDomainQueue", "DomainID", {}),
    ("EmailGateway.ReleaseHeldMessages", "DomainID", {}),
    ("EmailGateway.GetWebhookDeliveries", "DomainID", {}),
    ("EmailGateway.GetEvents", "DomainID", {}),
    ("EmailGateway.DomainStats", "DomainID", {}),
    ("EmailGateway.DailySeries", "DomainID", {}),
    ("EmailGateway.AggrEvents", "DomainID", {}),
    (
        "EmailGateway.SendEmail",
        "DomainID",
        {
            "Subject": "x",
            "ContentType": "plain",
            "PlainContent": "x",
            "From": {"email": "shop@victim.example"},
            "To": [{"email": "buyer@dest.example"}],
        },
    ),
    ("Suppression.Add", "DomainID", {"EmailAddress": "new@dest.example"}),
    ("Suppression.Browse", "DomainID", {}),
    ("Suppression.Check", "DomainID", {"EmailAddress": "gone@dest.example"}),
    ("Suppression.Delete", "DomainID", {"EmailAddress": "gone@dest.example"}),
    ("Suppression.ReviewBounces", "DomainID", {"Lift": "1"}),
    ("User.APIKey.Delete", "APIKeyID", {}),
    ("EmailGateway.GetTemplate", "TemplateID", {}),
    ("EmailGateway.UpdateTemplate", "TemplateID", {"Name": "evil", "PlainContent": "x"}),
    ("EmailGateway.DeleteTemplate", "TemplateID", {}),
    (
        "EmailGateway.SendEmail",
        "TemplateID",
        {
            "DomainID": MINE,
            "Subject": "x",
            "ContentType": "plain",
            "PlainContent": "x",
            "From": {"email": "me@mine.example"},
            "To": [{"email": "buyer@dest.example"}],
        },
    ),
    # Commands whose second id is aimed at the victim while the first is the caller's own.
    ("EmailGateway.ReleaseHeldMessages", "MessageID", {"DomainID": MINE}),
    ("EmailGateway.GetWebhookDeliveries", "WebhookID", {"DomainID": MINE}),
    ("EmailGateway.DeleteWebhook", "WebhookID", {"DomainID": MINE}),
    ("EmailGateway.EnableWebhook", "WebhookID", {}),
]


@pytest.mark.parametrize("command, id_param, extra", ID_COMMANDS)
def test_other_users_ids_look_like_missing_ones(
    api, user, victim, add_domain, command, id_param, extra
):
    if MINE in extra.values():
        mine = add_domain("mine.example")
        extra = {k: mine if v is MINE else v for k, v in extra.items()}
    before = snapshot(api, victim)
    theirs = api(command, APIKey=user.api_key, **{id_param: victim[id_param]}, **extra)
    missing = api(command, APIKey=user.api_key, **{id_param: MISSING}, **extra)
    assert theirs["Success"] is False
    assert theirs == missing
    assert snapshot(api, victim) == before


def test_delete_webhook_of_another_user(api, user, victim, add_domain):
    mine = add_domain("mine.example")
    # Their domain with their webhook, and my domain with their webhook id.
    for domain_id, webhook_id in (
        (victim["DomainID"], victim["WebhookID"]),
        (mine, victim["WebhookID"]),
    ):
        theirs = api(
            "EmailGateway.DeleteWebhook",
            APIKey=user.api_key,
            DomainID=domain_id,
            WebhookID=webhook_id,
        )
        assert theirs["Success"] is False
    hooks = api(
        "EmailGateway.GetWebhooks", APIKey=victim["user"].api_key, DomainID=victim["DomainID"]
    )["Webhooks"]
    assert [h["WebhookID"] for h in hooks] == [victim["WebhookID"]]
    assert api(
        "EmailGateway.DeleteWebhook",
        APIKey=user.api_key,
        DomainID=victim["DomainID"],
        WebhookID=victim["WebhookID"],
    ) == api(
        "EmailGateway.DeleteWebhook",
        APIKey=user.api_key,
        DomainID=MISSING,
        WebhookID=victim["WebhookID"],
    )


def test_lists_hold_only_the_callers_own(api, user, victim, add_domain):
    add_domain("mine.example")
    names = [
        d["DomainName"] for d in api("EmailGateway.GetDomains", APIKey=user.api_key)["Domains"]
    ]
    assert names == ["mine.example"]


@pytest.mark.parametrize(
    "command, id_param, extra",
    [c for c in ID_COMMANDS if MINE not in c[2].values() and c[1] != "MessageID"],
)
def test_malformed_and_out_of_range_ids_look_like_missing_ones(api, user, command, id_param, extra):
    # AddAPI's contract answers a malformed DomainID (2) apart from an unknown one (3).
    reference = "abc" if command == "EmailGateway.AddAPI" else MISSING
    expected = api(command, APIKey=user.api_key, **{id_param: reference}, **extra)
    assert expected["Success"] is False
    for bad in (2**40, 2**31, 0, -1, "12abc", 1.5):
        assert api(command, APIKey=user.api_key, **{id_param: bad}, **extra) == expected, bad


def test_huge_webhook_id_on_api_v1(client, api, user, add_domain):
    domain_id = add_domain()
    key = api("EmailGateway.AddAPI", APIKey=user.api_key, DomainID=domain_id, Description="d")[
        "APIKey"
    ]["Key"]
    resp = client.delete(
        "/api/v1/webhooks", headers={"Authorization": f"Bearer {key}"}, json={"WebhookID": 2**40}
    )
    assert resp.status_code == 404 and resp.get_json()["Errors"][0]["Code"] == 4
