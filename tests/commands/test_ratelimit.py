"""The rate limiter: the database storage on the suite's database, the Redis storage on a real
Redis, windows on the gateway's clock, and one store for the HTTP and the SMTP limits."""

from __future__ import annotations

import os
import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from commands import Gateway
from commands.keys.smtp_credentials import authenticate_smtp
from commands.ratelimit import (
    DatabaseLimiter,
    Decision,
    RateLimited,
    RateLimiter,
    RedisLimiter,
    api_bucket,
    make_limiter,
    smtp_bucket,
    too_many_requests_text,
)
from models import RateCounter

PERIOD = 60
START = 1_700_000_040  # a multiple of PERIOD: the start of a window, in Unix seconds
REDIS_URL = os.environ.get("POSTERN_TEST_REDIS_URL", "").strip()


@pytest.fixture
def at(clock):
    """Freezes the gateway's clock ``seconds`` after START (the limiter reads no other)."""

    def move(seconds: float):
        clock.freeze(datetime.fromtimestamp(START, UTC) + timedelta(seconds=seconds))

    move(0)
    return move


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


def stored(database, name: str) -> int:
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.sum(RateCounter.hits)).where(RateCounter.bucket == name)) or 0


def send_one(http, key: str) -> int:
    """The status of one POST /api/v1/email with ``key``."""
    return http.post(
        "/api/v1/email",
        json={
            "Subject": "Hi",
            "ContentType": "html",
            "HtmlContent": "<p>Hello</p>",
            "From": {"email": "news@example.com"},
            "To": [{"email": "rcpt@dest.example"}],
        },
        headers={"Authorization": f"Bearer {key}"},
    ).status_code


def hammer(limiter: RateLimiter, name: str, threads=4, each=30):
    """``threads`` threads hitting ``name`` ``each`` times at once; every Decision."""
    start = threading.Barrier(threads)
    results: list[list[Decision]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(out: list[Decision]):
        try:
            start.wait()
            for _ in range(each):
                out.append(limiter.hit(name))
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


def test_allows_exactly_the_limit_then_refuses(database, clock, at):
    limiter = DatabaseLimiter(database, requests=5, period=PERIOD, clock=clock)
    name = bucket()
    decisions = []
    for i in range(5):
        at(10 + i)
        decisions.append(limiter.hit(name))
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after == 0 for d in decisions)

    at(20.5)
    assert limiter.hit(name) == Decision(allowed=False, limit=5, remaining=0, retry_after=40)
    # Still refused, and the wait shrinks with the window; never below one second.
    at(59)
    assert limiter.hit(name).retry_after == 1
    at(59.9)
    assert limiter.hit(name).retry_after == 1


def test_buckets_are_independent(database, clock, at):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD, clock=clock)
    a, b = bucket(), bucket()
    assert [limiter.hit(a).allowed for _ in range(3)] == [True, True, False]
    assert [limiter.hit(b).allowed for _ in range(3)] == [True, True, False]


def test_windows_are_aligned_to_the_period_on_the_gateways_clock(database, clock, at):
    limiter = DatabaseLimiter(database, requests=3, period=PERIOD, clock=clock)
    name = bucket()
    at(30)
    assert [limiter.hit(name).allowed for _ in range(3)] == [True] * 3
    at(PERIOD - 0.001)  # the last moment of the window
    assert not limiter.hit(name).allowed
    # Moving the clock to the next multiple of the period opens the next window.
    at(PERIOD)
    assert limiter.hit(name) == Decision(allowed=True, limit=3, remaining=2, retry_after=0)
    assert windows(database, name) == [START, START + PERIOD]


def test_the_gateways_limiter_reads_the_gateways_clock(base_config, database, clock):
    gateway = Gateway(base_config, database, clock=clock)
    assert gateway.limiter.clock is clock
    clock.advance(days=400)  # wherever the clock is, the windows follow it
    gateway.limiter.hit("v1:moved")
    start = int(clock().timestamp()) // 60 * 60
    assert windows(database, "v1:moved") == [start]


