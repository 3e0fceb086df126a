"""Delivery end to end: API -> queue -> worker -> loopback DNS -> aiosmtpd MX peer."""

import contextlib
import email
import email.policy
import json
import os
import re
import signal
import threading
import time
from datetime import timedelta

import dkim
import pytest
from sqlalchemy import select

from app.workers.delivery import Worker
from core.crypto import SecretBox
from models import Delivery, Event, Suppression
from tests import smtppeer
from tests.conftest import SECRET_KEY
from tests.dnsserver import dns_txt

smtp_peer = smtppeer.smtp_peer
make_smtp_peer = smtppeer.make_smtp_peer


@pytest.fixture
def mx(dns_server, smtp_peer):
    """dest.example's MX is the peer (on 127.0.0.1); the worker dials the peer's port."""
    dns_server.add("dest.example", "MX", "10 mx.dest.example")
    dns_server.add("mx.dest.example", "A", "127.0.0.1")
    return smtp_peer


@pytest.fixture
def worker_for(base_config, database, clock):
    made = []

    def make(peer=None, **changes):
        if peer is not None:
            changes.setdefault("delivery__mx_port", peer.port)
        changes.setdefault("delivery__timeout", 5.0)
        config = base_config.replace(**changes)
        made.append(Worker(config, database, SecretBox(SECRET_KEY.encode()), clock=clock))
        return made[-1]

    yield make
    for worker in made:
        worker.close()


@pytest.fixture
def domain(active_domain, publish):
    d = active_domain()
    publish(d.id, skip=("ownership",))  # DKIM key in DNS, for verification
    return d


@pytest.fixture
def send(client, domain):
    def do(to="rcpt@dest.example", key=None, **extra):
        body = {
            "Subject": "Hello ünïcode",
            "ContentType": "html",
            "HtmlContent": "<p>Hello <a href='https://example.com/x'>there</a></p>",
            "PlainContent": "Hello there",
            "From": {"email": "news@example.com", "name": "News Désk"},
            "To": [{"email": to, "name": "Rcpt"}] if isinstance(to, str) else to,
            "Tags": ["welcome"],
            **extra,
        }
        resp = client.post(
            "/api/v1/email", json=body, headers={"Authorization": f"Bearer {key or domain.key}"}
        )
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["MessageID"]

    return do


def deliveries(database, message_id):
    with database.transaction(readonly=True) as s:
        return s.scalars(
            select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.id)
        ).all()


def event_types(database, message_id):
    with database.transaction(readonly=True) as s:
        return [
            e.type
            for e in s.scalars(
                select(Event).where(Event.message_id == message_id).order_by(Event.id)
            )
        ]


def test_message_arrives_signed_and_intact(send, mx, worker_for, database, dns_server, domain):
    message_id = send(CC=[{"email": "cc@dest.example"}], BCC=[{"email": "hidden@dest.example"}])
    assert worker_for(mx).run_once() == 3
    assert len(mx.messages) == 3 and len(mx.connections) == 1  # one connection reused
    by_rcpt = {m.rcpt_tos[0]: m for m in mx.messages}
    assert set(by_rcpt) == {"rcpt@dest.example", "cc@dest.example", "hidden@dest.example"}
    tokens = {d.recipient: d.token for d in deliveries(database, message_id)}
    for rcpt, received in by_rcpt.items():
        assert received.mail_from == f"b-{tokens[rcpt]}@sl.example.com"  # VERP
        assert received.helo == "mx.postern.test"
    data = by_rcpt["rcpt@dest.example"].data
    assert dkim.verify(data, dnsfunc=dns_txt(dns_server))
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Subject"] == "Hello ünïcode"
    assert parsed["From"].addresses[0].display_name == "News Désk"
    assert parsed["Message-ID"] == f"<{message_id}@example.com>"
    assert parsed["X-Postern-Tags"] == "welcome"
    assert parsed["Cc"] == "cc@dest.example" and parsed["Bcc"] is None
    assert b"hidden@dest.example" not in data
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_body(("plain",)).get_content().strip() == "Hello there"
    sig = parsed["DKIM-Signature"]
    assert "d=sl.example.com" in sig and "s=key1" in sig and "a=rsa-sha256" in sig
    assert "c=relaxed/relaxed" in sig
    for d in deliveries(database, message_id):
        assert (d.status, d.due_at, d.last_code) == ("delivered", None, 250)
    assert event_types(database, message_id).count("delivered") == 3


