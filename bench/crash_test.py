"""Crash test: messages through HTTP and SMTP while the API, the worker and the relay are
killed with SIGKILL at random moments; every accepted message must be delivered.

    .venv/bin/python bench/crash_test.py --databases sqlite,postgresql --count 10000

Each database gets a fresh Postern (SQLite: a file in a temporary directory; a server: a
database of its own, created and dropped like the suite's) run as three role processes,
``postern api``, ``postern worker`` and ``postern smtp``, each in a process group of its
own. A loopback DNS server (tests/dnsserver.py) names 127.0.0.1 as the MX of
dest.example, where a sink (its own process) takes every message and writes its crash id
(the Subject, "crash <id>") to a file before it answers 250.

Client threads submit ``--count`` messages: over HTTP (POST /api/v1/email with a sender
key, and EmailGateway.SendEmail on /api.php with a user API key, in turn) and over SMTP
(the relay, AUTH PLAIN with AddSMTP credentials). One message in ``--refuse-every`` is
made to be refused (its From is at a domain the sender does not own). Each submission
ends as one of:

- accepted: HTTP 2xx (and ``Success`` on /api.php), SMTP 250 at the end of DATA;
- refused: a definite error answer (HTTP 4xx/5xx or ``Success`` false, SMTP 4xx/5xx);
- unanswered: the request was sent, but the connection dropped before its answer (a kill).

A submission that could not even connect (the role was down) is tried again, with the same
id, once the role is back. Meanwhile each role is killed ``--kills`` times, at random
points of the run, with SIGKILL to its whole process group, and started again at once.
Right after each kill of the worker, the deliveries it had claimed and not yet recorded are
read from the database: "in flight" at that kill (and, of those, the ones the sink already
had: the window where SMTP cannot avoid a second copy).

Once every message is submitted and the queue has drained, it checks: every accepted
message was delivered (lost: accepted, never delivered); no refused message was delivered;
nothing unknown was delivered; and the duplicates (deliveries beyond the first) are no more
than the deliveries in flight at the worker's kills. Unanswered submissions may or may not
have been committed (the kill may have fallen after the commit and before the answer):
they are counted apart, as committed but unanswered, and are no failure either way.

Prints the counts; the exit status is 1 when a check fails. Settings shorten the claim
timeout and the retry delays so that the queue drains in seconds (see ``role_env``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mta.tls import ensure_self_signed  # noqa: E402
from tests.dnsserver import DNSServer  # noqa: E402
from tests.livesrv import clean_env, free_port  # noqa: E402

SECRET = "crash-secret-key-0123456789abcdef0123456789"
SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
DOMAIN = "shop.example"
FOREIGN = "orders@elsewhere.example"  # a From the sender does not own: always refused
ROLES = ("api", "worker", "smtp")
BODY = "Your order has shipped and will arrive soon.\n" * 8


# -- the sink (its own process) -------------------------------------------------------------


async def _sink(port: int, path: str, ready) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        in_data = in_headers = False
        crash_id = ""
        try:
            while line := await reader.readline():
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        out.write(f"{crash_id or '?'}\n")  # written before the 250
                        writer.write(b"250 2.0.0 OK\r\n")
                    elif in_headers:
                        if line == b"\r\n":
                            in_headers = False
                        elif line.startswith(b"Subject: crash "):
                            crash_id = line[15:].strip().decode("ascii", "replace")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    in_data, in_headers, crash_id = True, True, ""
                    writer.write(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 OK\r\n")
                if reader._buffer.find(b"\n") < 0:  # answer a pipelined group at once  # noqa: SLF001
                    await writer.drain()
        except ConnectionError:
            pass  # the worker was killed mid-conversation
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port)
    ready.set()
    async with server:
        await server.serve_forever()


def run_sink(port: int, path: str, ready) -> None:
    asyncio.run(_sink(port, path, ready))


def sink_ids(path: Path) -> list[str]:
    """Every crash id the sink has answered 250 for, once per delivery."""
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n") if line]


# -- the roles ------------------------------------------------------------------------------


class Roles:
    """``postern api``, ``postern worker`` and ``postern smtp``, each in a process group of
    its own, killed and started again at will."""

    def __init__(self, env: dict[str, str], work: Path, http_port: int, smtp_port: int):
        self.env, self.work = env, work
        self.http_port, self.smtp_port = http_port, smtp_port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: collections.Counter[str] = collections.Counter()

    def start(self, role: str) -> None:
        with open(self.work / f"{role}.log", "ab") as log:
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", "app", role],
                cwd=self.work,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: gunicorn's workers too
            )
        self.wait_ready(role)

    def wait_ready(self, role: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            proc = self.procs[role]
            if proc.poll() is not None:
                log = (self.work / f"{role}.log").read_text()[-3000:]
                raise RuntimeError(f"postern {role} exited with {proc.returncode}:\n{log}")
            if role == "worker":
                return
            try:
                if role == "api":
                    url = f"http://127.0.0.1:{self.http_port}/healthz"
                    if httpx.get(url, timeout=2).status_code == 200:
                        return
                else:
                    socket.create_connection(("127.0.0.1", self.smtp_port), timeout=2).close()
                    return
            except (httpx.TransportError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"postern {role} did not start")

    def kill(self, role: str) -> int:
        """SIGKILL to the role's whole process group; the pid of its first process."""
        proc = self.procs[role]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.kills[role] += 1
        return proc.pid

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -- the clients ----------------------------------------------------------------------------


