"""Runs a command: authenticate, validate, handle inside one transaction, return its fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from marshmallow import Schema
from sqlalchemy.engine import Connection

from commands import idempotency, registry
from commands.auth import Caller, SenderCaller, authenticate
from commands.context import Context
from commands.delivery.inbox import Outcome, apply_report, is_return_path_host
from commands.delivery.outcomes import SoftRule
from commands.errors import AUTH_FAILED, CommandError, NotPermitted
from commands.keys.sender_keys import (
    INVALID_ACCOUNT,
    INVALID_KEY,
    authenticate_sender,
    load_owner,
    unauthorised,
)
from commands.keys.smtp_credentials import SMTPCaller
from commands.ratelimit import (
    TRACKING_SCOPE,
    USER_SCOPE,
    Decision,
    RateLimited,
    RateLimiter,
    login_throttle,
    make_limiter,
    smtp_auth_throttle,
    smtp_bucket,
    user_bucket,
)
from commands.schema import load_params
from commands.sending.handlers import accept_raw
from commands.users import check_password
from core.clock import utcnow
from core.crypto import SecretBox
from core.settings import Config, resolve_secret_key
from models import Database, Domain, User
from models.database import UnitOfWork
from mta.bounces import parse_report

# An SMTP submission by an authenticated credential: (caller, envelope recipients, message).
Submission = tuple[SMTPCaller, list[str], bytes]


class Gateway:
    """The gateway itself, free of any transport: HTTP, SMTP and workers all call ``run``."""

    def __init__(
        self, config: Config, db: Database | None = None, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.config = config
        self.db = db or Database(
            config.database.url, pool_size=config.database.pool_size, echo=config.database.echo
        )
        self.box = SecretBox(resolve_secret_key(config))
        self.clock = clock
        self.limiter = make_limiter(config, self.db, clock)
        # /api.php commands per user (``ratelimit.user_requests`` a ``user_period``).
        rl = config.ratelimit
        self.user_limiter = make_limiter(
            config,
            self.db,
            clock,
            requests=rl.user_requests,
            period=rl.user_period,
            scopes=(USER_SCOPE,),
        )
        self.login_throttle = login_throttle(config, self.db, clock)
        self.smtp_auth_throttle = smtp_auth_throttle(config, self.db, clock)
        # Opens and clicks: one recorded per recipient (and link) a window.
        window = config.tracking.repeat_window
        self.tracking_limiter: RateLimiter | None = (
            make_limiter(
                config, self.db, clock, requests=1, period=window, scopes=(TRACKING_SCOPE,)
            )
            if window
            else None
        )

    def close(self) -> None:
        """Release the connections the limiters hold of their own (Redis)."""
        for limiter in (
            self.limiter,
            self.user_limiter,
            self.login_throttle.limiter,
            self.smtp_auth_throttle.limiter,
            self.tracking_limiter,
        ):
            if limiter is not None:
                limiter.close()

    def run(
        self,
        cmd: registry.Command,
        params: Mapping[str, Any],
        *,
        remote_addr: str | None = None,
        sender: SenderCaller | None = None,
        count: Callable[[Connection], None] | None = None,
        limit_user: bool = False,
        idempotency_key: str | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """The command's response fields, or CommandError.

        ``caller`` is a user the transport has already authenticated (``authenticate_password``);
        a USER command given one reads no SessionID or APIKey.

        With ``limit_user`` (``/api.php``), a command run by a user counts against the
        user's limit (``user_limiter``; RateLimited past it, and nothing of the command is
        kept): a command that writes in its own transaction, where the counts are kept in
        the database, as ``run_limited`` counts, and any other before it runs.

        SENDER commands are given the ``sender`` that authenticate_sender returned (the
        /api/v1 transport authenticates first, to count the request against the key).
        ``count`` is called with the command's connection after its handler, before the
        commit (``run_limited``'s rate-limit hit: what it raises undoes the transaction).
        ``idempotency_key`` (the ``Idempotency-Key`` a caller sent) is honoured by commands
        registered ``idempotent`` (commands/idempotency.py) and ignored by the others.
        """
        now = self.clock()
        if caller is not None and cmd.auth is not registry.Auth.USER:
            caller = None
        if caller is not None:
            pass  # a user the transport authenticated (USER commands only)
        elif cmd.auth is registry.Auth.SENDER:
            if sender is None:
                raise unauthorised(INVALID_KEY)
            caller = Caller(sender.user_id, None, sender.user)
        elif cmd.auth is not registry.Auth.PUBLIC:
            lowered = {str(k).lower(): v for k, v in params.items()}
            caller = authenticate(
                self.db,
                self.config,
                now,
                session_id=_text(lowered.get("sessionid")),
                api_key=_text(lowered.get("apikey")),
            )
        try:
            values = load_params(schema_of(cmd), params)
        except CommandError:
            if limit_user and caller is not None:  # refused parameters count too
                self._hit(self.user_limiter, user_bucket(caller.user_id))
            raise
        user = None
        if caller is not None:
            user = caller.user
            if user is None:
                # Read in a transaction of its own: the command's transaction begins only at
                # its handler's first statement, so a handler can do slow work before locks.
                with self.db.transaction(readonly=True) as s:
                    user = s.get(User, caller.user_id)
            if user is None or not user.enabled:
                if sender is not None:
                    raise unauthorised(INVALID_ACCOUNT)
                raise CommandError(AUTH_FAILED, "Authentication failure or session expired")
            if cmd.auth is registry.Auth.ADMIN and not user.is_admin:
                raise NotPermitted("Not enough privileges: this command needs an administrator")
        claim = None
        if idempotency_key is not None and cmd.idempotent and caller is not None:
            claim = idempotency.IdempotencyClaim(
                f"key:{sender.key_id}" if sender is not None else f"user:{caller.user_id}",
                idempotency.valid_key(idempotency_key),
                idempotency.request_digest(cmd.name, params),
            )
        if not limit_user or user is None:
            return self._run(cmd, values, now, caller, user, remote_addr, sender, count, claim)
        counted: list[bool] = []
        count = self._count_user(cmd, user.id, count, counted)
        try:
            return self._run(cmd, values, now, caller, user, remote_addr, sender, count, claim)
        except CommandError:
            if not counted:  # refused before its commit: counted on its own
                self._hit(self.user_limiter, user_bucket(user.id))
            raise

    def _count_user(
        self,
        cmd: registry.Command,
        user_id: int,
        count: Callable[[Connection], None] | None,
        counted: list[bool],
    ) -> Callable[[Connection], None] | None:
        """Count the command against its user's limit: now (a read, or Redis), or in its
        transaction (the ``count`` returned, which also calls the caller's ``count``)."""
        limiter, bucket = self.user_limiter, user_bucket(user_id)
        known = limiter.refusal(bucket)
        if known is not None:
            raise RateLimited(known)
        if cmd.readonly or not limiter.counts_in_transactions:
            self._hit(limiter, bucket)
            counted.append(True)
            return count
        inner = count

        def both(conn: Connection) -> None:
            decision = limiter.hit_in(conn, bucket)
            if not decision.allowed:
                raise RateLimited(decision)
            counted.append(True)
            if inner is not None:
                inner(conn)

        return both

    @staticmethod
    def _hit(limiter: RateLimiter, bucket: str) -> Decision:
        decision = limiter.hit(bucket)
        if not decision.allowed:
            raise RateLimited(decision)
        return decision

    def _run(
        self,
        cmd: registry.Command,
        values: dict[str, Any],
        now: datetime,
        caller: Caller | None,
        user: User | None,
        remote_addr: str | None,
        sender: SenderCaller | None,
        count: Callable[[Connection], None] | None,
        claim: idempotency.IdempotencyClaim | None,
    ) -> dict[str, Any]:
        with self.db.unit_of_work(readonly=cmd.readonly) as work:
            ctx = Context(
                work=work,
                config=self.config,
                box=self.box,
                now=now,
                user=user,
                session_id=caller.session_id if caller else None,
                remote_addr=remote_addr,
                sender=sender,
                database=self.db,
                login_throttle=self.login_throttle,
            )
            refused = None
            answer = None if claim is None else idempotency.claim(work.conn, claim, now)
            if answer is not None:
                fields = answer  # the key's first answer, given again
            else:
                try:
                    fields = cmd.handler(ctx, **values)
                except CommandError as exc:
                    if not exc.commit:
                        raise
                    refused = exc  # leaving the block normally commits what was written
                if claim is not None:
                    if refused is None:
                        idempotency.record(work.conn, claim, fields)
                    else:
                        idempotency.release(work.conn, claim)
            if count is not None:
                count(work.conn)
        if refused is not None:
            raise refused
        return fields

    def run_limited(
        self,
        cmd: registry.Command,
        params: Mapping[str, Any],
        bucket: str,
        *,
        remote_addr: str | None = None,
        sender: SenderCaller | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], Decision]:
        """``run``, with the request counted against ``bucket``'s rate limit: the command's
        fields and the limit's decision, CommandError, or RateLimited (then nothing of the
        command is kept).

        A command that writes is counted in its own transaction, after its handler, where
        the limiter keeps its counts in the database: one upsert in the commit that accepts
        (a send rolled back is not counted, a send past the limit is not accepted). A
        request the limiter already knows to be past the limit is refused before it runs.
        Read-only commands (and every command, with Redis) are counted before they run, and
        a request refused by its checks is counted on its own: every request counts.
        """
        limiter = self.limiter
        known = limiter.refusal(bucket)
        if known is not None:
            raise RateLimited(known)
        if cmd.readonly or not limiter.counts_in_transactions:
            decision = limiter.hit(bucket)
            if not decision.allowed:
                raise RateLimited(decision)
            fields = self.run(
                cmd,
                params,
                remote_addr=remote_addr,
                sender=sender,
                idempotency_key=idempotency_key,
            )
            return fields, decision
        counted: list[Decision] = []

        def count(conn: Connection) -> None:
            decision = limiter.hit_in(conn, bucket)
            if not decision.allowed:
                raise RateLimited(decision)
            counted.append(decision)

        try:
            fields = self.run(
                cmd,
                params,
                remote_addr=remote_addr,
                sender=sender,
                count=count,
                idempotency_key=idempotency_key,
            )
        except CommandError:
            if not counted:  # refused before its commit: counted on its own
                decision = limiter.hit(bucket)
                if not decision.allowed:
                    raise RateLimited(decision) from None
            raise
        return fields, counted[0]

    def submit_many(self, items: list[Submission]) -> list[str | Exception]:
        """Several SMTP submissions by authenticated credentials, (caller, recipients, data)
        each, queued in one transaction: for each its message id, or the exception that
        refused it (CommandError as the send checks answer them, RateLimited past the
        credential's rate limit, counted in the same transaction; the relay turns them into
        SMTP replies).

        One commit (one fsync) for all. A refusal is decided by the checks before anything
        of that message is written (or, for 14, keeps its events), so it leaves the others
        alone. Anything else that goes wrong undoes the whole transaction, and each
        submission is then tried again on its own: only the one at fault fails.
        """
        try:
            return self._accept_together(items)
        except Exception as exc:  # noqa: BLE001 - each alone: only the one at fault fails
            if len(items) == 1:
                return [exc]
            return [self.submit_many([item])[0] for item in items]

    def _accept_together(self, items: list[Submission]) -> list[str | Exception]:

        results: list[str | Exception] = []
        with self.db.unit_of_work() as work:
            # Read in the transaction that accepts (a connection fewer per message); on
            # SQLite that begins it, and the look-up is one indexed row of each table.
            owners: dict[tuple[int, int], tuple[User, Domain] | None] = {}
            for caller, _, _ in items:
                key = (caller.user_id, caller.domain_id)
                if key not in owners:
                    owners[key] = load_owner(work.conn, *key)
            decisions = self._rate_limits(work, items)
            accepted: dict[int, int] = {}  # per user, for the quota: not yet committed
            for (caller, recipients, data), decision in zip(items, decisions, strict=True):
                owner = owners[caller.user_id, caller.domain_id]
                if owner is None or not owner[0].enabled:
                    results.append(CommandError(12, "Invalid or deactivated user account"))
                    continue
                user, domain = owner
                if not decision.allowed:
                    results.append(RateLimited(decision))
                    continue
                ctx = self._context(work, user, accepted)
                try:
                    results.append(accept_raw(ctx, domain, data, recipients)["MessageID"])
                except CommandError as exc:
                    results.append(exc)
        return results

    def _rate_limits(self, work: UnitOfWork, items: list[Submission]) -> list[Decision]:
        """Each submission's hit on its credential's rate limit, counted in the accepting
        transaction: one statement each, kept by its commit, where a write of its own would
        cost a transaction. Counted credential by credential in id order, so that two
        relays' transactions lock the same counters in the same order (PostgreSQL, MariaDB);
        each credential's submissions in the order they came."""
        decisions: dict[int, Decision] = {}
        order = sorted(range(len(items)), key=lambda i: items[i][0].credential_id)
        for i in order:
            decisions[i] = self.limiter.hit_in(work.conn, smtp_bucket(items[i][0].credential_id))
        return [decisions[i] for i in range(len(items))]

    def _context(
        self, work: UnitOfWork, user: User, accepted: dict[int, int] | None = None
    ) -> Context:
        return Context(
            work=work,
            config=self.config,
            box=self.box,
            now=self.clock(),
            user=user,
            database=self.db,
            accepted=accepted,
        )

    def accepts_for(self, address: str) -> bool:
        """Whether mail to ``address`` is Postern's own (a domain's return-path host)."""

        host = address.rpartition("@")[2]
        with self.db.transaction(readonly=True) as s:
            return bool(host) and is_return_path_host(s, host)

    def receive_report(self, recipients: list[str], data: bytes) -> Outcome | None:
        """Parse mail sent to a return path and record the bounce or complaint it reports."""

        report = parse_report(data)
        if report is None:
            return None
        with self.db.transaction() as session:
            c = self.config.delivery
            soft = SoftRule(c.soft_bounce_limit, c.soft_bounce_days)
            return apply_report(session, report, recipients, self.clock(), soft)

    def authenticate_password(
        self, username: str, password: str, remote_addr: str | None
    ) -> Caller:
        """The enabled user with this username and password (User.Login's check, with its
        failed-login throttle), or CommandError 3 (4 when throttled)."""
        checked = check_password(
            lambda: self.db.transaction(readonly=True),
            self.login_throttle,
            username,
            password,
            remote_addr,
        )
        return Caller(checked.user_id, None)

    def authenticate_sender(self, key: str | None) -> SenderCaller:
        """The sender API key's caller, or CommandError 13 (bad key) / 2 (disabled user)."""
        return authenticate_sender(self.db, key, self.clock())


_SCHEMAS: dict[str, Schema] = {}


def schema_of(cmd: registry.Command) -> Schema:
    """One schema instance per command: building one deep-copies its fields every time."""
    schema = _SCHEMAS.get(cmd.name)
    if schema is None:
        schema = _SCHEMAS[cmd.name] = cmd.schema()
    return schema


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
