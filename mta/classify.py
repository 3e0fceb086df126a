"""What a delivery failure means: one classifier for SMTP answers, DSNs and plain-text bounces.

``classify(status, code, text)`` gives each failure one class:

- ``hard``: the address or domain does not exist (X.1.1, X.1.2, X.1.3, X.1.10, and the texts
  that say so): the address is suppressed.
- ``soft``: the mailbox is full or over quota (X.2.2, whatever the first digit), temporarily
  unavailable, greylisting, any other temporary (4xx) failure: suppressed only after repeated
  soft failures over several days.
- ``block``: the receiver refused the sender, not the address (X.7.x, and texts naming a
  blocklist, Spamhaus, policy, reputation, spam): never a suppression.
- ``message``: the message itself (too large: X.2.3, X.3.4; content: X.6.x): never a
  suppression.
- ``ignore``: not a failure (auto-replies, delay notices, nothing to go on).

The order of the rules: a precise enhanced status decides first (the table ``STATUS_CLASS``);
then the text (``TEXT_RULES``, the first matching rule wins); then the code's first digit
(a permanent failure that says nothing more is ``hard``, as an RFC 5321 550 "mailbox
unavailable" means; a temporary one is ``soft``; neither is ``ignore``).
"""

from __future__ import annotations

import re

HARD = "hard"
SOFT = "soft"
BLOCK = "block"
MESSAGE = "message"
IGNORE = "ignore"
CLASSES = (HARD, SOFT, BLOCK, MESSAGE, IGNORE)

# "subject.detail" of an enhanced status (RFC 3463), whatever its first digit -> the class.
# A subject alone ("7") stands for each of its details not listed.
STATUS_CLASS = {
    "1.1": HARD,  # bad destination mailbox address
    "1.2": HARD,  # bad destination system address
    "1.3": HARD,  # bad destination mailbox address syntax
    "1.10": HARD,  # recipient address has null MX
    "2.2": SOFT,  # mailbox full
    "2.3": MESSAGE,  # message length exceeds administrative limit
    "3.4": MESSAGE,  # message too big for system
    "6": MESSAGE,  # message content or media
    "7": BLOCK,  # security or policy
}

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_CODE = re.compile(r"(?<![\d.])([245])\d\d(?![\d.])")


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


# (class, pattern) in order: the first that matches the text decides.
TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # Auto-replies and delay notices are not failures (a permanent code overrides these).
    (
        IGNORE,
        _rx(
            r"out of (?:the )?office",
            r"automatic reply",
            r"auto(?:matic)?[- ]?(?:reply|response)",
            r"\bvacation\b",
            r"away from (?:the|my) (?:office|desk)",
            r"has not yet been delivered",
            r"delivery attempts will continue",
            r"will (?:continue to )?(?:retry|be retried)",
            r"delivery (?:has been |is )?delayed",
            r"\bdelay(?:ed)? (?:notice|notification)",
        ),
    ),
    # The sender, not the recipient, was refused: before "does not exist" and "not found".
    (
        BLOCK,
        _rx(
            r"sender address rejected",
            r"sender (?:domain|address) (?:does not exist|not found|unknown)",
            r"relay access denied",
            r"relaying denied",
            r"not permitted to relay",
        ),
    ),
    (
        HARD,
        _rx(
            r"user unknown",
            r"unknown user",
            r"unknown (?:recipient|address|mailbox|local part)",
            r"no such (?:user|mailbox|recipient|address|account|person|domain)",
            r"no mailbox here by that name",
            r"(?:address|user|mailbox|account|recipient)[^.\n]{0,40}does ?n[o']t exist",
            r"does not exist",
            r"does ?n[o']t have an? [\w.-]+ account",
            r"address not found",
            r"(?:recipient|mailbox|user) not found",
            r"(?:invalid|bad) (?:recipient|mailbox|address|destination)",
            r"not a valid (?:recipient|mailbox|user|address)",
            r"recipient address rejected: (?:access denied|user unknown|invalid)",
            r"account (?:has been )?(?:disabled|deactivated|closed|deleted|removed)",
            r"unrouteable address",
            r"host or domain name not found",
            r"domain (?:not found|does not exist|has no mx)",
            r"name service error",
            r"null mx",
            r"mailbox unavailable",
            r"mailbox (?:is )?disabled",
        ),
    ),
    (
        SOFT,
        _rx(
            r"mailbox (?:is )?full",
            r"over (?:the )?quota",
            r"quota (?:exceeded|full)",
            r"exceed(?:s|ed)? (?:the |their |his |her |its )?(?:storage |mailbox |disk )?quota",
            r"insufficient (?:system )?storage",
            r"out of storage",
            r"temporar(?:il)?y (?:unavailable|deferred|rejected|failure|error|blocked)",
            r"try (?:again )?later",
            r"gr[ae]ylist",
            r"retry timeout exceeded",
            r"too many (?:connections|messages|recipients)",
        ),
    ),
    (
        MESSAGE,
        _rx(
            r"message (?:is )?too (?:large|big)",
            r"message size exceeds",
            r"(?:exceeds|over) (?:the )?(?:maximum |max )?(?:message )?size",
            r"size limit",
            r"message length exceeds",
            r"too large",
        ),
    ),
    (
        BLOCK,
        _rx(
            r"spamhaus",
            r"spamcop",
            r"barracuda",
            r"block ?list",
            r"black ?list",
            r"deny ?list",
            r"\bdnsbl\b",
            r"\brbl\b",
            r"listed (?:at|on|in|by)",
            r"\bpolicy\b",
            r"policies",
            r"reputation",
            r"\bspam\b",
            r"unsolicited",
            r"\bblocked\b",
            r"\bbanned\b",
            r"access denied",
        ),
    ),
)


def classify(status: str | None, code: int | None, text: str) -> str:
    """The class of a failure ("hard", "soft", "block", "message" or "ignore") from its
    enhanced status (like "5.1.1"), its SMTP reply code and its text (any may be missing);
    a status or code found in the text is used when none is given."""
    text = text or ""
    found = _STATUS.search(status or "") or (None if status else _STATUS.search(text))
    digit = found.group(1) if found else None
    if digit is None and code is not None:
        digit = str(code)[0]
    if digit is None:
        coded = _CODE.search(text)
        digit = coded.group(1) if coded else None
    if digit == "2":
        return IGNORE
    return _temporary_not_hard(digit, _class(found, digit, text))


def _temporary_not_hard(digit: str | None, klass: str) -> str:
    """A temporary (4xx) failure never proves an address dead."""
    return SOFT if digit == "4" and klass == HARD else klass


_GREYLIST = re.compile(r"gr[ae]y-?list", re.IGNORECASE)


def _class(found: re.Match[str] | None, digit: str | None, text: str) -> str:
    if _GREYLIST.search(text):
        return SOFT  # greylisting, whatever status it comes with (often 4.7.1)
    if found:
        subject, detail = found.group(2), found.group(3)
        by_status = STATUS_CLASS.get(f"{subject}.{detail}") or STATUS_CLASS.get(subject)
        if by_status:
            return by_status
    for klass, pattern in TEXT_RULES:
        if pattern.search(text):
            if klass == IGNORE and digit == "5":
                continue  # a permanent failure is not a delay, whatever its text says
            return klass
    return {"5": HARD, "4": SOFT}.get(digit or "", IGNORE)
