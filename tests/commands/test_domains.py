"""Sender domains: AddDomain, GetDomain, GetDomains, UpdateDomain, DeleteDomain."""

import base64

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
    load_pem_private_key,
)
from sqlalchemy import func, select

from commands.domains.handlers import normalise_domain_name
from models import DKIMKey, SenderAPIKey, SMTPCredential, Webhook


def records_by_purpose(records):
    return {r["Purpose"]: r for r in records}


def test_add_domain_answers_as_the_seed_shows_with_the_records_to_publish(api, user):
    body = api("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="Example.COM")
    assert body["Success"] is True and body["ErrorCode"] == 0
    assert isinstance(body["NewSenderDomainID"], int)
    d = body["Domain"]
    assert d["DomainName"] == "example.com"
    assert (d["VerificationStatus"], d["DKIMStatus"], d["SPFStatus"]) == ("Pending",) * 3
    assert d["Status"] == "Pending" and d["IsActive"] is False
    recs = records_by_purpose(d["DNSRecords"])
    assert recs["ownership"]["Host"] == "example.com" and recs["ownership"]["Type"] == "TXT"
    assert recs["ownership"]["Value"].startswith("postern-verification=")
    assert recs["spf"] == {
        "Host": "sl.example.com",
        "Type": "TXT",
        "Purpose": "spf",
        "Value": "v=spf1 a:mx.postern.test ~all",
        "Required": True,
    }
    dkim = recs["dkim"]
    assert dkim["Host"] == "key1._domainkey.sl.example.com" and dkim["Required"] is True
    assert dkim["Value"].startswith("v=DKIM1; k=rsa; p=")
    public = load_der_public_key(base64.b64decode(dkim["Value"].split("p=")[1]))
    assert public.key_size == 2048
    assert recs["dmarc"]["Host"] == "_dmarc.example.com" and recs["dmarc"]["Required"] is False
    assert recs["return-path"] == {
        "Host": "sl.example.com",
        "Type": "MX",
        "Purpose": "return-path",
        "Value": "10 mx.postern.test",
        "Required": False,
    }
    assert recs["tracking"]["Host"] == "track-sl.example.com"
    assert (recs["tracking"]["Type"], recs["tracking"]["Value"]) == ("A", "127.0.0.1")


def test_tracking_host_is_a_cname_when_the_public_url_has_a_name(make_app, user):
    call = make_app(http__public_url="https://mail.postern.example")
    body = call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="a.example")
    recs = records_by_purpose(body["Domain"]["DNSRecords"])
    assert (recs["tracking"]["Type"], recs["tracking"]["Value"]) == (
        "CNAME",
        "mail.postern.example",
    )


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("example.com", "example.com"),
        ("EXAMPLE.com.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("mail.sub.example.co.uk", "mail.sub.example.co.uk"),
        ("a-b.example", "a-b.example"),
        ("example", None),
        ("exa mple.com", None),
        ("-a.com", None),
        ("a-.com", None),
        ("a..com", None),
        ("x" * 64 + ".com", None),
        (("a" * 60 + ".") * 5 + "com", None),
        ("1.2.3.4", None),
        ("_dmarc.example.com", None),
        ("http://example.com", None),
        ("", None),
        ("ex@mple.com", None),
    ],
)
def test_domain_names(raw, expected):
    assert normalise_domain_name(raw) == expected


