"""Rate limits: so many requests per period per bucket, for /api/v1 and for the SMTP relay.

A bucket is what a limit counts against: ``v1:<key digest>`` for a sender API key
(``api_bucket``), ``smtp:<credential id>`` for an SMTP credential (``smtp_bucket``). Each
allows ``ratelimit.requests`` requests per ``ratelimit.period`` seconds; the HTTP layer
answers a refusal with 429 (``too_many_requests_text``), the relay with 451.

The same storage keeps other counts, each limiter with its own period and bucket prefix
(its sweeps delete only its own): ``user:<id>``, a user's /api.php commands
(``ratelimit.user_requests`` a ``user_period``); ``login:`` and ``smtpauth:``, failed logins
of User.Login and of SMTP AUTH per username and per client address, as digests
(``FailureThrottle``); ``track:``, the opens and clicks recorded in the current
``tracking.repeat_window``.

Where the counts are kept, by ``ratelimit.storage``, for HTTP and SMTP alike:

- ``"database"``: the application database's ``rate_counters`` table, created by the
  migrations; one row per bucket and window, and nowhere else. A send (``POST
  /api/v1/email``, or a message over SMTP) is counted by one upsert in the transaction that
  accepts it: kept by its commit, taken back by its rollback, at the cost of one statement
  in a commit that happens anyway. Other requests, and requests their checks refuse, are
  counted by an upsert of their own, on PostgreSQL and SQLite through connections whose
  commits do not wait for the disk (a power cut may forget a few counts, never mail).
  Windows that ended more than a period ago are deleted as they go out of use.
- a ``redis://`` (or ``rediss://``) URL: Redis, one key per bucket and window
  (``postern:rl:<bucket>:<window start>``), counted by SET NX and INCR in one MULTI when the
  request is counted (before the command runs: Redis cannot take part in the database's
  transaction), and expiring by itself two periods after it was made. While Redis cannot
  be reached (refused, timed out, or answering with an error), each limiter counts in the
  database's ``rate_counters`` as ``"database"`` does, and logs a warning at most once a
  minute: the limits keep holding, and no request fails because Redis is down. Counts made
  then stay in the database; once Redis answers again, counting goes back there (a client
  may then get up to twice its limit in the window the outage ended in).

Windows are fixed and aligned to multiples of the period in Unix seconds of the gateway's
clock (``Gateway.clock``), not the machine's nor Redis's: with the default 60 s, a window
starts at every whole minute of that clock, and moving the clock moves the windows (tests
move it rather than wait). A request past the limit is told to wait until its window ends.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from sqlalchemy import Delete, bindparam, delete, or_, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql import ClauseElement

from core.clock import Clock, utcnow
from core.settings import Config, sqlite_in_memory
from models import Database, RateCounter
from models.direct import Direct

if TYPE_CHECKING:
    import redis

log = logging.getLogger("postern.ratelimit")

MAX_BUCKET_LENGTH = 100  # rate_counters.bucket is String(100)
REMEMBERED_REFUSALS = 10_000  # past this many, refusals whose window ended are forgotten


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit.

    ``retry_after`` is the whole number of seconds (at least 1) until the caller may try
    again when the hit was refused, and 0 when it was allowed.
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: int


class RateLimited(Exception):
    """A request refused by a rate limit, with its decision (429 over HTTP, 451 over SMTP)."""

    def __init__(self, decision: Decision):
        super().__init__(f"past {decision.limit} a window; wait {decision.retry_after} s")
        self.decision = decision


def too_many_requests_text(decision: Decision) -> str:
    return (
        f"Too many requests. Wait for {decision.retry_after} seconds "
        f"for another {decision.limit} attempts."
    )


def api_bucket(key_digest: str) -> str:
    """The bucket of a sender API key (by its digest)."""
    return f"v1:{key_digest}"


def smtp_bucket(credential_id: int) -> str:
    """The bucket of an SMTP credential."""
    return f"smtp:{credential_id}"


class RateLimiter(ABC):
    """Counts requests per bucket: at most ``requests`` per ``period`` seconds, in fixed
    windows aligned to multiples of the period on ``clock``."""

    # Whether ``hit_in`` counts in the caller's transaction (a send is then counted at the
    # end of the transaction that accepts it), or at once, as ``hit`` does.
    counts_in_transactions: ClassVar[bool] = False

    def __init__(self, requests: int, period: int, clock: Clock = utcnow):
        if requests < 1 or period < 1:
            raise ValueError("requests and period must be positive")
        self.requests = requests
        self.period = period
        self.clock = clock
        # Buckets whose last hit in this process was refused: the end of that window.
        self._refused: dict[str, int] = {}

    @abstractmethod
    def hit(self, bucket: str) -> Decision:
        """Count one request against ``bucket`` (at most 100 characters) and decide on it."""

    def hit_in(self, conn: Connection, bucket: str) -> Decision:
        """Count one request as ``hit`` does, in the transaction of ``conn`` (a connection to
        the application database) where the counts are kept in that database: the
        transaction's commit keeps the count, its rollback takes it back, and it costs one
        statement rather than a transaction of its own. A limiter that counts elsewhere
        (Redis) counts there, at once."""
        return self.hit(bucket)

    def refusal(self, bucket: str) -> Decision | None:
        """The refusal a request on ``bucket`` meets now, uncounted: when this process's last
        hit on it was refused in the current window and the stored count is still at the
        limit (a ``clear`` anywhere is seen). None otherwise: the request is to be counted.

        Free for a bucket that was not refused of late, one read for one that was: a client
        past its limit is refused before the work its request asks for.
        """
        ends = self._refused.get(bucket)
        if ends is None:
            return None
        now = self.now()
        start = self.window(now)
        if now >= ends or self._stored_hits(bucket, start) < self.requests:
            self._refused.pop(bucket, None)
            return None
        return self._refuse(bucket, start, now)

    def clear(self, bucket: str) -> None:
        """Forget every count kept for ``bucket``."""
        self._refused.pop(bucket, None)

    def stored_hits(self, bucket: str, start: int) -> int:
        """The hits counted against ``bucket`` in the window starting at ``start``, uncounted."""
        return self._stored_hits(bucket, start)

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Release connections the limiter holds of its own."""

    def now(self) -> float:
        """The gateway's clock, in Unix seconds."""
        return self.clock().timestamp()

    def window(self, now: float) -> int:
        """The start of the window ``now`` falls in: a multiple of the period, in Unix seconds."""
        return math.floor(now / self.period) * self.period

    @abstractmethod
    def _stored_hits(self, bucket: str, start: int) -> int:
        """The hits counted against ``bucket`` in the window starting at ``start``."""

    def _decide(self, bucket: str, hits: int, start: int, now: float) -> Decision:
        """The decision on a hit that made ``hits`` in the window starting at ``start``."""
        if hits <= self.requests:
            self._refused.pop(bucket, None)
            return Decision(True, self.requests, self.requests - hits, 0)
        return self._refuse(bucket, start, now)

    def _refuse(self, bucket: str, start: int, now: float) -> Decision:
        ends = start + self.period
        if len(self._refused) >= REMEMBERED_REFUSALS:
            self._refused = {b: e for b, e in self._refused.items() if e > now}
        self._refused[bucket] = ends
        return Decision(False, self.requests, 0, max(1, math.ceil(ends - now)))


