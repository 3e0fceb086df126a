"""Rate limits for the /api/v1 routes: so many requests per period per bucket (a sender API key).

The counts live where every API process can see them: in the application database (fixed
windows aligned to multiples of the period, one ``rate_counters`` row per bucket and window),
or in Redis through the ``limits`` library. Both answer a ``Decision``; the HTTP layer turns a
refusal into a 429 with ``too_many_requests_text``.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from core.settings import Config
from models import Database, RateCounter
from models.direct import Direct

log = logging.getLogger("postern.ratelimit")

MAX_BUCKET_LENGTH = 100  # rate_counters.bucket is String(100)


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
    """A hit refused by a rate limit, with its decision (the relay answers it with 451)."""

    def __init__(self, decision: Decision):
        super().__init__(f"past {decision.limit} a window; wait {decision.retry_after} s")
        self.decision = decision


def too_many_requests_text(decision: Decision) -> str:
    return (
        f"Too many requests. Wait for {decision.retry_after} seconds "
        f"for another {decision.limit} attempts."
    )


class RateLimiter(ABC):
    """Counts requests per bucket: at most ``requests`` per ``period`` seconds."""

    requests: int
    period: int

    @abstractmethod
    def hit(self, bucket: str, now: float | None = None) -> Decision:
        """Count one request against ``bucket`` (at most 100 characters) and decide on it."""

    def hit_in(self, conn: Connection, bucket: str, now: float | None = None) -> Decision:
        """Count one request as ``hit`` does, in the transaction of ``conn`` (a connection to
        the application database) where this limiter keeps its counts in a database: the
        transaction's commit keeps the count, its rollback takes it back, and it costs one
        statement rather than a transaction of its own. A limiter that counts elsewhere
        (Redis) counts there, as ``hit``."""
        return self.hit(bucket, now)

    def clear(self, bucket: str) -> None:  # noqa: B027 - optional for subclasses
        """Forget every count kept for ``bucket``."""

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """Release connections the limiter holds of its own."""


def _check(requests: int, period: int) -> None:
    if requests < 1 or period < 1:
        raise ValueError("requests and period must be positive")


def _check_bucket(bucket: str) -> None:
    if not bucket or len(bucket) > MAX_BUCKET_LENGTH:
        raise ValueError(f"a rate limit bucket must be 1 to {MAX_BUCKET_LENGTH} characters")


class DatabaseLimiter(RateLimiter):
    """Fixed windows counted in ``rate_counters``, one short write per hit.

    The count is incremented by a single upsert (atomic on every backend: the row is locked
    by the statement itself) that returns the new count (SQLite, PostgreSQL) or is read back
    in the same transaction (MariaDB), so concurrent processes never lose or double-count
    a hit. When a hit opens a new window for its bucket, that
    bucket's old windows are deleted; every ``sweep_every`` hits of this process, old
    windows of every bucket are deleted too (buckets that went quiet).
    """

    RETRIES = 5  # deadlocks and lock timeouts are retried this many times

    def __init__(self, db: Database, requests: int, period: int, *, sweep_every: int = 100):
        _check(requests, period)
        self.db = db
        self.requests = requests
        self.period = period
        self.sweep_every = max(1, sweep_every)
        self._hits = itertools.count(1)
        upsert, self._returning = _upsert_for(db.backend)
        self._upsert = Direct(upsert)

    def hit(self, bucket: str, now: float | None = None) -> Decision:
        _check_bucket(bucket)
        now = time.time() if now is None else now
        for attempt in range(self.RETRIES + 1):
            try:
                # Direct statements on a connection of their own: this runs on every
                # /api/v1 request.
                with self.db.counter_connection() as conn:
                    decision = self._count(conn, bucket, now)
                break
            except DBAPIError as exc:
                if attempt == self.RETRIES or not _is_transient(exc):
                    raise
                log.debug("rate limit: retrying after %s", exc.orig)
        if self._sweep_due():
            self.sweep(now)
        return decision

    def hit_in(self, conn: Connection, bucket: str, now: float | None = None) -> Decision:
        """One hit counted in the application database's ``rate_counters``, in the
        transaction of ``conn``: no retry of its own (what fails undoes the caller's
        transaction) and every ``sweep_every`` hits, old windows of every bucket there are
        deleted in it too."""
        _check_bucket(bucket)
        now = time.time() if now is None else now
        decision = self._count(conn, bucket, now)
        if self._sweep_due():
            conn.execute(self._old_windows(now))
        return decision

    def _count(self, conn: Connection, bucket: str, now: float) -> Decision:
        """Add one hit to the bucket's current window on ``conn``, and decide on it."""
        window_start = int(now // self.period) * self.period
        params = {"bucket": bucket, "window_start": window_start}
        if self._returning:
            (hits,) = self._upsert.first(conn, params)
        else:
            self._upsert.execute(conn, [params])
            (hits,) = _READ_HITS.first(conn, params)
        if hits == 1:  # this hit opened the window: drop the bucket's old ones
            conn.execute(self._old_windows(now).where(RateCounter.bucket == bucket))
        if hits <= self.requests:
            return Decision(True, self.requests, self.requests - hits, 0)
        retry_after = max(1, math.ceil(window_start + self.period - now))
        return Decision(False, self.requests, 0, retry_after)

    def _sweep_due(self) -> bool:
        """Whether this hit is the ``sweep_every``-th of this process since the last sweep."""
        return next(self._hits) % self.sweep_every == 0

    def _old_windows(self, now: float):
        """The DELETE of every window that ended more than one period before ``now``."""
        return delete(RateCounter).where(RateCounter.window_start < self._cutoff(now))

    def _cutoff(self, now: float) -> int:
        """Windows starting before this ended more than one period before ``now``."""
        return math.floor(now) - 2 * self.period

    def sweep(self, now: float | None = None) -> int:
        """Delete the windows of every bucket that ended more than one period ago.

        Housekeeping only: a failure is logged and left for the next sweep.
        """
        now = time.time() if now is None else now
        try:
            with self.db.transaction() as session:
                return session.execute(self._old_windows(now)).rowcount or 0
        except SQLAlchemyError as exc:
            log.warning("rate limit: sweeping old windows failed: %s", exc)
            return 0

    def clear(self, bucket: str) -> None:
        with self.db.transaction() as session:
            session.execute(delete(RateCounter).where(RateCounter.bucket == bucket))


_READ_HITS = Direct(
    select(RateCounter.hits).where(
        RateCounter.bucket == bindparam("bucket"),
        RateCounter.window_start == bindparam("window_start"),
    )
)


def _upsert_for(backend: str):
    """The dialect's atomic "insert hits=1, or add 1 to the existing row" statement, and
    whether it returns the new count (SQLite and PostgreSQL; MariaDB's is read back)."""
    table = RateCounter.__table__
    values = {"bucket": bindparam("bucket"), "window_start": bindparam("window_start"), "hits": 1}
    if backend in ("sqlite", "postgresql"):
        insert = sqlite_insert if backend == "sqlite" else postgresql_insert
        stmt = insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.bucket, table.c.window_start],
            set_={"hits": table.c.hits + 1},
        )
        return stmt.returning(table.c.hits), True
    if backend in ("mysql", "mariadb"):
        stmt = mysql_insert(table).values(**values)
        return stmt.on_duplicate_key_update(hits=table.c.hits + 1), False
    raise ValueError(f"rate limiting does not support the {backend} database")


