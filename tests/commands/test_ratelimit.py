"""The /api/v1 rate limiter: database storage on the suite's database, and Redis when present."""

from __future__ import annotations

import os
import secrets
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from commands.ratelimit import (
    DatabaseLimiter,
    Decision,
    RateLimiter,
    RedisLimiter,
    make_limiter,
    too_many_requests_text,
)
from models import RateCounter

PERIOD = 60
T0 = 1_700_000_040.0  # a multiple of PERIOD: the start of a window
REDIS_URL = os.environ.get("POSTERN_TEST_REDIS_URL", "").strip()


def bucket() -> str:
    return f"v1:test-{secrets.token_hex(8)}"


def windows(database, name: str) -> list[int]:
    with database.transaction(readonly=True) as s:
        return list(
            s.scalars(
                select(RateCounter.window_start)
                .where(RateCounter.bucket == name)
                .order_by(RateCounter.window_start)
            )
        )


def hammer(limiter: RateLimiter, name: str, now: float | None, threads=4, each=30):
    """``threads`` threads hitting ``name`` ``each`` times at once; every Decision."""
    start = threading.Barrier(threads)
    results: list[list[Decision]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(out: list[Decision]):
        try:
            start.wait()
            for _ in range(each):
                out.append(limiter.hit(name, now=now))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(out,)) for out in results]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    return [d for out in results for d in out]


# -- the database limiter


def test_allows_exactly_the_limit_then_refuses(database):
    limiter = DatabaseLimiter(database, requests=5, period=PERIOD)
    name = bucket()
    decisions = [limiter.hit(name, now=T0 + 10 + i) for i in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after == 0 for d in decisions)

    refused = limiter.hit(name, now=T0 + 20.5)
    assert refused == Decision(allowed=False, limit=5, remaining=0, retry_after=40)
    # Still refused, and the wait shrinks with the window; never below one second.
    assert limiter.hit(name, now=T0 + 59).retry_after == 1
    assert limiter.hit(name, now=T0 + 59.9).retry_after == 1


def test_buckets_are_independent(database):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD)
    a, b = bucket(), bucket()
    assert [limiter.hit(a, now=T0).allowed for _ in range(3)] == [True, True, False]
    assert [limiter.hit(b, now=T0).allowed for _ in range(3)] == [True, True, False]


def test_a_new_window_allows_again(database):
    limiter = DatabaseLimiter(database, requests=3, period=PERIOD)
    name = bucket()
    assert [limiter.hit(name, now=T0 + 30).allowed for _ in range(4)] == [True] * 3 + [False]
    # Windows are aligned to multiples of the period, not to the first hit.
    fresh = limiter.hit(name, now=T0 + PERIOD)
    assert fresh == Decision(allowed=True, limit=3, remaining=2, retry_after=0)
    assert windows(database, name) == [int(T0), int(T0) + PERIOD]


def test_concurrent_hits_are_counted_exactly(database):
    limiter = DatabaseLimiter(database, requests=100, period=PERIOD)
    name = bucket()
    decisions = hammer(limiter, name, now=T0 + 1)
    assert len(decisions) == 120
    assert sum(d.allowed for d in decisions) == 100
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(100))
    with database.transaction(readonly=True) as s:
        hits = s.scalar(select(RateCounter.hits).where(RateCounter.bucket == name))
    assert hits == 120


def test_a_new_window_deletes_the_buckets_old_ones(database):
    limiter = DatabaseLimiter(database, requests=10, period=PERIOD)
    name, other = bucket(), bucket()
    limiter.hit(name, now=T0)
    limiter.hit(other, now=T0)
    limiter.hit(name, now=T0 + PERIOD)
    # The previous window ended less than a period ago: kept.
    assert windows(database, name) == [int(T0), int(T0) + PERIOD]
    limiter.hit(name, now=T0 + 2 * PERIOD + 1)
    assert windows(database, name) == [int(T0) + PERIOD, int(T0) + 2 * PERIOD]
    limiter.hit(name, now=T0 + 5 * PERIOD)
    assert windows(database, name) == [int(T0) + 5 * PERIOD]
    # Only the bucket that was hit is tidied on a new window.
    assert windows(database, other) == [int(T0)]


