"""FreshMail v3 batch benchmark: personalized messages accepted per second through
POST /v3/messaging/emails (100 recipients a request) against the same number sent one per
request through POST /api/v1/email, in the same run, on SQLite (a file, durable commits).

    PYTHONPATH=. .venv/bin/python bench/freshmail_bench.py [--requests 30]

The app is driven in process through Flask's test client (no HTTP server, no injector):
the figures are the gateway's own cost per request, on one core. Prints figures; asserts
nothing. Then a delivery worker (in process, DKIM on, its build processes as configured)
delivers every message accepted, personalized one by one at build time, to a minimal SMTP
sink on loopback named by a loopback DNS server: delivered per second end to end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.http.factory import create_app  # noqa: E402
from app.workers.delivery import Worker  # noqa: E402
from bench.send_bench import run_minimal_sink  # noqa: E402
from commands import Gateway  # noqa: E402
from commands.users import create_api_key, create_user  # noqa: E402
from core.crypto import SecretBox  # noqa: E402
from core.settings import load_config  # noqa: E402
from models import Database, Domain  # noqa: E402
from models.domains import ENABLED  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from tests.dnsserver import DNSServer  # noqa: E402
from tests.livesrv import free_port  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef0123456789"
HTML = "<p>Hello {{ name|default('friend') }}, order $$order$$.</p>" + "<p>text</p>" * 50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=30, help="100-recipient requests")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    config = load_config(environ={}).replace(
        database__url=f"sqlite:///{tmp}/bench.db",
        security__secret_key=SECRET,
        log__level="WARNING",
        ratelimit__requests=1_000_000,
        sending__quota=0,
    )
    db = Database(config.database.url)
    upgrade(db.engine)
    box = SecretBox(SECRET.encode())
    with db.transaction() as s:
        user = create_user(s, "bench", "correct horse battery", "")
        _, user_key = create_api_key(s, box, user, "bench")
    gateway = Gateway(config, db)
    client = create_app(config, gateway).test_client()

    def api(command: str, **params: object) -> dict:
        return client.post(
            "/api.php", json={"Command": command, "APIKey": user_key, **params}
        ).get_json()

    domain_id = api("EmailGateway.AddDomain", DomainName="example.com")["NewSenderDomainID"]
    with db.transaction() as s:
        s.get(Domain, domain_id).status = ENABLED
    key = api("EmailGateway.AddAPI", DomainID=domain_id, Description="b")["APIKey"]["Key"]
    auth = {"Authorization": f"Bearer {key}"}

    def batch(n: int) -> dict:
        return {
            "recipients": [
                {
                    "email": f"r{n}-{i}@dest.example",
                    "personalization": {"name": f"R{i}", "order": i},
                }
                for i in range(100)
            ],
            "from": {"email": "news@example.com", "name": "News"},
            "subject": "Order $$order$$ for {{ name }}",
            "contents": [{"type": "text/html", "body": HTML}],
            "headers": {"X-Campaign": "bench"},
        }

    client.post("/v3/messaging/emails", headers=auth, json=batch(-1))  # warm up
    times = []
    start = time.perf_counter()
    for n in range(args.requests):
        t = time.perf_counter()
        resp = client.post("/v3/messaging/emails", headers=auth, json=batch(n))
        times.append(time.perf_counter() - t)
        assert resp.status_code == 201, resp.get_json()
    batch_elapsed = time.perf_counter() - start
    total = args.requests * 100

    start = time.perf_counter()
    for i in range(total):
        resp = client.post(
            "/api/v1/email",
            headers=auth,
            json={
                "From": {"email": "news@example.com", "name": "News"},
                "To": [
                    {
                        "email": f"s{i}@dest.example",
                        "Personalization": {"name": f"R{i}", "order": i},
                    }
                ],
                "Subject": "Order $$order$$ for {{ name }}",
                "ContentType": "html",
                "HTMLContent": HTML,
                "Headers": {"X-Campaign": "bench"},
            },
        )
        assert resp.status_code == 200, resp.get_json()
    single_elapsed = time.perf_counter() - start

    delivered, deliver_elapsed = deliver(config, db, box, total * 2)

    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(f"SQLite, {total} personalized messages each way, in process (one core)")
    print(f"  /v3/messaging/emails, 100 a request: {total / batch_elapsed:8.0f} accepted/s")
    print(f"  /api/v1/email, 1 a request:          {total / single_elapsed:8.0f} accepted/s")
    print(f"  speed-up: {single_elapsed / batch_elapsed:.1f}x")
    print(
        f"  one 100-recipient request: median {statistics.median(times) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms"
    )
    print(
        f"  delivered end to end (both sets, {delivered} messages, DKIM RSA-2048, to a "
        f"loopback sink): {delivered / deliver_elapsed:8.0f} delivered/s"
    )


def deliver(config, db, box, expected: int) -> tuple[int, float]:
    """Deliver every queued message to a minimal sink on loopback; (delivered, seconds)."""
    sink_port = free_port()
    count, ready, size = mp.Value("i", 0), mp.Event(), mp.Value("i", 0)
    sink = mp.Process(target=run_minimal_sink, args=(sink_port, count, ready, size), daemon=True)
    sink.start()
    ready.wait(30)
    with DNSServer() as dns:
        dns.add("dest.example", "MX", "10 mx.dest.example")
        dns.add("mx.dest.example", "A", "127.0.0.1")
        wconfig = config.replace(
            dns__nameservers=[dns.host],
            dns__port=dns.port,
            delivery__mx_port=sink_port,
            delivery__allow_private_mx=True,  # the sink is on loopback
            delivery__tls="none",
        )
        worker = Worker(wconfig, db, box)
        try:
            start = time.perf_counter()
            idle = 0
            while count.value < expected and idle < 50:
                idle = idle + 1 if worker.run_once() == 0 else 0
                if idle:
                    time.sleep(0.05)
            elapsed = time.perf_counter() - start
        finally:
            worker.close()
    sink.terminate()
    return count.value, elapsed


if __name__ == "__main__":
    main()