def test_a_large_html_message_arrives_intact(send, mx, worker_for, dns_server, database):
    """Its payload is kept compressed (models.messages.pack_payload); built from it whole."""
    html = "".join(f"<p>Paragraph {i}: your order has shipped, Ünïcode.</p>" for i in range(300))
    send(HtmlContent=html, PlainContent=None)
    assert worker_for(mx).run_once() == 1
    [received] = mx.messages
    assert dkim.verify(received.data, dnsfunc=dns_txt(dns_server))
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed.get_body(("html",)).get_content().rstrip("\r\n") == html


def test_ed25519_second_signature(make_app, user, mx, worker_for, dns_server, database, publish):
    from models import Domain
    from models.domains import ENABLED

    call = make_app(domains__dkim_ed25519=True)
    domain_id = call("EmailGateway.AddDomain", APIKey=user.api_key, DomainName="ed.example")[
        "NewSenderDomainID"
    ]
    with database.transaction() as s:
        s.get(Domain, domain_id).status = ENABLED
    publish(domain_id, skip=("ownership",))
    key = call("EmailGateway.AddAPI", APIKey=user.api_key, DomainID=domain_id, Description="k")[
        "APIKey"
    ]["Key"]
    resp = call.client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "Subject": "s",
            "ContentType": "plain",
            "PlainContent": "x",
            "From": {"email": "a@ed.example", "name": "A"},
            "To": [{"email": "r@dest.example"}],
        },
    )
    assert resp.status_code == 200
    worker_for(mx).run_once()
    data = mx.messages[0].data
    lookup = dns_txt(dns_server)
    checker = dkim.DKIM(data)
    assert checker.verify(idx=0, dnsfunc=lookup) and checker.verify(idx=1, dnsfunc=lookup)
    assert b"a=ed25519-sha256" in data and b"a=rsa-sha256" in data


def test_temporary_failure_is_retried(send, mx, worker_for, database, clock):
    mx.fail_rcpt("rcpt@dest.example", 451, "4.7.1 Greylisted, try later", times=1)
    message_id = send()
    worker = worker_for(mx)
    worker.run_once()
    [d] = deliveries(database, message_id)
    assert (d.status, d.last_code, d.last_enhanced) == ("deferred", 451, "4.7.1")
    assert "Greylisted" in d.last_text
    delay = (d.due_at - clock()).total_seconds()
    assert 40 <= delay <= 80  # retry_base 60 s with jitter
    assert worker.run_once() == 0  # not due yet
    clock.advance(seconds=90)
    assert worker.run_once() == 1
    [d] = deliveries(database, message_id)
    assert (d.status, d.attempts) == ("delivered", 2)
    assert event_types(database, message_id) == ["accepted", "deferred", "delivered"]
    assert len(mx.messages) == 1


def test_hard_bounce_suppresses_the_address(send, mx, worker_for, database, client, domain):
    mx.fail_rcpt("rcpt@dest.example", 550, "5.1.1 No such user here")
    message_id = send()
    worker_for(mx).run_once()
    [d] = deliveries(database, message_id)
    assert (d.status, d.last_code, d.last_enhanced) == ("bounced", 550, "5.1.1")
    assert "No such user" in d.last_text
    with database.transaction(readonly=True) as s:
        [entry] = s.scalars(select(Suppression)).all()
        bounced = s.scalars(select(Event).where(Event.type == "bounced")).one()
    assert (entry.email, entry.source) == ("rcpt@dest.example", "bounce")
    assert (bounced.smtp_code, bounced.enhanced_code) == (550, "5.1.1")
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "Subject": "again",
            "ContentType": "plain",
            "PlainContent": "x",
            "From": {"email": "a@example.com", "name": "A"},
            "To": [{"email": "rcpt@dest.example"}],
        },
    )
    assert resp.get_json()["Errors"][0]["Code"] == 14