def test_sweeps_delete_every_buckets_old_windows(database):
    limiter = DatabaseLimiter(database, requests=10, period=PERIOD, sweep_every=3)
    quiet, busy = bucket(), bucket()
    limiter.hit(quiet, now=T0)  # hit 1
    limiter.hit(busy, now=T0 + 3 * PERIOD)  # hit 2
    assert windows(database, quiet) == [int(T0)]
    limiter.hit(busy, now=T0 + 3 * PERIOD)  # hit 3: a sweep
    assert windows(database, quiet) == []
    assert windows(database, busy) == [int(T0) + 3 * PERIOD]
    assert limiter.sweep(now=T0 + 3 * PERIOD) == 0


def test_hits_in_a_transaction_are_kept_by_its_commit_and_undone_by_its_rollback(database):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD)
    name = bucket()
    with database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name, now=T0) == Decision(True, 2, 1, 0)
    with pytest.raises(RuntimeError), database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name, now=T0 + 1) == Decision(True, 2, 0, 0)
        raise RuntimeError("the accepting transaction fails")
    with database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name, now=T0 + 2) == Decision(True, 2, 0, 0)
        assert limiter.hit_in(work.conn, name, now=T0 + 3) == Decision(False, 2, 0, 57)
    # The same rows as hits made on their own.
    assert limiter.hit(name, now=T0 + 4) == Decision(False, 2, 0, 56)
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(RateCounter.hits).where(RateCounter.bucket == name)) == 4


def test_hits_in_a_transaction_open_windows_and_sweep_as_hits_do(database):
    limiter = DatabaseLimiter(database, requests=10, period=PERIOD, sweep_every=3)
    quiet, busy = bucket(), bucket()
    with database.unit_of_work() as work:
        limiter.hit_in(work.conn, quiet, now=T0)  # hit 1
        limiter.hit_in(work.conn, busy, now=T0)  # hit 2
    with database.unit_of_work() as work:
        # Hit 3 opens a window of ``busy`` far later: its old one goes, and it sweeps.
        limiter.hit_in(work.conn, busy, now=T0 + 3 * PERIOD)
    assert windows(database, busy) == [int(T0) + 3 * PERIOD]
    assert windows(database, quiet) == []


class _Deadlock(Exception):
    sqlstate = "40P01"  # PostgreSQL's code; MySQL/MariaDB's is errno 1213 in args[0]


@pytest.mark.parametrize("orig", [_Deadlock("deadlock"), Exception(1213, "Deadlock found")])
def test_deadlocks_are_retried(database, monkeypatch, orig):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD)
    real, failures = limiter._count, [orig]

    def flaky(*args):
        if failures:
            raise OperationalError("INSERT ...", {}, failures.pop())
        return real(*args)

    monkeypatch.setattr(limiter, "_count", flaky)
    assert limiter.hit(bucket(), now=T0) == Decision(True, 2, 1, 0)


def test_other_database_errors_are_not_retried(database, monkeypatch):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD)
    calls = []

    def broken(*args):
        calls.append(args)
        raise OperationalError("INSERT ...", {}, Exception(2006, "server has gone away"))

    monkeypatch.setattr(limiter, "_count", broken)
    with pytest.raises(OperationalError):
        limiter.hit(bucket(), now=T0)
    assert len(calls) == 1


def test_clear_forgets_a_bucket(database):
    limiter = DatabaseLimiter(database, requests=1, period=PERIOD)
    name = bucket()
    assert limiter.hit(name, now=T0).allowed
    assert not limiter.hit(name, now=T0).allowed
    limiter.clear(name)
    assert limiter.hit(name, now=T0).allowed


def test_uses_the_clock_when_no_time_is_given(database, one_window):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD)
    name = bucket()
    assert limiter.hit(name) == Decision(allowed=True, limit=2, remaining=1, retry_after=0)
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(RateCounter)) == 1


def test_bucket_length_is_checked(database):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD)
    limiter.hit("b" * 100, now=T0)
    with pytest.raises(ValueError):
        limiter.hit("b" * 101, now=T0)
    with pytest.raises(ValueError):
        limiter.hit("", now=T0)


def test_make_limiter_defaults_to_the_database(base_config, database):
    limiter = make_limiter(base_config, database)
    assert isinstance(limiter, DatabaseLimiter)
    assert (limiter.requests, limiter.period) == (100, 60)
    config = base_config.replace(ratelimit__requests=7, ratelimit__period=30)
    limiter = make_limiter(config, database)
    assert (limiter.requests, limiter.period) == (7, 30)


