"""The administrators' commands on /api.php: Admin.Login, users, domains, the queue, and
what a suspension does to sending."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from models import Delivery, Domain, Event, User

SEND = {
    "Subject": "Hello",
    "ContentType": "plain",
    "PlainContent": "Hello there",
    "From": {"email": "news@example.com", "name": "News"},
}

ADMIN_COMMANDS = {
    "Admin.Users.List": {},
    "Admin.Users.Get": {"UserID": 1},
    "Admin.User.Create": {"Username": "x", "Password": "long enough password"},
    "Admin.User.Update": {"UserID": 1, "Status": "Suspended"},
    "Admin.User.Delete": {"UserID": 1},
    "Admin.Domains.List": {},
    "Admin.Domain.Suspend": {"DomainID": 1},
    "Admin.Domain.Enable": {"DomainID": 1},
    "Admin.Queue": {},
}


@pytest.fixture
def admin(make_user):
    return make_user("root", email="root@example.org", is_admin=True)


def ok(body):
    assert body["Success"] is True and body["ErrorCode"] == 0, body
    return body


def code(body):
    assert body["Success"] is False, body
    return body["ErrorCode"]


def v1_send(client, key, to="rcpt@dest.example"):
    return client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {key}"},
        json={**SEND, "To": [{"email": to}]},
    )


def php_send(client, user_key, domain_id, to="rcpt@dest.example", sender="news@example.com"):
    resp = client.post(
        "/api.php",
        json={
            "Command": "EmailGateway.SendEmail",
            "APIKey": user_key,
            "DomainID": domain_id,
            **SEND,
            "From": {"email": sender, "name": "News"},
            "To": [{"email": to}],
        },
    )
    return resp.get_json()


@pytest.fixture
def api_any(client):
    """/api.php whatever the HTTP status: (status, envelope)."""

    def call(command, **params):
        resp = client.post("/api.php", json={"Command": command, **params})
        return resp.status_code, resp.get_json()

    return call


# -- logging in -----------------------------------------------------------------------------


def test_admin_login_only_for_administrators(api, admin, user):
    body = ok(api("Admin.Login", Username="ROOT", Password=admin.password))
    assert body["UserInfo"]["IsAdmin"] is True
    ok(api("Admin.Users.List", SessionID=body["SessionID"]))
    # A user who is not an administrator is refused exactly like a wrong password.
    refused = api("Admin.Login", Username=user.username, Password=user.password)
    wrong = api("Admin.Login", Username=admin.username, Password="not the password")
    nobody = api("Admin.Login", Username="nobody", Password="whatever password")
    assert refused == wrong == nobody
    assert (refused["ErrorCode"], refused["ErrorText"]) == (3, "Invalid login information")
    assert code(api("Admin.Login", Password="x")) == 1
    assert code(api("Admin.Login", Username="root")) == 2
    # Administrators may also use User.Login and their user API key.
    sid = ok(api("User.Login", Username="root", Password=admin.password))["SessionID"]
    ok(api("Admin.Queue", SessionID=sid))
    ok(api("Admin.Queue", APIKey=admin.api_key))


def test_admin_login_refusals_are_throttled_like_user_login(make_app, admin, user):
    call = make_app(security__login_failures_per_user=2)
    for _ in range(2):
        assert call("Admin.Login", Username=user.username, Password=user.password)["ErrorCode"] == 3
    # Past the limit, the username (and the address) is refused with 4.
    assert call("Admin.Login", Username=user.username, Password=user.password)["ErrorCode"] == 4


def test_every_admin_command_answers_99999_to_a_user(api, api_any, admin, user):
    for command, params in ADMIN_COMMANDS.items():
        for auth in ({"APIKey": user.api_key}, {"SessionID": _session(api, user)}):
            status, body = api_any(command, **auth, **params)
            assert (body["Success"], body["ErrorCode"]) == (False, 99999), (command, body)
    # Nothing was changed by those calls.
    info = ok(api("Admin.Users.Get", APIKey=admin.api_key, UserID=user.id))["User"]
    assert info["Status"] == "Enabled"
    assert ok(api("User.APIKey.List", APIKey=user.api_key))


def _session(api, user):
    return ok(api("User.Login", Username=user.username, Password=user.password))["SessionID"]


# -- users --------------------------------------------------------------------------------


def test_users_list_pages_and_searches(api, admin, make_user, active_domain, user):
    for i in range(5):
        make_user(f"user{i}", email=f"u{i}@corp{i % 2}.example")
    active_domain("one.example")
    active_domain("two.example")
    key = admin.api_key
    first = ok(api("Admin.Users.List", APIKey=key, Page=1, PerPage=3))
    assert first["TotalRecords"] == 7 and (first["Page"], first["PerPage"]) == (1, 3)
    assert [u["Username"] for u in first["Users"]] == ["root", "alice", "user0"]
    alice = first["Users"][1]
    assert alice == {
        "UserID": user.id,
        "Username": "alice",
        "EmailAddress": "",
        "IsAdmin": False,
        "Status": "Enabled",
        "SendQuota": None,
        "SendQuotaPeriod": None,
        "EffectiveSendQuota": 0,
        "EffectiveSendQuotaPeriod": 86400,
        "DomainLimit": None,
        "EffectiveDomainLimit": 50,
        "DomainCount": 2,
        "SignUpDate": alice["SignUpDate"],
        "LastLoginDate": None,
    }
    assert first["Users"][0]["IsAdmin"] is True
    last = ok(api("Admin.Users.List", APIKey=key, Page="3", PerPage="3"))
    assert [u["Username"] for u in last["Users"]] == ["user4"]
    assert ok(api("Admin.Users.List", APIKey=key, Page=9))["Users"] == []
    # A part of the username or of the email address, in any case.
    found = ok(api("Admin.Users.List", APIKey=key, Search="CORP1"))
    assert [u["Username"] for u in found["Users"]] == ["user1", "user3"]
    assert found["TotalRecords"] == 2
    assert [
        u["Username"] for u in ok(api("Admin.Users.List", APIKey=key, Search="ser2"))["Users"]
    ] == ["user2"]
    # LIKE's wildcards are taken literally.
    assert ok(api("Admin.Users.List", APIKey=key, Search="%"))["Users"] == []
    assert ok(api("Admin.Users.List", APIKey=key, Search="_"))["Users"] == []
    for bad, want in (({"Page": 0}, 1), ({"Page": "x"}, 1), ({"PerPage": 101}, 2)):
        assert code(api("Admin.Users.List", APIKey=key, **bad)) == want
    assert code(api("Admin.Users.List", APIKey=key, Search="x" * 256)) == 3


def test_users_get_and_create(api, admin, user):
    key = admin.api_key
    got = ok(api("Admin.Users.Get", APIKey=key, UserID=user.id))["User"]
    assert got["Username"] == "alice" and got["DomainCount"] == 0
    assert code(api("Admin.Users.Get", APIKey=key)) == 1
    assert code(api("Admin.Users.Get", APIKey=key, UserID=99999)) == 2
    assert code(api("Admin.Users.Get", APIKey=key, UserID="abc")) == 2
    made = ok(
        api(
            "Admin.User.Create",
            APIKey=key,
            Username="carol",
            Password="carol's long password",
            EmailAddress="carol@example.com",
        )
    )
    assert made["UserInfo"]["Username"] == "carol" and made["APIKey"].startswith("pu_")
    ok(api("User.APIKey.List", APIKey=made["APIKey"]))
    again = api("Admin.User.Create", APIKey=key, Username="Carol", Password="another password")
    assert code(again) == 3


def test_user_update(api, admin, user, database):
    key = admin.api_key
    body = ok(
        api(
            "Admin.User.Update",
            APIKey=key,
            UserID=user.id,
            EmailAddress="Alice@Example.COM",
            Password="a brand new password",
            SendQuota=10,
            SendQuotaPeriod=3600,
            DomainLimit=1,
        )
    )["User"]
    assert body["EmailAddress"] == "Alice@example.com"
    assert (body["SendQuota"], body["SendQuotaPeriod"], body["DomainLimit"]) == (10, 3600, 1)
    assert (body["EffectiveSendQuota"], body["EffectiveDomainLimit"]) == (10, 1)
    assert code(api("User.Login", Username="alice", Password=user.password)) == 3
    ok(api("User.Login", Username="alice", Password="a brand new password"))
    # -1 removes an override: the setting applies again.
    body = ok(api("Admin.User.Update", APIKey=key, UserID=user.id, SendQuota=-1, DomainLimit=-1))
    assert (body["User"]["SendQuota"], body["User"]["DomainLimit"]) == (None, None)
    assert body["User"]["SendQuotaPeriod"] == 3600
    with database.transaction(readonly=True) as s:
        row = s.get(User, user.id)
        assert (row.send_quota, row.send_quota_period, row.domain_limit) == (None, 3600, None)
    cases = [
        ({}, 1),
        ({"UserID": 424242}, 2),
        ({"UserID": user.id, "EmailAddress": "not an address"}, 3),
        ({"UserID": user.id, "Password": "short"}, 4),
        ({"UserID": user.id, "Status": "Frozen"}, 5),
        ({"UserID": user.id, "SendQuota": -2}, 6),
        ({"UserID": user.id, "SendQuota": "lots"}, 6),
        ({"UserID": user.id, "SendQuotaPeriod": 0}, 7),
        ({"UserID": user.id, "DomainLimit": 2**40}, 8),
        ({"UserID": admin.id, "Status": "Suspended"}, 9),
        ({"UserID": admin.id, "Status": "Disabled"}, 9),
    ]
    for params, want in cases:
        body = api("Admin.User.Update", APIKey=key, **params)
        assert (body["Success"], body["ErrorCode"]) == (False, want), params


def test_disabling_ends_sessions_and_enabling_restores(api, admin, user):
    sid = _session(api, user)
    ok(api("Admin.User.Update", APIKey=admin.api_key, UserID=user.id, Status="Disabled"))
    assert code(api("User.APIKey.List", SessionID=sid)) == 99998
    assert code(api("User.APIKey.List", APIKey=user.api_key)) == 99998
    ok(api("Admin.User.Update", APIKey=admin.api_key, UserID=user.id, Status="enabled"))
    ok(api("User.APIKey.List", APIKey=user.api_key))


def test_domain_limit_override(api, admin, user, add_domain):
    ok(api("Admin.User.Update", APIKey=admin.api_key, UserID=user.id, DomainLimit=1))
    add_domain("one.example")
    assert code(api("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="two.example")) == 3
    ok(api("Admin.User.Update", APIKey=admin.api_key, UserID=user.id, DomainLimit=2))
    add_domain("two.example")


def test_quota_and_period_overrides(api, client, admin, user, active_domain, clock):
    clock.freeze()
    domain = active_domain()
    ok(
        api(
            "Admin.User.Update",
            APIKey=admin.api_key,
            UserID=user.id,
            SendQuota=2,
            SendQuotaPeriod=60,
        )
    )
    assert v1_send(client, domain.key, "a@dest.example").status_code == 200
    assert v1_send(client, domain.key, "b@dest.example").status_code == 200
    refused = v1_send(client, domain.key, "c@dest.example")
    assert refused.get_json()["Errors"][0]["Code"] == 17
    assert code(php_send(client, user.api_key, domain.id, "c@dest.example")) == 17
    clock.advance(seconds=61)  # the user's own period, not sending.quota_period's day
    assert v1_send(client, domain.key, "c@dest.example").status_code == 200


def test_user_delete(api, admin, user, make_user, active_domain, client, database):
    domain = active_domain()
    assert v1_send(client, domain.key).status_code == 200
    bob = make_user("bob")
    key = admin.api_key
    body = ok(api("Admin.User.Delete", APIKey=key, UserID=user.id))
    assert body["FailedDeliveries"] == 1
    assert code(api("Admin.Users.Get", APIKey=key, UserID=user.id)) == 2
    assert code(api("User.APIKey.List", APIKey=user.api_key)) == 99998
    assert v1_send(client, domain.key).status_code == 401
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(Domain)).all() == []
        assert s.scalars(select(Delivery)).all() == []
        assert [e.type for e in s.scalars(select(Event).order_by(Event.id))] == [
            "accepted",
            "failed",
        ]
    assert code(api("Admin.User.Delete", APIKey=key, UserID=user.id)) == 2
    assert code(api("Admin.User.Delete", APIKey=key)) == 1
    assert code(api("Admin.User.Delete", APIKey=key, UserID=admin.id)) == 3
    ok(api("Admin.Users.Get", APIKey=key, UserID=bob.id))


# -- domains ------------------------------------------------------------------------------


def test_domains_list_and_tenancy(api, admin, user, make_user, active_domain, add_domain):
    mine = active_domain("alice.example")
    bob = make_user("bob")
    theirs = add_domain("bob.example", key=bob.api_key)
    key = admin.api_key
    body = ok(api("Admin.Domains.List", APIKey=key))
    assert body["TotalRecords"] == 2
    assert [
        (d["DomainID"], d["DomainName"], d["UserID"], d["Username"], d["Status"])
        for d in body["Domains"]
    ] == [
        (mine.id, "alice.example", user.id, "alice", "Enabled"),
        (theirs, "bob.example", bob.id, "bob", "Pending"),
    ]
    assert [
        d["DomainName"] for d in ok(api("Admin.Domains.List", APIKey=key, Search="BOB"))["Domains"]
    ] == ["bob.example"]
    assert [
        d["DomainName"]
        for d in ok(api("Admin.Domains.List", APIKey=key, Search="alice"))["Domains"]
    ] == ["alice.example"]
    page = ok(api("Admin.Domains.List", APIKey=key, Page=2, PerPage=1))
    assert [d["DomainID"] for d in page["Domains"]] == [theirs] and page["TotalRecords"] == 2
    # The users' own commands still see only their own.
    alice_sees = ok(api("EmailGateway.GetDomains", APIKey=user.api_key))["Domains"]
    assert [str(d["DomainID"]) for d in alice_sees] == [str(mine.id)]
    assert code(api("EmailGateway.GetDomain", APIKey=user.api_key, DomainID=theirs)) == 2
    # An administrator's own user commands are a user's too: not a way into others' rows.
    assert code(api("EmailGateway.GetDomain", APIKey=key, DomainID=theirs)) == 2


def test_domain_suspend_and_enable(api, api_any, admin, user, active_domain, client):
    domain = active_domain()
    key = admin.api_key
    body = ok(api("Admin.Domain.Suspend", APIKey=key, DomainID=domain.id))["Domain"]
    assert body["Suspended"] is True and body["Status"] == "Enabled"
    refused = v1_send(client, domain.key)
    assert refused.get_json()["Errors"][0]["Code"] == 32
    assert code(php_send(client, user.api_key, domain.id)) == 32
    assert ok(api("Admin.Domains.List", APIKey=key))["Domains"][0]["Suspended"] is True
    ok(api("Admin.Domain.Enable", APIKey=key, DomainID=domain.id))
    assert v1_send(client, domain.key).status_code == 200
    assert code(api("Admin.Domain.Suspend", APIKey=key)) == 1
    assert code(api("Admin.Domain.Suspend", APIKey=key, DomainID=987654)) == 2
    assert code(api("Admin.Domain.Enable", APIKey=key, DomainID="nope")) == 2


# -- suspension and the queue -------------------------------------------------------------


def test_a_suspended_user_cannot_send_by_any_route_but_may_log_in(
    api, admin, user, active_domain, client
):
    domain = active_domain()
    ok(api("Admin.User.Update", APIKey=admin.api_key, UserID=user.id, Status="Suspended"))
    refused = v1_send(client, domain.key)
    assert refused.status_code == 403
    assert refused.get_json()["Errors"][0] == {
        "Code": 12,
        "Message": "Invalid or deactivated user account",
    }
    assert code(php_send(client, user.api_key, domain.id)) == 12
    fm = client.post(
        "/v3/messaging/emails",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "recipients": [{"email": "ann@dest.example"}],
            "from": {"email": "news@example.com", "name": "News"},
            "subject": "Hi",
            "contents": [{"type": "text/plain", "body": "Hello"}],
        },
    )
    assert fm.status_code == 400
    assert "Invalid or deactivated user account" in str(fm.get_json())
    # Still a user: logs in, reads their own things; told they are suspended.
    info = ok(api("User.Login", Username=user.username, Password=user.password))["UserInfo"]
    assert info["AccountStatus"] == "Suspended"
    ok(api("EmailGateway.GetDomains", APIKey=user.api_key))
    ok(api("Admin.User.Update", APIKey=admin.api_key, UserID=user.id, Status="Enabled"))
    assert v1_send(client, domain.key).status_code == 200


def test_admin_queue_counts_per_user(
    api, admin, user, make_user, active_domain, client, database, clock
):
    clock.freeze()
    alice_domain = active_domain("alice.example")
    bob = make_user("bob")
    bob_domain = active_domain("bob.example", key=bob.api_key)
    for domain, tos in ((alice_domain, ("a", "b", "c")), (bob_domain, ("d",))):
        for to in tos:
            resp = client.post(
                "/api/v1/email",
                headers={"Authorization": f"Bearer {domain.key}"},
                json={
                    **SEND,
                    "From": {"email": f"n@{domain.name}", "name": "N"},
                    "To": [{"email": f"{to}@dest.example"}],
                },
            )
            assert resp.status_code == 200, resp.get_json()
    with database.transaction() as s:
        rows = s.scalars(
            select(Delivery).where(Delivery.user_id == user.id).order_by(Delivery.id)
        ).all()
        rows[1].status, rows[1].due_at = "held", None
        rows[2].status, rows[2].due_at = "deferred", clock() + timedelta(hours=1)
    clock.advance(seconds=30)
    ok(api("Admin.User.Update", APIKey=admin.api_key, UserID=bob.id, Status="Suspended"))
    body = ok(api("Admin.Queue", APIKey=admin.api_key))
    assert body["Users"] == [
        {
            "UserID": user.id,
            "Username": "alice",
            "Status": "Enabled",
            "Queued": 1,
            "Deferred": 1,
            "Held": 1,
            "Sending": 0,
            "Due": 1,
            "OldestDueSeconds": 30,
        },
        {
            "UserID": bob.id,
            "Username": "bob",
            "Status": "Suspended",
            "Queued": 1,
            "Deferred": 0,
            "Held": 0,
            "Sending": 0,
            "Due": 1,
            "OldestDueSeconds": 30,
        },
    ]
    assert body["Totals"] == {"Queued": 2, "Deferred": 1, "Held": 1, "Sending": 0, "Due": 2}


@pytest.mark.parametrize("text", ["a\x00b", "\ud800"])
def test_text_no_database_can_keep_is_refused_not_failed(api, admin, user, text):
    key = admin.api_key
    assert code(api("Admin.Users.List", APIKey=key, Search=text)) == 3
    assert code(api("Admin.Domains.List", APIKey=key, Search=text)) == 3
    assert code(api("Admin.Login", Username=text, Password="whatever password")) in (1, 3)
    update = api("Admin.User.Update", APIKey=key, UserID=user.id, EmailAddress=f"{text}@x.example")
    assert code(update) == 3
    # A password is only hashed: a NUL in it is kept; a lone surrogate cannot be encoded.
    body = api("Admin.User.Update", APIKey=key, UserID=user.id, Password=text * 8)
    if text == "\ud800":
        assert code(body) == 4
    else:
        ok(body)
        ok(api("User.Login", Username=user.username, Password=text * 8))