@dataclass
class Tally:
    """What each submission came to, by crash id."""

    accepted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # id -> the answer
    unanswered: dict[str, str] = field(default_factory=dict)  # id -> what happened
    retried_connects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self) -> int:
        return len(self.accepted) + len(self.refused) + len(self.unanswered)


@dataclass
class Job:
    crash_id: str
    bad: bool  # made to be refused


class Jobs:
    def __init__(self, count: int, refuse_every: int, prefix: str):
        self._it = iter(range(count))
        self._lock = threading.Lock()
        self.refuse_every = refuse_every
        self.prefix = prefix
        self.bad_ids: set[str] = set()

    def next(self) -> Job | None:
        with self._lock:
            i = next(self._it, None)
        if i is None:
            return None
        bad = self.refuse_every > 0 and i % self.refuse_every == self.refuse_every - 1
        job = Job(f"{self.prefix}{i:06d}", bad)
        if bad:
            with self._lock:
                self.bad_ids.add(job.crash_id)
        return job


def http_client(base: str, sender_key: str, user_key: str, domain_id: str, jobs: Jobs, tally):
    """Submit over HTTP until the jobs run out: /api/v1/email and /api.php in turn."""
    turn = itertools.count()
    with httpx.Client(base_url=base, timeout=60) as client:
        while (job := jobs.next()) is not None:
            sender = FOREIGN if job.bad else f"orders@{DOMAIN}"
            fields: dict[str, Any] = {
                "Subject": f"crash {job.crash_id}",
                "ContentType": "plain",
                "PlainContent": BODY,
                "From": {"email": sender, "name": "Shop"},
                "To": [{"email": f"buyer-{job.crash_id}@dest.example", "name": "Buyer"}],
            }
            v1 = next(turn) % 2 == 0
            while True:
                try:
                    if v1:
                        resp = client.post(
                            "/api/v1/email",
                            json=fields,
                            headers={"Authorization": f"Bearer {sender_key}"},
                        )
                        ok = 200 <= resp.status_code < 300
                    else:
                        resp = client.post(
                            "/api.php",
                            json={
                                "Command": "EmailGateway.SendEmail",
                                "APIKey": user_key,
                                "DomainID": domain_id,
                                **fields,
                            },
                        )
                        ok = 200 <= resp.status_code < 300 and resp.json().get("Success") is True
                except httpx.ConnectError:  # the API is down: nothing was sent, try again
                    with tally.lock:
                        tally.retried_connects += 1
                    time.sleep(0.05)
                    continue
                except httpx.TransportError as exc:  # sent; the answer was lost
                    with tally.lock:
                        tally.unanswered[job.crash_id] = f"http {type(exc).__name__}"
                    break
                with tally.lock:
                    if ok:
                        tally.accepted.add(job.crash_id)
                    else:
                        tally.refused[job.crash_id] = f"http {resp.status_code} {resp.text[:200]}"
                break


