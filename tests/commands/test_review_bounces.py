"""Suppression.ReviewBounces: bounce suppressions made before bounces were classified,
listed and lifted when their recorded reply is not a dead address."""

from datetime import UTC, datetime

from sqlalchemy import select

from models import Suppression

WHEN = datetime(2024, 5, 1, tzinfo=UTC)


def add(database, user_id, email, source, reason, domain_id=0):
    with database.transaction() as s:
        s.add(
            Suppression(
                user_id=user_id,
                email=email,
                domain_id=domain_id,
                source=source,
                reason=reason,
                created_at=WHEN,
            )
        )


def emails(database, user_id):
    with database.transaction(readonly=True) as s:
        return sorted(
            s.scalars(select(Suppression.email).where(Suppression.user_id == user_id)).all()
        )


def test_review_lists_then_lifts_soft_and_block_suppressions(api, user, make_user, database):
    other = make_user("bob")
    add(database, user.id, "dead@example.org", "bounce", "550 5.1.1 User unknown")
    add(database, user.id, "full@example.org", "bounce", "552 5.2.2 Mailbox full")
    add(
        database,
        user.id,
        "blocked@example.org",
        "bounce",
        "554 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org",
    )
    add(database, user.id, "big@example.org", "bounce", "552 5.3.4 Message too big for system")
    add(
        database,
        user.id,
        "again@example.org",
        "bounce",
        "Soft bounces repeated: 3 since 2024-04-01, the last: 552 5.2.2 Mailbox full",
    )
    add(database, user.id, "spam@example.org", "complaint", "Complaint (abuse)")
    add(database, other.id, "full@example.org", "bounce", "552 5.2.2 Mailbox full")

    listed = api("Suppression.ReviewBounces", APIKey=user.api_key)
    assert listed["Success"] is True
    assert (listed["TotalRecords"], listed["Lifted"]) == (3, 0)
    assert {(e["EmailAddress"], e["BounceClass"]) for e in listed["Entries"]} == {
        ("full@example.org", "soft"),
        ("blocked@example.org", "block"),
        ("big@example.org", "message"),
    }
    assert len(emails(database, user.id)) == 6

    lifted = api("Suppression.ReviewBounces", APIKey=user.api_key, Lift=True)
    assert (lifted["TotalRecords"], lifted["Lifted"]) == (3, 3)
    assert emails(database, user.id) == [
        "again@example.org",
        "dead@example.org",
        "spam@example.org",
    ]
    assert emails(database, other.id) == ["full@example.org"]  # another user's: untouched
    again = api("Suppression.ReviewBounces", APIKey=user.api_key, Lift="1")
    assert (again["TotalRecords"], again["Lifted"], again["Entries"]) == (0, 0, [])


def test_review_errors(api, user, make_user, add_domain):
    other = make_user("bob")
    theirs = add_domain("other.example", key=other.api_key)
    for domain_id in (theirs, 999999, "x"):
        body = api("Suppression.ReviewBounces", APIKey=user.api_key, DomainID=domain_id)
        assert body["Success"] is False and body["ErrorCode"] == 1, body
    body = api("Suppression.ReviewBounces", APIKey=user.api_key, Lift="maybe")
    assert body["Success"] is False and body["ErrorCode"] == 2, body
    mine = add_domain("mine.example")
    body = api("Suppression.ReviewBounces", APIKey=user.api_key, DomainID=mine)
    assert body["Success"] is True and body["TotalRecords"] == 0