def _check_bucket(bucket: str) -> None:
    if not bucket or len(bucket) > MAX_BUCKET_LENGTH:
        raise ValueError(f"a rate limit bucket must be 1 to {MAX_BUCKET_LENGTH} characters")


class DatabaseLimiter(RateLimiter):
    """Fixed windows counted in the application database's ``rate_counters``.

    The count is incremented by a single upsert (atomic on every backend: the row is locked
    by the statement itself) that returns the new count (SQLite, PostgreSQL) or is read back
    in the same transaction (MariaDB), so concurrent processes never lose or double-count
    a hit. When a hit opens a new window for its bucket, that bucket's old windows are
    deleted; every ``sweep_every`` hits of this process, old windows of every bucket are
    deleted too (buckets that went quiet).

    ``hit`` counts on a connection of ``counters`` (a ``Database`` on the same database
    whose commits need not wait for the disk; ``db`` itself by default); ``hit_in`` in the
    caller's transaction on ``db``.
    """

    counts_in_transactions = True
    RETRIES = 5  # deadlocks and lock timeouts are retried this many times

    def __init__(
        self,
        db: Database,
        requests: int,
        period: int,
        clock: Clock = utcnow,
        *,
        counters: Database | None = None,
        sweep_every: int = 100,
        scopes: tuple[str, ...] = (),
    ):
        super().__init__(requests, period, clock)
        self.db = db
        self.counters = counters or db
        # The bucket prefixes this limiter owns: its sweeps delete only their old windows
        # (limiters of other periods share the table). Empty: every bucket's.
        self.scopes = scopes
        self.sweep_every = max(1, sweep_every)
        self._hits = itertools.count(1)
        upsert, self._returning = _upsert_for(db.backend)
        self._upsert = Direct(upsert)

    def hit(self, bucket: str) -> Decision:
        _check_bucket(bucket)
        now = self.now()
        for attempt in range(self.RETRIES + 1):
            try:
                with self.counters.counter_connection() as conn:
                    decision = self._count(conn, bucket, now)
                break
            except DBAPIError as exc:
                if attempt == self.RETRIES or not _is_transient(exc):
                    raise
                log.debug("rate limit: retrying after %s", exc.orig)
        if self._sweep_due():
            self.sweep()
        return decision

    def hit_in(self, conn: Connection, bucket: str) -> Decision:
        """One hit counted in ``rate_counters`` in the transaction of ``conn``: no retry of
        its own (what fails undoes the caller's transaction) and every ``sweep_every`` hits,
        old windows of every bucket are deleted in it too."""
        _check_bucket(bucket)
        now = self.now()
        decision = self._count(conn, bucket, now)
        if self._sweep_due():
            conn.execute(self._old_windows(now))
        return decision

    def _count(self, conn: Connection, bucket: str, now: float) -> Decision:
        """Add one hit to the bucket's current window on ``conn``, and decide on it."""
        start = self.window(now)
        params = {"bucket": bucket, "window_start": start}
        if self._returning:
            row = self._upsert.first(conn, params)
        else:
            self._upsert.execute(conn, [params])
            row = _READ_HITS.first(conn, params)
        hits = int(row[0]) if row else 0
        if hits == 1:  # this hit opened the window: drop the bucket's old ones
            conn.execute(self._old_windows(now).where(RateCounter.bucket == bucket))
        return self._decide(bucket, hits, start, now)

    def _stored_hits(self, bucket: str, start: int) -> int:
        with self.db.read_connection() as conn:
            row = _READ_HITS.first(conn, {"bucket": bucket, "window_start": start})
        return int(row[0]) if row else 0

    def _sweep_due(self) -> bool:
        """Whether this hit is the ``sweep_every``-th of this process since the last sweep."""
        return next(self._hits) % self.sweep_every == 0

    def _old_windows(self, now: float) -> Delete:
        """The DELETE of every window that ended more than one period before ``now``."""
        cutoff = math.floor(now) - 2 * self.period
        query = delete(RateCounter).where(RateCounter.window_start < cutoff)
        if self.scopes:
            query = query.where(or_(*(RateCounter.bucket.startswith(s) for s in self.scopes)))
        return query

    def sweep(self) -> int:
        """Delete the windows of every bucket that ended more than one period ago.

        Housekeeping only: a failure is logged and left for the next sweep.
        """
        try:
            with self.db.unit_of_work() as work:
                return work.conn.execute(self._old_windows(self.now())).rowcount
        except SQLAlchemyError as exc:
            log.warning("rate limit: sweeping old windows failed: %s", exc)
            return 0

    def clear(self, bucket: str) -> None:
        with self.db.unit_of_work() as work:
            work.conn.execute(delete(RateCounter).where(RateCounter.bucket == bucket))
        super().clear(bucket)