def test_add_domain_errors(api, user, add_domain):
    assert api("EmailGateway.AddDomain", APIKey=user.api_key)["ErrorCode"] == 1
    body = api("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="not a domain")
    assert (body["ErrorCode"], body["ErrorText"]) == (2, "Invalid domain name provided")
    add_domain("example.com")
    body = api("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="EXAMPLE.com")
    assert body["ErrorCode"] == 2 and "already" in body["ErrorText"]


def test_add_domain_limit(make_app, user):
    call = make_app(domains__max_per_user=2)

    def add(name):
        return call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName=name)

    assert add("a.example")["Success"] and add("b.example")["Success"]
    body = add("c.example")
    assert body["ErrorCode"] == 3
    assert body["ErrorText"] == "User has reached the maximum number of sender domains allowed"


def test_ed25519_key_as_well(make_app, user):
    call = make_app(domains__dkim_ed25519=True)
    body = call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="e.example")
    dkim = [r for r in body["Domain"]["DNSRecords"] if r["Purpose"] == "dkim"]
    assert [r["Host"] for r in dkim] == [
        "key1._domainkey.sl.e.example",
        "key2._domainkey.sl.e.example",
    ]
    assert dkim[1]["Value"].startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(dkim[1]["Value"].split("p=")[1])) == 32


def test_domain_enabled_at_once_when_verification_is_not_required(make_app, user):
    call = make_app(domains__require_verification=False)
    body = call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="n.example")
    d = body["Domain"]
    assert d["Status"] == "Enabled" and d["IsActive"] is True and d["Verified"] is False


def test_dkim_private_key_is_stored_encrypted(api, user, add_domain, database, box):
    domain_id = add_domain()
    with database.transaction(readonly=True) as s:
        key = s.scalar(select(DKIMKey).where(DKIMKey.domain_id == domain_id))
    assert "PRIVATE KEY" not in key.private_key_encrypted
    private = load_pem_private_key(box.decrypt(key.private_key_encrypted).encode(), None)
    der = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    public = base64.b64encode(der).decode()
    assert public == key.public_key


def test_get_domain(api, user, add_domain):
    domain_id = add_domain()
    body = api("EmailGateway.GetDomain", APIKey=user.api_key, DomainID=str(domain_id))
    d = body["Domain"]
    assert body["Success"] is True
    assert (d["DomainID"], d["DomainName"], d["IsActive"]) == (domain_id, "example.com", False)
    assert d["LinkTracking"] is False and d["Subdomain"] == "sl"
    assert d["ReturnPathHost"] == "sl.example.com" and d["TrackingHost"] == "track-sl.example.com"
    assert len(d["DNSRecords"]) == 6


def test_get_domain_errors(api, user):
    body = api("EmailGateway.GetDomain", APIKey=user.api_key)
    assert (body["ErrorCode"], body["ErrorText"]) == (1, "Required parameter missing: DomainID")
    for bad in (999999, "abc", -1):
        body = api("EmailGateway.GetDomain", APIKey=user.api_key, DomainID=bad)
        assert (body["ErrorCode"], body["ErrorText"]) == (
            2,
            "Unable to retrieve domain information",
        )


def test_get_domains(api, user, add_domain):
    assert api("EmailGateway.GetDomains", APIKey=user.api_key)["Domains"] == []
    first, second = add_domain("a.example"), add_domain("b.example")
    domains = api("EmailGateway.GetDomains", APIKey=user.api_key)["Domains"]
    assert [(d["DomainID"], d["DomainName"], d["Verified"], d["Active"]) for d in domains] == [
        (str(first), "a.example", False, False),
        (str(second), "b.example", False, False),
    ]


def test_update_domain(api, user, add_domain):
    domain_id = add_domain()
    body = api(
        "EmailGateway.UpdateDomain",
        APIKey=user.api_key,
        DomainID=str(domain_id),
        LinkTracking="1",
        OpenTracking="1",
        UnsubscribeLink="0",
        HostingProvider="Hosty",
        Subdomain="Mail",
    )
    assert body["Success"] is True
    assert body["Domain"] == {
        "DomainID": str(domain_id),
        "LinkTracking": "1",
        "OpenTracking": "1",
        "UnsubscribeLink": "0",
        "HostingProvider": "Hosty",
        "Subdomain": "mail",
        "Status": "Pending",
    }
    d = api("EmailGateway.GetDomain", APIKey=user.api_key, DomainID=domain_id)["Domain"]
    assert (d["LinkTracking"], d["OpenTracking"], d["UnsubscribeLink"]) == (True, True, False)
    assert d["HostingProvider"] == "Hosty" and d["ReturnPathHost"] == "mail.example.com"
    hosts = {r["Purpose"]: r["Host"] for r in d["DNSRecords"]}
    assert hosts["dkim"] == "key1._domainkey.mail.example.com"
    listed = api("EmailGateway.GetDomains", APIKey=user.api_key)["Domains"][0]
    assert listed["LinkTracking"] is True and listed["Subdomain"] == "mail"
    # Only what is sent changes.
    api("EmailGateway.UpdateDomain", APIKey=user.api_key, DomainID=domain_id, LinkTracking="0")
    d = api("EmailGateway.GetDomain", APIKey=user.api_key, DomainID=domain_id)["Domain"]
    assert (d["LinkTracking"], d["OpenTracking"], d["HostingProvider"]) == (False, True, "Hosty")