def test_counters_live_apart_without_waiting_for_the_disk(base_config, database):
    """One counters database per database and process; its commits skip the disk flush."""
    first = make_limiter(base_config, database)
    second = make_limiter(base_config, database)
    assert first.db is second.db
    first.hit("v1:apart", now=T0)
    with first.db.engine.connect() as conn:
        if database.backend == "postgresql":
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        elif database.backend == "sqlite":
            assert first.db.url.endswith("-ratelimit.db")
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    if database.backend != "sqlite":
        with database.transaction(readonly=True) as s:
            assert s.scalar(select(RateCounter.hits).where(RateCounter.bucket == "v1:apart"))
    first.clear("v1:apart")


def test_too_many_requests_text():
    decision = Decision(allowed=False, limit=100, remaining=0, retry_after=42)
    assert too_many_requests_text(decision) == (
        "Too many requests. Wait for 42 seconds for another 100 attempts."
    )


# -- the Redis limiter


@pytest.fixture(scope="module")
def redis_url():
    """POSTERN_TEST_REDIS_URL must work when set; otherwise a local Redis, or skip."""
    import redis

    url = REDIS_URL or "redis://127.0.0.1:6379/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if REDIS_URL:
            pytest.fail(f"POSTERN_TEST_REDIS_URL={url} cannot be reached: {exc}")
        pytest.skip(f"no Redis at {url} ({exc}); set POSTERN_TEST_REDIS_URL to require one")
    finally:
        client.close()
    return url


@pytest.fixture
def redis_limiter(redis_url):
    """Makes RedisLimiters; clears the buckets they used and closes them afterwards."""
    made: list[tuple[RedisLimiter, list[str]]] = []

    def make(requests: int, period: int = PERIOD):
        limiter = RedisLimiter(redis_url, requests, period)
        used: list[str] = []
        made.append((limiter, used))
        return limiter, used

    yield make
    import redis

    for limiter, used in made:
        try:
            for name in used:
                limiter.clear(name)
        except redis.RedisError:
            pass  # the test has failed already; the keys expire after one period anyway
        finally:
            limiter.close()


def test_redis_allows_exactly_the_limit_then_refuses(redis_limiter):
    limiter, used = redis_limiter(3)
    name = bucket()
    used.append(name)
    decisions = [limiter.hit(name) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True] * 3
    assert [d.remaining for d in decisions] == [2, 1, 0]
    refused = limiter.hit(name)
    assert not refused.allowed
    assert (refused.limit, refused.remaining) == (3, 0)
    assert 1 <= refused.retry_after <= PERIOD


def test_redis_buckets_are_independent(redis_limiter):
    limiter, used = redis_limiter(1)
    a, b = bucket(), bucket()
    used += [a, b]
    assert [limiter.hit(a).allowed for _ in range(2)] == [True, False]
    assert [limiter.hit(b).allowed for _ in range(2)] == [True, False]


def test_redis_clear_starts_a_new_window(redis_limiter):
    limiter, used = redis_limiter(1)
    name = bucket()
    used.append(name)
    assert limiter.hit(name).allowed
    assert not limiter.hit(name).allowed
    limiter.clear(name)
    assert limiter.hit(name).allowed


def test_redis_concurrent_hits_are_counted_exactly(redis_limiter):
    limiter, used = redis_limiter(100)
    name = bucket()
    used.append(name)
    decisions = hammer(limiter, name, now=None)
    assert sum(d.allowed for d in decisions) == 100


def test_a_redis_limiter_counts_hits_in_a_transaction_in_redis(redis_limiter, database):
    limiter, used = redis_limiter(2)
    name = bucket()
    used.append(name)
    with database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name).allowed
    assert [limiter.hit(name).allowed for _ in range(2)] == [True, False]
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(RateCounter.hits).where(RateCounter.bucket == name)) is None


def test_make_limiter_chooses_redis(base_config, database, redis_url):
    limiter = make_limiter(base_config.replace(ratelimit__storage=redis_url), database)
    try:
        assert isinstance(limiter, RedisLimiter)
        assert (limiter.requests, limiter.period) == (100, 60)
    finally:
        limiter.close()