def test_concurrent_hits_are_counted_exactly(database, clock, at):
    limiter = DatabaseLimiter(database, requests=100, period=PERIOD, clock=clock)
    name = bucket()
    decisions = hammer(limiter, name)
    assert len(decisions) == 120
    assert sum(d.allowed for d in decisions) == 100
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(100))
    assert stored(database, name) == 120


def test_a_new_window_deletes_the_buckets_old_ones(database, clock, at):
    limiter = DatabaseLimiter(database, requests=10, period=PERIOD, clock=clock)
    name, other = bucket(), bucket()
    limiter.hit(name)
    limiter.hit(other)
    at(PERIOD)
    limiter.hit(name)
    # The previous window ended less than a period ago: kept.
    assert windows(database, name) == [START, START + PERIOD]
    at(2 * PERIOD + 1)
    limiter.hit(name)
    assert windows(database, name) == [START + PERIOD, START + 2 * PERIOD]
    at(5 * PERIOD)
    limiter.hit(name)
    assert windows(database, name) == [START + 5 * PERIOD]
    # Only the bucket that was hit is tidied on a new window.
    assert windows(database, other) == [START]


def test_sweeps_delete_every_buckets_old_windows(database, clock, at):
    limiter = DatabaseLimiter(database, requests=10, period=PERIOD, clock=clock, sweep_every=3)
    quiet, busy = bucket(), bucket()
    limiter.hit(quiet)  # hit 1
    at(3 * PERIOD)
    limiter.hit(busy)  # hit 2
    assert windows(database, quiet) == [START]
    limiter.hit(busy)  # hit 3: a sweep
    assert windows(database, quiet) == []
    assert windows(database, busy) == [START + 3 * PERIOD]
    assert limiter.sweep() == 0


def test_a_limiters_sweeps_leave_other_limiters_buckets_alone(database, clock, at):
    """Limiters of different periods share rate_counters: a short one's sweep must not
    delete a long one's current window (a login lockout of 900 s, say)."""
    short = DatabaseLimiter(
        database, requests=10, period=PERIOD, clock=clock, sweep_every=1, scopes=("v1:",)
    )
    long = DatabaseLimiter(database, requests=10, period=900, clock=clock, scopes=("login:",))
    mine, theirs = bucket(), f"login:test-{secrets.token_hex(8)}"
    long.hit(theirs)
    short.hit(mine)
    at(3 * PERIOD)
    short.hit(mine)  # a sweep: the short limiter's old windows go, the login window stays
    assert windows(database, mine) == [START + 3 * PERIOD]
    assert windows(database, theirs) == [START - START % 900]
    assert long.stored_hits(theirs, START - START % 900) == 1


def test_hits_in_a_transaction_are_kept_by_its_commit_and_undone_by_its_rollback(
    database, clock, at
):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD, clock=clock)
    name = bucket()
    with database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name) == Decision(True, 2, 1, 0)
    at(1)
    with pytest.raises(RuntimeError), database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name) == Decision(True, 2, 0, 0)
        raise RuntimeError("the accepting transaction fails")
    at(3)
    with database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name) == Decision(True, 2, 0, 0)
        assert limiter.hit_in(work.conn, name) == Decision(False, 2, 0, 57)
    # The same rows as hits made on their own.
    at(4)
    assert limiter.hit(name) == Decision(False, 2, 0, 56)
    assert stored(database, name) == 4


def test_hits_in_a_transaction_open_windows_and_sweep_as_hits_do(database, clock, at):
    limiter = DatabaseLimiter(database, requests=10, period=PERIOD, clock=clock, sweep_every=3)
    quiet, busy = bucket(), bucket()
    with database.unit_of_work() as work:
        limiter.hit_in(work.conn, quiet)  # hit 1
        limiter.hit_in(work.conn, busy)  # hit 2
    at(3 * PERIOD)
    with database.unit_of_work() as work:
        # Hit 3 opens a window of ``busy`` far later: its old one goes, and it sweeps.
        limiter.hit_in(work.conn, busy)
    assert windows(database, busy) == [START + 3 * PERIOD]
    assert windows(database, quiet) == []


class _Deadlock(Exception):
    sqlstate = "40P01"  # PostgreSQL's code; MySQL/MariaDB's is errno 1213 in args[0]


