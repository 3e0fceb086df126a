"""Users: creation, User.Login and User.Logout, user API keys, and the admin User.Create."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email
from marshmallow import fields, validate
from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from commands.context import Context, format_date
from commands.errors import CommandError
from commands.ratelimit import FailureThrottle
from commands.registry import Auth, command
from commands.schema import CommandSchema, Flag, RowID, param
from core.crypto import SecretBox, new_token, token_digest
from core.passwords import MIN_PASSWORD_LENGTH, hash_password, needs_rehash, verify_password
from models import User, UserAPIKey, UserSession

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")


class UserInputError(ValueError):
    """A username, password or email address that cannot be used; ``field`` names which."""

    def __init__(self, field: str, text: str):
        super().__init__(text)
        self.field = field


def normalise_email(email: str) -> str:
    try:
        return validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise UserInputError("email", f"Invalid email address: {exc}") from None


def create_user(
    db: Session, username: str, password: str, email: str = "", *, is_admin: bool = False
) -> User:
    """Add a user; raise UserInputError for a bad or taken username, password or email."""
    username = username.strip()
    if not USERNAME_RE.match(username):
        raise UserInputError(
            "username",
            "Invalid username: 1 to 100 letters, digits or . _ @ + -, "
            "starting with a letter or digit",
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserInputError(
            "password", f"Password must be at least {MIN_PASSWORD_LENGTH} characters long"
        )
    email = normalise_email(email) if email else ""
    key = username.lower()
    if db.scalar(select(User.id).where(User.username_key == key)) is not None:
        raise UserInputError("username", "Username is already taken")
    user = User(
        username=username,
        username_key=key,
        email=email,
        password_hash=hash_password(password),
        enabled=True,
        is_admin=is_admin,
    )
    db.add(user)
    db.flush()
    return user


def create_api_key(
    db: Session, box: SecretBox, user: User, description: str = ""
) -> tuple[UserAPIKey, str]:
    """A new user API key; the plain key is returned once and kept only encrypted."""
    plain = new_token("pu_")
    row = UserAPIKey(
        user_id=user.id,
        key_digest=token_digest(plain),
        key_encrypted=box.encrypt(plain),
        description=description,
    )
    db.add(row)
    db.flush()
    return row, plain


def user_info(user: User) -> dict[str, Any]:
    return {
        "UserID": user.id,
        "Username": user.username,
        "EmailAddress": user.email,
        "AccountStatus": (
            ("Suspended" if user.suspended else "Enabled") if user.enabled else "Disabled"
        ),
        "IsAdmin": user.is_admin,
        "SignUpDate": format_date(user.created_at),
        "LastLoginDate": format_date(user.last_login_at),
    }


def api_key_info(row: UserAPIKey, plain: str) -> dict[str, Any]:
    return {
        "APIKeyID": row.id,
        "Key": plain,
        "Description": row.description,
        "CreationDate": format_date(row.created_at),
        "LastUsedDate": format_date(row.last_used_at),
    }


class LoginSchema(CommandSchema):
    Username = param(
        fields.String(required=True), missing=(1, "Missing required parameter: Username")
    )
    Password = param(
        fields.String(required=True), missing=(2, "Missing required parameter: Password")
    )
    DisableCaptcha = fields.Raw(load_default=None)  # accepted and ignored: no captcha is ever asked


INVALID_LOGIN = "Invalid login information"
THROTTLED = 4  # User.Login's error past the failed-login limit (HTTP 429)


@dataclass(frozen=True)
class CheckedLogin:
    """A username and password that matched: the user's id and the hash they matched."""

    user_id: int
    password_hash: str


def check_password(
    read: Callable[[], AbstractContextManager[Session]],
    throttle: FailureThrottle | None,
    username: str,
    password: str,
    remote_addr: str | None,
    *,
    admin_only: bool = False,
) -> CheckedLogin:
    """The enabled user whose username and password these are, or CommandError 3 (4 past
    the failed-login limit). Argon2 is checked with no transaction open.

    Failed attempts are counted per username and per client address (``throttle``): past
    the limit, every attempt is refused with error 4 until the window ends.
    ``admin_only`` (Admin.Login): a user who is not an administrator is refused and counted
    exactly like a wrong password."""
    key = username.strip().lower()
    keys = [("user", key), ("ip", remote_addr or "unknown")]
    if throttle is not None:
        wait = throttle.wait(keys)
        if wait:
            raise CommandError(
                THROTTLED,
                f"Too many failed logins. Wait for {wait} seconds before trying again.",
                http_status=429,
            )
    query = select(User.id, User.password_hash, User.enabled, User.is_admin).where(
        User.username_key == key
    )
    # A name with NUL is nobody's (PostgreSQL text cannot even hold it to look it up).
    with read() as s:
        row = None if "\x00" in key else s.execute(query).first()
    # No transaction is open here; an unknown username is checked against a stand-in hash.
    ok = verify_password(row.password_hash if row else None, password)
    if not ok or row is None or (admin_only and not row.is_admin):
        if throttle is not None:
            throttle.fail(keys)
        raise CommandError(3, INVALID_LOGIN)
    if not row.enabled:
        raise CommandError(3, f"{INVALID_LOGIN}: the account is disabled")
    if throttle is not None and throttle.failures(keys[0]):
        throttle.forget(keys[0])
    return CheckedLogin(row.id, row.password_hash)