def test_update_domain_errors(api, user, add_domain):
    domain_id = add_domain()
    cases = [
        ({}, 1),
        ({"DomainID": 999999}, 5),
        ({"DomainID": "x"}, 5),
        ({"DomainID": domain_id, "LinkTracking": "maybe"}, 6),
        ({"DomainID": domain_id, "OpenTracking": "2"}, 7),
        ({"DomainID": domain_id, "UnsubscribeLink": "x"}, 8),
        ({"DomainID": domain_id, "HostingProvider": "h" * 101}, 9),
        ({"DomainID": domain_id, "Subdomain": "a.b"}, 10),
        ({"DomainID": domain_id, "Subdomain": "-x"}, 10),
    ]
    for params, code in cases:
        assert api("EmailGateway.UpdateDomain", APIKey=user.api_key, **params)["ErrorCode"] == code
    body = api("EmailGateway.UpdateDomain", APIKey=user.api_key)
    assert body["ErrorText"] == "Required field 'DomainID' is missing."


def test_delete_domain_removes_everything_under_it(api, user, add_domain, database, client):
    domain_id = add_domain()
    key = api("EmailGateway.AddAPI", APIKey=user.api_key, DomainID=domain_id, Description="k")[
        "APIKey"
    ]["Key"]
    api("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain_id)
    api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=domain_id,
        Event="bounce",
        WebhookURL="http://127.0.0.1:9/hook",
    )
    assert api("EmailGateway.DeleteDomain", APIKey=user.api_key, DomainID=domain_id)["Success"]
    assert api("EmailGateway.GetDomain", APIKey=user.api_key, DomainID=domain_id)["ErrorCode"] == 2
    with database.transaction(readonly=True) as s:
        for model in (DKIMKey, SenderAPIKey, SMTPCredential, Webhook):
            assert s.scalar(select(func.count()).select_from(model)) == 0, model
    resp = client.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 401 and resp.get_json()["Errors"][0]["Code"] == 13


def test_delete_domain_errors(api, user):
    body = api("EmailGateway.DeleteDomain", APIKey=user.api_key)
    assert (body["ErrorCode"], body["ErrorText"]) == (1, "Missing required parameter: DomainID")
    body = api("EmailGateway.DeleteDomain", APIKey=user.api_key, DomainID=123456)
    assert body["ErrorCode"] == 2


def test_add_domain_refuses_a_duplicate_or_one_past_the_limit_before_making_keys(
    make_app, user, monkeypatch
):
    """Key generation takes a while (RSA): a request that will be refused never starts it."""
    from commands.domains import dkim

    made = []
    real = dkim.new_key

    def counted(*args, **kwargs):
        made.append(args[1:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(dkim, "new_key", counted)
    call = make_app(domains__max_per_user=2)
    assert call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="a.example")["Success"]
    assert len(made) == 1
    body = call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="A.Example.")
    assert body["ErrorCode"] == 2 and "already in your account" in body["ErrorText"]
    assert call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="b.example")["Success"]
    assert len(made) == 2
    assert (
        call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="c.example")["ErrorCode"]
        == 3
    )
    assert len(made) == 2  # neither refusal made a key
