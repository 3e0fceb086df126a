"""Sending a batch: each recipient domain on its own, every message built just before it is sent.

``dispatch`` groups outgoing messages by recipient domain (all in one group through a
smarthost), finds each group's MX addresses, and sends the group over a few reused
connections. Destinations do not wait on each other: one that hangs defers its own items
at the deadline while the others finish. A message is built when its connection is about
to send it and let go once written: a batch holds at most one built message per open
connection, and no more than a few large ones however many connections are open.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import dns.resolver

from core.settings import Config
from mta import mx
from mta.ipcheck import is_public_text
from mta.smtp_client import (
    BuildLimit,
    ClientSettings,
    Envelope,
    Outcome,
    deadline_outcome,
    deliver,
    loop_time,
)

log = logging.getLogger("postern.worker")

MESSAGES_PER_CONNECTION = 20  # a group opens one more connection (up to the cap) per this many
# No build begins while the messages built and not yet written come to this much (so a batch
# holds about this plus one message per build under way); small messages never reach it.
HELD_BYTES = 16 * 2**20
# A message still being written this long after it was built no longer holds others back.
SLOW_WRITE = 10.0


@dataclass(frozen=True)
class Outgoing:
    """One message to one recipient, and how to build it."""

    ref: int  # the delivery id, returned in its Outcome
    recipient_domain: str
    mail_from: str
    rcpt_to: str
    # The signed message; awaited once, just before it is sent (never if the item is not).
    build: Callable[[], Awaitable[bytes]]


def build_limit(config: Config) -> BuildLimit:
    """What a batch may build at once: two builds per build process (one under way while
    the one before is handed over), and HELD_BYTES built and not yet written (SLOW_WRITE)."""
    processes = config.delivery.build_processes or os.cpu_count() or 1
    return BuildLimit(builds=2 * processes, held=HELD_BYTES, slow=SLOW_WRITE)


def client_settings(config: Config, port: int) -> ClientSettings:
    """How the SMTP client talks to MX hosts (on ``port``), or to the smarthost when set."""
    c = config.delivery
    timeout = c.timeout
    if c.smarthost:
        tls = {"starttls": "required", "implicit": "implicit", "none": "none"}[c.smarthost_tls]
        return ClientSettings(
            helo_name=config.smtp.hostname,
            port=c.smarthost_port,
            tls=tls,
            verify_certificates=c.smarthost_verify and tls != "none",
            ca_file=c.smarthost_ca_file or None,
            username=c.smarthost_username or None,
            password=c.smarthost_password or None,
            connect_timeout=timeout,
            command_timeout=timeout,
            data_timeout=timeout * 10,
        )
    return ClientSettings(
        helo_name=config.smtp.hostname,
        port=port,
        tls=c.tls,
        connect_timeout=timeout,
        command_timeout=timeout,
        data_timeout=timeout * 10,
    )


async def dispatch(
    items: Sequence[Outgoing],
    config: Config,
    resolver: dns.resolver.Resolver,
    *,
    deadline: float,
) -> list[Outcome]:
    """Send every item; one Outcome per item, in the order of ``items``, by ``deadline``.

    ``deadline`` is a ``time.monotonic()`` value: all SMTP work ends by then, and what is
    unfinished comes back deferred (4.4.7). An item whose build raises comes back as
    "error" (4.3.0), alone. Let the deadline end it rather than cancelling it: cancelled,
    it drops its connections and the outcomes of what was already sent are lost.
    """
    c = config.delivery
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups["" if c.smarthost else item.recipient_domain.lower()].append(index)
    # Destinations whose MX hosts are the same addresses share their connection slots.
    slots: dict[tuple[str, ...], asyncio.Semaphore] = defaultdict(
        lambda: asyncio.Semaphore(c.concurrency_per_host)
    )
    limit = build_limit(config)
    outcomes: list[Outcome | None] = [None] * len(items)
    sent = await asyncio.gather(
        *(
            _destination(
                domain, [(i, items[i]) for i in group], config, resolver, slots, limit, deadline
            )
            for domain, group in groups.items()
        )
    )
    for group_outcomes in sent:
        for outcome in group_outcomes:
            position = outcome.ref
            assert isinstance(position, int)
            outcome.ref = items[position].ref
            outcomes[position] = outcome
    missing = [items[i].ref for i, o in enumerate(outcomes) if o is None]
    if missing:  # deliver gives one outcome per envelope: this would be a bug
        raise RuntimeError(f"no outcome for deliveries {missing}")
    return [o for o in outcomes if o is not None]


async def _destination(
    domain: str,
    group: list[tuple[int, Outgoing]],
    config: Config,
    resolver: dns.resolver.Resolver,
    slots: dict[tuple[str, ...], asyncio.Semaphore],
    limit: BuildLimit,
    deadline: float,
) -> list[Outcome]:
    """Send one destination's items (their Outcomes' refs are their indexes in the batch)."""
    c = config.delivery
    try:
        async with asyncio.timeout_at(loop_time(deadline)):
            addresses = await _route(domain, config, resolver)
    except mx.RouteError as exc:
        status = "bounced" if exc.permanent else "deferred"
        enhanced = "5.1.2" if exc.permanent else "4.4.3"
        return [Outcome(i, status, None, enhanced, str(exc), None) for i, _ in group]
    except TimeoutError:
        when = f"while looking up the MX hosts of {domain}"
        if c.smarthost:
            when = f"while looking up the smarthost {c.smarthost}"
        return [deadline_outcome(i, when) for i, _ in group]
    except Exception as exc:  # noqa: BLE001 - this destination's trouble only
        log.exception("cannot route to %s", domain or c.smarthost)
        text = f"Internal error while looking up the route: {type(exc).__name__}"
        return [Outcome(i, "deferred", None, "4.3.0", text, None) for i, _ in group]
    settings = client_settings(config, c.mx_port)
    envelopes = [Envelope(item.mail_from, item.rcpt_to, item.build, i) for i, item in group]
    # Several connections share a large group; each reuses its connection for its share.
    connections = min(
        c.concurrency_per_host, max(1, math.ceil(len(envelopes) / MESSAGES_PER_CONNECTION))
    )
    slot = slots[tuple(addresses)]

    async def one(share: list[Envelope]) -> list[Outcome]:
        try:
            async with asyncio.timeout_at(loop_time(deadline)):
                await slot.acquire()
        except TimeoutError:
            return [deadline_outcome(e.ref, "while waiting for a connection") for e in share]
        try:
            return await deliver(
                addresses,
                share,
                settings,
                server_name=c.smarthost or None,  # what the smarthost's certificate names
                deadline=deadline,
                limit=limit,
            )
        except Exception as exc:  # noqa: BLE001 - deliver raises before it sends anything
            log.exception("cannot send to %s", domain or c.smarthost)
            text = f"Internal error while sending: {type(exc).__name__}"
            return [Outcome(e.ref, "deferred", None, "4.3.0", text, None) for e in share]
        finally:
            slot.release()

    shares = [envelopes[i::connections] for i in range(connections)]
    results = await asyncio.gather(*(one(s) for s in shares if s))
    return [o for r in results for o in r]


async def _route(domain: str, config: Config, resolver: dns.resolver.Resolver) -> list[str]:
    """The addresses to try for a destination: the smarthost's, or its MX hosts' in order."""
    c = config.delivery
    if c.smarthost:
        return await asyncio.to_thread(mx.resolve_addresses, c.smarthost, resolver)
    hosts = await asyncio.to_thread(mx.resolve_mx, domain, resolver)
    addresses: list[str] = []
    skipped = 0
    for host in hosts:
        try:
            found = await asyncio.to_thread(mx.resolve_addresses, host, resolver)
        except mx.RouteError:
            continue
        if not c.allow_private_mx:
            public = [a for a in found if is_public_text(a)]
            skipped += len(found) - len(public)
            found = public
        addresses += found
    if not addresses and skipped:
        # The addresses are not told: the sender reads this text in its bounce or event.
        raise mx.PrivateRoute(
            f"The MX hosts of {domain} resolve only to loopback, private or reserved"
            " addresses, which are not contacted (delivery.allow_private_mx is off)",
            domain,
        )
    if not addresses:
        raise mx.TemporaryDNSError(f"No address found for the MX hosts of {domain}")
    return addresses