def smtp_message(job: Job) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Shop <{FOREIGN if job.bad else f'orders@{DOMAIN}'}>"
    msg["To"] = f"buyer-{job.crash_id}@dest.example"
    msg["Subject"] = f"crash {job.crash_id}"
    msg["X-Crash-Id"] = job.crash_id
    msg.set_content(BODY)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def smtp_client(port: int, login: tuple[str, str], jobs: Jobs, tally: Tally) -> None:
    """Submit over the relay until the jobs run out, one connection as long as it lasts."""
    client: smtplib.SMTP | None = None
    job = jobs.next()
    while job is not None:
        try:
            if client is None:
                client = smtplib.SMTP("127.0.0.1", port, timeout=60)
                client.ehlo()
                client.login(*login)
            envelope = f"orders@{DOMAIN}"
            code, reply = client.mail(envelope)
            if code == 250:
                code, reply = client.rcpt(f"buyer-{job.crash_id}@dest.example")
            if code != 250:
                with tally.lock:
                    tally.refused[job.crash_id] = f"smtp {code} {reply!r}"
                client.rset()
                job = jobs.next()
                continue
        except (smtplib.SMTPException, OSError):
            # Before DATA: nothing can have been committed; the same message again.
            with tally.lock:
                tally.retried_connects += 1
            client = _drop(client)
            time.sleep(0.05)
            continue
        try:
            code, reply = client.data(smtp_message(job))
            with tally.lock:
                if code == 250:
                    tally.accepted.add(job.crash_id)
                else:
                    tally.refused[job.crash_id] = f"smtp {code} {reply!r}"
        except smtplib.SMTPDataError as exc:
            with tally.lock:
                tally.refused[job.crash_id] = f"smtp {exc.smtp_code} {exc.smtp_error!r}"
            client = _drop(client)
        except (smtplib.SMTPException, OSError) as exc:
            with tally.lock:
                tally.unanswered[job.crash_id] = f"smtp {type(exc).__name__}"
            client = _drop(client)
        job = jobs.next()
    _drop(client)


def _drop(client: smtplib.SMTP | None) -> None:
    if client is not None:
        with contextlib.suppress(OSError):
            client.close()
    return None


# -- one database ---------------------------------------------------------------------------


def make_database(spec: str) -> tuple[str, Any, str]:
    """(url, drop, name) for ``spec``: "sqlite" (made by the caller), or a server's URL or
    name; the database on a server is this run's own, dropped by ``drop``."""
    if spec == "sqlite":
        return "", None, "sqlite"
    server = make_url(SERVERS.get(spec, spec))
    name = f"postern_crash_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()

    url = server.set(database=name).render_as_string(hide_password=False)
    return url, drop, {"mysql": "mariadb"}.get(admin.dialect.name, admin.dialect.name)


def role_env(url: str, work: Path, dns: DNSServer, http: int, smtp: list[int], sink: int):
    cert, key = work / "smtp.crt", work / "smtp.key"
    ensure_self_signed(cert, key, "mx.crash.test")
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(
        {
            "POSTERN_DATABASE_URL": url,
            "POSTERN_SECURITY_SECRET_KEY": SECRET,
            "POSTERN_HTTP_PORT": str(http),
            "POSTERN_HTTP_PUBLIC_URL": f"http://127.0.0.1:{http}",
            "POSTERN_HTTP_WORKERS": "2",
            "POSTERN_LOG_LEVEL": "WARNING",
            "POSTERN_DNS_NAMESERVERS": dns.host,
            "POSTERN_DNS_PORT": str(dns.port),
            "POSTERN_DNS_TIMEOUT": "2",
            "POSTERN_DOMAINS_DKIM_RSA_BITS": "1024",
            "POSTERN_SMTP_HOSTNAME": "mx.crash.test",
            "POSTERN_SMTP_PORTS": ",".join(map(str, smtp)),
            "POSTERN_SMTP_ALLOW_PLAIN_AUTH": "true",
            "POSTERN_SMTP_TLS_CERT": str(cert),
            "POSTERN_SMTP_TLS_KEY": str(key),
            "POSTERN_RATELIMIT_REQUESTS": "100000000",
            "POSTERN_RATELIMIT_USER_REQUESTS": "100000000",
            "POSTERN_DELIVERY_ALLOW_PRIVATE_MX": "true",  # the sink's MX is on loopback
            # Delivery to the sink, the MX of dest.example; short claims and retries, so
            # that what a killed worker held is taken up again within seconds.
            "POSTERN_DELIVERY_MX_PORT": str(sink),
            "POSTERN_DELIVERY_TLS": "none",
            "POSTERN_DELIVERY_TIMEOUT": "10",
            "POSTERN_DELIVERY_CLAIM_TIMEOUT": "10",
            "POSTERN_DELIVERY_RETRY_BASE": "1",
            "POSTERN_DELIVERY_RETRY_MAX": "5",
            "POSTERN_DELIVERY_POLL_INTERVAL": "0.2",
            "POSTERN_DELIVERY_BATCH_SIZE": "100",
            "POSTERN_DELIVERY_BUILD_PROCESSES": "1",
            "POSTERN_WEBHOOKS_POLL_INTERVAL": "1",
        }
    )
    return env