@command("User.Login", schema=LoginSchema, auth=Auth.PUBLIC)
def login(ctx: Context, Username: str, Password: str, **_: Any) -> dict[str, Any]:
    return login_as(ctx, Username, Password)


def login_as(
    ctx: Context, Username: str, Password: str, *, admin_only: bool = False
) -> dict[str, Any]:
    """Check the password with no transaction open (Argon2 takes a while), then write the
    session in a short transaction of its own (``check_password``; ``admin_only`` for
    Admin.Login)."""
    row = check_password(
        ctx.read, ctx.login_throttle, Username, Password, ctx.remote_addr, admin_only=admin_only
    )
    rehashed = hash_password(Password) if needs_rehash(row.password_hash) else None
    user = ctx.db.get(User, row.user_id)
    if user is None or not user.enabled or (admin_only and not user.is_admin):
        # deleted, disabled or no longer an administrator since it was read
        raise CommandError(3, INVALID_LOGIN)
    if rehashed is not None and user.password_hash == row.password_hash:
        user.password_hash = rehashed
    session_id = new_token(nbytes=32)
    ctx.db.add(
        UserSession(
            token_digest=token_digest(session_id),
            user_id=user.id,
            created_at=ctx.now,
            last_seen_at=ctx.now,
        )
    )
    user.last_login_at = ctx.now
    return {"SessionID": session_id, "UserInfo": user_info(user)}


class NoParams(CommandSchema):
    pass


@command("User.Logout", schema=NoParams, auth=Auth.USER)
def logout(ctx: Context) -> dict[str, Any]:
    """End the session that authenticated the call (a call by APIKey has none to end)."""
    if ctx.session_id:
        ctx.db.execute(
            delete(UserSession).where(
                UserSession.token_digest == token_digest(ctx.session_id),
                UserSession.user_id == ctx.current_user.id,
            )
        )
    return {}


class APIKeyCreateSchema(CommandSchema):
    Description = param(
        fields.String(load_default="", validate=validate.Length(max=255)),
        invalid=(1, "Description must be at most 255 characters"),
    )


@command("User.APIKey.Create", schema=APIKeyCreateSchema, auth=Auth.USER)
def api_key_create(ctx: Context, Description: str) -> dict[str, Any]:
    row, plain = create_api_key(ctx.db, ctx.box, ctx.current_user, Description)
    return {"NewAPIKeyID": row.id, "APIKey": api_key_info(row, plain)}


@command("User.APIKey.List", schema=NoParams, auth=Auth.USER, readonly=True)
def api_key_list(ctx: Context) -> dict[str, Any]:
    rows = ctx.db.scalars(
        select(UserAPIKey).where(UserAPIKey.user_id == ctx.current_user.id).order_by(UserAPIKey.id)
    ).all()
    return {"APIKeys": [api_key_info(r, ctx.box.decrypt(r.key_encrypted)) for r in rows]}


class APIKeyDeleteSchema(CommandSchema):
    APIKeyID = param(
        RowID(required=True),
        missing=(1, "Missing required parameter: APIKeyID"),
        invalid=(2, "API key not found"),
    )


@command("User.APIKey.Delete", schema=APIKeyDeleteSchema, auth=Auth.USER)
def api_key_delete(ctx: Context, APIKeyID: int) -> dict[str, Any]:
    # A DELETE answers a CursorResult (its rowcount); Session.execute is typed for any statement.
    result = cast(
        CursorResult[Any],
        ctx.db.execute(
            delete(UserAPIKey).where(
                UserAPIKey.id == APIKeyID, UserAPIKey.user_id == ctx.current_user.id
            )
        ),
    )
    deleted = result.rowcount
    if not deleted:
        raise CommandError(2, "API key not found")
    return {}


class UserCreateSchema(CommandSchema):
    Username = param(
        fields.String(required=True), missing=(1, "Missing required parameter: Username")
    )
    Password = param(
        fields.String(required=True), missing=(2, "Missing required parameter: Password")
    )
    EmailAddress = param(fields.String(load_default=""), invalid=(4, "Invalid email address"))
    IsAdmin = param(Flag(load_default=False), invalid=(6, "IsAdmin must be true or false"))


_CREATE_CODES = {"username": 3, "email": 4, "password": 5}


@command("User.Create", schema=UserCreateSchema, auth=Auth.ADMIN)
def user_create(
    ctx: Context, Username: str, Password: str, EmailAddress: str, IsAdmin: bool
) -> dict[str, Any]:
    """Administrators add users; the new user gets a first API key."""
    try:
        user = create_user(ctx.db, Username, Password, EmailAddress, is_admin=IsAdmin)
    except UserInputError as exc:
        raise CommandError(_CREATE_CODES[exc.field], str(exc)) from None
    _, plain = create_api_key(ctx.db, ctx.box, user, "created with the user")
    return {"UserID": user.id, "APIKey": plain, "UserInfo": user_info(user)}


def set_enabled(db: Session, username: str, enabled: bool, now: datetime) -> User | None:
    """Enable or disable a user; disabling ends all of the user's sessions."""
    user = db.scalar(select(User).where(User.username_key == username.strip().lower()))
    if user is None:
        return None
    user.enabled = enabled
    if not enabled:
        end_sessions(db, user.id)
    return user


def end_sessions(db: Session, user_id: int) -> None:
    db.execute(delete(UserSession).where(UserSession.user_id == user_id))
