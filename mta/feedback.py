"""Feedback reports by their type (RFC 5965 Feedback-Type), and the older provider formats.

A feedback report is one of four things to Postern:

- ``COMPLAINT``: ``abuse``, ``fraud``, ``virus``, ``other``, any type not known here, a
  report without a Feedback-Type, and the legacy provider formats (a feedback loop that
  forwards the original as an attachment, without a message/feedback-report part);
- ``NOT_SPAM``: ``not-spam``, the recipient took the message out of the spam folder;
- ``OPT_OUT``: ``opt-out`` (and the older ``opt-out-list``), an unsubscribe;
- ``AUTH_FAILURE``: ``auth-failure`` (RFC 6591), for the sending domain's owner.
"""

from __future__ import annotations

import re
from email.message import Message

COMPLAINT = "complaint"
NOT_SPAM = "not_spam"
OPT_OUT = "opt_out"
AUTH_FAILURE = "auth_failure"

_ACTIONS = {
    "abuse": COMPLAINT,
    "fraud": COMPLAINT,
    "virus": COMPLAINT,
    "other": COMPLAINT,
    "not-spam": NOT_SPAM,
    "opt-out": OPT_OUT,
    "opt-out-list": OPT_OUT,
    "auth-failure": AUTH_FAILURE,
}

MAX_TYPE = 40  # characters of a Feedback-Type kept


def normalize_type(value: str | None) -> str | None:
    """A Feedback-Type field's value, lower-cased, "_" read as "-", without comments or
    parameters ("Not_Spam (user)" -> "not-spam"); None when empty."""
    if not value:
        return None
    word = re.split(r"[\s;(]", value.strip(), maxsplit=1)[0]
    word = word.lower().replace("_", "-")[:MAX_TYPE]
    return word or None


def action_of(feedback_type: str | None) -> str:
    """What a report of ``feedback_type`` (normalized) means: one of COMPLAINT, NOT_SPAM,
    OPT_OUT, AUTH_FAILURE. A missing or unknown type is a complaint."""
    if feedback_type is None:
        return COMPLAINT
    return _ACTIONS.get(feedback_type, COMPLAINT)


# --- the older provider formats ----------------------------------------------------------------

# Microsoft's JMRP (Hotmail / Outlook.com) puts this header in the forwarded original.
JMRP_HEADER = "x-hmxmroriginalrecipient"

# Words of a feedback loop's own message (subject or text), in the formats still seen: the old
# Yahoo / JMRP "This is an email abuse report ...", AOL's "Client TOS Notification", and
# "complaint about message from <ip>".
_LEGACY_TEXT = re.compile(
    r"\bemail abuse report\b|\babuse report for an email\b|complaint about message from"
    r"|client tos notification|\bspam (?:complaint|report)\b|\bfeedback[- ]loop\b"
    r"|\b(?:reported|marked) (?:this |the )?(?:message |e-?mail )?as (?:spam|junk)\b",
    re.IGNORECASE,
)


def legacy_signal(original: Message | None, subject: str, text: str) -> bool:
    """Whether a message without a message/feedback-report part is still a provider's
    feedback report: it carries the original (``original``, not None) and either the
    original has the JMRP recipient header, or its own subject or text says it is an
    abuse / spam report. The caller rules out bounces first."""
    if original is None:
        return False
    if original.get(JMRP_HEADER) is not None:
        return True
    return (
        _LEGACY_TEXT.search(subject) is not None or _LEGACY_TEXT.search(text[:20_000]) is not None
    )