_READ_HITS = Direct(
    select(RateCounter.hits).where(
        RateCounter.bucket == bindparam("bucket"),
        RateCounter.window_start == bindparam("window_start"),
    )
)


def _upsert_for(backend: str) -> tuple[ClauseElement, bool]:
    """The dialect's atomic "insert hits=1, or add 1 to the existing row" statement, and
    whether it returns the new count (SQLite and PostgreSQL; MariaDB's is read back)."""
    table = RateCounter.__table__
    values = {"bucket": bindparam("bucket"), "window_start": bindparam("window_start"), "hits": 1}
    if backend == "sqlite":
        lite = sqlite_insert(RateCounter).values(**values)
        lite = lite.on_conflict_do_update(
            index_elements=[table.c.bucket, table.c.window_start],
            set_={"hits": table.c.hits + 1},
        )
        return lite.returning(table.c.hits), True
    if backend == "postgresql":
        pg = postgresql_insert(RateCounter).values(**values)
        pg = pg.on_conflict_do_update(
            index_elements=[table.c.bucket, table.c.window_start],
            set_={"hits": table.c.hits + 1},
        )
        return pg.returning(table.c.hits), True
    if backend in ("mysql", "mariadb"):
        my = mysql_insert(RateCounter).values(**values)
        return my.on_duplicate_key_update(hits=table.c.hits + 1), False
    raise ValueError(f"rate limiting does not support the {backend} database")


# PostgreSQL SQLSTATEs and MySQL/MariaDB error numbers worth a retry.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
_TRANSIENT_MYSQL = {1205, 1213}  # lock wait timeout, deadlock


