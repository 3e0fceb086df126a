"""The event log and its statistics: GetEvents, /api/v1/events, AggrEvents, DomainStats,
DailySeries, on a known set of events written as rows; and no user ever sees another's."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from models import Domain, Event, EventCount, Message

MAR1 = datetime(2024, 3, 1, tzinfo=UTC)
OPEN = {"ip": "192.0.2.7", "user_agent": "Mozilla/5.0 (test)"}


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


class Writer:
    """Writes domains, messages and events directly, one flush each (ids in writing order)."""

    def __init__(self, database):
        self.database = database
        self.events: dict[str, int] = {}

    def domain(self, user_id: int, name: str) -> int:
        with self.database.transaction() as s:
            row = Domain(
                user_id=user_id,
                name=name,
                ownership_token="t",
                subdomain="sl",
                signing_key_encrypted="x",
            )
            s.add(row)
            s.flush()
            return row.id

    def message(self, user_id, domain_id, domain_name, subject, sender, tags, when) -> Message:
        row = Message(
            id=str(uuid.uuid4()),
            user_id=user_id,
            domain_id=domain_id,
            domain_name=domain_name,
            source="api",
            from_email=sender,
            subject=subject,
            tags=json.dumps(tags),
            payload="{}",
            size=100,
            created_at=when,
        )
        with self.database.transaction() as s:
            s.add(row)
        return row

    def event(self, name, kind, message, delivery_id, recipient, when, **kw) -> None:
        with self.database.transaction() as s:
            row = Event(
                uid=str(uuid.uuid4()),
                type=kind,
                created_at=when,
                user_id=message.user_id,
                domain_id=message.domain_id,
                domain_name=message.domain_name,
                message_id=message.id,
                delivery_id=delivery_id,
                recipient=recipient,
                tags=message.tags,
                smtp_code=kw.get("code"),
                enhanced_code=kw.get("enhanced"),
                smtp_text=kw.get("text"),
                details=json.dumps(kw.get("details", {})),
            )
            s.add(row)
            s.flush()
            self.events[name] = row.id


@pytest.fixture
def data(database, user, make_user):
    """Alice's a.example (18 events) and b.example (2); Bob's c.example (3)."""
    bob = make_user("bob")
    w = Writer(database)
    d1 = w.domain(user.id, "a.example")
    d2 = w.domain(user.id, "b.example")
    d3 = w.domain(bob.id, "c.example")

    def msg(domain_id, domain_name, subject, sender, tags, uid=user.id):
        return w.message(uid, domain_id, domain_name, subject, sender, tags, at(1, 0, month=2))

    m1 = msg(d1, "a.example", "Welcome to Postern", "hello@a.example", ["welcome", "onboarding"])
    ann = "Ann@Dest.example"
    w.event("e1", "accepted", m1, 1, ann, at(1, 10))
    w.event("e2", "accepted", m1, 2, "bob@other.test", at(1, 10))
    w.event("e3", "delivered", m1, 1, ann, at(1, 10, 1), code=250, enhanced="2.0.0", text="ok")
    w.event("e4", "bounced", m1, 2, "bob@other.test", at(1, 10, 2), code=550, text="no user")
    w.event("e5", "opened", m1, 1, ann, at(1, 11), details=OPEN)
    w.event("e6", "opened", m1, 1, ann, at(1, 12), details=OPEN)
    click = {"url": "https://a.example/x", **OPEN}
    w.event("e7", "clicked", m1, 1, ann, at(1, 12, 5), details=click)
    m2 = msg(d1, "a.example", "Your invoice", "billing@a.example", ["invoice"])
    carol = "carol@dest.example"
    w.event("e8", "accepted", m2, 3, carol, at(2, 9))
    w.event("e9", "deferred", m2, 3, carol, at(2, 9, 1), code=421, enhanced="4.7.0")
    w.event("e10", "delivered", m2, 3, carol, at(3, 9))
    w.event("e11", "opened", m2, 3, carol, at(3, 10), details=OPEN)
    w.event("e12", "unsubscribed", m2, 3, carol, at(3, 10, 5))
    w.event("e13", "complained", m2, 3, carol, at(4, 8))
    m7 = msg(d1, "a.example", "Welcome again", "hello@a.example", ["welcome"])
    w.event("e14", "accepted", m7, 7, "frank@dest.example", at(2, 10))
    w.event("e15", "opened", m7, 7, "frank@dest.example", at(2, 11))
    m3 = msg(d1, "a.example", "Password reset", "hello@a.example", [])
    w.event("e16", "accepted", m3, 4, "dave@else.example", at(27, 8, month=2))
    w.event("e17", "delivered", m3, 4, "dave@else.example", at(27, 8, 1, month=2))
    m4 = msg(d1, "a.example", "Blocked", "hello@a.example", [])
    w.event("e18", "rejected", m4, None, "eve@dest.example", at(28, 8, month=2))
    m5 = msg(d2, "b.example", "Welcome b", "hello@b.example", ["welcome"])
    w.event("e19", "accepted", m5, 5, "ann@dest.example", at(1, 13))
    w.event("e20", "delivered", m5, 5, "ann@dest.example", at(1, 13, 1))
    m6 = msg(d3, "c.example", "Welcome bob", "hi@c.example", ["welcome"], uid=bob.id)
    w.event("e21", "accepted", m6, 6, "ann@dest.example", at(1, 10))
    w.event("e22", "delivered", m6, 6, "ann@dest.example", at(1, 10, 1))
    w.event("e23", "opened", m6, 6, "ann@dest.example", at(1, 11), details=OPEN)
    uids = {}
    with database.transaction() as s:
        for name, row_id in w.events.items():
            uids[s.get(Event, row_id).uid] = name

    def writer_event(name):
        """A new event like the one written as ``name`` (a copy, with a new uid)."""
        with database.transaction() as s:
            e = s.get(Event, w.events[name])
            columns = ("type", "created_at", "user_id", "domain_id", "domain_name", "message_id")
            columns += ("delivery_id", "recipient", "tags", "details")
            return Event(uid=str(uuid.uuid4()), **{c: getattr(e, c) for c in columns})

    return SimpleNamespace(
        alice=user,
        bob=bob,
        d1=d1,
        d2=d2,
        d3=d3,
        m1=m1,
        m2=m2,
        uids=uids,
        writer=w,
        writer_event=writer_event,
    )


# The order of a.example's events, newest first (e2 before e1: same second, later id).
D1_ORDER = [
    "e13",
    "e12",
    "e11",
    "e10",
    "e15",
    "e14",
    "e9",
    "e8",
    "e7",
    "e6",
    "e5",
    "e4",
    "e3",
    "e2",
    "e1",
    "e18",
    "e17",
    "e16",
]


@pytest.fixture
def events(api, data):
    """GetEvents as the given user (Alice by default): (TotalRecords, event names)."""

    def call(who=None, **params):
        params.setdefault("StartFrom", 0)
        params.setdefault("RetrieveCount", 100)
        body = api("EmailGateway.GetEvents", APIKey=(who or data.alice).api_key, **params)
        assert body["Success"] is True, body
        return body["TotalRecords"], [data.uids[e["id"]] for e in body["Events"]]

    return call


def test_all_events_newest_first_and_paged(events, data):
    total, names = events(DomainID=data.d1)
    assert (total, names) == (18, D1_ORDER)
    total, names = events()  # every domain of Alice's, none of Bob's
    assert total == 20 and set(names) == set(D1_ORDER) | {"e19", "e20"}
    assert events(DomainID=data.d1, RetrieveCount=5) == (18, D1_ORDER[:5])
    assert events(DomainID=data.d1, StartFrom=5, RetrieveCount=5) == (18, D1_ORDER[5:10])
    assert events(DomainID=data.d1, StartFrom=15, RetrieveCount=5) == (18, D1_ORDER[15:])
    assert events(DomainID=data.d1, StartFrom=18, RetrieveCount=5) == (18, [])
    assert events(DomainID=data.d1, StartFrom="13", RetrieveCount="2") == (18, ["e2", "e1"])
    assert events(data.bob) == (3, ["e23", "e22", "e21"])


def test_event_filter_in_both_vocabularies(events, data):
    opens = (4, ["e11", "e15", "e6", "e5"])
    for name in ("open", "opened", "OPEN", ["open"]):
        assert events(DomainID=data.d1, Event=name) == opens
    assert events(DomainID=data.d1, Event="delivery,bounce") == (4, ["e10", "e4", "e3", "e17"])
    assert events(DomainID=data.d1, Event=["delivered", "bounced"])[0] == 4
    assert events(DomainID=data.d1, Event="deferred, accepted")[0] == 6
    assert events(DomainID=data.d1, Event="rejected")[1] == ["e18"]
    assert events(DomainID=data.d1, Event="complaint")[1] == ["e13"]
    assert events(DomainID=data.d1, Event="unsubscribe")[1] == ["e12"]
    assert events(DomainID=data.d1, Event="click")[1] == ["e7"]
    assert events(Event="delivered") == (4, ["e10", "e20", "e3", "e17"])


def test_date_bounds_are_inclusive(events, data):
    names = events(DomainID=data.d1, StartDate="2024-03-02", EndDate="2024-03-03")[1]
    assert names == ["e12", "e11", "e10", "e15", "e14", "e9", "e8"]
    assert events(DomainID=data.d1, StartDate="2024-03-03")[1] == ["e13", "e12", "e11", "e10"]
    assert events(DomainID=data.d1, EndDate="2024-02-28")[1] == ["e18", "e17", "e16"]
    seconds = events(
        DomainID=data.d1, StartDate="2024-03-01 10:01:00", EndDate="2024-03-01 10:02:00"
    )
    assert seconds == (2, ["e4", "e3"])
    one_day = events(DomainID=data.d1, StartDate="2024-03-04", EndDate="2024-03-04")
    assert one_day == (1, ["e13"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("subject:welcome", 9),
        ("SUBJECT:WELCOME", 9),
        ('subject:"your invoice"', 6),
        ("to:ann@dest.example", 5),
        ("to:ANN@dest.EXAMPLE", 5),
        ("to:dest.example", 14),
        ("to:@other.test", 2),
        ("from:billing", 6),
        ("from:hello@a.example", 12),
        ("tag:welcome", 9),
        ("tag:invoice", 6),
        ("tag:welcome tag:onboarding", 7),
        ("tag:welc", 0),
        ("carol", 6),
        ("invoice", 6),
        ('"your invoice" carol', 6),
        ("welcome carol", 0),
        ("foo:bar", 0),
        ("subject:welcome to:ann@dest.example", 5),
        ("100%", 0),
        ("to:_nn@dest.example", 0),
    ],
)
def test_query_terms(events, data, query, expected):
    assert events(DomainID=data.d1, Query=query)[0] == expected


def test_query_by_message_and_combined(events, data):
    m2 = data.m2.id
    assert events(DomainID=data.d1, Query=f"message:{m2}")[0] == 6
    assert events(DomainID=data.d1, Query=f"message:<{m2}@a.example>")[0] == 6
    combined = events(DomainID=data.d1, Query="subject:welcome to:ann@dest.example", Event="open")
    assert combined == (2, ["e6", "e5"])
    # Without a DomainID the terms reach every domain of Alice's, and still none of Bob's.
    assert events(Query="to:ann@dest.example")[0] == 7
    assert events(Query="subject:welcome")[0] == 11
    assert events(data.bob, Query="to:ann@dest.example")[0] == 3


def test_event_shape(api, data):
    body = api(
        "EmailGateway.GetEvents",
        APIKey=data.alice.api_key,
        DomainID=str(data.d1),
        StartFrom=0,
        RetrieveCount=100,
        Query="subject:welcome",
    )
    by_name = {data.uids[e["id"]]: e for e in body["Events"]}
    click = by_name["e7"]
    assert click == {
        "id": click["id"],
        "event_type": "click",
        "timestamp": "2024-03-01T12:05:00Z",
        "message_id": data.m1.id,
        "recipient": "Ann@Dest.example",
        "domain": "a.example",
        "tags": ["welcome", "onboarding"],
        "message": {
            "headers": {
                "subject": "Welcome to Postern",
                "from": "hello@a.example",
                "to": "Ann@Dest.example",
                "message-id": f"<{data.m1.id}@a.example>",
            }
        },
        "url": "https://a.example/x",
        "ip": "192.0.2.7",
        "user_agent": "Mozilla/5.0 (test)",
    }
    assert by_name["e3"]["event_type"] == "delivery"
    assert by_name["e3"]["delivery_status"] == {"code": 250, "enhanced": "2.0.0", "text": "ok"}
    assert by_name["e4"]["event_type"] == "bounce"
    assert by_name["e1"]["event_type"] == "accepted" and "delivery_status" not in by_name["e1"]
    assert by_name["e5"]["event_type"] == "open"


def test_get_events_errors(api, data):
    def code(**params):
        body = api("EmailGateway.GetEvents", APIKey=data.alice.api_key, **params)
        assert body["Success"] is False
        return body["ErrorCode"], body["ErrorMessage"]

    assert code(RetrieveCount=10) == (4, "Required parameter missing: StartFrom")
    assert code(StartFrom=0) == (5, "Required parameter missing: RetrieveCount")
    assert code(StartFrom="", RetrieveCount=10)[0] == 4
    assert code(StartFrom=0, RetrieveCount=10, DomainID=data.d3) == (
        2,
        "Failed to retrieve sender domain",
    )
    assert code(StartFrom=0, RetrieveCount=10, DomainID="abc")[0] == 2
    assert code(StartFrom=0, RetrieveCount=10, DomainID=999999)[0] == 2
    assert code(StartFrom=-1, RetrieveCount=10)[0] == 6
    assert code(StartFrom="x", RetrieveCount=10)[0] == 6
    for bad in (0, -5, 101, "many"):
        assert code(StartFrom=0, RetrieveCount=bad)[0] == 7
    assert code(StartFrom=0, RetrieveCount=10, StartDate="2024-13-01")[0] == 8
    assert code(StartFrom=0, RetrieveCount=10, EndDate="yesterday")[0] == 9
    assert code(StartFrom=0, RetrieveCount=10, StartDate="2024-03-02", EndDate="2024-03-01") == (
        9,
        "EndDate is before StartDate",
    )
    assert code(StartFrom=0, RetrieveCount=10, Event="opens")[0] == 10
    assert code(StartFrom=0, RetrieveCount=10, Query="x" * 1001)[0] == 11
    assert api("EmailGateway.GetEvents", StartFrom=0, RetrieveCount=10)["ErrorCode"] == 99998


# -- AggrEvents --------------------------------------------------------------------------------


@pytest.fixture
def aggr(api, data):
    def call(field=None, who=None, **params):
        params.setdefault("DomainID", data.d1)
        params.setdefault("StartDate", "2024-03-01")
        params.setdefault("EndDate", "2024-03-04")
        if field is not None:
            params["AggregatedField"] = field
        body = api("EmailGateway.AggrEvents", APIKey=(who or data.alice).api_key, **params)
        assert body["Success"] is True, body
        return [(b["key"], b["doc_count"]) for b in body["AggBuckets"]]

    return call


def test_aggregate_by_event_type(aggr):
    expected = [
        ("accepted", 4),
        ("open", 4),
        ("delivery", 2),
        ("bounce", 1),
        ("click", 1),
        ("complaint", 1),
        ("deferred", 1),
        ("unsubscribe", 1),
    ]
    assert aggr() == expected
    assert aggr("eventType") == aggr("EVENT_TYPE") == expected
    assert aggr("eventType", AggregateSize=3) == expected[:3]
    wide = dict(aggr("eventType", StartDate="2024-02-01"))
    assert wide["accepted"] == 5 and wide["delivery"] == 3 and wide["rejected"] == 1


def test_aggregate_by_recipient_domain_tag_day_hour(aggr):
    assert aggr("recipientDomain") == [("dest.example", 13), ("other.test", 2)]
    assert aggr("recipient_domain", AggregateSize=1) == [("dest.example", 13)]
    assert aggr("tag") == [("welcome", 9), ("onboarding", 7), ("invoice", 6)]
    assert aggr("tags", Event="open") == [("welcome", 3), ("onboarding", 2), ("invoice", 1)]
    assert aggr("day") == [
        ("2024-03-01", 7),
        ("2024-03-02", 4),
        ("2024-03-03", 3),
        ("2024-03-04", 1),
    ]
    assert aggr("day", AggregateSize=2) == [("2024-03-03", 3), ("2024-03-04", 1)]
    assert aggr("hour", EndDate="2024-03-01") == [
        ("2024-03-01 10:00:00", 4),
        ("2024-03-01 11:00:00", 1),
        ("2024-03-01 12:00:00", 2),
    ]


def test_aggregate_errors_and_tenancy(api, aggr, data):
    def code(**params):
        body = api("EmailGateway.AggrEvents", APIKey=data.alice.api_key, **params)
        assert body["Success"] is False
        return body["ErrorCode"], body["ErrorMessage"]

    assert code() == (1, "Required parameter missing: DomainID")
    assert code(DomainID=data.d3) == (2, "Failed to retrieve sender domain")
    assert code(DomainID=data.d1, StartDate="March")[0] == 3
    assert code(DomainID=data.d1, EndDate="2024-02-30")[0] == 4
    assert code(DomainID=data.d1, AggregatedField="subject")[0] == 5
    assert code(DomainID=data.d1, AggregateSize=0)[0] == 6
    assert code(DomainID=data.d1, AggregateSize=1001)[0] == 6
    assert code(DomainID=data.d1, Event="nope")[0] == 7
    # Bob's own domain gives only his events.
    assert aggr(who=data.bob, DomainID=data.d3) == [("accepted", 1), ("delivery", 1), ("open", 1)]


# -- DomainStats and DailySeries ---------------------------------------------------------------


def stats(**figures):
    keys = (
        "Sent Delivered Bounced Blocked Opened Clicked Unsubscribed Complained NotSpam"
        " AuthFailures UniqueOpened UniqueClicked"
    )
    return {k: figures.get(k, 0) for k in keys.split()}


def test_domain_stats(api, data):
    body = api(
        "EmailGateway.DomainStats",
        APIKey=data.alice.api_key,
        DomainID=str(data.d1),
        StartDate="2024-03-01",
        EndDate="2024-03-04",
    )
    assert body["Success"] is True, body
    assert body["Stats"] == stats(
        Sent=4,
        Delivered=2,
        Bounced=1,
        Opened=4,
        Clicked=1,
        Unsubscribed=1,
        Complained=1,
        UniqueOpened=3,
        UniqueClicked=1,
    )
    # The four days before: 26 to 29 February (a leap year).
    assert body["ComparisonStats"] == stats(Sent=1, Delivered=1)
    assert body["TagStats"] == {
        "welcome": stats(
            Sent=3, Delivered=1, Bounced=1, Opened=3, Clicked=1, UniqueOpened=2, UniqueClicked=1
        ),
        "onboarding": stats(
            Sent=2, Delivered=1, Bounced=1, Opened=2, Clicked=1, UniqueOpened=1, UniqueClicked=1
        ),
        "invoice": stats(
            Sent=1, Delivered=1, Opened=1, Unsubscribed=1, Complained=1, UniqueOpened=1
        ),
    }
    assert (body["StartDate"], body["EndDate"]) == ("2024-03-01 00:00:00", "2024-03-04 23:59:59")
    bob = api(
        "EmailGateway.DomainStats",
        APIKey=data.bob.api_key,
        DomainID=data.d3,
        StartDate="2024-03-01",
        EndDate="2024-03-04",
    )
    assert bob["Stats"] == stats(Sent=1, Delivered=1, Opened=1, UniqueOpened=1)
    assert list(bob["TagStats"]) == ["welcome"]


def test_stats_of_a_period_with_times(api, aggr, data):
    """Whole days come from the daily counts, the hours at either end from the events."""
    period = {"StartDate": "2024-03-01 12:00:00", "EndDate": "2024-03-03 09:30:00"}
    body = api("EmailGateway.DomainStats", APIKey=data.alice.api_key, DomainID=data.d1, **period)
    assert body["Stats"] == stats(
        Sent=2, Delivered=1, Opened=2, Clicked=1, UniqueOpened=2, UniqueClicked=1
    )
    assert body["TagStats"] == {
        "welcome": stats(Sent=1, Opened=2, Clicked=1, UniqueOpened=2, UniqueClicked=1),
        "onboarding": stats(Opened=1, Clicked=1, UniqueOpened=1, UniqueClicked=1),
        "invoice": stats(Sent=1, Delivered=1),
    }
    assert aggr(**period) == [
        ("accepted", 2),
        ("open", 2),
        ("click", 1),
        ("deferred", 1),
        ("delivery", 1),
    ]
    assert aggr("day", **period) == [("2024-03-01", 2), ("2024-03-02", 4), ("2024-03-03", 1)]
    assert aggr("tag", **period) == [("welcome", 4), ("invoice", 3), ("onboarding", 2)]


def test_daily_counts_follow_the_events(data, database):
    """Every event written through a session is counted once; a rolled-back one is not."""
    kept, dropped = data.writer_event("e1"), data.writer_event("e2")
    with database.transaction() as s:
        s.add(kept)
        with s.begin_nested() as nested:
            s.add(dropped)
            s.flush()
            nested.rollback()
    with database.transaction() as s:
        counted = {
            (c.domain_id, c.day, c.type, c.tags, c.user_id): c.total
            for c in s.scalars(select(EventCount))
        }
        grouped: dict = {}
        for e in s.scalars(select(Event)):
            key = (e.domain_id, e.created_at.date(), e.type, e.tags)
            key = (*key, e.user_id)
            grouped[key] = grouped.get(key, 0) + 1
    assert counted == grouped
    assert sum(counted.values()) == 24  # 23 events and the copy of e1


def test_domain_stats_default_period(api, data, clock):
    now = clock()
    w = data.writer
    m = w.message(data.alice.id, data.d2, "b.example", "Now", "x@b.example", ["t"], now)
    w.event("now", "accepted", m, 50, "z@dest.example", now - timedelta(minutes=1))
    w.event("d29", "accepted", m, 51, "z@dest.example", now - timedelta(days=29))
    w.event("d40", "accepted", m, 52, "z@dest.example", now - timedelta(days=40))
    w.event("d70", "accepted", m, 53, "z@dest.example", now - timedelta(days=70))
    body = api("EmailGateway.DomainStats", APIKey=data.alice.api_key, DomainID=data.d2)
    assert body["Stats"]["Sent"] == 2 and body["ComparisonStats"]["Sent"] == 1
    assert body["TagStats"] == {"t": stats(Sent=2)}
    series = api("EmailGateway.DailySeries", APIKey=data.alice.api_key, DomainID=data.d2)
    assert len(series["Series"]) == 30
    assert series["Series"][-1]["Date"] == now.date().isoformat()
    assert sum(day["Sent"] for day in series["Series"]) == 2


def test_domain_stats_errors(api, data):
    def code(command="EmailGateway.DomainStats", **params):
        body = api(command, APIKey=data.alice.api_key, **params)
        assert body["Success"] is False
        return body["ErrorCode"], body["ErrorMessage"]

    assert code() == (1, "Required parameter missing: DomainID")
    assert code(DomainID=data.d3) == (2, "Unable to retrieve domain information")
    assert code(DomainID="x") == (2, "Unable to retrieve domain information")
    assert code(DomainID=data.d1, StartDate="2024/03/01")[0] == 3
    assert code(DomainID=data.d1, StartDate="2024-03-02", EndDate="2024-03-01")[0] == 4
    assert code("EmailGateway.DailySeries", DomainID=data.d3)[0] == 2
    assert code("EmailGateway.DailySeries", DomainID=data.d1, StartDate="2023-01-01")[0] == 5


def test_daily_series_has_every_day(api, data):
    body = api(
        "EmailGateway.DailySeries",
        APIKey=data.alice.api_key,
        DomainID=data.d1,
        StartDate="2024-02-26",
        EndDate="2024-03-05",
    )
    assert body["Series"] == [
        {"Date": "2024-02-26", **stats()},
        {"Date": "2024-02-27", **stats(Sent=1, Delivered=1)},
        {"Date": "2024-02-28", **stats()},
        {"Date": "2024-02-29", **stats()},
        {
            "Date": "2024-03-01",
            **stats(
                Sent=2,
                Delivered=1,
                Bounced=1,
                Opened=2,
                Clicked=1,
                UniqueOpened=1,
                UniqueClicked=1,
            ),
        },
        {"Date": "2024-03-02", **stats(Sent=2, Opened=1, UniqueOpened=1)},
        {"Date": "2024-03-03", **stats(Delivered=1, Opened=1, Unsubscribed=1, UniqueOpened=1)},
        {"Date": "2024-03-04", **stats(Complained=1)},
        {"Date": "2024-03-05", **stats()},
    ]


# -- GET /api/v1/events --------------------------------------------------------------------------


@pytest.fixture
def v1(api, client, data):
    key = api("EmailGateway.AddAPI", APIKey=data.alice.api_key, DomainID=data.d1, Description="x")
    key = key["APIKey"]["Key"]

    def get(params=None, headers=None, status=200, **kw):
        resp = client.get(
            "/api/v1/events",
            query_string=params or {},
            headers={"Authorization": f"Bearer {key}"} if headers is None else headers,
            **kw,
        )
        assert resp.status_code == status, resp.get_data(as_text=True)
        return resp.get_json()

    get.key = key
    return get


def test_v1_events(v1, data):
    body = v1()
    assert body["TotalRecords"] == 18
    assert [data.uids[e["EventId"]] for e in body["Events"]] == D1_ORDER[:5]  # 5 by default
    body = v1({"Event": "click", "RetrieveCount": 100})
    assert body == {
        "TotalRecords": 1,
        "Events": [
            {
                "EventId": body["Events"][0]["EventId"],
                "EventType": "click",
                "EventTimestamp": "2024-03-01T12:05:00Z",
                "Recipient": "Ann@Dest.example",
                "MessageId": data.m1.id,
                "CampaignId": None,
                "Tags": ["welcome", "onboarding"],
                "Details": {
                    "Url": "https://a.example/x",
                    "IpAddress": "192.0.2.7",
                    "UserAgent": "Mozilla/5.0 (test)",
                },
            }
        ],
    }
    bounce = v1({"Event": "bounced"})["Events"][0]
    assert bounce["EventType"] == "bounce"
    assert bounce["Details"] == {"SMTPCode": 550, "SMTPResponse": "no user"}
    page = v1({"StartFrom": 13, "RetrieveCount": 2})
    assert [data.uids[e["EventId"]] for e in page["Events"]] == ["e2", "e1"]
    assert v1({"MessageID": data.m2.id, "RetrieveCount": 100})["TotalRecords"] == 6
    assert v1({"MessageID": f"<{data.m2.id}@a.example>"})["TotalRecords"] == 6
    assert v1({"MessageID": data.m2.id, "Event": "open,delivery"})["TotalRecords"] == 2
    start = int(datetime(2024, 3, 3, tzinfo=UTC).timestamp())
    assert v1({"StartDate": start})["TotalRecords"] == 4
    assert v1({"StartDate": start, "EndDate": start + 9 * 3600})["TotalRecords"] == 1
    assert v1({"StartDate": "2024-03-03 10:00:00", "EndDate": "2024-03-03 10:05:00"}) == v1(
        {"StartDate": start + 10 * 3600, "EndDate": start + 10 * 3600 + 300}
    )
    # GET with a form body, as curl -X GET -d sends it; SenderAPIKey as a parameter.
    body = v1(
        headers={},
        data=f"SenderAPIKey={v1.key}&Event=open&RetrieveCount=10",
        content_type="application/x-www-form-urlencoded",
    )
    assert body["TotalRecords"] == 4


def test_v1_events_errors(v1, make_app, api, data, clock):
    def error(params=None, headers=None, status=400):
        errors = v1(params, headers=headers, status=status)["Errors"]
        assert len(errors) == 1
        return errors[0]["Code"], errors[0]["Message"]

    assert error(headers={}, status=401) == (1, "Missing SenderAPIKey")
    assert error(headers={"Authorization": "Bearer ps_nope"}, status=401)[0] == 13
    assert error({"StartFrom": -1})[0] == 4
    assert error({"RetrieveCount": 101})[0] == 5
    assert error({"RetrieveCount": 0})[0] == 5
    assert error({"StartDate": "2024-03-01T10"})[0] == 6
    assert error({"EndDate": "soon"})[0] == 7
    assert error({"Event": "opens"})[0] == 8
    # A fresh key (the counts of the one above are in the shared store).
    key = api("EmailGateway.AddAPI", APIKey=data.alice.api_key, DomainID=data.d1, Description="y")
    client = make_app(ratelimit__requests=1).client
    headers = {"Authorization": f"Bearer {key['APIKey']['Key']}"}
    clock.freeze()  # the requests fall in one rate-limit window
    assert client.get("/api/v1/events", headers=headers).status_code == 200
    resp = client.get("/api/v1/events", headers=headers)
    assert resp.status_code == 429
    [err] = resp.get_json()["Errors"]
    assert err["Code"] == 429
    assert re.fullmatch(
        r"Too many requests\. Please wait for \d+ seconds before trying again\.", err["Message"]
    )


def test_v1_events_only_of_the_keys_domain(api, client, data):
    key = api("EmailGateway.AddAPI", APIKey=data.bob.api_key, DomainID=data.d3, Description="x")
    key = key["APIKey"]["Key"]
    resp = client.get(
        "/api/v1/events",
        query_string={"RetrieveCount": 100, "MessageID": data.m1.id},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.get_json() == {"TotalRecords": 0, "Events": []}
    resp = client.get(
        "/api/v1/events",
        query_string={"RetrieveCount": 100},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert {data.uids[e["EventId"]] for e in resp.get_json()["Events"]} == {"e21", "e22", "e23"}


def test_a_reused_domain_id_shows_no_other_users_events(api, data, database, events):
    """Events outlive their domain; should its id come back for another user, they stay hidden."""
    with database.transaction() as s:
        s.execute(
            text("UPDATE events SET domain_id = :d WHERE domain_id = :old"),
            {"d": data.d3, "old": data.d1},
        )
    assert events(data.bob, DomainID=data.d3)[0] == 3
    stats_ = api(
        "EmailGateway.DomainStats",
        APIKey=data.bob.api_key,
        DomainID=data.d3,
        StartDate="2024-02-01",
        EndDate="2024-03-31",
    )
    assert stats_["Stats"]["Sent"] == 1 and list(stats_["TagStats"]) == ["welcome"]
    for field in ("eventType", "tag", "recipientDomain", "day"):
        buckets = api(
            "EmailGateway.AggrEvents",
            APIKey=data.bob.api_key,
            DomainID=data.d3,
            StartDate="2024-02-01",
            EndDate="2024-03-31",
            AggregatedField=field,
        )["AggBuckets"]
        assert sum(b["doc_count"] for b in buckets) == 3
    series = api(
        "EmailGateway.DailySeries",
        APIKey=data.bob.api_key,
        DomainID=data.d3,
        StartDate="2024-03-01",
        EndDate="2024-03-31",
    )
    assert sum(day["Sent"] for day in series["Series"]) == 1


def test_migration_fills_in_lower_case_recipients(tmp_path):
    """0005 lower-cases the recipients of the events already there."""
    from models import Database
    from models.migrate import upgrade

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(db.engine, "0004")
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (uid, type, created_at, user_id, domain_id, domain_name,"
                " message_id, recipient, tags, details) VALUES ('u', 'accepted',"
                " '2024-03-01 00:00:00.000000', 1, 1, 'a.example', 'm', 'Ann@Dest.Example',"
                " '[]', '{}')"
            )
        )
    upgrade(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT recipient_lower FROM events")).scalar() == (
            "ann@dest.example"
        )
        counts = conn.execute(text("SELECT domain_id, day, type, tags, total FROM event_counts"))
        assert [tuple(r) for r in counts] == [(1, "2024-03-01", "accepted", "[]", 1)]
    db.dispose()