def test_data_rejection_as_spam_fails_without_suppressing(send, mx, worker_for, database):
    mx.fail_data(554, "5.7.1 Message refused as spam")
    message_id = send()
    worker_for(mx).run_once()
    assert deliveries(database, message_id)[0].status == "failed"  # a block, not a bounce
    assert event_types(database, message_id)[-1] == "blocked"
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(Suppression)).all() == []


def test_null_mx_and_missing_domain_bounce(send, dns_server, worker_for, database, smtp_peer):
    dns_server.add("nullmx.example", "MX", "0 .")
    first = send(to="a@nullmx.example")
    second = send(to="a@nowhere.example")
    worker_for(smtp_peer).run_once()
    [d1], [d2] = deliveries(database, first), deliveries(database, second)
    assert d1.status == "bounced" and "null MX" in d1.last_text
    assert d2.status == "bounced"
    assert smtp_peer.messages == []


def test_implicit_mx_from_an_a_record(send, dns_server, worker_for, database, smtp_peer):
    dns_server.add("plain.example", "A", "127.0.0.1")
    message_id = send(to="x@plain.example")
    worker_for(smtp_peer).run_once()
    assert deliveries(database, message_id)[0].status == "delivered"


def test_dns_timeout_defers(send, dns_server, worker_for, database, smtp_peer):
    dns_server.silence("slow.example")
    message_id = send(to="x@slow.example")
    worker_for(smtp_peer).run_once()
    [d] = deliveries(database, message_id)
    assert d.status == "deferred" and d.due_at is not None


def test_unreachable_host_defers_then_fails_after_max_age(
    send, dns_server, worker_for, database, clock, smtp_peer
):
    dns_server.add("dead.example", "A", "127.0.0.9")  # nothing listens there
    message_id = send(to="x@dead.example")
    worker = worker_for(smtp_peer, delivery__max_age=3600, delivery__timeout=1.0)
    worker.run_once()
    assert deliveries(database, message_id)[0].status == "deferred"
    clock.advance(hours=2)
    worker.run_once()
    [d] = deliveries(database, message_id)
    assert (d.status, d.due_at) == ("failed", None) and d.last_text.startswith("Gave up after 2")
    assert event_types(database, message_id) == ["accepted", "deferred", "failed"]


def test_send_at_is_not_sent_early(send, mx, worker_for, database, clock):
    import time

    message_id = send(SendAt=int(time.time()) + 600)
    worker = worker_for(mx)
    assert worker.run_once() == 0 and mx.messages == []
    clock.advance(seconds=601)
    assert worker.run_once() == 1
    assert deliveries(database, message_id)[0].status == "delivered"


def test_a_dead_workers_claim_is_taken_up_after_the_timeout(send, mx, worker_for, database, clock):
    from commands.delivery.outcomes import Result

    ids = [send(to=f"r{i}@dest.example") for i in range(5)]
    dead = worker_for(mx)
    stale = dead.claim()
    assert len(stale) == 5  # claimed, then the worker "dies" before sending
    alive = worker_for(mx)
    assert alive.run_once() == 0  # still claimed
    clock.advance(seconds=alive.config.delivery.claim_timeout + 1)
    taken = alive.claim()
    assert len(taken) == 5
    # The dead worker's late answer arrives while the claim is the other worker's: ignored.
    dead.commit([Result(j.delivery_id, "bounced", 550, "5.1.1", "late") for j in stale])
    for message_id in ids:
        d = deliveries(database, message_id)[0]
        assert (d.status, d.claimed_by) == ("sending", alive.worker_id)
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(Event).where(Event.type == "bounced")).all() == []
        assert s.scalars(select(Suppression)).all() == []
    alive.commit(alive.handle(taken))
    assert sorted(m.rcpt_tos[0] for m in mx.messages) == [f"r{i}@dest.example" for i in range(5)]
    for message_id in ids:
        assert deliveries(database, message_id)[0].status == "delivered"