@pytest.mark.parametrize("orig", [_Deadlock("deadlock"), Exception(1213, "Deadlock found")])
def test_deadlocks_are_retried(database, clock, at, monkeypatch, orig):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD, clock=clock)
    real, failures = limiter._count, [orig]

    def flaky(*args):
        if failures:
            raise OperationalError("INSERT ...", {}, failures.pop())
        return real(*args)

    monkeypatch.setattr(limiter, "_count", flaky)
    assert limiter.hit(bucket()) == Decision(True, 2, 1, 0)


def test_other_database_errors_are_not_retried(database, clock, monkeypatch):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD, clock=clock)
    calls = []

    def broken(*args):
        calls.append(args)
        raise OperationalError("INSERT ...", {}, Exception(2006, "server has gone away"))

    monkeypatch.setattr(limiter, "_count", broken)
    with pytest.raises(OperationalError):
        limiter.hit(bucket())
    assert len(calls) == 1


def test_clear_forgets_a_bucket(database, clock, at):
    limiter = DatabaseLimiter(database, requests=1, period=PERIOD, clock=clock)
    name = bucket()
    assert limiter.hit(name).allowed
    assert not limiter.hit(name).allowed
    limiter.clear(name)
    assert windows(database, name) == []
    assert limiter.hit(name).allowed


def test_a_refusal_is_known_without_counting_until_its_window_ends(database, clock, at):
    limiter = DatabaseLimiter(database, requests=1, period=PERIOD, clock=clock)
    name = bucket()
    assert limiter.refusal(name) is None  # never refused: nothing read
    assert limiter.hit(name).allowed
    assert limiter.refusal(name) is None
    at(15)
    assert not limiter.hit(name).allowed
    at(20)
    assert limiter.refusal(name) == Decision(False, 1, 0, 40)
    assert stored(database, name) == 2  # not counted
    at(PERIOD)
    assert limiter.refusal(name) is None


def test_a_refusal_is_forgotten_when_another_process_clears_the_bucket(database, clock, at):
    here = DatabaseLimiter(database, requests=1, period=PERIOD, clock=clock)
    elsewhere = DatabaseLimiter(database, requests=1, period=PERIOD, clock=clock)
    name = bucket()
    assert [here.hit(name).allowed for _ in range(2)] == [True, False]
    assert here.refusal(name) is not None
    elsewhere.clear(name)
    assert here.refusal(name) is None
    assert here.hit(name).allowed


def test_bucket_length_is_checked(database, clock, at):
    limiter = DatabaseLimiter(database, requests=2, period=PERIOD, clock=clock)
    limiter.hit("b" * 100)
    with pytest.raises(ValueError):
        limiter.hit("b" * 101)
    with pytest.raises(ValueError):
        limiter.hit("")


def test_buckets_of_keys_and_credentials():
    assert api_bucket("ab12") == "v1:ab12"
    assert smtp_bucket(7) == "smtp:7"


def test_make_limiter_defaults_to_the_database(base_config, database, clock):
    limiter = make_limiter(base_config, database, clock)
    assert isinstance(limiter, DatabaseLimiter)
    assert (limiter.requests, limiter.period, limiter.clock) == (100, 60, clock)
    config = base_config.replace(ratelimit__requests=7, ratelimit__period=30)
    limiter = make_limiter(config, database, clock)
    assert (limiter.requests, limiter.period) == (7, 30)


def test_counts_of_their_own_go_to_the_same_table_without_waiting_for_the_disk(
    base_config, database, clock, at
):
    """The one place is the application database's rate_counters; hits made on their own
    reach it through connections whose commits skip the disk flush."""
    first = make_limiter(base_config, database, clock)
    second = make_limiter(base_config, database, clock)
    assert first.counters is second.counters
    assert first.counters.url == database.url
    first.hit("v1:apart")
    assert stored(database, "v1:apart") == 1
    with first.counters.counter_connection() as conn:
        if database.backend == "postgresql":
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        elif database.backend == "sqlite":
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    if database.backend == "sqlite":  # no file of their own beside the database
        path = Path(make_url(database.url).database)
        assert [p.name for p in path.parent.iterdir() if "ratelimit" in p.name] == []


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
def redis_limiter(redis_url, clock):
    """Makes RedisLimiters on the gateway's clock; clears the buckets they used and closes
    them afterwards."""
    made: list[tuple[RedisLimiter, list[str]]] = []

    def make(requests: int, period: int = PERIOD):
        limiter = RedisLimiter(redis_url, requests, period, clock)
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
            pass  # the test has failed already; the keys expire after two periods anyway
        finally:
            limiter.close()


