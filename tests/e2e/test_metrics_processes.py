"""/metrics of a real `postern serve`: two gunicorn workers, the delivery worker and the SMTP
relay, each a process of its own, add up in one scrape (the multiprocess directory)."""

import smtplib
import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mta.tls import ensure_self_signed
from tests import smtppeer
from tests.app.workers import test_delivery as delivery_tests
from tests.conftest import SECRET_KEY
from tests.livesrv import clean_env, free_port, running, wait_until

smtp_peer = smtppeer.smtp_peer
mx = delivery_tests.mx
SENDS = 12


def scrape(base):
    resp = httpx.get(f"{base}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_process_of_serve_counts_in_one_scrape(tmp_path, base_config, active_domain, mx):
    domain = active_domain()
    temp = tmp_path / "tmp"
    temp.mkdir()
    cert, key = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    ensure_self_signed(cert, key, "mx.postern.test")  # for any database (not beside SQLite's)
    smtp_ports = [free_port() for _ in range(3)]
    env = clean_env(
        POSTERN_DATABASE_URL=base_config.database.url,
        POSTERN_SECURITY_SECRET_KEY=SECRET_KEY,
        POSTERN_DNS_NAMESERVERS=base_config.dns.nameservers[0],
        POSTERN_DNS_PORT=str(base_config.dns.port),
        POSTERN_DELIVERY_ALLOW_PRIVATE_MX="true",
        POSTERN_DELIVERY_MX_PORT=str(mx.port),
        POSTERN_DELIVERY_POLL_INTERVAL="0.2",
        POSTERN_SMTP_PORTS=",".join(map(str, smtp_ports)),
        POSTERN_SMTP_HOSTNAME="mx.postern.test",
        POSTERN_SMTP_TLS_CERT=str(cert),
        POSTERN_SMTP_TLS_KEY=str(key),
        TMPDIR=str(temp),  # where serve makes its metrics directory
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running("serve", tmp_path, env) as (base, log_path):
        for i in range(SENDS):  # a connection each: gunicorn's two workers share them
            resp = httpx.post(
                f"{base}/api/v1/email",
                headers={"Authorization": f"Bearer {domain.key}"},
                json={
                    "Subject": "s",
                    "ContentType": "plain",
                    "PlainContent": "hello",
                    "From": {"email": "news@example.com", "name": "News"},
                    "To": [{"email": f"r{i}@dest.example"}],
                },
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
        wait_until(lambda: listening(smtp_ports[1]), timeout=30)  # the relay has started
        sessions = value(scrape(base), "postern_smtp_sessions_total", listener="submission")
        with smtplib.SMTP("127.0.0.1", smtp_ports[1], timeout=10) as c:  # the submission port
            c.ehlo()
        wait_until(lambda: len(mx.messages) == SENDS, timeout=60)
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=10).status_code == 200, 30)

        def counted():
            s = scrape(base)
            return value(s, "postern_deliveries_total", outcome="delivered") == SENDS and s

        wait_until(counted, timeout=30)  # the worker counts once its batch has committed
        samples = scrape(base)
        assert value(samples, "postern_messages_accepted_total", source="api") == SENDS
        assert value(samples, "postern_recipients_accepted_total", source="api") == SENDS
        assert value(samples, "postern_deliveries_total", outcome="delivered") == SENDS
        assert value(samples, "postern_smtp_sessions_total", listener="submission") == (
            sessions + 1
        )
        sends = {"method": "POST", "route": "/api/v1/email", "status": "2xx"}
        assert value(samples, "postern_http_request_duration_seconds_count", **sends) == SENDS
        assert value(samples, "postern_worker_batch_duration_seconds_count", worker="delivery") >= 1
        assert value(samples, "postern_queue_depth", state="due") == 0
        # Each process keeps its own files in the instance's directory.
        [shared] = list(temp.glob("postern-metrics-*"))
        pids = {p.stem.rsplit("_", 1)[1] for p in shared.glob("*.db")}
        assert len(pids) >= 4, pids  # two API workers, the delivery worker, the relay
    assert list(temp.glob("postern-metrics-*")) == []  # deleted when serve stopped