def test_two_workers_deliver_each_message_once(send, mx, worker_for, database):
    ids = [send(to=f"r{i}@dest.example") for i in range(40)]
    workers = [worker_for(mx, delivery__batch_size=5) for _ in range(2)]
    handled = [0, 0]

    def drain(i):
        while n := workers[i].run_once():
            handled[i] += n

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(handled) == 40
    received = sorted(m.rcpt_tos[0] for m in mx.messages)
    assert received == sorted(f"r{i}@dest.example" for i in range(40))
    assert all(deliveries(database, m)[0].status == "delivered" for m in ids)


def test_starttls_when_offered(send, dns_server, worker_for, make_smtp_peer, database):
    peer = make_smtp_peer(starttls=True)
    dns_server.add("tls.example", "A", "127.0.0.1")
    message_id = send(to="x@tls.example")
    worker_for(peer).run_once()
    assert peer.messages[0].tls is True
    # The attempt's event says so, with how long the transaction took (Postal's API and
    # webhooks show them as sent_with_ssl and time).
    with database.transaction(readonly=True) as s:
        [event] = s.scalars(
            select(Event).where(Event.message_id == message_id, Event.type == "delivered")
        ).all()
    details = json.loads(event.details)
    assert details["tls"] is True and 0 <= details["seconds"] < 60


def test_an_attempt_in_plaintext_says_so(send, mx, worker_for, database):
    message_id = send()
    worker_for(mx).run_once()
    with database.transaction(readonly=True) as s:
        [event] = s.scalars(
            select(Event).where(Event.message_id == message_id, Event.type == "delivered")
        ).all()
    details = json.loads(event.details)
    assert details["tls"] is False and isinstance(details["seconds"], float)


def test_required_tls_defers_when_not_offered(send, mx, worker_for, database):
    message_id = send()
    worker_for(mx, delivery__tls="required").run_once()
    [d] = deliveries(database, message_id)
    assert d.status == "deferred" and "STARTTLS" in d.last_text


def test_smarthost_with_credentials(send, worker_for, make_smtp_peer, database):
    relay = make_smtp_peer(starttls=True, auth={"relay-user": "relay-pass"})
    ids = [send(to="a@anywhere.example"), send(to="b@elsewhere.example")]
    worker_for(
        None,
        delivery__smarthost="127.0.0.1",
        delivery__smarthost_port=relay.port,
        delivery__smarthost_verify=False,  # its certificate is self-signed
        delivery__smarthost_username="relay-user",
        delivery__smarthost_password="relay-pass",
    ).run_once()
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == [
        "a@anywhere.example",
        "b@elsewhere.example",
    ]
    assert {m.login for m in relay.messages} == {"relay-user"}
    assert all(deliveries(database, i)[0].status == "delivered" for i in ids)


def test_retry_delays_grow():
    from app.workers.delivery import retry_delay

    delays = [retry_delay(n, 60, 21600) for n in range(1, 12)]
    assert 48 <= delays[0] <= 72 and 96 <= delays[1] <= 144
    assert max(delays) <= 21600 * 1.2 and delays[-1] >= 21600 * 0.8
    from app.workers.delivery import verp_address

    assert re.fullmatch(r"b-[0-9a-f]{4}@sl\.x\.example", verp_address("0a1b", "sl", "x.example"))


def test_the_claim_moves_the_due_time(send, mx, worker_for, database, clock):
    message_id = send()
    worker = worker_for(mx)
    [job] = worker.claim()
    [d] = deliveries(database, message_id)
    assert d.status == "sending" and d.claimed_by == worker.worker_id
    assert d.due_at - clock() > timedelta(seconds=500)


def test_a_batch_that_is_not_full_is_built_in_the_worker(send, mx, worker_for, database):
    ids = [send(to=f"p{i}@dest.example") for i in range(12)]
    worker = worker_for(mx, delivery__build_processes=2, delivery__batch_size=13)
    assert worker.run_once() == 12
    assert worker._pool is None  # no backlog: handing builds over would cost more
    assert all(deliveries(database, m)[0].status == "delivered" for m in ids)