def test_redis_allows_exactly_the_limit_then_refuses(redis_limiter, at):
    limiter, used = redis_limiter(3)
    name = bucket()
    used.append(name)
    at(10)
    decisions = [limiter.hit(name) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True] * 3
    assert [d.remaining for d in decisions] == [2, 1, 0]
    at(20.5)
    assert limiter.hit(name) == Decision(allowed=False, limit=3, remaining=0, retry_after=40)


def test_redis_windows_are_aligned_to_the_period_on_the_gateways_clock(redis_limiter, at):
    import redis

    limiter, used = redis_limiter(1)
    name = bucket()
    used.append(name)
    at(30)
    assert [limiter.hit(name).allowed for _ in range(2)] == [True, False]
    at(PERIOD)
    assert limiter.hit(name) == Decision(allowed=True, limit=1, remaining=0, retry_after=0)
    client = redis.Redis.from_url(limiter.url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"postern:rl:{name}:*"))
        assert keys == [f"postern:rl:{name}:{START}", f"postern:rl:{name}:{START + PERIOD}"]
        assert all(0 < client.ttl(k) <= 2 * PERIOD for k in keys)  # Redis drops them
    finally:
        client.close()


def test_redis_buckets_are_independent(redis_limiter, at):
    limiter, used = redis_limiter(1)
    a, b = bucket(), bucket()
    used += [a, b]
    assert [limiter.hit(a).allowed for _ in range(2)] == [True, False]
    assert [limiter.hit(b).allowed for _ in range(2)] == [True, False]


def test_redis_clear_forgets_a_bucket_and_no_other(redis_limiter, at):
    limiter, used = redis_limiter(1)
    name = bucket()
    longer = f"{name}:1"  # its keys start with the shorter bucket's
    used += [name, longer]
    assert [limiter.hit(name).allowed for _ in range(2)] == [True, False]
    assert limiter.hit(longer).allowed
    limiter.clear(name)
    assert limiter.hit(name).allowed
    assert not limiter.hit(longer).allowed


def test_redis_refusals_are_known_and_cleared_elsewhere(redis_limiter, at):
    here, used = redis_limiter(1)
    elsewhere, _ = redis_limiter(1)
    name = bucket()
    used.append(name)
    assert [here.hit(name).allowed for _ in range(2)] == [True, False]
    at(20)
    assert here.refusal(name) == Decision(False, 1, 0, 40)
    elsewhere.clear(name)
    assert here.refusal(name) is None


def test_redis_concurrent_hits_are_counted_exactly(redis_limiter, at):
    limiter, used = redis_limiter(100)
    name = bucket()
    used.append(name)
    decisions = hammer(limiter, name)
    assert sum(d.allowed for d in decisions) == 100


def test_a_redis_limiter_counts_hits_in_a_transaction_in_redis(redis_limiter, database, at):
    limiter, used = redis_limiter(2)
    name = bucket()
    used.append(name)
    assert not limiter.counts_in_transactions
    with database.unit_of_work() as work:
        assert limiter.hit_in(work.conn, name).allowed
    assert [limiter.hit(name).allowed for _ in range(2)] == [True, False]
    assert stored(database, name) == 0


def test_make_limiter_chooses_redis(base_config, database, clock, redis_url):
    limiter = make_limiter(base_config.replace(ratelimit__storage=redis_url), database, clock)
    try:
        assert isinstance(limiter, RedisLimiter)
        assert (limiter.requests, limiter.period, limiter.clock) == (100, 60, clock)
    finally:
        limiter.close()


# -- one store for the HTTP and the SMTP limits


@pytest.fixture(params=["database", "redis"])
def storage(request):
    if request.param == "database":
        return "database"
    return request.getfixturevalue("redis_url")


