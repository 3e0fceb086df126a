"""Database.unit_of_work: one transaction seen as a Core connection and an ORM session made
on first use, committed or rolled back whole whichever of the two began it (every backend)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from commands.users import create_user
from models import RateCounter, User


def core_write(work, bucket: str) -> None:
    work.conn.execute(insert(RateCounter).values(bucket=bucket, window_start=0, hits=1))


def orm_write(work, username: str) -> None:
    create_user(work.session, username, "correct horse battery", "")
    work.session.flush()


def stored(database) -> tuple[list[str], list[str]]:
    with database.transaction(readonly=True) as s:
        buckets = sorted(s.scalars(select(RateCounter.bucket)))
        users = sorted(s.scalars(select(User.username)))
    return buckets, users


def write_both(work, core_first: bool) -> None:
    """A Core row and an ORM row, the one or the other first (who begins the transaction)."""
    steps = [lambda: core_write(work, "b1"), lambda: orm_write(work, "alice")]
    for step in steps if core_first else reversed(steps):
        step()


@pytest.mark.parametrize("core_first", [True, False], ids=["core-first", "session-first"])
def test_core_and_session_writes_commit_together(database, core_first):
    with database.unit_of_work() as work:
        write_both(work, core_first)
    assert stored(database) == (["b1"], ["alice"])


@pytest.mark.parametrize("core_first", [True, False], ids=["core-first", "session-first"])
def test_an_error_rolls_back_both(database, core_first):
    with pytest.raises(RuntimeError), database.unit_of_work() as work:
        write_both(work, core_first)
        raise RuntimeError("rolled back")
    assert stored(database) == ([], [])


def test_a_failing_flush_at_commit_rolls_back_the_core_writes(database):
    with database.unit_of_work() as work:
        orm_write(work, "alice")
    with pytest.raises(IntegrityError), database.unit_of_work() as work:
        core_write(work, "b1")
        # Added but not flushed: the duplicate name fails when the unit of work commits.
        create_user(work.session, "bob", "correct horse battery", "")
        work.session.add(User(username="alice", password_hash="x", email=""))
    assert stored(database) == ([], ["alice"])


def test_a_session_only_unit_of_work_counts_its_events_and_commits(database):
    # The session's own commit hooks run (models/event_counts.py counts ORM events there).
    with database.unit_of_work() as work:
        orm_write(work, "alice")
    with database.unit_of_work(readonly=True) as work:
        assert work.session.scalar(select(func.count()).select_from(User)) == 1


def test_it_begins_at_its_first_statement(database):
    """Open but unused, a unit of work holds no lock: another writer goes ahead (on SQLite,
    where a write transaction takes the database's single write lock)."""
    done = threading.Event()

    def write():
        with database.unit_of_work() as work:
            core_write(work, "other")
        done.set()

    with database.unit_of_work() as work:
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(10)
        assert done.is_set()
        core_write(work, "mine")
    assert stored(database) == (["mine", "other"], [])


def test_after_commit_calls_are_made_once_committed_and_dropped_by_a_rollback(database):
    told: list[tuple[str, list[str]]] = []
    with database.unit_of_work() as work:
        core_write(work, "kept")
        work.after_commit(lambda: told.append(("kept", stored(database)[0])))
        assert told == []  # not before the commit
    assert told == [("kept", ["kept"])]  # the commit is visible to the call
    with pytest.raises(RuntimeError), database.unit_of_work() as work:
        core_write(work, "undone")
        work.after_commit(lambda: told.append(("undone", [])))
        raise RuntimeError("undo")
    assert told == [("kept", ["kept"])]