def setup_tenant(base: str, env: dict[str, str], work: Path, dns: DNSServer) -> dict[str, str]:
    """A user, a verified sender domain, a sender key and SMTP credentials."""
    out = subprocess.run(
        [sys.executable, "-m", "app", "user", "create", "crash", "--password", "crash-password"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    user_key = json.loads(out.stdout)["APIKey"]

    def call(command: str, **params: Any) -> dict[str, Any]:
        resp = httpx.post(
            f"{base}/api.php", json={"Command": command, "APIKey": user_key, **params}, timeout=60
        )
        body: dict[str, Any] = resp.json()
        if not body.get("Success"):
            raise RuntimeError(f"{command}: {body}")
        return body

    added = call("EmailGateway.AddDomain", DomainName=DOMAIN)
    domain_id = str(added["NewSenderDomainID"])
    for record in added["Domain"]["DNSRecords"]:
        dns.add(record["Host"], record["Type"], record["Value"])
    call("EmailGateway.VerifyDomain", DomainID=domain_id)
    sender = call("EmailGateway.AddAPI", DomainID=domain_id, Description="crash")["APIKey"]["Key"]
    smtp = call("EmailGateway.AddSMTP", DomainID=domain_id)["SMTP"]
    return {
        "user_key": user_key,
        "domain_id": domain_id,
        "sender_key": sender,
        "smtp_user": smtp["Username"],
        "smtp_password": smtp["Password"],
    }


@dataclass
class WorkerKill:
    in_flight: int  # claimed by the killed worker and not recorded
    sent_unrecorded: int  # of those, already taken by the sink


def in_flight_after_kill(engine: Engine, pid: int, sink_path: Path) -> WorkerKill:
    time.sleep(0.3)  # what the kernel still held for the sink reaches it
    with engine.connect() as conn:
        subjects = conn.execute(
            text(
                "SELECT m.subject FROM deliveries d JOIN messages m ON m.id = d.message_id "
                "WHERE d.status = 'sending' AND d.claimed_by LIKE :who"
            ),
            {"who": f"%:{pid}:%"},
        ).scalars()
        ids = {s.removeprefix("crash ") for s in subjects}
    delivered = set(sink_ids(sink_path))
    return WorkerKill(len(ids), len(ids & delivered))


def wait_for_claim(engine: Engine, pid: int, seconds: float = 5) -> bool:
    """Wait until the worker ``pid`` holds a claim; whether it did within ``seconds``."""
    deadline = time.monotonic() + seconds
    query = text(
        "SELECT COUNT(*) FROM deliveries WHERE status = 'sending' AND claimed_by LIKE :who"
    )
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"who": f"%:{pid}:%"}).scalar():
                return True
        time.sleep(0.01)
    return False


def queue_left(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT COUNT(*) FROM deliveries WHERE due_at IS NOT NULL")).scalar()
            or 0
        )


