"""The DNS records a sender domain must publish, and checking them with real DNS queries."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.rdata
import dns.resolver
from dns.rdtypes.mxbase import MXBase
from dns.rdtypes.nsbase import NSBase
from dns.rdtypes.txtbase import TXTBase

from commands.domains.dkim import txt_value
from core.settings import Config
from models import Domain
from models.domains import KEY_ACTIVE, KEY_RETIRED

OWNERSHIP_PREFIX = "postern-verification="


@dataclass(frozen=True)
class Record:
    host: str
    type: str
    value: str
    purpose: str  # ownership, spf, dkim, dmarc, return-path, tracking
    required: bool
    # A DKIM record's key: "active" (signing), "pending" (a rotation's new key, signing once
    # its record verifies), "retiring" (replaced, still published until it is retired).
    key_status: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Host": self.host,
            "Type": self.type,
            "Value": self.value,
            "Purpose": self.purpose,
            "Required": self.required,
        }
        if self.key_status:
            out["KeyStatus"] = self.key_status.capitalize()
        return out


@dataclass
class Result:
    record: Record
    verified: bool
    found: list[str] = field(default_factory=list)
    error: str | None = None  # "timeout", "servfail": the answer is unknown, not negative

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Host": self.record.host,
            "Type": self.record.type,
            "Value": self.record.value,
            "Verified": self.verified,
            "Purpose": self.record.purpose,
            "Required": self.record.required,
        }
        if self.record.key_status:
            out["KeyStatus"] = self.record.key_status.capitalize()
        if not self.verified:
            out["Found"] = self.found
        if self.error:
            out["Error"] = self.error
        return out


def return_path_host(domain: Domain) -> str:
    return f"{domain.subdomain}.{domain.name}"


def tracking_host(domain: Domain) -> str:
    return f"track-{domain.subdomain}.{domain.name}"


def required_records(domain: Domain, config: Config) -> list[Record]:
    """Every record ``domain`` asks for, in the order the user should publish them."""
    rp = return_path_host(domain)
    hostname = config.smtp.hostname
    records = [
        Record(domain.name, "TXT", OWNERSHIP_PREFIX + domain.ownership_token, "ownership", True),
        Record(rp, "TXT", config.domains.spf_value.replace("{hostname}", hostname), "spf", True),
    ]
    for key in domain.dkim_keys:
        if key.status == KEY_RETIRED:
            continue
        # Only the signing keys' records are required: a rotation's new record, not yet
        # published, or an old one taken down early never makes the domain unverified.
        records.append(
            Record(
                f"{key.selector}._domainkey.{rp}",
                "TXT",
                txt_value(key),
                "dkim",
                key.status == KEY_ACTIVE,
                key.status,
            )
        )
    records.append(Record(f"_dmarc.{domain.name}", "TXT", "v=DMARC1; p=none", "dmarc", False))
    records.append(Record(rp, "MX", f"10 {hostname}", "return-path", False))
    public_host = urlsplit(config.http.public_url).hostname or ""
    try:
        ip = ipaddress.ip_address(public_host)
        records.append(
            Record(
                tracking_host(domain),
                "AAAA" if ip.version == 6 else "A",
                str(ip),
                "tracking",
                False,
            )
        )
    except ValueError:
        records.append(Record(tracking_host(domain), "CNAME", public_host, "tracking", False))
    return records


def make_resolver(config: Config) -> dns.resolver.Resolver:
    nameservers = [str(n) for n in config.dns.nameservers]
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = nameservers
    resolver.port = config.dns.port
    resolver.timeout = config.dns.timeout
    resolver.lifetime = config.dns.timeout
    resolver.cache = None
    return resolver


# A look-up is not started with less than this many seconds of the budget left.
MIN_LOOKUP_SECONDS = 0.05


def verify_budget(config: Config) -> float:
    """Seconds VerifyDomain may spend on DNS in all: ``dns.verify_budget``, and never more
    than half of ``http.timeout`` (the request must be answered before gunicorn gives up)."""
    return min(config.dns.verify_budget, config.http.timeout / 2)


def check_records(
    records: list[Record],
    resolver: dns.resolver.Resolver,
    budget: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Result]:
    """Each record checked in turn, all within ``budget`` seconds (none: each look-up within
    the resolver's own lifetime): a look-up gets at most what is left of it, and records
    not asked for once it is spent are reported as timed out (``error="timeout"``)."""
    if budget is None:
        return [check_record(r, resolver) for r in records]
    deadline = clock() + budget
    results = []
    for record in records:
        left = deadline - clock()
        if left < MIN_LOOKUP_SECONDS:
            results.append(Result(record, False, error="timeout"))
            continue
        results.append(check_record(record, resolver, min(left, resolver.lifetime)))
    return results


def check_record(
    record: Record, resolver: dns.resolver.Resolver, lifetime: float | None = None
) -> Result:
    try:
        answer = resolver.resolve(
            record.host, record.type, raise_on_no_answer=False, lifetime=lifetime
        )
        found = [_text(rdata, record.type) for rdata in answer] if answer.rrset else []
    except dns.resolver.NXDOMAIN:
        found = []
    except dns.exception.Timeout:
        return Result(record, False, error="timeout")
    except dns.resolver.NoNameservers:
        return Result(record, False, error="servfail")
    return Result(record, _matches(record, found), found)


def _text(rdata: dns.rdata.Rdata, rdtype: str) -> str:
    if rdtype == "TXT" and isinstance(rdata, TXTBase):
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == "MX" and isinstance(rdata, MXBase):
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True).lower()}"
    if rdtype == "CNAME" and isinstance(rdata, NSBase):  # CNAME's rdata class is an NSBase
        return rdata.target.to_text(omit_final_dot=True).lower()
    return rdata.to_text()


def _tags(value: str) -> dict[str, str]:
    tags = {}
    for part in value.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags[k.strip().lower()] = "".join(v.split())
    return tags


def _matches(record: Record, found: list[str]) -> bool:
    want = record.value
    if record.purpose == "ownership":
        return any(f.strip() == want for f in found)
    if record.purpose == "spf":
        needed = [t.lower() for t in want.split()[1:] if not t.lower().endswith("all")]
        for f in found:
            terms = f.lower().split()
            if terms[:1] == ["v=spf1"] and all(t in terms for t in needed):
                return True
        return False
    if record.purpose == "dkim":
        p = _tags(want)["p"]
        return any(_tags(f).get("p") == p for f in found)
    if record.purpose == "dmarc":
        return any(f.replace(" ", "").lower().startswith("v=dmarc1") for f in found)
    if record.purpose == "return-path":
        host = want.split()[1].lower()
        return any(f.split()[1] == host for f in found)
    return any(f.lower().rstrip(".") == want.lower() for f in found)
