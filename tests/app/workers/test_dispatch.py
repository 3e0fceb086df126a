"""Sending a batch: destinations on their own, by a deadline, each message built when it is sent."""

from __future__ import annotations

import asyncio
import socket
import time
import tracemalloc

import pytest

from app.workers import dispatch as dispatch_module
from app.workers.dispatch import HELD_BYTES, Outgoing, build_limit, dispatch
from commands.domains.dns_records import make_resolver
from mta.eventloop import new_event_loop
from tests import smtppeer
from tests.smtppeer import ChildPeer

smtp_peer = smtppeer.smtp_peer
make_smtp_peer = smtppeer.make_smtp_peer

MESSAGE = b"From: news@example.com\r\nSubject: hello\r\n\r\nHello there\r\n"


def run(coroutine):
    """``coroutine`` on the event loop the delivery worker runs on (uvloop's)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coroutine)


def built(data: bytes = MESSAGE):
    async def build() -> bytes:
        return data

    return build


def item(ref: int, rcpt: str, build=None) -> Outgoing:
    return Outgoing(ref, rcpt.rpartition("@")[2], f"b-{ref}@sl.example.com", rcpt, build or built())


@pytest.fixture
def peers(dns_server, make_smtp_peer):
    """fast.example's MX on 127.0.0.1 and slow.example's on 127.0.0.2, on one port (the
    worker dials every MX host on the same port)."""
    fast = make_smtp_peer(pipelining=True)
    slow = make_smtp_peer(host="127.0.0.2", port=fast.port, pipelining=True)
    for name, peer in (("fast", fast), ("slow", slow)):
        dns_server.add(f"{name}.example", "MX", f"10 mx.{name}.example")
        dns_server.add(f"mx.{name}.example", "A", peer.host)
    return fast, slow


@pytest.fixture
def config(base_config, peers):
    return base_config.replace(delivery__mx_port=peers[0].port, delivery__timeout=5.0)


def send(items, config, seconds: float = 30.0):
    return run(dispatch(items, config, make_resolver(config), deadline=time.monotonic() + seconds))


def test_outcomes_come_back_one_per_item_in_order(peers, config):
    fast, slow = peers
    items = [item(10 + n, f"user{n}@{('fast', 'slow')[n % 2]}.example") for n in range(6)]
    outcomes = send(items, config)
    assert [o.ref for o in outcomes] == [10, 11, 12, 13, 14, 15]
    assert {o.status for o in outcomes} == {"delivered"}
    assert sorted(m.rcpt_tos[0] for m in fast.messages) == [
        "user0@fast.example",
        "user2@fast.example",
        "user4@fast.example",
    ]
    assert len(slow.messages) == 3 and slow.messages[0].data == MESSAGE


def test_a_destination_that_hangs_defers_its_own_items_at_the_deadline(peers, config):
    fast, slow = peers
    slow.hold_data(60)  # longer than the test's deadline, shorter than the data timeout
    items = [item(n, f"user{n}@slow.example") for n in range(3)]
    items += [item(n, f"user{n}@fast.example") for n in range(3, 6)]
    outcomes = send(items, config, seconds=2.0)
    assert [o.status for o in outcomes[3:]] == ["delivered"] * 3
    assert len(fast.messages) == 3
    held, *waiting = outcomes[:3]
    # Its message was sent and the peer has it: deferred all the same (it may come twice,
    # but it is not lost).
    assert len(slow.messages) == 1
    assert (held.status, held.code, held.enhanced) == ("deferred", None, "4.4.7")
    assert held.text == "delivery deadline reached while waiting for the reply to the end of DATA"
    assert held.host == f"127.0.0.2:{slow.port}"
    for outcome in waiting:
        assert (outcome.status, outcome.enhanced) == ("deferred", "4.4.7")
        assert outcome.text == "delivery deadline reached before it was sent"


def test_a_destination_still_connecting_is_deferred_at_the_deadline(peers, config, dns_server):
    fast, slow = peers
    dns_server.add("silent.example", "MX", "10 mx.silent.example")
    dns_server.add("mx.silent.example", "A", "127.0.0.3")
    # A listener that never accepts: the connection is made, the greeting never comes.
    with socket.create_server(("127.0.0.3", fast.port), backlog=8):
        outcomes = send(
            [item(1, "a@silent.example"), item(2, "b@fast.example")], config, seconds=1.5
        )
    assert (outcomes[0].status, outcomes[0].enhanced) == ("deferred", "4.4.7")
    assert outcomes[0].text == "delivery deadline reached while connecting"
    assert outcomes[1].status == "delivered"


def test_a_build_that_raises_fails_its_item_alone(peers, config):
    fast, _ = peers

    async def broken() -> bytes:
        raise ValueError("the DKIM key cannot be decrypted")

    items = [item(1, "a@fast.example"), item(2, "b@fast.example", broken)]
    items.append(item(3, "c@fast.example"))
    outcomes = send(items, config)
    assert [o.status for o in outcomes] == ["delivered", "error", "delivered"]
    error = outcomes[1]
    assert (error.ref, error.code, error.enhanced) == (2, None, "4.3.0")
    assert error.text == "ValueError: the DKIM key cannot be decrypted"
    assert sorted(m.rcpt_tos[0] for m in fast.messages) == ["a@fast.example", "c@fast.example"]
    assert len(fast.connections) == 1  # the connection went on with the next


def test_the_smarthost_route(dns_server, make_smtp_peer, base_config):
    relay = make_smtp_peer(starttls=True, auth={"relay-user": "relay-pass"})
    config = base_config.replace(
        delivery__smarthost="127.0.0.1",
        delivery__smarthost_port=relay.port,
        delivery__smarthost_verify=False,  # its certificate is self-signed
        delivery__smarthost_username="relay-user",
        delivery__smarthost_password="relay-pass",
        delivery__timeout=5.0,
    )
    outcomes = send([item(1, "a@anywhere.example"), item(2, "b@elsewhere.example")], config)
    assert [o.status for o in outcomes] == ["delivered", "delivered"]
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == [
        "a@anywhere.example",
        "b@elsewhere.example",
    ]
    assert {m.login for m in relay.messages} == {"relay-user"}
    assert len(relay.connections) == 1  # one group through the smarthost


def test_no_route_bounces_or_defers(peers, config, dns_server):
    dns_server.add("nullmx.example", "MX", "0 .")
    outcomes = send([item(1, "a@nullmx.example"), item(2, "b@fast.example")], config)
    assert (outcomes[0].status, outcomes[0].enhanced) == ("bounced", "5.1.2")
    assert outcomes[1].status == "delivered"


def test_a_destination_slow_to_take_a_large_message_holds_no_one_back(peers, config, monkeypatch):
    """A message larger than HELD_BYTES to a destination that stops reading: the other
    destination's builds wait for it SLOW_WRITE at most, then go on."""
    monkeypatch.setattr(dispatch_module, "SLOW_WRITE", 0.5)
    stuck, fast = peers[1], peers[0]
    stuck.stall_data()
    large_built = asyncio.Event()
    line = b"x" * 998 + b"\r\n"

    async def large() -> bytes:
        data = MESSAGE + line * (HELD_BYTES // len(line) + 1)
        large_built.set()
        return data

    def small(n: int):
        async def build() -> bytes:
            await large_built.wait()  # the large one is held before any of these is built
            return MESSAGE

        return build

    items = [item(0, "a@slow.example", large)]
    items += [item(n, f"user{n}@fast.example", small(n)) for n in range(1, 4)]
    outcomes = send(items, config, seconds=4.0)
    assert [o.status for o in outcomes[1:]] == ["delivered"] * 3
    assert len(fast.messages) == 3
    assert (outcomes[0].status, outcomes[0].enhanced) == ("deferred", "4.4.7")
    assert outcomes[0].text == "delivery deadline reached while sending the message"
    assert stuck.messages == []


class Counted(bytes):
    """A built message that counts itself while it exists."""

    live = 0
    peak = 0

    def __new__(cls, data: bytes) -> Counted:
        made = super().__new__(cls, data)
        Counted.live += 1
        Counted.peak = max(Counted.peak, Counted.live)
        return made

    def __del__(self) -> None:
        Counted.live -= 1


def test_messages_are_built_one_per_connection_and_let_go_once_sent(peers, config):
    fast, _ = peers
    calls = []

    def counted(n: int):
        async def build() -> bytes:
            calls.append(n)
            return Counted(MESSAGE + b"%d\r\n" % n)

        return build

    Counted.live = Counted.peak = 0
    items = [item(n, f"user{n}@fast.example", counted(n)) for n in range(100)]
    outcomes = send(items, config.replace(delivery__concurrency_per_host=3))
    assert {o.status for o in outcomes} == {"delivered"}
    assert sorted(calls) == list(range(100))  # each built once
    assert len(fast.connections) == 3
    assert 1 <= Counted.peak <= 3  # at most one built message per open connection
    assert Counted.live == 0


def test_many_destinations_hold_few_built_messages(dns_server, base_config, make_smtp_peer):
    """40 destinations, a connection each: builds wait their turn once the messages built
    and not yet written are large."""
    peer = make_smtp_peer(pipelining=True, keep_data=False)
    config = base_config.replace(
        delivery__mx_port=peer.port, delivery__timeout=30.0, delivery__concurrency_per_host=40
    )
    line = b"x" * 998 + b"\r\n"
    body = line * (HELD_BYTES // 6 // len(line))  # HELD_BYTES is about six of them
    items = []
    for n in range(40):
        dns_server.add(f"d{n}.example", "MX", f"10 mx.d{n}.example")
        dns_server.add(f"mx.d{n}.example", "A", "127.0.0.1")

        async def build(n: int = n) -> bytes:
            return Counted(b"X-N: %d\r\n\r\n" % n + body)

        items.append(item(n, f"user@d{n}.example", build))
    Counted.live = Counted.peak = 0
    outcomes = send(items, config, seconds=300.0)
    assert {o.status for o in outcomes} == {"delivered"}
    assert len(peer.messages) == 40 and len(peer.connections) == 40
    # At most HELD_BYTES when a build begins, plus the builds under way.
    assert Counted.peak <= 6 + build_limit(config).builds
    assert Counted.live == 0


@pytest.mark.parametrize(
    ("domains", "connections"), [(1, 1), (1, 4), (100, 100)], ids=["1x1", "1x4", "100x1"]
)
def test_memory_stays_near_a_message_per_connection(dns_server, base_config, domains, connections):
    """A 3 MB message to 100 recipients, built for each (as a tracked message is): the peak
    of what this process allocates is a few messages, not a hundred, whether the recipients
    share a domain (one message per connection) or each has its own (the build limit). The
    peer runs in a process of its own, so that what it allocates is not counted."""
    line = b"x" * 998 + b"\r\n"
    body = line * (3_000_000 // len(line))
    size = len(body)
    peer = ChildPeer(pipelining=True).start()
    try:
        for n in range(domains):
            dns_server.add(f"big{n}.example", "MX", f"10 mx.big{n}.example")
            dns_server.add(f"mx.big{n}.example", "A", "127.0.0.1")
        config = base_config.replace(
            delivery__mx_port=peer.port,
            delivery__timeout=60.0,
            delivery__concurrency_per_host=connections,
        )

        def tracked(n: int):
            async def build() -> bytes:
                return b"X-Recipient: %d\r\n\r\n" % n + body

            return build

        items = [item(n, f"user{n}@big{n % domains}.example", tracked(n)) for n in range(100)]
        tracemalloc.start()
        try:
            outcomes = send(items, config, seconds=600.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        received = peer.stop()
    assert {o.status for o in outcomes} == {"delivered"}
    assert len(received) == 100 and all(r[2] > size for r in received)
    at_once = min(connections, HELD_BYTES // size + 1 + build_limit(config).builds)
    print(f"peak {peak / size:.2f} messages, {at_once} at once at most")
    assert peak < (at_once + 1.5) * size


def test_mx_hosts_on_private_addresses_are_not_contacted(peers, config, dns_server):
    fast, _ = peers
    dns_server.add("inside.example", "MX", "10 mx.inside.example")
    dns_server.add("mx.inside.example", "A", "127.0.0.1")
    dns_server.add("mx.inside.example", "AAAA", "::ffff:127.0.0.1")
    strict = config.replace(delivery__allow_private_mx=False)
    outcomes = send([item(1, "a@inside.example"), item(2, "b@fast.example")], strict)
    assert [(o.status, o.enhanced) for o in outcomes] == [("deferred", "4.4.3")] * 2
    assert outcomes[0].text == (
        "The MX hosts of inside.example resolve only to loopback, private or reserved"
        " addresses, which are not contacted (delivery.allow_private_mx is off)"
    )
    assert "127.0.0.1" not in outcomes[0].text and "::ffff" not in outcomes[0].text
    assert fast.connections == []
    # Allowed (as the tests' configuration does), the same MX is contacted.
    outcomes = send([item(1, "a@inside.example")], config)
    assert [o.status for o in outcomes] == ["delivered"]
