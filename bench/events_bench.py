"""Event log benchmark: GetEvents, DomainStats, AggrEvents and DailySeries latencies through
Gateway.run on a PostgreSQL database holding a million events.

    .venv/bin/python bench/events_bench.py [--events 1000000] [--runs 50] [--server URL] [--keep]

Creates a database of its own on the server (dropped at the end unless --keep), migrates it,
loads users, domains, messages, events and their daily counts with COPY (8 domains of 4
users, of very different sizes; 90 days; a realistic mix of event types; tags; one or two
recipients per message from a pool of addresses), runs VACUUM ANALYZE, then times each
query --runs times (after a few warm-up runs) on the largest domain and prints p50/p95.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from commands import Gateway, find  # noqa: E402
from commands.users import create_api_key, create_user  # noqa: E402
from core.crypto import SecretBox  # noqa: E402
from core.settings import load_config  # noqa: E402
from models import Database, Domain  # noqa: E402
from models.event_counts import tags_key  # noqa: E402
from models.migrate import upgrade  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef0123456789"
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DAYS = 90
# Share of all events per domain (the first is measured); two domains per user.
DOMAIN_SHARES = [0.30, 0.20, 0.15, 0.10, 0.10, 0.07, 0.05, 0.03]
TAG_SETS = [
    [],
    [],
    ["welcome"],
    ["password-reset"],
    ["invoice", "billing"],
    ["receipt", "billing"],
    ["shipping"],
    ["newsletter", "weekly"],
    ["alert"],
    ["alert", "security"],
    ["digest", "daily"],
    ["reminder"],
]
SUBJECTS = [
    "Welcome to the shop",
    "Reset your password",
    "Your invoice {n}",
    "Receipt for order {n}",
    "Order {n} has shipped",
    "This week's news",
    "Security alert",
    "Your daily digest",
    "Reminder: your cart",
]
RECIPIENT_DOMAINS = ["gmail.test", "yahoo.test", "outlook.test", "corp.test", "mail.test"]
POOL = 100_000  # recipient addresses per user

EVENT_COLUMNS = (
    "uid, type, created_at, user_id, domain_id, domain_name, message_id, delivery_id, "
    "recipient, recipient_lower, tags, smtp_code, enhanced_code, smtp_text, details"
)
MESSAGE_COLUMNS = (
    "id, user_id, domain_id, domain_name, source, from_email, subject, tags, payload, size, "
    "created_at"
)
CLICK = json.dumps({"url": "https://shop.test/p/1", "ip": "192.0.2.7", "user_agent": "Mozilla"})
OPEN = json.dumps({"ip": "192.0.2.7", "user_agent": "Mozilla/5.0"})


def lifecycle(rng: random.Random, sent: datetime) -> list[tuple[str, datetime, tuple, str]]:
    """The events of one delivery: (type, when, (code, enhanced, text), details)."""
    none = (None, None, None)
    out = [("accepted", sent, none, "{}")]
    t = sent + timedelta(seconds=rng.uniform(1, 30))
    roll = rng.random()
    if roll < 0.05:
        out.append(("deferred", t, (421, "4.7.0", "try again later"), "{}"))
        t += timedelta(minutes=rng.uniform(5, 60))
    if roll < 0.03:
        out.append(("bounced", t, (550, "5.1.1", "no such user"), "{}"))
        return out
    if roll < 0.035:
        out.append(("failed", t, (None, None, "no MX host answered"), "{}"))
        return out
    out.append(("delivered", t, (250, "2.0.0", "ok"), "{}"))
    if rng.random() < 0.40:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            t += timedelta(minutes=rng.expovariate(1 / 120))
            out.append(("opened", t, none, OPEN))
        if rng.random() < 0.30:
            t += timedelta(minutes=rng.uniform(0, 10))
            out.append(("clicked", t, none, CLICK))
    if rng.random() < 0.005:
        out.append(("unsubscribed", t + timedelta(minutes=5), none, "{}"))
    if rng.random() < 0.001:
        out.append(("complained", t + timedelta(hours=2), none, "{}"))
    return out


def load(db: Database, target: int, now: datetime, seed: int = 7) -> dict:
    """Users, domains, messages and about ``target`` events; the measured user and domain."""
    rng = random.Random(seed)
    box = SecretBox(SECRET.encode())
    users, domains = [], []
    with db.transaction() as s:
        for u in range(len(DOMAIN_SHARES) // 2):
            user = create_user(s, f"user{u}", "bench password 1234")
            _, key = create_api_key(s, box, user, "bench")
            users.append((user.id, key))
            for d in range(2):
                row = Domain(
                    user_id=user.id,
                    name=f"d{u}{d}.example",
                    ownership_token=secrets.token_hex(8),
                    subdomain="sl",
                    signing_key_encrypted="x",
                )
                s.add(row)
                s.flush()
                domains.append((row.id, row.name, user.id))
    events: list[tuple] = []
    messages: list[tuple] = []
    delivery_id = 0
    start = now - timedelta(days=DAYS)
    for (domain_id, name, user_id), share in zip(domains, DOMAIN_SHARES, strict=True):
        want = int(target * share)
        made = 0
        while made < want:
            sent = start + timedelta(seconds=rng.uniform(0, DAYS * 86400 - 3 * 3600))
            tags = json.dumps(rng.choice(TAG_SETS))
            message_id = str(uuid.uuid4())
            subject = rng.choice(SUBJECTS).format(n=rng.randrange(10**6))
            sender = f"noreply@{name}"
            messages.append(
                (message_id, user_id, domain_id, name, "api", sender, subject, tags, "{}", 8000)
                + (sent.replace(tzinfo=None),)
            )
            if rng.random() < 0.005:  # refused: suppressed address
                rcpt = f"u{rng.randrange(POOL)}@{rng.choice(RECIPIENT_DOMAINS)}"
                events.append(
                    (str(uuid.uuid4()), "rejected", sent.replace(tzinfo=None), user_id, domain_id)
                    + (name, message_id, None, rcpt, rcpt, tags, None, None, "suppressed", "{}")
                )
                made += 1
                continue
            for _ in range(2 if rng.random() < 0.1 else 1):
                delivery_id += 1
                n = rng.randrange(POOL)
                rcpt = f"u{n}@{RECIPIENT_DOMAINS[n % len(RECIPIENT_DOMAINS)]}"
                for kind, when, (code, enh, txt), details in lifecycle(rng, sent):
                    events.append(
                        (str(uuid.uuid4()), kind, when.replace(tzinfo=None), user_id, domain_id)
                        + (name, message_id, delivery_id, rcpt, rcpt, tags, code, enh, txt)
                        + (details,)
                    )
                    made += 1
    events.sort(key=lambda e: e[2])  # the log is written in time order
    # The daily counts Postern keeps as it writes events (models/event_counts.py).
    counts: Counter = Counter((e[4], e[2].date(), e[1], e[10], e[3]) for e in events)
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(f"COPY messages ({MESSAGE_COLUMNS}) FROM STDIN") as copy:
            for row in messages:
                copy.write_row(row)
        with cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in events:
                copy.write_row(row)
        columns = "domain_id, day, type, tags_key, user_id, tags, total"
        with cur.copy(f"COPY event_counts ({columns}) FROM STDIN") as copy:
            for (domain_id, day, kind, tags, user_id), n in counts.items():
                copy.write_row((domain_id, day, kind, tags_key(tags), user_id, tags, n))
        raw.commit()
    finally:
        raw.close()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    big = domains[0]
    key = next(k for uid, k in users if uid == big[2])
    recipients = sorted({e[8] for e in events if e[4] == big[0]})
    return {
        "events": len(events),
        "messages": len(messages),
        "domain": big[0],
        "domain_events": sum(1 for e in events if e[4] == big[0]),
        "key": key,
        "recipients": recipients,
    }


def measure(gateway: Gateway, name: str, runs: int, params_for) -> tuple[float, float]:
    cmd = find(name)
    for i in range(3):  # warm-up
        body = gateway.run(cmd, params_for(i))
    times = []
    for i in range(runs):
        params = params_for(i)
        t0 = time.perf_counter()
        body = gateway.run(cmd, params)
        times.append((time.perf_counter() - t0) * 1000)
    del body
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=SERVER, help="a PostgreSQL URL (its database is not used)")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    opts = ap.parse_args()
    server = make_url(opts.server)
    name = f"postern_bench_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = server.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    try:
        upgrade(db.engine)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        info = load(db, opts.events, now)
        print(
            f"loaded {info['events']:,} events and {info['messages']:,} messages in "
            f"{time.perf_counter() - t0:.0f} s; the measured domain holds "
            f"{info['domain_events']:,} events"
        )
        config = load_config(environ={}).replace(database__url=url, security__secret_key=SECRET)
        gateway = Gateway(config, db)
        run(gateway, info, now, opts.runs)
    finally:
        db.dispose()
        if opts.keep:
            print(f"kept: {url}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def run(gateway: Gateway, info: dict, now: datetime, runs: int) -> None:
    rng = random.Random(11)
    base = {"APIKey": info["key"], "DomainID": info["domain"]}
    today = now.date()

    def window(i: int, days: int = 30) -> dict:
        end = today - timedelta(days=i % 30)
        return {"StartDate": str(end - timedelta(days=days - 1)), "EndDate": str(end)}

    types = ["delivered", "open", "click", "bounce", "accepted"]
    cases = [
        (
            "GetEvents: domain + type + 30 days, 50 a page",
            "EmailGateway.GetEvents",
            lambda i: (
                base
                | window(i)
                | {"Event": types[i % 5], "StartFrom": 50 * (i % 4), "RetrieveCount": 50}
            ),
        ),
        (
            "GetEvents: all domains + type + 30 days",
            "EmailGateway.GetEvents",
            lambda i: (
                {"APIKey": info["key"]}
                | window(i)
                | {"Event": types[i % 5], "StartFrom": 0, "RetrieveCount": 50}
            ),
        ),
        (
            "GetEvents: domain + to:address",
            "EmailGateway.GetEvents",
            lambda i: (
                base
                | {"Query": f"to:{rng.choice(info['recipients'])}", "StartFrom": 0}
                | {"RetrieveCount": 50}
            ),
        ),
        (
            "GetEvents: domain, no filter, 50 a page",
            "EmailGateway.GetEvents",
            lambda i: base | {"StartFrom": 50 * (i % 4), "RetrieveCount": 50},
        ),
        (
            "GetEvents: domain + subject: + 30 days",
            "EmailGateway.GetEvents",
            lambda i: (
                base | window(i) | {"Query": "subject:shipped", "StartFrom": 0, "RetrieveCount": 50}
            ),
        ),
        ("DomainStats: 30 days", "EmailGateway.DomainStats", lambda i: base | window(i)),
        (
            "AggrEvents: by tag, 30 days",
            "EmailGateway.AggrEvents",
            lambda i: base | window(i) | {"AggregatedField": "tag"},
        ),
        (
            "AggrEvents: by event type, 30 days",
            "EmailGateway.AggrEvents",
            lambda i: base | window(i) | {"AggregatedField": "eventType"},
        ),
        ("DailySeries: 30 days", "EmailGateway.DailySeries", lambda i: base | window(i)),
    ]
    print(f"{'query':<48}{'p50 ms':>9}{'p95 ms':>9}")
    for label, command, params_for in cases:
        p50, p95 = measure(gateway, command, runs, params_for)
        print(f"{label:<48}{p50:>9.1f}{p95:>9.1f}")


if __name__ == "__main__":
    main()