def test_messages_built_on_several_processes(send, mx, worker_for, database, dns_server):
    ids = [send(to=f"p{i}@dest.example", Subject=f"n{i}") for i in range(12)]
    worker = worker_for(mx, delivery__build_processes=2, delivery__batch_size=12)
    try:
        assert worker.run_once() == 12
        assert worker._pool is not None  # a full batch: a backlog, built on the processes
    finally:
        worker.close()
    assert all(deliveries(database, m)[0].status == "delivered" for m in ids)
    lookup = dns_txt(dns_server)
    for received in mx.messages:
        assert dkim.verify(received.data, dnsfunc=lookup)
    subjects = {email.message_from_bytes(m.data)["Subject"] for m in mx.messages}
    assert subjects == {f"n{i}" for i in range(12)}


def test_build_processes_that_died_are_started_afresh(send, mx, worker_for, database):
    """Build processes killed before a backlog batch is built: the batch is built by new
    ones as it is sent, and every message is delivered on that attempt."""
    ids = [send(to=f"p{i}@dest.example", Subject=f"k{i}") for i in range(12)]
    worker = worker_for(mx, delivery__build_processes=2, delivery__batch_size=12)
    try:
        pool = worker._start_pool()
        pool.submit(os.getpid).result()  # the processes are up
        for process in list(pool._processes.values()):
            # Once one is killed the pool is broken, and its manager may end the others first.
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.join()
        assert worker.run_once() == 12
        assert worker._pool is not None and worker._pool is not pool
    finally:
        worker.close()
    assert all(deliveries(database, m)[0].status == "delivered" for m in ids)
    assert len(mx.messages) == 12


def recorded_steps(worker):
    """Record the worker's claims and commits, with their sizes and times."""
    steps = []
    claim, commit = worker.claim, worker.commit

    def recorded_claim(limit=None):
        jobs = claim(limit)
        steps.append(("claim", len(jobs), time.monotonic()))
        return jobs

    def recorded_commit(results):
        commit(results)
        steps.append(("commit", len(results), time.monotonic()))

    worker.claim, worker.commit = recorded_claim, recorded_commit
    worker.runner.batches = worker  # the runner calls the recorded steps
    return steps


def test_a_drained_queue_is_sent_at_once_and_then_looked_at_after_the_poll_interval(
    send, mx, worker_for, database
):
    """A claim that takes less than a full batch is seen through at once, and the next look
    at the queue waits poll_interval (mail arriving meanwhile is then claimed together)."""
    worker = worker_for(mx, delivery__poll_interval=0.3, delivery__batch_size=10)
    steps = recorded_steps(worker)
    ids = [send(to=f"r{i}@dest.example") for i in range(3)]
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: all(deliveries(database, m)[0].status == "delivered" for m in ids), 5)
        wait_for(lambda: len(steps) >= 3, 2)
    finally:
        worker.stop()
        thread.join(10)
    (first, n1, _), (second, n2, finished), (third, n3, looked) = steps[:3]
    assert (first, n1, second, n2, third, n3) == ("claim", 3, "commit", 3, "claim", 0)
    assert looked - finished >= 0.25


def test_a_worker_claims_the_next_batch_only_once_the_last_is_recorded(
    send, mx, worker_for, database
):
    """No claim ahead: the worker never holds claimed deliveries it is not working on. Full
    batches are followed by the next claim at once, without waiting."""
    worker = worker_for(mx, delivery__poll_interval=5, delivery__batch_size=2)
    steps = recorded_steps(worker)
    ids = [send(to=f"r{i}@dest.example") for i in range(5)]
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: all(deliveries(database, m)[0].status == "delivered" for m in ids), 10)
        wait_for(lambda: len(steps) >= 6, 2)
    finally:
        worker.stop()
        thread.join(10)
    kinds = [(kind, n) for kind, n, _ in steps[:6]]
    assert kinds == [("claim", 2), ("commit", 2), ("claim", 2), ("commit", 2), ("claim", 1)] + [
        ("commit", 1)
    ]
    assert len(mx.messages) == 5


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)
