"""The worker end to end against real peers: a hanging MX host, and a large tracked send."""

import threading
import time
import tracemalloc

import pytest

from tests import smtppeer
from tests.app.workers import test_delivery as delivery_tests
from tests.smtppeer import ChildPeer

make_smtp_peer = smtppeer.make_smtp_peer
deliveries, wait_for = delivery_tests.deliveries, delivery_tests.wait_for
worker_for = delivery_tests.worker_for


@pytest.fixture
def peers(dns_server, make_smtp_peer):
    """fast.example's MX on 127.0.0.1 and slow.example's on 127.0.0.2, on one port (the
    worker dials every MX host on the same port)."""
    fast = make_smtp_peer()
    slow = make_smtp_peer(host="127.0.0.2", port=fast.port)
    for name, peer in (("fast", fast), ("slow", slow)):
        dns_server.add(f"{name}.example", "MX", f"10 mx.{name}.example")
        dns_server.add(f"mx.{name}.example", "A", peer.host)
    return fast, slow


def sender(client, domain):
    def send(to, **extra):
        resp = client.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {domain.key}"},
            json={
                "Subject": "s",
                "ContentType": "plain",
                "PlainContent": "hello",
                "From": {"email": f"news@{domain.name}", "name": "News"},
                "To": [{"email": to}] if isinstance(to, str) else to,
                **extra,
            },
        )
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["MessageID"]

    return send


def test_a_hanging_mx_host_gets_each_message_once_while_other_mail_flows(
    client, active_domain, peers, worker_for, database
):
    """The slow host takes the message, then holds its reply longer than the claim lasts.
    Two workers run; the batch's deadline (half the claim) defers the held delivery before
    its claim runs out, so the other worker never takes it up and sends it again; mail to
    the other domain is delivered meanwhile, by both workers."""
    fast, slow = peers
    claim = 4  # seconds: a test-sized delivery.claim_timeout
    slow.hold_data(seconds=claim * 2.5)
    send = sender(client, active_domain())
    held = send("someone@slow.example")
    first = [send(f"a{i}@fast.example") for i in range(3)]
    workers = [
        worker_for(
            fast, delivery__claim_timeout=claim, delivery__poll_interval=0.05, delivery__timeout=30
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(slow.messages) == 1, 10)  # taken; the reply is being held
        later = [send(f"b{i}@fast.example") for i in range(3)]
        wait_for(
            lambda: all(deliveries(database, m)[0].status == "delivered" for m in first + later),
            10,
        )
        wait_for(lambda: deliveries(database, held)[0].status == "deferred", 10)
        time.sleep(claim)  # past the end of the claim: nobody takes it up again
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(30)
    [d] = deliveries(database, held)
    assert d.status == "deferred" and d.attempts == 1 and d.last_enhanced == "4.4.7"
    assert len(slow.messages) == 1
    rcpts = sorted(m.rcpt_tos[0] for m in fast.messages)
    assert rcpts == sorted(
        [f"a{i}@fast.example" for i in range(3)] + [f"b{i}@fast.example" for i in range(3)]
    )


def test_a_tracked_multi_megabyte_send_to_100_recipients_is_built_a_few_at_a_time(
    client, active_domain, dns_server, worker_for, database, make_app, user
):
    """Each recipient's message differs (its tracking links), so each is built on its own:
    one at a time, just before it is sent, and let go once sent. The worker's peak memory
    sending it to 100 recipients stays near its peak sending it to one."""
    peer = ChildPeer().start()  # in a process of its own: its memory is not measured here
    try:
        dns_server.add("big.example", "MX", "10 mx.big.example")
        dns_server.add("mx.big.example", "A", peer.host)
        domain = active_domain()
        call = make_app(sending__max_recipients=100)
        link = "<p><a href='https://example.com/offer'>offer</a></p>"
        html = link + "<p>" + "Lorem ipsum dolor sit amet, consectetur. " * 50_000 + "</p>"
        worker = worker_for(peer, delivery__concurrency_per_host=2)

        def peak_sending_to(n):
            resp = call.client.post(
                "/api/v1/email",
                headers={"Authorization": f"Bearer {domain.key}"},
                json={
                    "Subject": "big",
                    "ContentType": "html",
                    "HtmlContent": html,
                    "PlainContent": "see the offer: https://example.com/offer",
                    "From": {"email": "news@example.com", "name": "News"},
                    "To": [{"email": f"user{i}@big.example"} for i in range(n)],
                    "TrackLinks": "true",
                    "TrackOpens": "true",
                },
            )
            assert resp.status_code == 200, resp.get_json()
            message_id = resp.get_json()["MessageID"]
            tracemalloc.start()
            try:
                assert worker.run_once() == n
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert {d.status for d in deliveries(database, message_id)} == {"delivered"}
            return peak

        one, hundred = peak_sending_to(1), peak_sending_to(100)
    finally:
        received = peer.stop()
    size = min(r[2] for r in received)
    assert len(received) == 101 and size > 2_000_000
    print(f"peak {one / size:.2f} messages for 1 recipient, {hundred / size:.2f} for 100")
    assert hundred < one + 3 * size  # built all at once, it would be 100 times more
