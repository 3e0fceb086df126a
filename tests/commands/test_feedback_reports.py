"""Feedback reports by their type, mailed in through the inbound SMTP listener to the VERP
return path of a real delivered message: the corpus in tests/mta/corpus/feedback."""

import json

import pytest
from sqlalchemy import select

from models import Delivery, Event, Suppression
from tests import smtppeer
from tests.app.smtp.test_relay import relay, relay_for  # noqa: F401 - fixtures
from tests.commands.test_inbox import delivered, events_of, mail_to  # noqa: F401 - fixtures
from tests.mta.test_feedback import FILES, MANIFEST, corpus

smtp_peer = smtppeer.smtp_peer

FEEDBACK_EVENTS = ("complained", "not_spam", "auth_failure", "unsubscribed")


def outcome(database):
    """(event types written by the report, suppressions as (email, source, domain_id))."""
    with database.transaction(readonly=True) as s:
        kinds = s.scalars(
            select(Event.type).where(Event.type.in_(FEEDBACK_EVENTS)).order_by(Event.id)
        ).all()
        rows = s.execute(select(Suppression.email, Suppression.source, Suppression.domain_id))
        return list(kinds), [tuple(r) for r in rows]


@pytest.mark.parametrize("name", FILES)
def test_each_feedback_report(relay, delivered, database, name):  # noqa: F811
    d, message_id = delivered
    return_path = f"b-{d.token}@sl.example.com"
    assert mail_to(relay, return_path, corpus(name, message_id, return_path))[0] == 250
    expected = MANIFEST[name]
    kinds, suppressed = outcome(database)
    assert kinds == [expected["event"]]
    [event] = events_of(database, expected["event"])
    assert event.delivery_id == d.id and event.recipient == "rcpt@dest.example"
    details = json.loads(event.details)
    assert details["source"] == "arf"
    assert details.get("feedback_type") == expected["feedback_type"]
    if expected["suppression"] is None:
        assert suppressed == []
    else:
        scope = 0 if expected["scope"] == "all" else d.domain_id
        assert suppressed == [("rcpt@dest.example", expected["suppression"], scope)]
    with database.transaction(readonly=True) as s:
        assert s.get(Delivery, d.id).status == "delivered"


def test_an_opt_out_twice_is_one_unsubscribe(relay, delivered, database):  # noqa: F811
    d, message_id = delivered
    return_path = f"b-{d.token}@sl.example.com"
    for _ in range(2):
        data = corpus("arf-opt-out.eml", message_id, return_path)
        assert mail_to(relay, return_path, data)[0] == 250
    assert outcome(database)[0] == ["unsubscribed"]


def test_not_spam_leaves_an_earlier_complaint_in_place(relay, delivered, database):  # noqa: F811
    d, message_id = delivered
    return_path = f"b-{d.token}@sl.example.com"
    for name in ("arf-abuse.eml", "arf-not-spam.eml"):
        assert mail_to(relay, return_path, corpus(name, message_id, return_path))[0] == 250
    kinds, suppressed = outcome(database)
    assert kinds == ["complained", "not_spam"]
    assert suppressed == [("rcpt@dest.example", "complaint", 0)]


@pytest.mark.parametrize("name", ["legacy-yahoo.eml", "jmrp-microsoft.eml"])
def test_a_legacy_report_without_a_token_matches_by_message_id(
    relay,  # noqa: F811
    delivered,  # noqa: F811
    database,
    name,
):
    """Mailed to the owner's return-path host without a VERP token: the original's
    Message-ID names the delivery."""
    d, message_id = delivered
    to = "fbl@sl.example.com"
    assert mail_to(relay, to, corpus(name, message_id, to))[0] == 250
    [event] = events_of(database, "complained")
    assert event.delivery_id == d.id


