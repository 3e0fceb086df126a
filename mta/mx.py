"""MX lookup for delivery: the hosts to try for a domain and their addresses, with dnspython.

Every query goes through the ``dns.resolver.Resolver`` the caller passes (never the system
resolver, never ``socket.getaddrinfo``). The calls are synchronous; run them in a thread
(``asyncio.to_thread``) from async code.
"""

from __future__ import annotations

import ipaddress
import random
from itertools import groupby

import dns.exception
import dns.name
import dns.resolver


class RouteError(Exception):
    """No route to a domain or host: ``permanent`` says whether retrying could help."""

    permanent: bool = False

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.message = message
        self.name = name


class NullMX(RouteError):
    """The domain publishes a null MX (RFC 7505): it accepts no mail."""

    permanent = True


class NoSuchDomain(RouteError):
    """The name does not exist (NXDOMAIN), or is not a valid domain name."""

    permanent = True


class NoMailRoute(RouteError):
    """The name exists but has no MX and no address records."""

    permanent = True


class TemporaryDNSError(RouteError):
    """DNS did not answer (timeout, SERVFAIL, no reachable nameserver): try again later."""

    permanent = False


class PrivateRoute(RouteError):
    """Every address of the domain's MX hosts is loopback, private or reserved, and such
    addresses may not be contacted: deferred (DNS may be corrected)."""

    permanent = False


def resolve_mx(domain: str, resolver: dns.resolver.Resolver) -> list[str]:
    """The exchange host names for ``domain``, best preference first (ties shuffled)."""
    name = _name(domain)
    label = _label(name)
    try:
        answer = resolver.resolve(name, "MX")
    except dns.resolver.NoAnswer:
        # RFC 5321 5.1: no MX records, the domain itself is the implicit MX.
        if _has_address(name, resolver):
            return [label]
        raise NoMailRoute(f"domain {label} has no MX and no A or AAAA records", label) from None
    except dns.exception.DNSException as exc:
        raise _translate(exc, label, "MX") from None
    records = sorted((r.preference, r.exchange) for r in answer)
    hosts = [(pref, ex) for pref, ex in records if ex != dns.name.root]
    if not hosts:
        raise NullMX(f"domain {label} does not accept mail (null MX)", label)
    out: list[str] = []
    for _, group in groupby(hosts, key=lambda r: r[0]):
        names = [_label(ex) for _, ex in group]
        random.shuffle(names)
        for n in names:
            if n not in out:  # a host listed twice keeps its best preference
                out.append(n)
    return out


def resolve_addresses(host: str, resolver: dns.resolver.Resolver) -> list[str]:
    """The IPv4 then IPv6 addresses of a mail host (an IP literal is returned as is)."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return [str(ipaddress.ip_address(literal))]
    except ValueError:
        pass
    name = _name(host)
    label = _label(name)
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.exception.DNSException as exc:
            raise _translate(exc, label, rdtype) from None
        if answer.rrset is not None:
            addresses.extend(r.address for r in answer if r.address not in addresses)
    if not addresses:
        raise NoMailRoute(f"mail host {label} has no A or AAAA records", label)
    return addresses


def _name(text: str) -> dns.name.Name:
    """The absolute DNS name for a domain, or NoSuchDomain when it cannot be one."""
    try:
        name = dns.name.from_text(text.strip().rstrip(".") + ".")
    except (dns.exception.DNSException, UnicodeError, ValueError):
        raise NoSuchDomain(f"{text!r} is not a valid domain name", text) from None
    if name == dns.name.root:
        raise NoSuchDomain(f"{text!r} is not a valid domain name", text)
    return name


def _label(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _has_address(name: dns.name.Name, resolver: dns.resolver.Resolver) -> bool:
    """Whether the name has A or AAAA records (for the implicit MX)."""
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.exception.DNSException as exc:
            raise _translate(exc, _label(name), rdtype) from None
        if answer.rrset is not None:
            return True
    return False


def _translate(exc: dns.exception.DNSException, label: str, rdtype: str) -> RouteError:
    """The RouteError for a dnspython failure of a ``rdtype`` query for ``label``."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return NoSuchDomain(f"domain {label} does not exist (NXDOMAIN)", label)
    if isinstance(exc, dns.exception.Timeout):
        return TemporaryDNSError(f"DNS lookup of {rdtype} records for {label} timed out", label)
    if isinstance(exc, dns.resolver.NoNameservers):
        return TemporaryDNSError(
            f"no DNS server answered the {rdtype} query for {label} (SERVFAIL or unreachable)",
            label,
        )
    return TemporaryDNSError(f"DNS lookup of {rdtype} records for {label} failed: {exc}", label)
