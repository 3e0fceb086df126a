"""DKIM key rotation: a new key published beside the old one, signing once it verifies.

The steps, each logged (``postern.dkim``) and kept on the key rows (status and dates,
shown by GetDomain as ``DKIMKeys``):

1. started (RotateDKIMKey, or the housekeeping when ``domains.dkim_rotate_days`` is set):
   each active key gets a successor of the same algorithm at a new selector, "pending":
   its record is listed beside the old one, nothing is signed with it;
2. activated (VerifyDomain, or the housekeeping, finds every pending record published):
   the pending keys become "active" and sign from then on; the keys they replace become
   "retiring": still listed, signing nothing, until ``domains.dkim_retire_after_days``;
3. retired (the housekeeping): the old key's record is no longer listed, its private key
   is erased, and its selector is never given again.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from commands.domains import dkim
from commands.domains.dns_records import check_records, make_resolver, required_records
from commands.events import writer as events
from core.crypto import SecretBox
from core.settings import Config
from models import Database, DKIMKey, Domain
from models.domains import KEY_ACTIVE, KEY_PENDING, KEY_RETIRED, KEY_RETIRING

log = logging.getLogger("postern.dkim")

_NUMBERED = re.compile(r"^(.*?)(\d+)$")
BATCH = 100  # domains rotated or retired per housekeeping transaction


@dataclass(frozen=True)
class Planned:
    """A key to make: its selector and algorithm (made with no transaction open)."""

    selector: str
    algorithm: str


def next_selector(selector: str, used: set[str]) -> str:
    """The selector after ``selector``: key1 -> key2 -> key3 …, past any in ``used``."""
    m = _NUMBERED.match(selector)
    prefix, n = (m.group(1), int(m.group(2))) if m else (selector, 1)
    while True:
        n += 1
        candidate = f"{prefix}{n}"
        if candidate not in used and len(candidate) <= 63:
            return candidate


def plan(domain: Domain) -> list[Planned]:
    """The successors of ``domain``'s active keys; selectors never used by the domain."""
    used = {k.selector for k in domain.dkim_keys}
    out = []
    for key in domain.dkim_keys:
        if key.status == KEY_ACTIVE:
            selector = next_selector(key.selector, used)
            used.add(selector)
            out.append(Planned(selector, key.algorithm))
    return out


def in_progress(domain: Domain) -> bool:
    return any(k.status == KEY_PENDING for k in domain.dkim_keys)


def make_keys(box: SecretBox, config: Config, planned: list[Planned]) -> list[DKIMKey]:
    """The planned keys, generated (slow for RSA: call it with no transaction open)."""
    return [
        dkim.new_key(box, p.selector, p.algorithm, config.domains.dkim_rsa_bits) for p in planned
    ]


def start(domain: Domain, keys: list[DKIMKey], now: datetime, how: str) -> None:
    """Add ``keys`` to ``domain`` as pending (step 1)."""
    for key in keys:
        key.status = KEY_PENDING
        key.created_at = now
        domain.dkim_keys.append(key)
    selectors = [k.selector for k in keys]
    log.info(
        "DKIM key rotation started",
        extra={"domain_id": domain.id, "selectors": selectors, "by": how},
    )
    _event(domain, events.DKIM_ROTATING, now, {"selectors": selectors, "by": how})


def activate(domain: Domain, now: datetime, grace: timedelta) -> list[str]:
    """Step 2: the pending keys sign from now on; the active ones retire after ``grace``.
    The selectors activated."""
    pending = [k for k in domain.dkim_keys if k.status == KEY_PENDING]
    if not pending:
        return []
    for key in domain.dkim_keys:
        if key.status == KEY_ACTIVE:
            key.status = KEY_RETIRING
            key.retire_at = now + grace
    for key in pending:
        key.status = KEY_ACTIVE
        key.activated_at = now
    selectors = [k.selector for k in pending]
    log.info("DKIM key activated", extra={"domain_id": domain.id, "selectors": selectors})
    retiring = [k.selector for k in domain.dkim_keys if k.status == KEY_RETIRING]
    _event(
        domain,
        events.DKIM_ACTIVATED,
        now,
        {"selectors": selectors, "retiring": retiring, "retire_at": (now + grace).isoformat()},
    )
    return selectors


def pending_verified(domain: Domain, verified: dict[str, bool | None]) -> bool:
    """Whether every pending key's record was found (``verified``: by DKIM host, None when
    DNS did not answer)."""
    pending = [k for k in domain.dkim_keys if k.status == KEY_PENDING]
    rp = f"{domain.subdomain}.{domain.name}"
    return bool(pending) and all(
        verified.get(f"{k.selector}._domainkey.{rp}") is True for k in pending
    )


