"""Feedback reports by their type, and the older provider formats, as parsed."""

import json
from pathlib import Path

import pytest

from mta import feedback
from mta.bounces import parse_report

CORPUS = Path(__file__).parent / "corpus" / "feedback"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
FILES = sorted(k for k in MANIFEST if not k.startswith("_"))
MESSAGE_ID = "0123abcd-0000-4000-8000-00000000feed"
RETURN_PATH = "b-0123456789abcdef0123456789abcdef@sl.example.com"


def corpus(name, message_id=MESSAGE_ID, return_path=RETURN_PATH):
    text = (CORPUS / name).read_text()
    text = text.replace("{{MESSAGE_ID}}", message_id).replace("{{RETURN_PATH}}", return_path)
    return text.replace("\n", "\r\n").encode()


def test_the_corpus_is_complete():
    assert len(FILES) >= 8
    assert {p.name for p in CORPUS.glob("*.eml")} == set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_each_report_is_a_feedback_report_of_its_type(name):
    report = parse_report(corpus(name))
    assert report is not None and report.kind == "complaint"
    assert report.feedback_type == MANIFEST[name]["feedback_type"]
    [status] = report.recipients
    assert status.recipient == "rcpt@dest.example"
    assert report.original_message_id == f"<{MESSAGE_ID}@example.com>"


@pytest.mark.parametrize(
    ("value", "normalized", "action"),
    [
        ("abuse", "abuse", feedback.COMPLAINT),
        ("Fraud", "fraud", feedback.COMPLAINT),
        ("VIRUS", "virus", feedback.COMPLAINT),
        ("other", "other", feedback.COMPLAINT),
        ("something-new", "something-new", feedback.COMPLAINT),
        (None, None, feedback.COMPLAINT),
        ("", None, feedback.COMPLAINT),
        ("not-spam", "not-spam", feedback.NOT_SPAM),
        ("Not_Spam (moved to inbox)", "not-spam", feedback.NOT_SPAM),
        ("opt-out", "opt-out", feedback.OPT_OUT),
        ("opt-out-list", "opt-out-list", feedback.OPT_OUT),
        ("auth-failure; dkim", "auth-failure", feedback.AUTH_FAILURE),
        ("x" * 500, "x" * feedback.MAX_TYPE, feedback.COMPLAINT),
    ],
)
def test_types(value, normalized, action):
    assert feedback.normalize_type(value) == normalized
    assert feedback.action_of(normalized) == action


def test_the_jmrp_recipient_is_the_originals_not_the_reports():
    report = parse_report(corpus("jmrp-microsoft.eml"))
    assert report is not None
    assert report.recipients[0].recipient == "rcpt@dest.example"
    assert report.original_envelope_from == RETURN_PATH


def test_a_bounce_carrying_the_original_is_not_a_complaint():
    """A bounce for a message refused as spam, with the original attached, stays a bounce."""
    raw = f"""From: MAILER-DAEMON@mx.dest.example
To: {RETURN_PATH}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

<rcpt@dest.example>: host mx.dest.example[127.0.0.1] said: 550 5.7.1 Message
    marked as spam by the content filter

--b
Content-Type: message/rfc822

From: A <a@example.com>
To: rcpt@dest.example
Message-ID: <{MESSAGE_ID}@example.com>

x

--b--
""".replace("\n", "\r\n").encode()
    report = parse_report(raw)
    assert report is not None and report.kind == "bounce"


def test_a_forwarded_message_is_not_a_complaint():
    """A person forwarding a message as an attachment, without any report wording."""
    raw = f"""From: someone@dest.example
To: {RETURN_PATH}
Subject: Fwd: s
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

Have a look at this.

--b
Content-Type: message/rfc822

From: A <a@example.com>
To: rcpt@dest.example
Message-ID: <{MESSAGE_ID}@example.com>

x

--b--
""".replace("\n", "\r\n").encode()
    assert parse_report(raw) is None


def test_legacy_signal_needs_the_original():
    assert not feedback.legacy_signal(None, "Email Abuse Report", "This is an email abuse report")
