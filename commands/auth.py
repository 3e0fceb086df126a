"""Who is calling: SessionID and user API key authentication, with idle session expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from commands.errors import AuthenticationFailed
from core.crypto import digests_match, token_digest
from core.settings import Config
from models import Database, User, UserAPIKey, UserSession

# How stale a last-seen or last-used time may get before it is written again.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class Caller:
    user_id: int
    session_id: str | None
    user: User | None = None  # loaded with the credential (detached: read its fields only)


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
    caller = None
    touch_session = touch_key = expired = None
    with db.transaction(readonly=True) as s:
        if session_id:
            digest = token_digest(session_id)
            row = s.execute(
                select(
                    UserSession.id,
                    UserSession.user_id,
                    UserSession.token_digest,
                    UserSession.last_seen_at,
                ).where(UserSession.token_digest == digest)
            ).first()
            if row is not None and digests_match(row.token_digest, digest):
                if row.last_seen_at + idle < now:
                    expired = row.id
                else:
                    caller = Caller(row.user_id, session_id)
                    if now - row.last_seen_at > TOUCH_INTERVAL:
                        touch_session = row.id
        if caller is None and api_key:
            digest = token_digest(api_key)
            row = s.execute(
                select(
                    UserAPIKey.id,
                    UserAPIKey.user_id,
                    UserAPIKey.key_digest,
                    UserAPIKey.last_used_at,
                ).where(UserAPIKey.key_digest == digest)
            ).first()
            if row is not None and digests_match(row.key_digest, digest):
                caller = Caller(row.user_id, None)
                if row.last_used_at is None or now - row.last_used_at > TOUCH_INTERVAL:
                    touch_key = row.id
        user = s.get(User, caller.user_id) if caller is not None else None
        enabled = user is not None and user.enabled
        if user is not None:
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