def _is_transient(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _TRANSIENT_MYSQL


class RedisLimiter(RateLimiter):
    """Fixed windows counted in Redis, one key per bucket and window (see the module).

    Postern derives the window from its clock and counts with plain commands: SET NX with
    an expiry (the key is made once per window, and Redis drops it two periods later) and
    INCR, in one MULTI, one round trip a hit.
    """

    KEY_PREFIX = "postern:rl:"

    WARN_EVERY = 60.0  # seconds between two warnings that Redis cannot be reached

    def __init__(
        self,
        url: str,
        requests: int,
        period: int,
        clock: Clock = utcnow,
        *,
        fallback: RateLimiter | None = None,
        **options: Any,
    ):
        super().__init__(requests, period, clock)
        # Imported here: a database-backed deployment never loads the redis modules.
        import redis

        self.url = url
        options = {"socket_connect_timeout": 5, "socket_timeout": 5, **options}
        self._redis: redis.Redis = redis.Redis.from_url(url, **options)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        # Counts while Redis cannot be reached (the database's, from make_limiter).
        self.fallback = fallback
        self._warned = -math.inf

    def _unreachable(self, exc: Exception) -> RateLimiter:
        """The fallback limiter, after a warning (at most one a WARN_EVERY); or ``exc``
        raised again when there is none."""
        if self.fallback is None:
            raise exc
        now = time.monotonic()
        if now - self._warned >= self.WARN_EVERY:
            self._warned = now
            log.warning(
                "rate limit store unreachable; counting in the database",
                extra={"error": type(exc).__name__, "detail": str(exc)[:200]},
            )
        return self.fallback

    def _key(self, bucket: str, start: int) -> str:
        return f"{self.KEY_PREFIX}{bucket}:{start}"

    def hit(self, bucket: str) -> Decision:
        _check_bucket(bucket)
        now = self.now()
        start = self.window(now)
        key = self._key(bucket, start)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=2 * self.period, nx=True)
                pipe.incr(key)
                _, hits = pipe.execute()
        except self._errors as exc:
            decision = self._unreachable(exc).hit(bucket)
            if not decision.allowed:  # known to ``refusal`` as any refusal of this limiter
                self._refuse(bucket, start, now)
            return decision
        return self._decide(bucket, int(hits), start, now)

    def _stored_hits(self, bucket: str, start: int) -> int:
        try:
            # redis-py types its answers for its async client too: this one is bytes or None.
            value = cast("bytes | None", self._redis.get(self._key(bucket, start)))
        except self._errors as exc:
            return self._unreachable(exc).stored_hits(bucket, start)
        return int(value) if value is not None else 0

    def clear(self, bucket: str) -> None:
        if self.fallback is not None:
            self.fallback.clear(bucket)  # what was counted there while Redis was away
        prefix = f"{self.KEY_PREFIX}{bucket}:"
        pattern = _glob_escape(prefix) + "*"
        try:
            keys = [
                key
                for key in self._redis.scan_iter(match=pattern, count=1000)
                if key.decode()[len(prefix) :].lstrip("-").isdigit()  # not a longer bucket's
            ]
            if keys:
                self._redis.delete(*keys)
        except self._errors as exc:
            self._unreachable(exc)
        super().clear(bucket)

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


_COUNTERS: dict[str, Database] = {}
_COUNTERS_LOCK = threading.Lock()


def counters_database(db: Database, pool_size: int = 5) -> Database:
    """The database through which ``db``'s limiter makes hits of their own: ``db``'s own
    database and ``rate_counters`` table, through connections whose commits do not wait for
    the disk (counts need no durability: a power cut forgets a few, and loses no mail).

    On PostgreSQL, an engine with ``synchronous_commit`` off; on an SQLite file, one whose
    connections have ``synchronous=NORMAL`` (the same file, the same write lock); on
    MariaDB and in-memory SQLite, ``db`` itself. One per database URL and process.
    """
    if db.backend not in ("postgresql", "sqlite") or sqlite_in_memory(db.url):
        return db
    with _COUNTERS_LOCK:
        counters = _COUNTERS.get(db.url)
        if counters is None:
            counters = _COUNTERS[db.url] = Database(db.url, pool_size=pool_size, durable=False)
        return counters


# The bucket prefixes of each limiter the gateway keeps (a sweep deletes only its own).
SEND_SCOPES = ("v1:", "smtp:")
USER_SCOPE = "user:"
LOGIN_SCOPE = "login:"
SMTP_AUTH_SCOPE = "smtpauth:"
TRACKING_SCOPE = "track:"


