"""Email addresses: the normalised form of an address, and whether it is at a domain."""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email


def normalise_address(raw: str) -> str | None:
    """The normalised address, or None when it is not a valid (ASCII) email address.

    Exactly what email_validator answers (tests/mta/test_addresses.py compares the two on
    thousands of addresses), more cheaply for the common shape: a plain local part (a
    dot-atom of ASCII characters) is checked here, and its domain by email_validator once
    per domain.
    """
    text = raw.strip()
    local, at, host = text.rpartition("@")
    if at and _DOT_ATOM.match(local):
        domain = _checked_domain(host)
        if domain is None:
            return None
        normalised, ascii_domain = domain
        address = f"{local}@{normalised}"
        # email_validator's length limit, on each form of the address it checks.
        for form in (text, address, f"{local}@{ascii_domain}"):
            if len(form.encode()) > MAX_ADDRESS:
                return None
        return address
    # Remembered: a sender's From address (and often its recipients) recur in every send.
    return _remembered(text) if len(text) <= 512 else validated_address(text)


MAX_ADDRESS = 254
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def validated_address(raw: str) -> str | None:
    try:
        return validate_email(
            raw.strip(), check_deliverability=False, allow_smtputf8=False
        ).normalized
    except EmailNotValidError:
        return None


_remembered = functools.lru_cache(maxsize=4096)(validated_address)


@functools.lru_cache(maxsize=4096)
def _checked_domain(host: str) -> tuple[str, str] | None:
    """The part after the @-sign as email_validator normalises it (and its IDNA ASCII form),
    or None when it refuses it."""
    try:
        checked = validate_email(f"a@{host}", check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return checked.domain, checked.ascii_domain


def belongs(address: str, domain: str) -> bool:
    """Whether ``address`` is at ``domain`` or one of its subdomains."""
    host = address.rsplit("@", 1)[-1].lower()
    return host == domain or host.endswith("." + domain)