def run_one(spec: str, opts: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    work = Path(tempfile.mkdtemp(prefix=f"postern-crash-{spec.split(':')[0]}-"))
    url, drop, backend = make_database(spec)
    if not url:
        url = f"sqlite:///{work}/postern.db"
    sink_port, http_port = free_port(), free_port()
    smtp_ports = [free_port() for _ in range(3)]
    sink_path = work / "sink.txt"
    ready = mp.Event()
    sink = mp.Process(target=run_sink, args=(sink_port, str(sink_path), ready), daemon=True)
    sink.start()
    ready.wait(30)
    engine = create_engine(url)
    roles: Roles | None = None
    started = time.monotonic()
    try:
        with DNSServer() as dns:
            dns.add("dest.example", "MX", "10 mx.dest.example")
            dns.add("mx.dest.example", "A", "127.0.0.1")
            env = role_env(url, work, dns, http_port, smtp_ports, sink_port)
            subprocess.run(
                [sys.executable, "-m", "app", "db", "upgrade"],
                cwd=work,
                env=env,
                capture_output=True,
                check=True,
            )
            roles = Roles(env, work, http_port, smtp_ports[0])
            for role in ROLES:
                roles.start(role)
            base = f"http://127.0.0.1:{http_port}"
            tenant = setup_tenant(base, env, work, dns)

            # The kills: each role ``--kills`` times, at random points of the submissions.
            plan = [role for role in ROLES for _ in range(opts.kills)]
            rng.shuffle(plan)
            points = sorted(rng.uniform(0.05, 0.9) * opts.count for _ in plan)
            schedule = list(zip(points, plan, strict=True))

            tally = Tally()
            jobs = Jobs(opts.count, opts.refuse_every, "c")
            login = (tenant["smtp_user"], tenant["smtp_password"])
            clients = [
                threading.Thread(
                    target=http_client,
                    args=(
                        base,
                        tenant["sender_key"],
                        tenant["user_key"],
                        tenant["domain_id"],
                        jobs,
                        tally,
                    ),
                )
                for _ in range(opts.http_clients)
            ] + [
                threading.Thread(target=smtp_client, args=(smtp_ports[0], login, jobs, tally))
                for _ in range(opts.smtp_clients)
            ]
            submit_start = time.monotonic()
            for t in clients:
                t.start()
            worker_kills: list[WorkerKill] = []
            while any(t.is_alive() for t in clients):
                if schedule and tally.done() >= schedule[0][0]:
                    _, role = schedule.pop(0)
                    if role == "worker" and roles.kills[role] % 2 == 0:
                        # Every other kill of the worker falls while it holds a claim (when
                        # it takes one within a few seconds): inside a batch's sending.
                        wait_for_claim(engine, roles.procs[role].pid)
                        time.sleep(rng.uniform(0, 0.4))  # building, sending or recording
                    else:
                        time.sleep(rng.uniform(0, 0.3))
                    pid = roles.kill(role)
                    if role == "worker":
                        worker_kills.append(in_flight_after_kill(engine, pid, sink_path))
                    roles.start(role)
                else:
                    time.sleep(0.02)
            for t in clients:
                t.join()
            submit_s = time.monotonic() - submit_start
            for _, role in schedule:  # kills the submissions ended before (a tiny --count)
                pid = roles.kill(role)
                if role == "worker":
                    worker_kills.append(in_flight_after_kill(engine, pid, sink_path))
                roles.start(role)

            # Drain: wait until nothing is left in the queue.
            drain_start = time.monotonic()
            while (left := queue_left(engine)) and time.monotonic() - drain_start < opts.drain:
                time.sleep(0.5)
            drain_s = time.monotonic() - drain_start
            time.sleep(0.5)
            roles.stop_all()

        with engine.connect() as conn:
            committed = {
                s.removeprefix("crash ")
                for s in conn.execute(text("SELECT subject FROM messages")).scalars()
            }
            statuses = dict(
                conn.execute(text("SELECT status, COUNT(*) FROM deliveries GROUP BY status")).all()
            )
        delivered = collections.Counter(sink_ids(sink_path))
        submitted = tally.accepted | set(tally.refused) | set(tally.unanswered)
        lost = sorted(tally.accepted - set(delivered))
        refused_delivered = sorted(set(tally.refused) & set(delivered))
        unknown = sorted(set(delivered) - submitted)
        duplicated = sum(n - 1 for n in delivered.values())
        in_flight = sum(k.in_flight for k in worker_kills)
        window = sum(k.sent_unrecorded for k in worker_kills)
        unanswered = set(tally.unanswered)
        result = {
            "database": backend,
            "submitted": len(submitted),
            "accepted": len(tally.accepted),
            "refused": len(tally.refused),
            "unanswered": len(unanswered),
            "committed_unanswered": len(unanswered & committed),
            "delivered_unanswered": len(unanswered & set(delivered)),
            "delivered": len(delivered),
            "deliveries": sum(delivered.values()),
            "lost": len(lost),
            "refused_delivered": len(refused_delivered),
            "unknown_delivered": len(unknown),
            "duplicated": duplicated,
            "in_flight_at_kills": in_flight,
            "sent_unrecorded_at_kills": window,
            "kills": dict(roles.kills),
            "worker_kills": [vars(k) for k in worker_kills],
            "connects_retried": tally.retried_connects,
            "queue_left": left,
            "statuses": statuses,
            "submit_s": round(submit_s, 1),
            "drain_s": round(drain_s, 1),
            "total_s": round(time.monotonic() - started, 1),
            "lost_ids": lost[:20],
            "refused_delivered_ids": refused_delivered[:20],
            "refusals": collections.Counter(v[:40] for v in tally.refused.values()).most_common(5),
            "refused_unexpectedly": len(set(tally.refused) - jobs.bad_ids),
        }
        result["ok"] = (
            not lost
            and not refused_delivered
            and not unknown
            and duplicated <= in_flight
            and len(submitted) == opts.count
        )
        if not result["ok"] or opts.keep:
            result["work"] = str(work)
        return result
    finally:
        if roles is not None:
            roles.stop_all()
        engine.dispose()
        sink.terminate()
        sink.join()
        if drop is not None:
            drop()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    kills = ", ".join(f"{role} {r['kills'].get(role, 0)}" for role in ROLES)
    return "\n".join(
        [
            f"crash test on {r['database']}: {'PASS' if r['ok'] else 'FAIL'}",
            f"  submitted {r['submitted']} in {r['submit_s']} s; drained in {r['drain_s']} s"
            f" ({r['total_s']} s in all)",
            f"  kills (SIGKILL): {kills}",
            f"  accepted {r['accepted']}, refused {r['refused']} "
            f"({r['refused_unexpectedly']} of them not made to be), "
            f"unanswered {r['unanswered']} (connections dropped by a kill; "
            f"{r['connects_retried']} connects refused and retried)",
            f"  committed but unanswered {r['committed_unanswered']} "
            f"(delivered {r['delivered_unanswered']})",
            f"  delivered {r['delivered']} messages in {r['deliveries']} deliveries",
            f"  lost {r['lost']}; refused but delivered {r['refused_delivered']}; "
            f"unknown delivered {r['unknown_delivered']}",
            f"  duplicated {r['duplicated']}; in flight at the worker's kills "
            f"{r['in_flight_at_kills']} (already at the MX, not yet recorded: "
            f"{r['sent_unrecorded_at_kills']})",
            f"  left in the queue {r['queue_left']}; deliveries by status {r['statuses']}",
        ]
        + ([f"  lost: {r['lost_ids']}"] if r["lost"] else [])
        + (
            [f"  refused but delivered: {r['refused_delivered_ids']}"]
            if r["refused_delivered"]
            else []
        )
        + ([f"  kept: {r['work']}"] if "work" in r else [])
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help='comma-separated: "sqlite", "postgresql", "mariadb", or a server URL',
    )
    ap.add_argument("--count", type=int, default=10_000, help="messages to submit")
    ap.add_argument("--kills", type=int, default=3, help="SIGKILLs of each role")
    ap.add_argument("--http-clients", type=int, default=3)
    ap.add_argument("--smtp-clients", type=int, default=2)
    ap.add_argument("--refuse-every", type=int, default=50, help="one message in N is refused")
    ap.add_argument("--drain", type=float, default=300, help="seconds to wait for the queue")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    ap.add_argument("--json", action="store_true", help="print each result as JSON too")
    opts = ap.parse_args(argv)
    if opts.seed is None:
        opts.seed = random.randrange(1 << 32)
    print(f"crash test: seed {opts.seed}", flush=True)
    ok = True
    for spec in opts.databases.split(","):
        result = run_one(spec.strip(), opts)
        print(report(result), flush=True)
        if opts.json:
            print(json.dumps(result), flush=True)
        ok = ok and result["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
