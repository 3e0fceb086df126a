"""Worker processes for real: killed mid-batch, two at once, and inside postern serve."""

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import dkim
import httpx
import pytest
from sqlalchemy import func, select

from models import Delivery
from tests import smtppeer
from tests.conftest import SECRET_KEY
from tests.dnsserver import dns_txt
from tests.livesrv import clean_env, running, wait_until

smtp_peer = smtppeer.smtp_peer


class BlackHole:
    """Accepts SMTP connections and never answers: a worker talking to it is stuck."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def worker_env(base_config, dns_server, port, **extra):
    return clean_env(
        POSTERN_DATABASE_URL=base_config.database.url,
        POSTERN_SECURITY_SECRET_KEY=SECRET_KEY,
        POSTERN_DNS_NAMESERVERS=dns_server.host,
        POSTERN_DNS_PORT=str(dns_server.port),
        POSTERN_DNS_TIMEOUT="2",
        POSTERN_DELIVERY_MX_PORT=str(port),
        POSTERN_DELIVERY_ALLOW_PRIVATE_MX="true",  # the SMTP peers are on loopback
        POSTERN_SMTP_HOSTNAME="mx.postern.test",
        POSTERN_DELIVERY_POLL_INTERVAL="0.2",
        **extra,
    )


def start_worker(env, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, log


def children(pid: int) -> list[int]:
    """The ids of the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def count(database, *where):
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(Delivery).where(*where))


def send_many(client, key, n):
    for i in range(n):
        resp = client.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "Subject": f"m{i}",
                "ContentType": "plain",
                "PlainContent": f"body {i}",
                "From": {"email": "a@example.com", "name": "A"},
                "To": [{"email": f"r{i}@dest.example"}],
            },
        )
        assert resp.status_code == 200


@pytest.fixture
def domain(active_domain):
    return active_domain()


def test_a_killed_worker_loses_nothing(
    client, domain, database, base_config, dns_server, smtp_peer, tmp_path
):
    dns_server.add("dest.example", "MX", "10 mx.dest.example")
    dns_server.add("mx.dest.example", "A", "127.0.0.1")
    send_many(client, domain.key, 10)
    hole = BlackHole()
    doomed = None
    try:
        env = worker_env(
            base_config,
            dns_server,
            hole.port,
            # The batch deadline is half of it: long enough that a loaded machine builds the
            # batch and reaches the black hole before it (the survivor waits it out).
            POSTERN_DELIVERY_CLAIM_TIMEOUT="8",
            POSTERN_DELIVERY_BUILD_PROCESSES="2",
            POSTERN_DELIVERY_BATCH_SIZE="10",  # a full batch: built by the build processes
        )
        doomed, log1 = start_worker(env, tmp_path, "doomed")
        assert hole.accepted.wait(60), (tmp_path / "doomed.log").read_text()
        assert count(database, Delivery.status == "sending") == 10  # the batch is in hand
        builders = children(doomed.pid)  # the build processes (a full batch of >= 8)
        assert len(builders) >= 2
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        log1.close()
        # Orphaned, they notice their worker is gone and end instead of lingering.
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in builders), 30)
    finally:
        if doomed is not None and doomed.poll() is None:  # a check failed before the kill
            doomed.kill()
            doomed.wait(timeout=30)
        hole.close()
    # Another worker, pointed at a working MX, takes the batch up once the claim has expired.
    survivor, log2 = start_worker(
        worker_env(base_config, dns_server, smtp_peer.port), tmp_path, "survivor"
    )
    try:
        wait_until(lambda: count(database, Delivery.status == "delivered") == 10)
    finally:
        survivor.terminate()
        survivor.wait(timeout=60)
        log2.close()
    assert sorted(m.rcpt_tos[0] for m in smtp_peer.messages) == sorted(
        f"r{i}@dest.example" for i in range(10)
    )


def test_two_worker_processes_deliver_each_message_once(
    client, domain, database, base_config, dns_server, smtp_peer, tmp_path
):
    dns_server.add("dest.example", "A", "127.0.0.1")
    send_many(client, domain.key, 60)
    env = worker_env(base_config, dns_server, smtp_peer.port, POSTERN_DELIVERY_BATCH_SIZE="5")
    procs = [start_worker(env, tmp_path, f"w{i}") for i in range(2)]
    try:
        wait_until(lambda: count(database, Delivery.status == "delivered") == 60, timeout=120)
    finally:
        for proc, _log in procs:
            proc.terminate()
        for proc, log in procs:
            assert proc.wait(timeout=60) == 0  # stopped cleanly on SIGTERM
            log.close()
    received = [m.rcpt_tos[0] for m in smtp_peer.messages]
    assert sorted(received) == sorted(f"r{i}@dest.example" for i in range(60))
    workers = {
        line.split('"worker": "')[1].split('"')[0]
        for proc_log in ("w0", "w1")
        for line in (tmp_path / f"{proc_log}.log").read_text().splitlines()
        if '"worker started"' in line
    }
    assert len(workers) == 2


def test_serve_delivers_what_the_api_accepts(tmp_path, dns_server, smtp_peer):
    """The README's first command: one process group that accepts and delivers."""
    from tests.livesrv import postern

    env = clean_env(
        POSTERN_DNS_NAMESERVERS=dns_server.host,
        POSTERN_DNS_PORT=str(dns_server.port),
        POSTERN_DNS_TIMEOUT="2",
        POSTERN_DELIVERY_MX_PORT=str(smtp_peer.port),
        POSTERN_DELIVERY_ALLOW_PRIVATE_MX="true",
        POSTERN_SMTP_HOSTNAME="mx.postern.test",
        POSTERN_DELIVERY_POLL_INTERVAL="0.2",
    )
    import json

    key = json.loads(
        postern(
            "user", "create", "gail", "--password", "correct horse", cwd=tmp_path, env=env
        ).stdout
    )["APIKey"]
    with running("serve", tmp_path, env) as (base, _log), httpx.Client(base_url=base) as http:

        def call(command, **params):
            return http.post("/api.php", json={"Command": command, "APIKey": key, **params}).json()

        added = call("EmailGateway.AddDomain", DomainName="shop.example")
        for r in added["Domain"]["DNSRecords"]:
            dns_server.add(r["Host"], r["Type"], r["Value"])
        domain_id = added["NewSenderDomainID"]
        assert call("EmailGateway.VerifyDomain", DomainID=domain_id)["Domain"]["Status"] == (
            "Enabled"
        )
        sender = call("EmailGateway.AddAPI", DomainID=domain_id, Description="s")["APIKey"]["Key"]
        dns_server.add("dest.example", "A", "127.0.0.1")
        resp = http.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {sender}"},
            json={
                "Subject": "Order 1",
                "ContentType": "html",
                "HtmlContent": "<p>Thanks!</p>",
                "From": {"email": "orders@shop.example", "name": "Shop"},
                "To": [{"email": "buyer@dest.example", "name": "Buyer"}],
            },
        )
        assert resp.status_code == 200
        wait_until(lambda: len(smtp_peer.messages) == 1)
    data = smtp_peer.messages[0].data
    assert dkim.verify(data, dnsfunc=dns_txt(dns_server))
    assert smtp_peer.messages[0].mail_from.endswith("@sl.shop.example")