@pytest.mark.parametrize("name", ["legacy-yahoo.eml", "jmrp-microsoft.eml", "arf-opt-out.eml"])
def test_a_legacy_report_to_another_tenants_return_path_changes_nothing(
    relay,  # noqa: F811
    delivered,  # noqa: F811
    database,
    make_user,
    active_domain,
    name,
):
    d, message_id = delivered
    bob = make_user("bob")
    active_domain("bob.example", key=bob.api_key)
    to = "fbl@sl.bob.example"
    assert mail_to(relay, to, corpus(name, message_id, to))[0] == 250
    assert outcome(database) == ([], [])


def test_new_event_types_in_the_event_log_statistics_and_webhooks(
    relay,  # noqa: F811
    delivered,  # noqa: F811
    database,
    api,
    user,
):
    d, message_id = delivered
    return_path = f"b-{d.token}@sl.example.com"
    for name in ("arf-not-spam.eml", "arf-auth-failure.eml"):
        assert mail_to(relay, return_path, corpus(name, message_id, return_path))[0] == 250
    for kind in ("not_spam", "NOT_SPAM", "auth_failure"):
        body = api(
            "EmailGateway.GetEvents", APIKey=user.api_key, StartFrom=0, RetrieveCount=10, Event=kind
        )
        assert body["TotalRecords"] == 1, body
        assert body["Events"][0]["event_type"] == kind.lower()
    stats = api("EmailGateway.DomainStats", APIKey=user.api_key, DomainID=d.domain_id)["Stats"]
    assert (stats["NotSpam"], stats["AuthFailures"], stats["Complained"]) == (1, 1, 0)
    added = api(
        "EmailGateway.AddWebhook",
        APIKey=user.api_key,
        DomainID=d.domain_id,
        Event="not_spam,auth_failure,complaint",
        WebhookURL="https://hooks.example.net/postern",
    )
    assert added["Success"] is True, added


def test_an_auth_failure_about_forged_mail_is_an_event_of_the_domain(
    relay,  # noqa: F811
    delivered,  # noqa: F811
    database,
    api,
    user,
    make_user,
    active_domain,
):
    """A DMARC failure report about mail Postern never sent (its Message-ID is no message of
    Postern's), mailed to the owner's return-path host: one auth_failure of that domain,
    with the report's fields; to another tenant's host it is theirs; to no host, nothing."""
    d, _ = delivered
    to = "ruf@sl.example.com"
    assert mail_to(relay, to, corpus("arf-auth-failure.eml", "forged-1", to))[0] == 250
    [event] = events_of(database, "auth_failure")
    assert (event.user_id, event.domain_id, event.domain_name) == (
        d.user_id,
        d.domain_id,
        "example.com",
    )
    assert (event.message_id, event.delivery_id, event.recipient) == ("", None, "")
    details = json.loads(event.details)
    assert details["reported_domain"] == "example.com"
    assert details["source_ip"] == "127.0.0.1"
    assert details["auth_failure"] == "dkim"
    assert details["dkim_selector"] == "postern"
    assert details["original_message_id"] == "<forged-1@example.com>"
    assert details["original_rcpt_to"] == "rcpt@dest.example"
    body = api(
        "EmailGateway.GetEvents",
        APIKey=user.api_key,
        StartFrom=0,
        RetrieveCount=10,
        Event="auth_failure",
    )
    assert body["TotalRecords"] == 1, body
    stats = api("EmailGateway.DomainStats", APIKey=user.api_key, DomainID=d.domain_id)["Stats"]
    assert stats["AuthFailures"] == 1

    bob = make_user("bob")
    bobs = active_domain("bob.example", key=bob.api_key)
    to = "ruf@sl.bob.example"
    assert mail_to(relay, to, corpus("arf-auth-failure.eml", "forged-2", to))[0] == 250
    mine, theirs = events_of(database, "auth_failure")
    assert (theirs.user_id, theirs.domain_id) == (bob.id, bobs.id)
    assert mine.id == event.id
    listed = api("EmailGateway.GetEvents", APIKey=user.api_key, StartFrom=0, RetrieveCount=10)
    assert [e["event_type"] for e in listed["Events"]].count("auth_failure") == 1