def user_bucket(user_id: int) -> str:
    """The bucket of a user's /api.php commands."""
    return f"{USER_SCOPE}{user_id}"


def make_limiter(
    config: Config,
    db: Database,
    clock: Clock = utcnow,
    *,
    requests: int | None = None,
    period: int | None = None,
    scopes: tuple[str, ...] = SEND_SCOPES,
) -> RateLimiter:
    """The limiter ``config.ratelimit`` asks for, on the gateway's ``clock``: the database's
    (``db``'s ``rate_counters``) or Redis's. ``requests`` and ``period`` are
    ``ratelimit.requests`` and ``ratelimit.period`` unless given; every bucket it counts
    starts with one of ``scopes``."""
    rl = config.ratelimit
    requests = rl.requests if requests is None else requests
    period = rl.period if period is None else period
    counters = counters_database(db, config.database.pool_size)
    in_database = DatabaseLimiter(db, requests, period, clock, counters=counters, scopes=scopes)
    if rl.storage == "database":
        return in_database
    # While Redis cannot be reached, the database counts.
    return RedisLimiter(rl.storage, requests, period, clock, fallback=in_database)


# A throttle key: what is counted (``"user"``, ``"ip"``) and its value.
ThrottleKey = tuple[str, str]


class FailureThrottle:
    """Failed logins counted per key (a username, a client address) in the rate limiter's
    store, so that every process sees them: past ``limits[kind]`` failures of one key in a
    window of ``period`` seconds (fixed, aligned to the clock as the rate limiter's are),
    every attempt for that key is refused until the window ends, the right password too.

    Keys are stored as digests (no username is kept in the counters) under ``scope``.
    """

    def __init__(self, limiter: RateLimiter, scope: str, limits: dict[str, int]):
        self.limiter = limiter
        self.scope = scope
        self.limits = limits

    @property
    def period(self) -> int:
        return self.limiter.period

    def bucket(self, key: ThrottleKey) -> str:
        kind, value = key
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return f"{self.scope}{kind}:{digest}"

    def failures(self, key: ThrottleKey) -> int:
        """The failures counted against ``key`` in the current window."""
        start = self.limiter.window(self.limiter.now())
        return self.limiter.stored_hits(self.bucket(key), start)

    def wait(self, keys: list[ThrottleKey]) -> int:
        """Seconds until an attempt for ``keys`` may be made (at least 1), or 0 when it may be
        made now: no key has reached its limit of failures in the current window."""
        now = self.limiter.now()
        start = self.limiter.window(now)
        for key in keys:
            if self.limiter.stored_hits(self.bucket(key), start) >= self.limits[key[0]]:
                return max(1, math.ceil(start + self.period - now))
        return 0

    def fail(self, keys: list[ThrottleKey]) -> None:
        """Count one failure against each of ``keys``."""
        for key in keys:
            self.limiter.hit(self.bucket(key))

    def forget(self, key: ThrottleKey) -> None:
        """Forget the failures of ``key`` (a user who then logged in)."""
        self.limiter.clear(self.bucket(key))


def make_throttle(
    config: Config,
    db: Database,
    clock: Clock,
    *,
    scope: str,
    period: int,
    limits: dict[str, int],
) -> FailureThrottle:
    """A throttle of failed logins kept where ``ratelimit.storage`` keeps rate limits."""
    limiter = make_limiter(
        config, db, clock, requests=max(limits.values()), period=period, scopes=(scope,)
    )
    return FailureThrottle(limiter, scope, limits)


def login_throttle(config: Config, db: Database, clock: Clock = utcnow) -> FailureThrottle:
    """User.Login's: ``security.login_failures_per_user`` per username and
    ``security.login_failures_per_address`` per client address a ``security.login_lockout``
    window."""
    sec = config.security
    return make_throttle(
        config,
        db,
        clock,
        scope=LOGIN_SCOPE,
        period=sec.login_lockout,
        limits={"user": sec.login_failures_per_user, "ip": sec.login_failures_per_address},
    )


def smtp_auth_throttle(config: Config, db: Database, clock: Clock = utcnow) -> FailureThrottle:
    """The relay's AUTH: ``smtp.auth_max_failures`` per username and per client address an
    ``smtp.auth_lockout`` window."""
    most = config.smtp.auth_max_failures
    return make_throttle(
        config,
        db,
        clock,
        scope=SMTP_AUTH_SCOPE,
        period=config.smtp.auth_lockout,
        limits={"user": most, "ip": most},
    )