def retire_due(s: Session, now: datetime, limit: int = BATCH) -> int:
    """Step 3 for up to ``limit`` keys whose grace period is over; the number retired."""
    keys = s.scalars(
        select(DKIMKey)
        .where(DKIMKey.status == KEY_RETIRING, DKIMKey.retire_at <= now)
        .order_by(DKIMKey.id)
        .limit(limit)
    ).all()
    for key in keys:
        key.status = KEY_RETIRED
        key.retired_at = now
        key.private_key_encrypted = ""  # never signs again: nothing to keep
        log.info("DKIM key retired", extra={"domain_id": key.domain_id, "selector": key.selector})
        _event(key.domain, events.DKIM_RETIRED, now, {"selectors": [key.selector]})
    return len(keys)


def _event(domain: Domain, kind: str, now: datetime, details: dict[str, object]) -> None:
    """Record a step of the rotation as an event of the domain, in the domain's session
    (its transaction: the event is kept only if the step is)."""
    s = object_session(domain)
    if s is None:  # pragma: no cover - the steps work on rows of a session
        raise RuntimeError("a rotation step on a domain outside a session")
    row = events.domain_event_values(
        kind, domain.user_id, domain.id, domain.name, now, details=details
    )
    events.write(s.connection(), [row])


@dataclass(frozen=True)
class Housekept:
    retired: int
    started: int
    activated: int


def housekeeping(db: Database, box: SecretBox, config: Config, now: datetime) -> Housekept:
    """The worker's periodic DKIM work: retire keys past their grace period, start the
    rotations ``domains.dkim_rotate_days`` asks for, and activate pending keys whose
    records are published (DNS asked with no transaction open)."""
    retired = 0
    while True:
        with db.transaction() as s:
            n = retire_due(s, now)
        retired += n
        if n < BATCH:
            break
    started = _rotate_due(db, box, config, now)
    activated = _activate_published(db, config, now)
    return Housekept(retired, started, activated)


def _rotate_due(db: Database, box: SecretBox, config: Config, now: datetime) -> int:
    days = config.domains.dkim_rotate_days
    if days <= 0:
        return 0
    cutoff = now - timedelta(days=days)
    with db.transaction(readonly=True) as s:
        # Domains whose signing key is old enough and that are not rotating already.
        rotating = select(DKIMKey.domain_id).where(DKIMKey.status == KEY_PENDING)
        ids = list(
            s.scalars(
                select(DKIMKey.domain_id)
                .where(
                    DKIMKey.status == KEY_ACTIVE,
                    DKIMKey.activated_at <= cutoff,
                    DKIMKey.domain_id.not_in(rotating),
                )
                .distinct()
                .order_by(DKIMKey.domain_id)
                .limit(BATCH)
            )
        )
    started = 0
    for domain_id in ids:
        with db.transaction(readonly=True) as s:
            domain = s.get(Domain, domain_id)
            planned = plan(domain) if domain is not None and not in_progress(domain) else []
        if not planned:
            continue
        keys = make_keys(box, config, planned)
        with db.transaction() as s:
            domain = s.get(Domain, domain_id)
            if domain is None or in_progress(domain) or plan(domain) != planned:
                continue  # changed meanwhile: the next run looks again
            start(domain, keys, now, "schedule")
            started += 1
    return started


def _activate_published(db: Database, config: Config, now: datetime) -> int:
    with db.transaction(readonly=True) as s:
        ids = list(
            s.scalars(
                select(DKIMKey.domain_id)
                .where(DKIMKey.status == KEY_PENDING)
                .distinct()
                .order_by(DKIMKey.domain_id)
                .limit(BATCH)
            )
        )
    if not ids:
        return 0
    resolver = make_resolver(config)
    grace = timedelta(days=config.domains.dkim_retire_after_days)
    activated = 0
    for domain_id in ids:
        with db.transaction(readonly=True) as s:
            domain = s.get(Domain, domain_id)
            if domain is None:
                continue
            records = [r for r in required_records(domain, config) if r.key_status == KEY_PENDING]
        results = check_records(records, resolver)
        verified = {r.record.host: (None if r.error else r.verified) for r in results}
        with db.transaction() as s:
            domain = s.get(Domain, domain_id)
            if domain is not None and pending_verified(domain, verified):
                activate(domain, now, grace)
                activated += 1
    return activated
