"""Sending benchmark: accepted messages/s through POST /api/v1/email (durable commit) and
end-to-end deliveries/s to a loopback MX sink, with DKIM on, on SQLite and PostgreSQL.

    .venv/bin/python bench/send_bench.py --databases sqlite,postgresql

(`apt-get install wrk` for the injector that costs least; otherwise a Python one is used.)

Everything runs on loopback: `postern api` under gunicorn, `postern worker`, a loopback DNS
server whose MX for dest.example is 127.0.0.1, and a sink on its own process. Phase A sends
N single-recipient messages (7.0 KB requests, 6.8 KB of HTML; 14.5 KB as delivered, with the
plain part derived from the HTML and the DKIM signature) with the worker stopped; phase B
starts the worker(s) and times delivery of all N. With wrk, the yardstick
(bench/reference_app.py: a bare Flask endpoint inserting one SQLite row per request, under as
many gunicorn workers) is measured before and after, and Postern's SQLite rate is printed as a
share of it, the machine's speed of the day divided out. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import tree_cpu  # noqa: E402
from tests.dnsserver import DNSServer  # noqa: E402
from tests.livesrv import clean_env, free_port  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef0123456789"
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HTML = (
    "<html><body>"
    + "".join(
        f"<p>Paragraph {i}: your order has shipped and will arrive soon. "
        f"<a href='https://shop.example/orders/{i}'>Track it</a>.</p>"
        for i in range(58)
    )
    + "</body></html>"
)


# -- sinks (each in its own process) --------------------------------------------------------


async def _minimal_sink(port: int, count, ready, size=None) -> None:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        in_data = False
        octets = 0
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    with count.get_lock():
                        count.value += 1
                    if size is not None:
                        size.value = octets  # the last message's, as it came
                    writer.write(b"250 2.0.0 OK\r\n")
                else:
                    octets += len(line)
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                in_data, octets = True, 0
                writer.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 OK\r\n")
            if reader._buffer.find(b"\n") < 0:  # reply to a pipelined group at once  # noqa: SLF001
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port)
    ready.set()
    async with server:
        await server.serve_forever()


def run_minimal_sink(port, count, ready, size=None):
    asyncio.run(_minimal_sink(port, count, ready, size))


def run_aiosmtpd_sink(port, count, ready, size=None):
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with count.get_lock():
                count.value += 1
            if size is not None:
                size.value = len(envelope.original_content or b"")
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, server_hostname="sink")
    controller.start()
    ready.set()
    threading.Event().wait()


# -- the injector ------------------------------------------------------------------------------


def inject(base: str, key: str, count: int, threads: int, out) -> None:
    def work(n: int) -> None:
        ok = 0
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            for i in range(n):
                resp = client.post(
                    "/api/v1/email",
                    json={
                        "Subject": f"Your order {i}",
                        "ContentType": "html",
                        "HtmlContent": HTML,
                        "From": {"email": "orders@shop.example", "name": "Shop"},
                        "To": [{"email": f"buyer{i}@dest.example", "name": "Buyer"}],
                        "Tags": ["order"],
                    },
                )
                ok += resp.status_code == 200
        with out.get_lock():
            out.value += ok

    per = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    pool = [threading.Thread(target=work, args=(n,)) for n in per if n]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


BODY = json.dumps(
    {
        "Subject": "Your order",
        "ContentType": "html",
        "HtmlContent": HTML,
        "From": {"email": "orders@shop.example", "name": "Shop"},
        "To": [{"email": "buyer@dest.example", "name": "Buyer"}],
        "Tags": ["order"],
    }
)


def inject_wrk(url: str, headers: dict[str, str], opts, work: Path) -> float:
    """wrk (C, cheap per request) POSTing BODY to ``url`` for opts.seconds; the seconds it
    ran."""
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(BODY)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        + "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    )
    start = time.perf_counter()
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(opts.connections),
            "-d",
            f"{opts.seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - start
    if "Non-2xx" in out.stdout:
        print(out.stdout, file=sys.stderr)
    return elapsed


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def run_reference(opts) -> dict:
    """The yardstick (bench/reference_app.py): a bare Flask endpoint inserting the same
    bodies into SQLite, one durable row a request, under gunicorn with as many workers as
    Postern on SQLite, driven by the same wrk."""
    work = Path(tempfile.mkdtemp(prefix="postern-bench-reference-"))
    port = free_port()
    workers = opts.http_workers or os.cpu_count() or 1
    env = clean_env(BENCH_REFERENCE_DB=str(work / "reference.db"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "bench.reference_app:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        cpu = tree_cpu(proc.pid)
        elapsed = inject_wrk(f"http://127.0.0.1:{port}/insert", {}, opts, work)
        time.sleep(1.0)
        cpu = tree_cpu(proc.pid) - cpu
        with sqlite3.connect(work / "reference.db") as conn:
            rows = conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
        return {"rate": rows / elapsed, "cpu_ms": cpu * 1000 / max(1, rows), "workers": workers}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


# -- one database -------------------------------------------------------------------------------


def postern(args: list[str], env: dict, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        **kw,
    )


def run_one(backend: str, opts, dns: DNSServer, sink_port: int, sink_count) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"postern-bench-{backend}-"))
    dropdb = None
    if backend == "sqlite":
        url = f"sqlite:///{work}/postern.db"
    else:
        name = f"postern_bench_{secrets.token_hex(4)}"
        admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f"CREATE DATABASE {name}"))
        url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)

        def dropdb():
            with admin.connect() as c:
                c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()

    port = free_port()
    env = clean_env()
    env.update(
        {
            "POSTERN_DATABASE_URL": url,
            "POSTERN_SECURITY_SECRET_KEY": SECRET,
            "POSTERN_HTTP_PORT": str(port),
            "POSTERN_HTTP_WORKERS": str(opts.http_workers),
            "POSTERN_HTTP_THREADS": str(opts.http_threads),
            "POSTERN_LOG_LEVEL": "WARNING",
            "POSTERN_DNS_NAMESERVERS": dns.host,
            "POSTERN_DNS_PORT": str(dns.port),
            "POSTERN_DELIVERY_MX_PORT": str(sink_port),
            "POSTERN_DELIVERY_ALLOW_PRIVATE_MX": "true",  # the sink is on loopback
            "POSTERN_SMTP_HOSTNAME": "mx.bench.test",
            "POSTERN_DELIVERY_POLL_INTERVAL": "0.1",
            "POSTERN_RATELIMIT_REQUESTS": "100000000",
            "POSTERN_DELIVERY_BATCH_SIZE": str(opts.batch),
        }
    )
    procs = []
    try:
        postern(["db", "upgrade"], env, work)
        key = json.loads(
            postern(["user", "create", "bench", "--password", "bench-password"], env, work).stdout
        )["APIKey"]
        api = subprocess.Popen(
            [sys.executable, "-m", "app", "api"],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(api)
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        call = lambda command, **p: httpx.post(  # noqa: E731
            f"{base}/api.php", json={"Command": command, "APIKey": key, **p}, timeout=30
        ).json()
        added = call("EmailGateway.AddDomain", DomainName="shop.example")
        for record in added["Domain"]["DNSRecords"]:
            dns.add(record["Host"], record["Type"], record["Value"])
        call("EmailGateway.VerifyDomain", DomainID=added["NewSenderDomainID"])
        sender = call(
            "EmailGateway.AddAPI", DomainID=added["NewSenderDomainID"], Description="bench"
        )["APIKey"]["Key"]

        # Phase A: accept messages (the worker is not running).
        accepted = mp.Value("i", 0)
        api_cpu = tree_cpu(api.pid)
        if opts.injector == "wrk":
            accept_s = inject_wrk(
                f"{base}/api/v1/email", {"Authorization": f"Bearer {sender}"}, opts, work
            )
            time.sleep(1.0)  # what wrk left in flight is answered (and committed) after it ends
            with create_engine(url).connect() as c:
                accepted.value = c.execute(text("SELECT COUNT(*) FROM messages")).scalar()
        else:
            per_proc = [
                opts.count // opts.injectors + (1 if i < opts.count % opts.injectors else 0)
                for i in range(opts.injectors)
            ]
            injectors = [
                mp.Process(
                    target=inject,
                    args=(base, sender, n, opts.connections // opts.injectors, accepted),
                )
                for n in per_proc
            ]
            start = time.perf_counter()
            for p in injectors:
                p.start()
            for p in injectors:
                p.join()
            accept_s = time.perf_counter() - start
        api_cpu = tree_cpu(api.pid) - api_cpu

        # Phase B: deliver them all.
        sink_count.value = 0
        workers = opts.workers if backend != "sqlite" else 1
        start = time.perf_counter()
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app", "worker"],
                    env=env,
                    cwd=work,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        first = None
        worker_cpu = 0.0
        while sink_count.value < accepted.value:
            if first is None and sink_count.value:
                first = time.perf_counter()
                worker_cpu = -sum(tree_cpu(p.pid) for p in procs[1:])  # less the start-up
            time.sleep(0.02)
            if time.perf_counter() - start > 600:
                break
        deliver_s = time.perf_counter() - start
        worker_cpu += sum(tree_cpu(p.pid) for p in procs[1:])
        return {
            "backend": backend,
            "accepted": accepted.value,
            "accept_s": accept_s,
            "delivered": sink_count.value,
            "deliver_s": deliver_s,
            "deliver_steady_s": time.perf_counter() - (first or start),
            "workers": workers,
            "accept_cpu_ms": api_cpu * 1000 / max(1, accepted.value),
            "deliver_cpu_ms": worker_cpu * 1000 / max(1, sink_count.value),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        if dropdb:
            dropdb()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=3000, help="messages (python injector)")
    ap.add_argument(
        "--injector", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    ap.add_argument("--seconds", type=int, default=10, help="wrk's run time")
    ap.add_argument("--databases", default="sqlite,postgresql")
    ap.add_argument("--sink", choices=("minimal", "aiosmtpd"), default="minimal")
    ap.add_argument("--connections", type=int, default=16, help="injector connections")
    ap.add_argument("--injectors", type=int, default=2, help="injector processes")
    ap.add_argument("--http-workers", type=int, default=0, help="0: Postern's default")
    ap.add_argument("--http-threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL)")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the bare Flask + SQLite endpoint measured before and after (wrk only)",
    )
    opts = ap.parse_args()

    sink_port = free_port()
    sink_count, ready, delivered_size = mp.Value("i", 0), mp.Event(), mp.Value("i", 0)
    target = run_minimal_sink if opts.sink == "minimal" else run_aiosmtpd_sink
    sink = mp.Process(
        target=target, args=(sink_port, sink_count, ready, delivered_size), daemon=True
    )
    sink.start()
    ready.wait(30)
    results = []
    # The yardstick before and after Postern's runs: the machine's speed drifts.
    reference = opts.reference and opts.injector == "wrk"
    yardstick = [run_reference(opts)] if reference else []
    with DNSServer() as dns:
        dns.add("dest.example", "MX", "10 mx.dest.example")
        dns.add("mx.dest.example", "A", "127.0.0.1")
        for backend in opts.databases.split(","):
            results.append(run_one(backend.strip(), opts, dns, sink_port, sink_count))
    sink.terminate()
    if reference:
        yardstick.append(run_reference(opts))

    print(
        f"\n{opts.injector} injector, requests of {len(BODY) / 1024:.1f} KB (HTML of "
        f"{len(HTML.encode()) / 1024:.1f} KB), delivered as messages of "
        f"{delivered_size.value / 1024:.1f} KB (a plain part derived, DKIM RSA-2048), "
        f"{opts.connections} client connections, "
        f"{opts.http_workers or 'one per core on SQLite, two on PostgreSQL:'} gunicorn "
        f"workers x {opts.http_threads} threads, {opts.sink} sink, {os.cpu_count()} cores"
    )
    print(
        f"{'database':<12}{'accepted/s':>12}{'delivered/s':>13}{'steady/s':>10}"
        f"{'workers':>9}{'accepted':>10}{'delivered':>11}{'CPU ms/accept':>15}"
        f"{'CPU ms/delivery':>17}"
    )
    for r in results:
        print(
            f"{r['backend']:<12}{r['accepted'] / r['accept_s']:>12.0f}"
            f"{r['delivered'] / r['deliver_s']:>13.0f}"
            f"{r['delivered'] / r['deliver_steady_s']:>10.0f}{r['workers']:>9}"
            f"{r['accepted']:>10}{r['delivered']:>11}{r['accept_cpu_ms']:>15.2f}"
            f"{r['deliver_cpu_ms']:>17.2f}"
        )
    print(
        "CPU ms: processor time used by Postern's processes (the API and its gunicorn workers; "
        "the delivery workers and their build processes) per message, read from /proc"
    )
    if yardstick:
        mean = sum(r["rate"] for r in yardstick) / len(yardstick)
        print(
            "\nyardstick: a bare Flask endpoint inserting each request's body as one durable "
            f"SQLite row, {yardstick[0]['workers']} gunicorn workers, the same wrk: "
            + ", ".join(f"{r['rate']:.0f}/s at {r['cpu_ms']:.2f} CPU ms" for r in yardstick)
            + " (before and after)"
        )
        for r in results:
            if r["backend"] == "sqlite":
                share = r["accepted"] / r["accept_s"] / mean
                print(
                    f"Postern on SQLite accepted {share:.2f} of the yardstick's rate "
                    f"(the target, 1,000/s where it answers 1,650/s, is {1000 / 1650:.2f}): "
                    f"{share * 1650:.0f}/s on a machine where it answers 1,650/s"
                )


if __name__ == "__main__":
    main()