# PostgreSQL SQLSTATEs and MySQL/MariaDB error numbers worth a retry.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
_TRANSIENT_MYSQL = {1205, 1213}  # lock wait timeout, deadlock


def _is_transient(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in _TRANSIENT_MYSQL


class RedisLimiter(RateLimiter):
    """Fixed windows in Redis through ``limits`` (FixedWindowRateLimiter on RedisStorage).

    The window starts at a bucket's first hit and Redis expires it, so nothing piles up.
    Redis keeps the time: ``now`` is accepted for the interface's sake and ignored.
    """

    KEY_PREFIX = "postern"

    def __init__(self, url: str, requests: int, period: int, **redis_options):
        _check(requests, period)
        # Imported here: a database-backed deployment never touches the redis modules.
        from limits import RateLimitItemPerSecond
        from limits.storage import RedisStorage
        from limits.strategies import FixedWindowRateLimiter

        self.url = url
        self.requests = requests
        self.period = period
        options = {"socket_connect_timeout": 5, "socket_timeout": 5, **redis_options}
        self._storage = RedisStorage(url, key_prefix=self.KEY_PREFIX, **options)
        self._limiter = FixedWindowRateLimiter(self._storage)
        self._item = RateLimitItemPerSecond(requests, period)

    def hit(self, bucket: str, now: float | None = None) -> Decision:
        _check_bucket(bucket)
        allowed = self._limiter.hit(self._item, bucket)
        stats = self._limiter.get_window_stats(self._item, bucket)
        if allowed:
            return Decision(True, self.requests, stats.remaining, 0)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(False, self.requests, 0, retry_after)

    def clear(self, bucket: str) -> None:
        self._limiter.clear(self._item, bucket)

    def close(self) -> None:
        client = self._storage.storage
        client.close()
        client.connection_pool.disconnect()


_COUNTERS: dict[str, Database] = {}
_COUNTERS_LOCK = threading.Lock()


def counters_database(db: Database) -> Database:
    """Where the counters of ``db``'s limiter live: one per database URL and process.

    Counters need no durability (a power cut forgets a few counts and loses no mail), so
    their commits do not wait for the disk. On PostgreSQL that is an engine of its own with
    ``synchronous_commit`` off. On SQLite, which has one writer at a time per file, it is a
    file of its own beside the database, so counters never wait for (or hold up) the
    transactions that accept mail.
    """
    with _COUNTERS_LOCK:
        counters = _COUNTERS.get(db.url)
        if counters is None:
            counters = _COUNTERS[db.url] = _counters_database(db)
        return counters


def _counters_database(db: Database) -> Database:
    url = make_url(db.url)
    if db.backend == "postgresql":
        return Database(db.url, pool_size=db.engine.pool.size(), durable=False)
    if not url.database or url.database == ":memory:":
        return Database(db.url, durable=False)
    sidecar = Database(
        url.set(database=f"{url.database}-ratelimit.db").render_as_string(hide_password=False),
        durable=False,
    )
    RateCounter.__table__.create(sidecar.engine, checkfirst=True)
    return sidecar


def make_limiter(config: Config, db: Database) -> RateLimiter:
    """The limiter ``config.ratelimit`` asks for: the database's, or Redis's."""
    rl = config.ratelimit
    if rl.storage == "database":
        if db.backend in ("sqlite", "postgresql"):
            db = counters_database(db)
        return DatabaseLimiter(db, rl.requests, rl.period)
    return RedisLimiter(rl.storage, rl.requests, rl.period)
