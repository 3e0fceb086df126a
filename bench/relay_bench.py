"""SMTP relay benchmark: Postern's relay and Postfix side by side, in one run.

    sudo .venv/bin/python bench/relay_bench.py --count 3000 --connections 4

The same injector (parallel SMTP connections, each sending its share of N ~8.4 KB messages)
sends once into Postern's relay (AUTH PLAIN with AddSMTP credentials; `postern serve` on the
embedded SQLite default) and once into Postfix (Debian package; clients on 127.0.0.0/8 may
relay, as in a typical submission setup without SASL). Both relay everything to the same
loopback sink (Postern through `delivery.smarthost`, Postfix through `relayhost`), without
TLS. Prints intake and end-to-end rates and their ratio; asserts nothing.

Postfix is configured by writing /etc/postfix/main.cf and master.cf (the previous files are
put back afterwards), so this needs root and the postfix package (`apt-get install postfix`).
"""

from __future__ import annotations

import argparse
import email.policy
import json
import multiprocessing as mp
import os
import resource
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import tree_cpu  # noqa: E402
from bench.send_bench import HTML, postern, run_minimal_sink  # noqa: E402
from tests.livesrv import clean_env, free_port  # noqa: E402


def make_message(sender: str, i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Shop <{sender}>"
    msg["To"] = f"buyer{i}@dest.example"
    msg["Subject"] = f"Your order {i}"
    msg.set_content("Your order has shipped.\n" * 20)
    msg.add_alternative(HTML.replace("</p>", "</p>\n"), subtype="html")  # lines < 998 octets
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF line endings, as SMTP wants


def inject(port: int, sender: str, count: int, offset: int, login) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.ehlo()
        if login:
            client.login(*login)
        for i in range(offset, offset + count):
            client.sendmail(sender, [f"buyer{i}@dest.example"], make_message(sender, i))


def run_injectors(port: int, sender: str, count: int, connections: int, login) -> float:
    shares = [
        count // connections + (1 if i < count % connections else 0) for i in range(connections)
    ]
    offsets = [sum(shares[:i]) for i in range(connections)]
    procs = [
        mp.Process(target=inject, args=(port, sender, n, off, login))
        for n, off in zip(shares, offsets, strict=True)
        if n
    ]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError("an injector failed")
    return start


def wait_for(counter, n: int, limit: float = 600) -> float:
    deadline = time.perf_counter() + limit
    while counter.value < n and time.perf_counter() < deadline:
        time.sleep(0.01)
    return time.perf_counter()


def measure(name: str, port: int, opts, counter, login, relay_pid: int) -> dict:
    """Inject opts.count messages and wait until the sink has them all: the rates, and the
    CPU time per message of the relay's processes (``relay_pid`` and its descendants that
    are alive at both ends of the run) and of the injectors."""
    counter.value = 0
    relay_cpu = tree_cpu(relay_pid)
    injected = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = run_injectors(port, "orders@shop.example", opts.count, opts.connections, login)
    accepted = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    delivered = wait_for(counter, opts.count)
    relay_cpu = tree_cpu(relay_pid) - relay_cpu
    injector_cpu = (after.ru_utime + after.ru_stime) - (injected.ru_utime + injected.ru_stime)
    return {
        "name": name,
        "intake": opts.count / (accepted - start),
        "end_to_end": counter.value / (delivered - start),
        "delivered": counter.value,
        "cpu_ms": relay_cpu * 1000 / opts.count,
        "injector_ms": injector_cpu * 1000 / opts.count,
    }


def postern_run(opts, sink_port: int, counter) -> dict:
    work = Path(tempfile.mkdtemp(prefix="postern-relay-bench-"))
    http, smtp = free_port(), [free_port() for _ in range(3)]
    env = clean_env()
    env.update(
        {
            "POSTERN_HTTP_PORT": str(http),
            "POSTERN_LOG_LEVEL": "WARNING",
            "POSTERN_SMTP_PORTS": ",".join(map(str, smtp)),
            "POSTERN_SMTP_ALLOW_PLAIN_AUTH": "true",
            "POSTERN_SMTP_HOSTNAME": "mx.bench.test",
            "POSTERN_DELIVERY_SMARTHOST": "127.0.0.1",
            "POSTERN_DELIVERY_SMARTHOST_PORT": str(sink_port),
            "POSTERN_DELIVERY_SMARTHOST_TLS": "none",
            "POSTERN_DELIVERY_POLL_INTERVAL": "0.05",
            "POSTERN_RATELIMIT_REQUESTS": "100000000",
        }
    )

    key = json.loads(
        postern(["user", "create", "bench", "--password", "bench-password"], env, work).stdout
    )["APIKey"]
    serve = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{http}/api.php"
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        call = lambda c, **p: httpx.post(base, json={"Command": c, "APIKey": key, **p}).json()  # noqa: E731
        domain = call("EmailGateway.AddDomain", DomainName="shop.example")["NewSenderDomainID"]
        with sqlite3.connect(work / "postern.db") as db:
            db.execute("UPDATE domains SET status = 'Enabled'")
        creds = call("EmailGateway.AddSMTP", DomainID=domain)["SMTP"]
        time.sleep(1.0)  # the relay is up
        login = (creds["Username"], creds["Password"])
        return measure("Postern", smtp[0], opts, counter, login, serve.pid)
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


MAIN_CF = """compatibility_level = 3.6
myhostname = mx.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink}
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {log}
default_destination_concurrency_limit = {concurrency}
message_size_limit = 20971520
"""


def postfix_run(opts, sink_port: int, counter) -> dict:
    if shutil.which("postfix") is None:
        return {"name": "Postfix", "error": "postfix is not installed"}
    port = free_port()
    saved = {}
    for name in ("main.cf", "master.cf"):
        path = Path("/etc/postfix") / name
        saved[name] = path.read_bytes() if path.exists() else None
    log = Path("/var/log/postern-bench-postfix.log")  # Postfix logs only under /var
    try:
        Path("/etc/postfix/main.cf").write_text(
            MAIN_CF.format(sink=sink_port, log=log, concurrency=opts.connections)
        )
        master = Path("/etc/postfix/master.cf.proto").read_text()
        master = master.replace(
            "smtp      inet  n       -       y       -       -       smtpd",
            f"127.0.0.1:{port} inet n - y - - smtpd",
            1,
        )
        Path("/etc/postfix/master.cf").write_text(master)
        subprocess.run(["postfix", "set-permissions"], capture_output=True)
        subprocess.run(["postfix", "start"], check=True, capture_output=True)
        time.sleep(1.5)
        master = int(Path("/var/spool/postfix/pid/master.pid").read_text().split()[0])
        return measure("Postfix", port, opts, counter, None, master)
    finally:
        subprocess.run(["postfix", "stop"], capture_output=True)
        subprocess.run(["postsuper", "-d", "ALL"], capture_output=True)
        for name, content in saved.items():
            path = Path("/etc/postfix") / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--connections", type=int, default=4)
    opts = ap.parse_args()
    sink_port = free_port()
    counter, ready = mp.Value("i", 0), mp.Event()
    sink = mp.Process(target=run_minimal_sink, args=(sink_port, counter, ready), daemon=True)
    sink.start()
    ready.wait(30)
    results = [postfix_run(opts, sink_port, counter), postern_run(opts, sink_port, counter)]
    sink.terminate()
    size = len(make_message("orders@shop.example", 0))
    print(
        f"\n{opts.count} messages of {size / 1024:.1f} KB, {opts.connections} injector "
        f"connections, minimal asyncio sink, {os.cpu_count()} cores"
    )
    print(
        f"{'relay':<10}{'intake/s':>10}{'end-to-end/s':>14}{'delivered':>11}"
        f"{'CPU ms/msg':>12}{'injector CPU ms/msg':>21}"
    )
    for r in results:
        if "error" in r:
            print(f"{r['name']:<10} {r['error']}")
        else:
            print(
                f"{r['name']:<10}{r['intake']:>10.0f}{r['end_to_end']:>14.0f}{r['delivered']:>11}"
                f"{r['cpu_ms']:>12.2f}{r['injector_ms']:>21.2f}"
            )
    if all("error" not in r for r in results):
        ratio = results[1]["end_to_end"] / results[0]["end_to_end"]
        print(f"Postern / Postfix end to end: {ratio:.2f}")
        print(
            "CPU ms/msg: processor time of the relay's processes per message, read from /proc "
            "(those alive at both ends of the run; Postfix's master and its daemons)"
        )


if __name__ == "__main__":
    main()
