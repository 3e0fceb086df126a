"""Users: User.Login, sessions and their expiry, user API keys, User.Create, secrets at rest."""

from sqlalchemy import select

from commands.users import set_enabled
from models import User, UserAPIKey, UserSession


def login(api, user):
    body = api("User.Login", Username=user.username, Password=user.password)
    assert body["Success"] is True, body
    return body["SessionID"]


def test_login_returns_session_and_user_info(api, make_user):
    user = make_user("Bob", email="bob@example.com")
    body = api("User.Login", Username="bob", Password=user.password, DisableCaptcha="1")
    assert body["Success"] is True and body["ErrorCode"] == 0
    assert len(body["SessionID"]) == 64
    info = body["UserInfo"]
    assert info["UserID"] == user.id and info["Username"] == "Bob"
    assert info["EmailAddress"] == "bob@example.com" and info["AccountStatus"] == "Enabled"
    assert info["LastLoginDate"] is not None
    assert "Password" not in info


def test_login_error_codes(api, user):
    cases = [
        ({}, 1, "Missing required parameter: Username"),
        ({"Username": "  "}, 1, "Missing required parameter: Username"),
        ({"Username": user.username}, 2, "Missing required parameter: Password"),
        ({"Username": user.username, "Password": "wrong password"}, 3, "Invalid login information"),
        ({"Username": "nobody", "Password": user.password}, 3, "Invalid login information"),
    ]
    for params, code, text in cases:
        body = api("User.Login", **params)
        assert (body["Success"], body["ErrorCode"], body["ErrorText"]) == (False, code, text)


def test_disabled_user_cannot_log_in_or_call(api, user, database, clock):
    sid = login(api, user)
    with database.transaction() as s:
        set_enabled(s, user.username, False, clock())
    assert api("User.Login", Username=user.username, Password=user.password)["ErrorCode"] == 3
    assert api("User.Login", Username=user.username, Password="bad password")["ErrorText"] == (
        "Invalid login information"
    )
    assert api("User.APIKey.List", SessionID=sid)["ErrorCode"] == 99998
    assert api("User.APIKey.List", APIKey=user.api_key)["ErrorCode"] == 99998
    with database.transaction() as s:
        set_enabled(s, user.username, True, clock())
    assert api("User.APIKey.List", APIKey=user.api_key)["Success"] is True


def test_logout_ends_the_session(api, user):
    sid = login(api, user)
    other = login(api, user)
    assert api("User.Logout", SessionID=sid)["Success"] is True
    assert api("User.APIKey.List", SessionID=sid)["ErrorCode"] == 99998
    assert api("User.APIKey.List", SessionID=other)["Success"] is True


def test_session_expires_after_idle_time(api, user, clock, base_config):
    idle = base_config.security.session_idle_timeout
    sid = login(api, user)
    clock.advance(seconds=idle - 120)
    assert api("User.APIKey.List", SessionID=sid)["Success"] is True  # use keeps it alive
    clock.advance(seconds=idle - 120)
    assert api("User.APIKey.List", SessionID=sid)["Success"] is True
    clock.advance(seconds=idle + 1)
    body = api("User.APIKey.List", SessionID=sid)
    assert body["ErrorCode"] == 99998 and "expired" in body["ErrorText"]
    assert api("User.APIKey.List", SessionID=sid)["ErrorCode"] == 99998


def test_api_key_lifecycle(api, user, clock):
    created = api("User.APIKey.Create", APIKey=user.api_key, Description="deploy bot")
    assert created["Success"] is True
    new = created["APIKey"]
    assert new["APIKeyID"] == created["NewAPIKeyID"] and new["Description"] == "deploy bot"
    assert new["Key"].startswith("pu_") and len(new["Key"]) == 43
    listed = api("User.APIKey.List", APIKey=new["Key"])["APIKeys"]
    assert [k["Key"] for k in listed] == [user.api_key, new["Key"]]
    assert listed[1]["LastUsedDate"] is not None
    assert (
        api("User.APIKey.Delete", APIKey=user.api_key, APIKeyID=new["APIKeyID"])["Success"] is True
    )
    assert api("User.APIKey.List", APIKey=new["Key"])["ErrorCode"] == 99998


def test_api_key_errors(api, user, make_user):
    assert api("User.APIKey.Create", APIKey=user.api_key, Description="x" * 256)["ErrorCode"] == 1
    assert api("User.APIKey.Delete", APIKey=user.api_key)["ErrorCode"] == 1
    assert api("User.APIKey.Delete", APIKey=user.api_key, APIKeyID="abc")["ErrorCode"] == 2
    assert api("User.APIKey.Delete", APIKey=user.api_key, APIKeyID=999999)["ErrorCode"] == 2


def test_users_never_see_or_touch_each_others_keys(api, user, make_user, database):
    other = make_user("mallory")
    with database.transaction(readonly=True) as s:
        other_key_id = s.scalar(select(UserAPIKey.id).where(UserAPIKey.user_id == other.id))
    mine = api("User.APIKey.List", APIKey=user.api_key)["APIKeys"]
    assert other.api_key not in [k["Key"] for k in mine]
    body = api("User.APIKey.Delete", APIKey=user.api_key, APIKeyID=other_key_id)
    assert body["ErrorCode"] == 2 and body["ErrorText"] == "API key not found"
    assert api("User.APIKey.List", APIKey=other.api_key)["Success"] is True


def test_user_create_needs_an_administrator(api, user, make_user):
    body = api("User.Create", APIKey=user.api_key, Username="eve", Password="long enough")
    assert body["ErrorCode"] == 99999
    admin = make_user("root", is_admin=True)
    body = api(
        "User.Create",
        APIKey=admin.api_key,
        Username="eve",
        Password="long enough pw",
        EmailAddress="eve@example.com",
    )
    assert body["Success"] is True and body["UserInfo"]["Username"] == "eve"
    assert api("User.APIKey.List", APIKey=body["APIKey"])["Success"] is True
    assert api("User.Login", Username="eve", Password="long enough pw")["Success"] is True


def test_user_create_errors(api, make_user):
    admin = make_user("root", is_admin=True)
    cases = [
        ({}, 1),
        ({"Username": "eve"}, 2),
        ({"Username": "Root", "Password": "long enough"}, 3),
        ({"Username": "bad name", "Password": "long enough"}, 3),
        ({"Username": "eve", "Password": "long enough", "EmailAddress": "not-an-email"}, 4),
        ({"Username": "eve", "Password": "short"}, 5),
        ({"Username": "eve", "Password": "long enough", "IsAdmin": "maybe"}, 6),
    ]
    for params, code in cases:
        assert api("User.Create", APIKey=admin.api_key, **params)["ErrorCode"] == code, params


def test_secrets_at_rest(api, user, database):
    sid = login(api, user)
    with database.transaction(readonly=True) as s:
        row = s.scalar(select(User).where(User.id == user.id))
        assert row.password_hash.startswith("$argon2id$")
        assert user.password not in row.password_hash
        key = s.scalar(select(UserAPIKey).where(UserAPIKey.user_id == user.id))
        assert user.api_key not in (key.key_digest, key.key_encrypted)
        session = s.scalar(select(UserSession).where(UserSession.user_id == user.id))
        assert session.token_digest != sid and sid not in session.token_digest
