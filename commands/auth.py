"""Who is calling: SessionID and user API key authentication, with idle and absolute session
expiry, and the caller a sender API key stands for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from commands.errors import AuthenticationFailed
from core.crypto import digests_match, token_digest
from core.settings import Config
from models import Database, Domain, User, UserAPIKey, UserSession

# How stale a last-seen or last-used time may get before it is written again.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class Caller:
    user_id: int
    session_id: str | None
    user: User | None = None  # loaded with the credential (detached: read its fields only)


@dataclass(frozen=True)
class SenderCaller:
    """The sender API key that authenticated an /api/v1 request, and whose it is."""

    key_id: int
    key_digest: str
    domain_id: int
    user_id: int
    user: User | None = None  # loaded with the key (detached: read its fields only)
    domain: Domain | None = None  # likewise


def authenticate(
    db: Database, config: Config, now: datetime, *, session_id: str | None, api_key: str | None
) -> Caller:
    """The enabled user behind a SessionID or user APIKey, or AuthenticationFailed.

    Either credential is enough; when both are given the call succeeds if one is valid.
    """
    session_id = session_id.strip() if isinstance(session_id, str) else None
    api_key = api_key.strip() if isinstance(api_key, str) else None
    if not session_id and not api_key:
        raise AuthenticationFailed("Authentication failure: SessionID or APIKey is required")
    idle = timedelta(seconds=config.security.session_idle_timeout)
    max_age = timedelta(seconds=config.security.session_max_age)
    caller: Caller | None = None
    touch_session: int | None = None
    touch_key: int | None = None
    expired: int | None = None
    with db.transaction(readonly=True) as s:
        if session_id:
            digest = token_digest(session_id)
            session = s.execute(
                select(
                    UserSession.id,
                    UserSession.user_id,
                    UserSession.token_digest,
                    UserSession.created_at,
                    UserSession.last_seen_at,
                ).where(UserSession.token_digest == digest)
            ).first()
            if session is not None and digests_match(session.token_digest, digest):
                if session.last_seen_at + idle < now or session.created_at + max_age < now:
                    expired = session.id
                else:
                    caller = Caller(session.user_id, session_id)
                    if now - session.last_seen_at > TOUCH_INTERVAL:
                        touch_session = session.id
        if caller is None and api_key:
            digest = token_digest(api_key)
            key = s.execute(
                select(
                    UserAPIKey.id,
                    UserAPIKey.user_id,
                    UserAPIKey.key_digest,
                    UserAPIKey.last_used_at,
                ).where(UserAPIKey.key_digest == digest)
            ).first()
            if key is not None and digests_match(key.key_digest, digest):
                caller = Caller(key.user_id, None)
                if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
                    touch_key = key.id
        user = s.get(User, caller.user_id) if caller is not None else None
        enabled = user is not None and user.enabled
        if caller is not None and user is not None:
            caller = Caller(caller.user_id, caller.session_id, user)
    if expired or touch_session or touch_key:
        with db.transaction() as s:
            if expired:
                s.execute(delete(UserSession).where(UserSession.id == expired))
            if touch_session:
                s.execute(
                    update(UserSession)
                    .where(UserSession.id == touch_session)
                    .values(last_seen_at=now)
                )
            if touch_key:
                s.execute(
                    update(UserAPIKey).where(UserAPIKey.id == touch_key).values(last_used_at=now)
                )
    if caller is None:
        if expired:
            raise AuthenticationFailed("Session expired: log in again")
        raise AuthenticationFailed()
    if not enabled:
        raise AuthenticationFailed("Authentication failure: the account is disabled")
    return caller
