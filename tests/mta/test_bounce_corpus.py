"""A corpus of bounces in the shapes real MTAs send (tests/mta/corpus/bounces), each mailed
through the inbound SMTP listener to a delivered message's VERP address: its class, the
status and code recorded, and what it does to the suppression list."""

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from models import Delivery, Event, Suppression
from tests.app.smtp.test_relay import relay, relay_for  # noqa: F401 - fixtures
from tests.commands import test_inbox

CORPUS = Path(__file__).parent / "corpus" / "bounces"
MANIFEST = {
    name: expected
    for name, expected in json.loads((CORPUS / "manifest.json").read_text()).items()
    if not name.startswith("_")
}
FAILURE_EVENTS = {"hard": "bounced", "soft": "bounced", "block": "blocked", "message": "failed"}
DELIVERY_STATUS = {"hard": "bounced", "soft": "bounced", "block": "failed", "message": "failed"}

smtp_peer, delivered = test_inbox.smtp_peer, test_inbox.delivered


def test_the_corpus_is_complete():
    files = {p.name for p in CORPUS.glob("*.eml")}
    assert files == set(MANIFEST)
    assert len(files) >= 22
    assert {e["class"] for e in MANIFEST.values()} == {"hard", "soft", "block", "message", "ignore"}
    assert max(p.stat().st_size for p in CORPUS.glob("*.eml")) > 1024 * 1024


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_a_bounce_is_classified_and_acted_on(name, relay, delivered, database):  # noqa: F811
    expected = MANIFEST[name]
    d, message_id = delivered
    verp = f"b-{d.token}@sl.example.com"
    raw = (CORPUS / name).read_bytes()
    raw = raw.replace(b"@VERP@", verp.encode())
    raw = raw.replace(b"@MESSAGE_ID@", f"<{message_id}@example.com>".encode())
    code, _ = test_inbox.mail_to(relay, verp, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert code == 250
    with database.transaction(readonly=True) as s:
        delivery = s.get(Delivery, d.id)
        entries = [(e.email, e.source) for e in s.scalars(select(Suppression))]
        events = s.scalars(
            select(Event).where(Event.delivery_id == d.id, Event.type != "accepted")
        ).all()
    klass = expected["class"]
    later = [e for e in events if e.type != "delivered"]
    assert entries == ([("rcpt@dest.example", "bounce")] if klass == "hard" else [])
    if klass == "ignore":
        assert delivery.status == "delivered"
        assert [e.type for e in later] == (["deferred"] if expected.get("deferred") else [])
        if later:
            assert json.loads(later[0].details)["bounce_class"] == "ignore"
            assert (later[0].enhanced_code, later[0].smtp_code) == (
                expected["status"],
                expected["code"],
            )
        return
    assert delivery.status == DELIVERY_STATUS[klass]
    [event] = later
    assert event.type == FAILURE_EVENTS[klass]
    assert json.loads(event.details)["bounce_class"] == klass
    assert (event.enhanced_code, event.smtp_code) == (expected["status"], expected["code"])
