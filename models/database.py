"""The engine and the unit of work: one transaction per command, committed or rolled back whole."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVarTuple

from sqlalchemy import Select, create_engine, event, text
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from core.settings import sqlite_in_memory


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    echo: bool = False,
    durable: bool = True,
    begin: str = "IMMEDIATE",
) -> Engine:
    """An engine set up for Postern on SQLite, PostgreSQL or MariaDB/MySQL.

    ``durable=False`` (SQLite and PostgreSQL) lets commits return before the disk has them,
    for data whose loss in a power cut costs nothing (rate-limit counters); mail is always
    durable. ``begin`` (SQLite) is how the engine's transactions begin: ``IMMEDIATE``
    (writes), ``DEFERRED`` (reads) or ``NONE`` (each statement its own transaction).

    Statement parameters are never shown (``hide_parameters``): not in the log lines of
    ``echo``, nor in the text of a database error, which a logged traceback carries; they
    hold message content, addresses and what is stored of passwords and keys.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not sqlite_in_memory(url) and parsed.database and "uri" not in parsed.query:
            create_private(parsed.database)
        engine = create_engine(
            parsed.set(drivername="sqlite+postern"),
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": 30, "check_same_thread": False},
            postern_begin=begin,
            postern_queue=(
                f"{parsed.database}-writers"
                if begin == "IMMEDIATE" and not sqlite_in_memory(url)
                else None
            ),
        )
        _configure_sqlite(engine, durable, begin)
        return engine
    recycle = -1  # SQLAlchemy's default: never
    if backend in ("mysql", "mariadb"):
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        recycle = 3600
    engine = create_engine(
        parsed,
        echo=echo,
        hide_parameters=True,
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=recycle,
    )
    _ping_when_idle(engine)
    if backend == "postgresql" and not durable:

        @event.listens_for(engine, "connect")
        def _no_wal_wait(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SET synchronous_commit TO OFF")
            finally:
                cur.close()
            dbapi_conn.commit()

    return engine


def create_private(path: str) -> None:
    """Create the SQLite database file readable and writable by its owner only (0600), as
    ``postern.key`` is, when it does not exist yet; an existing file keeps its mode. SQLite
    gives the -wal and -shm files it makes beside it the database's mode; the -writers
    lock file is created 0600 (``WriterQueue``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a directory that is not there or not writable: SQLite says so itself
    os.close(fd)


IDLE_PING = 5.0  # seconds a pooled connection may rest before it is tested on checkout


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection on checkout only when it has rested a while.

    ``pool_pre_ping`` costs a round trip on every checkout, several per request; a
    connection returned moments ago is as good as the last statement it ran. One that
    fails the test is dropped and another taken (SQLAlchemy's pessimistic disconnect
    handling); a server restart between two busy moments fails at most the statements
    then in flight, and the pool is renewed.
    """

    @event.listens_for(engine, "checkin")
    def _rested_from(_dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["postern_checkin"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _test_if_rested(
        dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        since = record.info.get("postern_checkin")
        if since is None or time.monotonic() - since < IDLE_PING:
            return
        try:
            _ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection failed its test: {exc}") from exc


def _ping(dbapi_conn: DBAPIConnection) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("SELECT 1")
    cursor.close()
    dbapi_conn.rollback()


def _configure_sqlite(engine: Engine, durable: bool = True, begin: str = "IMMEDIATE") -> None:
    """WAL, durable commits (or not), foreign keys and a busy timeout on every connection.

    Connections of an engine whose transactions begin IMMEDIATE wait for the write lock in
    ``_begin_immediate`` and hold it until they end, so they never wait in SQLite's busy
    handler: their busy timeout is 0 (no PRAGMA to set and reset around every BEGIN).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # the dialect begins transactions itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={0 if begin == 'IMMEDIATE' else 30000}")
        cur.close()


class SQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite, with each engine's transactions begun one way by the dialect itself.

    pysqlite's own transaction handling starts transactions late; Postern turns it off and
    an engine begins every transaction with BEGIN IMMEDIATE (writes: a transaction never
    has to upgrade its lock and fail with SQLITE_BUSY), BEGIN DEFERRED (reads) or nothing
    (each statement its own transaction). These are the dialect's begin, commit and
    rollback steps rather than engine events: an engine with connection events dispatches
    several of them around every statement, which costs more than SQLite running it.
    Registered as ``sqlite+postern``; ``make_engine`` uses it for every SQLite URL.
    """

    supports_statement_cache = True

    def __init__(
        self,
        postern_begin: str = "IMMEDIATE",
        postern_queue: str | None = None,
        **kwargs: Any,  # pysqlite's own options, passed on as they are
    ) -> None:
        super().__init__(**kwargs)
        if postern_begin not in ("IMMEDIATE", "DEFERRED", "NONE"):
            raise ValueError(f"unknown way to begin a transaction: {postern_begin}")
        self.postern_begin = postern_begin
        # SQLite has one writer at a time: this engine's threads queue on this lock, taken
        # at BEGIN IMMEDIATE and let go at commit or rollback, rather than in SQLite's busy
        # handler. ``_writer`` is the DBAPI connection holding it.
        self._write_lock = threading.Lock()
        self._writer: object | None = None
        # And Postern's processes queue on a lock file beside the database (see WriterQueue).
        self.writer_queue = WriterQueue(postern_queue) if postern_queue else None

    def do_begin(self, dbapi_connection: PoolProxiedConnection) -> None:
        if self.postern_begin == "NONE":
            return
        if self.postern_begin == "DEFERRED":
            dbapi_connection.cursor().execute("BEGIN DEFERRED")
            return
        if not self._write_lock.acquire(timeout=30):
            raise sqlite3.OperationalError("database is locked (30 s waiting for a writer)")
        self._writer = _driver(dbapi_connection)
        try:
            if self.writer_queue is not None:
                self.writer_queue.enter()
            _begin_immediate(dbapi_connection)
        except BaseException:
            self._release(dbapi_connection)
            raise

    def do_commit(self, dbapi_connection: PoolProxiedConnection) -> None:
        try:
            dbapi_connection.commit()
        finally:
            self._release(dbapi_connection)

    def do_rollback(self, dbapi_connection: PoolProxiedConnection) -> None:
        try:
            dbapi_connection.rollback()
        finally:
            self._release(dbapi_connection)

    def _release(self, dbapi_connection: PoolProxiedConnection) -> None:
        if self._writer is not None and self._writer is _driver(dbapi_connection):
            self._writer = None
            if self.writer_queue is not None:
                self.writer_queue.leave()
            self._write_lock.release()


class WriterQueue:
    """An exclusive ``flock`` on a file beside the database, held by the process whose
    transaction holds SQLite's write lock (taken before BEGIN IMMEDIATE, let go after the
    commit or rollback).

    Without it, a process waiting for the write lock can only try BEGIN IMMEDIATE again
    and again (SQLite tells it "busy", and nothing when the lock comes free): under load,
    a sixth of four API processes' samples were in those tries and the sleeps between
    them, and the lock sat free while its next writer slept. Waiting in ``flock``, a
    process sleeps in the kernel until the holder lets go, for as long as the holder's
    transaction lasts (Postern's are short; gunicorn restarts a request stuck past
    ``http.timeout``). The kernel drops the lock of a process that dies. Writers that do
    not take it (another program, the sqlite3 shell) are still waited for by BEGIN
    IMMEDIATE's retries. Each process opens the file itself: a descriptor inherited
    across ``fork`` would share its lock with the parent.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid: int | None = None
        self._held = False

    def enter(self) -> None:
        fd = self._fd
        if fd is None or self._pid != os.getpid():
            fd = self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._held = True

    def leave(self) -> None:
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close this process's descriptor (``Database.dispose``); the next ``enter`` opens
        the file again. A lock still held is left alone, to be let go by ``leave``."""
        if self._held:
            return
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None


def _driver(connection: PoolProxiedConnection) -> object:
    """The sqlite3 connection behind a pool's proxy (or the connection itself)."""
    driver: object = getattr(connection, "dbapi_connection", connection)
    return driver


registry.register("sqlite.postern", __name__, "SQLiteDialect")

Columns = TypeVarTuple("Columns")  # the column types of a Select


def _begin_immediate(dbapi_conn: PoolProxiedConnection, timeout: float = 30.0) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write lock in short steps.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries, so a waiter
    often sleeps far longer than the few milliseconds the lock is held; this retries after
    0.2 ms, doubling up to 5 ms. (The connection's busy timeout is 0: each try fails at
    once.)
    """
    cur = dbapi_conn.cursor()
    try:
        deadline = time.monotonic() + timeout
        delay = 0.0002
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.005)
    finally:
        cur.close()


class Database:
    """Owns the engine and hands out sessions, each inside one transaction."""

    def __init__(
        self, url: str, *, pool_size: int = 5, echo: bool = False, durable: bool = True
    ) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, echo=echo, durable=durable)
        self.backend = self.engine.dialect.name
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._own_engines = self.backend == "sqlite" and not sqlite_in_memory(url)
        if self._own_engines:
            # An engine (and a pool) for each way of beginning; see SQLiteDialect.
            self._read_engine = make_engine(url, echo=echo, durable=durable, begin="DEFERRED")
            self._autocommit_engine = make_engine(url, echo=echo, durable=durable, begin="NONE")
        elif self.backend == "sqlite":
            # In memory, every engine would have a database of its own: one engine, whose
            # transactions all begin IMMEDIATE.
            self._read_engine = self._autocommit_engine = self.engine
        else:
            self._read_engine = self.engine
            self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)

    def skip_locked(self, query: Select[*Columns]) -> Select[*Columns]:
        """``query`` locking the rows it returns and skipping rows another transaction has
        locked (PostgreSQL, MariaDB); on SQLite the write transaction's lock does that."""
        return query if self.backend == "sqlite" else query.with_for_update(skip_locked=True)

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on any error.

        The transaction begins at its first statement (on SQLite, a write transaction takes
        the write lock then), so work done before touching the session holds no lock.
        """
        factory = self._reader if readonly else self._writer
        with factory() as session, session.begin():
            yield session

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[UnitOfWork]:
        """One transaction, committed on success and rolled back on any error, seen as a Core
        connection and (when first asked for) an ORM session joined to it.

        Like ``transaction``, it begins at its first statement. Hot paths use the connection
        alone and never pay for a session.
        """
        engine = self._read_engine if readonly else self.engine
        factory = self._reader if readonly else self._writer
        with engine.connect() as conn:
            work = UnitOfWork(conn, factory)
            try:
                yield work
                work.commit()
            except BaseException:
                work.rollback()
                raise

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A Core connection for reads on hot paths (no ORM session). On SQLite and PostgreSQL
        each statement is its own transaction: read what must be consistent in one."""
        if self.backend in ("postgresql", "sqlite"):
            # Each statement its own snapshot: no BEGIN and ROLLBACK (round trips, on
            # PostgreSQL; psycopg switches to autocommit without asking the server).
            with self._autocommit_engine.connect() as conn:
                yield conn
            return
        with self._read_engine.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()

    @contextmanager
    def counter_connection(self) -> Iterator[Connection]:
        """A connection for atomic statements on counters, each its own transaction
        (PostgreSQL: no BEGIN and COMMIT round trips; SQLite: no BEGIN IMMEDIATE, the
        statement takes the write lock itself); a write transaction on MariaDB."""
        if self.backend in ("postgresql", "sqlite"):
            with self._autocommit_engine.connect() as conn:
                yield conn
            return
        with self.engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        queue = getattr(self.engine.dialect, "writer_queue", None)  # SQLite on a file
        if queue is not None:
            queue.close()
        if self._own_engines:
            self._read_engine.dispose()
            self._autocommit_engine.dispose()


class UnitOfWork:
    """One transaction on one connection: ``conn`` for Core (and Direct) statements, and
    ``session``, an ORM session on the same connection, made the first time it is asked for.

    Whichever begins the transaction first, both work in it: a session that finds the
    connection in a transaction joins it, and a session that begins it is committed (or
    rolled back) by ``commit`` (``rollback``), after it has flushed what it holds.

    ``after_commit`` keeps calls to make once the transaction has committed (what is told
    of it, e.g. to the metrics); a rollback drops them.
    """

    __slots__ = ("conn", "_factory", "_session", "_after")

    def __init__(self, conn: Connection, factory: sessionmaker[Session] | None = None) -> None:
        self.conn = conn
        self._factory = factory
        self._session: Session | None = None
        self._after: list[Callable[[], None]] = []

    def after_commit(self, call: Callable[[], None]) -> None:
        """Call ``call`` once this unit of work has committed (never, if it rolls back)."""
        self._after.append(call)

    @classmethod
    def of(cls, session: Session) -> UnitOfWork:
        """The unit of work of an open session (its connection, and the session itself)."""
        work = cls(session.connection())
        work._session = session
        return work

    @property
    def session(self) -> Session:
        if self._session is None:
            if self._factory is None:  # pragma: no cover - ``of`` always sets the session
                raise RuntimeError("unit of work without a session factory")
            self._session = self._factory(bind=self.conn)
        return self._session

    def commit(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.commit()  # flushes; commits the transaction if the session began it
            finally:
                session.close()
        if self.conn.in_transaction():
            self.conn.commit()
        after, self._after = self._after, []
        for call in after:
            call()

    def rollback(self) -> None:
        self._after = []
        session, self._session = self._session, None
        if session is not None:
            session.close()  # rolls back what the session began; the rest just below
        if self.conn.in_transaction():
            self.conn.rollback()