def test_http_and_smtp_limits_are_counted_in_one_store(
    storage, base_config, database, clock, make_app, api, user, active_domain
):
    """The API and the relay (two processes: two gateways) count in the same store: each
    sees a bucket cleared by the other, and both see windows move with the clock."""
    clock.freeze()
    domain = active_domain()
    smtp = api("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain.id)["SMTP"]
    caller, _ = authenticate_smtp(database, smtp["Username"], smtp["Password"])
    http = make_app(ratelimit__storage=storage, ratelimit__requests=2).client
    api_gateway = http.application.extensions["postern.gateway"]
    relay = Gateway(
        base_config.replace(ratelimit__storage=storage, ratelimit__requests=2),
        database,
        clock=clock,
    )
    key_bucket = api_bucket(api_gateway.authenticate_sender(domain.key).key_digest)
    credential_bucket = smtp_bucket(caller.credential_id)
    for name in (key_bucket, credential_bucket):  # Redis keeps counts of earlier runs
        relay.limiter.clear(name)

    def send():
        return send_one(http, domain.key)

    def submit():
        data = b"From: news@example.com\r\nTo: rcpt@dest.example\r\nSubject: Hi\r\n\r\nHello\r\n"
        [result] = relay.submit_many([(caller, ["rcpt@dest.example"], data)])
        return "refused" if isinstance(result, RateLimited) else "accepted"

    try:
        assert [send() for _ in range(3)] == [200, 200, 429]
        assert [submit() for _ in range(3)] == ["accepted", "accepted", "refused"]
        if storage == "database":
            assert (stored(database, key_bucket), stored(database, credential_bucket)) == (2, 3)
        else:
            assert stored(database, key_bucket) == stored(database, credential_bucket) == 0
        # Each side clears the other's bucket; the next hit of each sees it.
        relay.limiter.clear(key_bucket)
        api_gateway.limiter.clear(credential_bucket)
        assert send() == 200
        assert relay.limiter.refusal(credential_bucket) is None
        assert submit() == "accepted"
        assert [send(), submit()] == [200, "accepted"]
        assert [send(), submit()] == [429, "refused"]
        # The next window, on the clock both gateways read.
        clock.advance(seconds=60)
        assert [send(), submit()] == [200, "accepted"]
    finally:
        for name in (key_bucket, credential_bucket):
            relay.limiter.clear(name)
        relay.limiter.close()
        api_gateway.limiter.close()


# -- Redis out of reach: the database counts meanwhile


@pytest.fixture
def unreachable_redis():
    """A redis:// URL on a loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_with_redis_unreachable_the_database_counts_and_a_warning_is_logged_once(
    base_config, database, clock, at, unreachable_redis, postern_log
):
    limiter = make_limiter(
        base_config.replace(ratelimit__storage=unreachable_redis, ratelimit__requests=2),
        database,
        clock,
    )
    name = bucket()
    try:
        assert isinstance(limiter, RedisLimiter)
        at(5)
        decisions = [limiter.hit(name) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert decisions[2].retry_after == 55
        assert stored(database, name) == 3
        assert limiter.refusal(name) is not None  # read from the database too
        warnings = [r for r in postern_log if "unreachable" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
        limiter.clear(name)
        assert stored(database, name) == 0
        assert limiter.hit(name).allowed
    finally:
        limiter.clear(name)
        limiter.close()


def test_with_redis_unreachable_sends_are_accepted_and_limited_not_failed(
    make_app, active_domain, unreachable_redis, clock
):
    clock.freeze()
    domain = active_domain()
    http = make_app(ratelimit__storage=unreachable_redis, ratelimit__requests=2).client
    statuses = [send_one(http, domain.key) for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_windows_after_2038_are_counted(database, clock):
    """Window starts are Unix seconds: past 2038-01-19 they need more than 32 bits."""
    limiter = DatabaseLimiter(database, 1, PERIOD, clock)
    name = bucket()
    clock.freeze(datetime(2040, 2, 29, 12, 0, 30, tzinfo=UTC))
    assert [limiter.hit(name).allowed for _ in range(2)] == [True, False]
    assert windows(database, name) == [int(datetime(2040, 2, 29, 12, tzinfo=UTC).timestamp())]
    limiter.clear(name)
