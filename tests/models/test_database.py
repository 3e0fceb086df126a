"""The SQLite engines of models/database.py: one database whichever way a transaction
begins, and the writers' lock let go however a transaction ends."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from commands.users import create_user
from models import Database, RateCounter, User
from models.database import WriterQueue
from models.migrate import upgrade


@pytest.fixture(params=["file", "memory"])
def sqlite_db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}" if request.param == "file" else "sqlite://"
    db = Database(url)
    upgrade(db.engine)
    yield db
    db.dispose()


def count(db: Database) -> tuple[int, int]:
    """Users seen by a read transaction and by a single read statement."""
    with db.transaction(readonly=True) as s:
        read = s.scalar(select(func.count()).select_from(User))
    with db.read_connection() as conn:
        single = conn.scalar(select(func.count()).select_from(User))
    return read, single


def test_reads_see_what_writes_committed(sqlite_db):
    with sqlite_db.transaction() as s:
        create_user(s, "alice", "correct horse battery", "")
    assert count(sqlite_db) == (1, 1)
    with pytest.raises(RuntimeError), sqlite_db.transaction() as s:
        create_user(s, "bob", "correct horse battery", "")
        raise RuntimeError("rolled back")
    assert count(sqlite_db) == (1, 1)


def test_the_write_lock_is_let_go_after_commit_rollback_and_error(sqlite_db):
    for _ in range(3):
        with sqlite_db.transaction() as s:
            create_user(s, f"u{_}", "correct horse battery", "")
        with pytest.raises(RuntimeError), sqlite_db.transaction() as s:
            s.scalar(select(func.count()).select_from(User))
            raise RuntimeError("rolled back")
        with pytest.raises(Exception), sqlite_db.transaction() as s:  # noqa: B017 - any
            create_user(s, "u0", "correct horse battery", "")  # a duplicate name
            s.flush()
    # Another thread can still write: nothing kept the lock.
    done = threading.Event()

    def write():
        with sqlite_db.transaction() as s:
            create_user(s, "late", "correct horse battery", "")
        done.set()

    if sqlite_db.url != "sqlite://":  # in memory, each thread has a database of its own
        worker = threading.Thread(target=write)
        worker.start()
        worker.join(10)
        assert done.is_set()
        assert count(sqlite_db) == (4, 4)


def test_a_writer_waits_for_another_process_holding_the_write_lock(tmp_path):
    """Write connections have a busy timeout of 0: BEGIN IMMEDIATE is retried in short steps
    while another process (here a connection of its own) holds the lock, then goes ahead."""
    db = Database(f"sqlite:///{tmp_path / 'one.db'}")
    upgrade(db.engine)
    other = sqlite3.connect(tmp_path / "one.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO rate_counters (bucket, window_start, hits) VALUES ('b', 0, 1)")
    threading.Timer(0.3, other.commit).start()
    started = time.monotonic()
    try:
        with db.transaction() as s:
            create_user(s, "waited", "correct horse battery", "")
        assert time.monotonic() - started >= 0.25
        assert count(db) == (1, 1)
        with db.read_connection() as conn:
            assert conn.scalar(select(func.count()).select_from(RateCounter)) == 1
    finally:
        other.close()
        db.dispose()


def _queue_is_free(path) -> bool:
    """Whether nobody holds the writers' lock file (tried on a descriptor of its own)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _descriptors_of(path) -> int:
    """How many of this process's open descriptors are on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor that listed the folder, closed
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def test_a_write_transaction_holds_the_writers_lock_file_until_it_ends(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'one.db'}")
    upgrade(db.engine)
    queue = tmp_path / "one.db-writers"
    try:
        with db.transaction() as s:
            create_user(s, "held", "correct horse battery", "")
            s.flush()
            assert not _queue_is_free(queue)
        assert _queue_is_free(queue)
        with pytest.raises(RuntimeError), db.transaction() as s:
            s.scalar(select(func.count()).select_from(User))
            assert not _queue_is_free(queue)
            raise RuntimeError("rolled back")
        assert _queue_is_free(queue)
        # Reads take no part in it.
        with db.transaction(readonly=True) as s:
            s.scalar(select(func.count()).select_from(User))
            assert _queue_is_free(queue)
        # Disposing of the database closes the lock file's descriptor; writing opens it again.
        assert _descriptors_of(queue) == 1
        db.dispose()
        assert _descriptors_of(queue) == 0
        with db.transaction() as s:
            create_user(s, "again", "correct horse battery", "")
            s.flush()
            assert not _queue_is_free(queue)
        assert _queue_is_free(queue)
    finally:
        db.dispose()


def test_a_writer_sleeps_until_a_process_holding_the_writers_lock_dies(tmp_path):
    """Another process holds the lock file (and never lets go): the writer waits in flock,
    and goes ahead when the kernel drops the lock of the killed process."""
    db = Database(f"sqlite:///{tmp_path / 'one.db'}")
    upgrade(db.engine)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / 'one.db-writers')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        threading.Timer(0.3, holder.send_signal, args=(signal.SIGKILL,)).start()
        started = time.monotonic()
        with db.transaction() as s:
            create_user(s, "after", "correct horse battery", "")
        assert time.monotonic() - started >= 0.25
        assert count(db) == (1, 1)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        db.dispose()


def test_a_forked_process_takes_the_writers_lock_on_a_descriptor_of_its_own(tmp_path):
    """After fork, the child opens the lock file again: a descriptor inherited from the
    parent shares the parent's lock, and would let both in at once."""
    queue = WriterQueue(str(tmp_path / "one.db-writers"))
    queue.enter()
    queue.leave()
    queue.enter()  # the parent holds the lock (on the descriptor it opened) while forking
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        started = time.monotonic()
        queue.enter()
        queue.leave()
        os._exit(0 if time.monotonic() - started >= 0.25 else 1)
    time.sleep(0.4)
    queue.leave()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_closing_the_writers_queue_leaves_a_held_lock_to_leave(tmp_path):
    path = tmp_path / "one.db-writers"
    queue = WriterQueue(str(path))
    queue.enter()
    queue.close()  # a dispose in the middle of a transaction
    assert not _queue_is_free(path)
    queue.leave()
    assert _queue_is_free(path)
    queue.close()
    assert _descriptors_of(path) == 0
    queue.enter()  # opened again
    assert not _queue_is_free(path)
    queue.leave()
    queue.close()
