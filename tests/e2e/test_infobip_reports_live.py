"""Infobip's one-time reports claimed at once through two running `postern api` servers
(gunicorn, two workers each) on the same database: every report is handed out exactly once
across all their answers."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests import smtppeer
from tests.app.workers import test_delivery as delivery_tests
from tests.conftest import SECRET_KEY
from tests.livesrv import clean_env, running

smtp_peer = smtppeer.smtp_peer
mx, domain, worker_for = delivery_tests.mx, delivery_tests.domain, delivery_tests.worker_for

MESSAGES = 60
CLIENTS = 8


def test_two_servers_hand_out_each_report_once(
    tmp_path, base_config, dns_server, client, domain, mx, worker_for
):
    headers = {"Authorization": f"App {domain.key}"}
    for n in range(MESSAGES // 20):
        resp = client.post(
            "/email/3/send",
            headers=headers,
            data={
                "from": "news@example.com",
                "to": [f"r{n}-{i}@dest.example" for i in range(20)],
                "subject": "Hi",
                "text": "Hello",
            },
        )
        assert resp.status_code == 200, resp.get_json()
    worker = worker_for(mx)
    while worker.run_once():
        pass
    env = clean_env(
        POSTERN_DATABASE_URL=base_config.database.url,
        POSTERN_SECURITY_SECRET_KEY=SECRET_KEY,
        POSTERN_DNS_NAMESERVERS=dns_server.host,
        POSTERN_DNS_PORT=str(dns_server.port),
        POSTERN_RATELIMIT_REQUESTS="1000000",
    )
    with running("api", tmp_path, env) as (one, _), running("api", tmp_path, env) as (two, _):
        barrier = threading.Barrier(CLIENTS)

        def claim(n):
            with httpx.Client(base_url=(one, two)[n % 2], timeout=60) as http:
                barrier.wait()
                got = []
                for _ in range(3):
                    r = http.get("/email/1/reports", headers=headers, params={"limit": 4})
                    assert r.status_code == 200, r.text
                    got += [x["messageId"] for x in r.json()["results"]]
                return got

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(claim, range(CLIENTS)))
        # What was being claimed by another request when one looked is handed out after.
        with httpx.Client(base_url=one, timeout=60) as http:
            rest = http.get("/email/1/reports", headers=headers, params={"limit": 1000})
            assert rest.status_code == 200, rest.text
    every = [m for a in answers for m in a] + [x["messageId"] for x in rest.json()["results"]]
    assert len(every) == len(set(every)) == MESSAGES
    assert sum(1 for a in answers[0::2] if a) and sum(1 for a in answers[1::2] if a)
