"""Direct statements (models/direct.py): Core statements run on the DBAPI cursor behave as
Connection.execute does where it matters, on every database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, InvalidRequestError

from models import Suppression, User
from models.direct import Direct

ADD = Direct(insert(Suppression))
ADD_RETURNING = Direct(insert(Suppression).returning(Suppression.id))
EMAILS = Direct(
    select(Suppression.email)
    .where(Suppression.user_id == bindparam("user_id"))
    .order_by(Suppression.email)
)
RENAME = Direct(
    update(Suppression)
    .where(Suppression.id == bindparam("row_id"))
    .values(reason=Suppression.reason + " (seen)")
)


def row(user_id, email, **kw):
    return {
        "user_id": user_id,
        "email": email,
        "domain_id": 0,
        "source": "manual",
        "reason": "test",
        "created_at": datetime(2026, 11, 21, 12, 30, 15, tzinfo=UTC),
        **kw,
    }


def test_rows_written_read_back_as_the_orm_wrote_them(database, user):
    # An aware time in another zone goes through the column type's bind processor (whole
    # seconds: MariaDB's DATETIME keeps no fraction).
    east = datetime(2026, 11, 21, 14, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    with database.transaction() as s:
        ADD.execute(s.connection(), [row(user.id, "a@x.test", created_at=east)])
        ADD.execute(s.connection(), [row(user.id, "b@x.test"), row(user.id, "c@x.test")])
        (new_id,) = ADD_RETURNING.first(s.connection(), row(user.id, "d@x.test"))
    with database.transaction() as s:
        got = {r.email: r for r in s.scalars(select(Suppression))}
        assert sorted(got) == ["a@x.test", "b@x.test", "c@x.test", "d@x.test"]
        assert got["d@x.test"].id == new_id
        assert all(
            r.created_at == datetime(2026, 11, 21, 12, 30, 15, tzinfo=UTC) for r in got.values()
        )
        assert [e for (e,) in EMAILS.all(s.connection(), {"user_id": user.id})] == sorted(got)
        # A literal of the statement itself (" (seen)") needs no value in the row.
        RENAME.execute(s.connection(), [{"row_id": new_id}])
    with database.transaction() as s:
        assert s.get(Suppression, new_id).reason == "test (seen)"


def test_a_transaction_begins_and_rolls_back_as_with_execute(database, user):
    with database.engine.connect() as conn:
        ADD.execute(conn, [row(user.id, "gone@x.test")])
        assert conn.in_transaction()
        conn.rollback()
    with database.engine.begin() as conn:
        assert EMAILS.all(conn, {"user_id": user.id}) == []


def test_database_errors_come_out_as_sqlalchemy_errors_and_the_connection_goes_on(database, user):
    with database.transaction() as s:
        ADD.execute(s.connection(), [row(user.id, "twice@x.test")])
    with pytest.raises(IntegrityError) as caught, database.transaction() as s:
        ADD.execute(s.connection(), [row(user.id, "twice@x.test")])
    assert "[SQL parameters hidden" in str(caught.value)  # they carry message content
    with database.transaction() as s:
        ADD.execute(s.connection(), [row(user.id, "after@x.test")])
        emails = [e for (e,) in EMAILS.all(s.connection(), {"user_id": user.id})]
    assert emails == ["after@x.test", "twice@x.test"]


def test_what_it_cannot_do_is_refused_when_compiled(database, user):
    incomplete = row(user.id, "x@x.test")
    del incomplete["created_at"]  # the column has a Python-side default
    with database.engine.begin() as conn:
        with pytest.raises(ValueError, match="created_at"):
            ADD.execute(conn, [incomplete])
        with pytest.raises(InvalidRequestError, match="user_id"):
            EMAILS.all(conn, {})
        with pytest.raises(ValueError, match="expanding"):
            since = datetime(2026, 11, 21, tzinfo=UTC)
            LISTED.execute(conn, [{"emails": ["a@x.test"], "since": since}] * 2)


LISTED = Direct(
    select(Suppression.email, Suppression.created_at)
    .where(Suppression.email.in_(bindparam("emails", expanding=True)))
    .where(Suppression.created_at >= bindparam("since"))
    .order_by(Suppression.email)
)


def test_in_lists_are_rendered_for_each_execution(database, user):
    with database.transaction() as s:
        ADD.execute(s.connection(), [row(user.id, f"{n}@x.test") for n in "abc"])
    since = datetime(2026, 11, 21, tzinfo=UTC)
    with database.engine.begin() as conn:
        for wanted in (["a@x.test"], ["c@x.test", "a@x.test", "z@x.test"], []):
            found = LISTED.all(conn, {"emails": wanted, "since": since})
            assert [email for email, _ in found] == sorted(set(wanted) - {"z@x.test"})
        later = since + timedelta(days=1)  # the time goes through its bind processor
        assert LISTED.all(conn, {"emails": ["a@x.test"], "since": later}) == []


def test_mapping_reads_values_by_their_column_types(database, user):
    read = Direct(
        select(User.username.label("name"), User.enabled, Suppression.created_at)
        .join(Suppression, Suppression.user_id == User.id)
        .where(Suppression.email == bindparam("email"))
    )
    with database.transaction() as s:
        ADD.execute(s.connection(), [row(user.id, "typed@x.test")])
    with database.engine.begin() as conn:
        got = read.mapping(conn, {"email": "typed@x.test"})
        assert read.mapping(conn, {"email": "nobody@x.test"}) is None
    assert got == {
        "name": user.username,
        "enabled": True,
        "created_at": datetime(2026, 11, 21, 12, 30, 15, tzinfo=UTC),
    }
    assert type(got["enabled"]) is bool
