"""The failure classifier (mta/classify.py): one table of real-world answers."""

import pytest

from mta.classify import CLASSES, classify

CASES = [
    # hard: the address or domain does not exist
    ("5.1.1", 550, "5.1.1 <ann@example.org>: Recipient address rejected: User unknown", "hard"),
    ("5.1.1", 550, "The email account that you tried to reach does not exist.", "hard"),
    ("5.1.2", 550, "Host unknown, domain name not found", "hard"),
    ("5.1.3", 501, "Bad recipient address syntax", "hard"),
    ("5.1.10", 550, "Recipient address has null MX", "hard"),
    (None, 550, "Requested action not taken: mailbox unavailable", "hard"),
    (None, 554, "delivery error: dd This user doesn't have a yahoo.com account", "hard"),
    (None, None, "Sorry, no mailbox here by that name. (#5.1.1)", "hard"),
    ("5.0.0", 550, "No such user here", "hard"),
    ("5.4.1", 550, "Recipient address rejected: Access denied. AS(201806281)", "hard"),
    (None, None, "Unrouteable address", "hard"),
    (None, 550, "", "hard"),  # a permanent failure that says nothing more
    # soft: full, over quota, temporarily unavailable, greylisting
    ("5.2.2", 552, "Mailbox full", "soft"),
    ("4.2.2", 452, "Insufficient system storage", "soft"),
    (None, 552, "Quota exceeded (mailbox for user is full)", "soft"),
    ("5.0.0", 550, "user is over quota", "soft"),
    ("4.7.1", 451, "Greylisted, please try again in 300 seconds", "soft"),
    ("4.2.0", 450, "Recipient address rejected: Greylisted", "soft"),
    (None, 450, "Requested mail action not taken: mailbox unavailable", "soft"),
    (None, 421, "Service not available, closing transmission channel", "soft"),
    ("4.4.1", None, "Connection timed out", "soft"),
    (None, None, "retry timeout exceeded", "soft"),
    # block: the sender was refused
    (
        "5.7.1",
        554,
        "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        "block",
    ),
    (None, 554, "Client host rejected: listed at bl.spamcop.net", "block"),
    ("5.7.606", 550, "Access denied, banned sending IP [192.0.2.1]", "block"),
    ("5.7.9", 554, "Message not accepted for policy reasons", "block"),
    (
        "5.7.26",
        550,
        "Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
        "block",
    ),
    (None, 550, "Our system has detected that this message is likely unsolicited mail", "block"),
    ("5.0.0", 554, "Rejected due to poor sending reputation", "block"),
    (None, 553, "Sender address rejected: Domain not found", "block"),
    (None, 554, "Relay access denied", "block"),
    ("4.7.0", 421, "Our system has detected an unusual rate of unsolicited mail", "block"),
    # message: the message itself
    ("5.3.4", 552, "Message too big for system", "message"),
    ("5.2.3", 552, "Message size exceeds fixed maximum message size", "message"),
    ("5.6.1", 554, "Media type not supported", "message"),
    (None, 552, "Message is too large", "message"),
    # ignore: auto-replies, delay notices, nothing to go on
    (None, None, "I am out of the office until Monday.", "ignore"),
    (None, None, "This is an automatic reply to your message.", "ignore"),
    ("4.4.7", None, "Delivery attempts will continue to be made for 5 days", "ignore"),
    (None, None, "Your message has not yet been delivered. It will be retried.", "ignore"),
    (None, None, "", "ignore"),
    (None, None, "garbage without any meaning", "ignore"),
    ("2.0.0", 250, "OK", "ignore"),
    # a permanent code is not a delay, whatever the text says
    ("5.1.1", 550, "user unknown; will not retry", "hard"),
]


@pytest.mark.parametrize(("status", "code", "text", "expected"), CASES)
def test_classify(status, code, text, expected):
    assert classify(status, code, text) == expected


def test_every_class_is_covered_and_known():
    assert {c[3] for c in CASES} == set(CLASSES)
