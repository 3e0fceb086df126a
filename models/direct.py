"""Core statements executed straight on the DBAPI cursor, for the few statements of hot paths.

SQLAlchemy's execution layer (execution context, parameter processing, result set-up,
events) costs several times what SQLite takes to run a small INSERT, and accepting a message
runs several of them. A ``Direct`` statement is still written with Core and compiled by
SQLAlchemy, once per dialect and set of columns: its SQL text, the order of its
parameters and each type's bind processor (UTC timestamps, for one) are SQLAlchemy's own.
Executing it then hands the processed parameters to the DBAPI cursor of the connection's
current transaction.

The same behaviour as ``Connection.execute`` where it matters: a transaction is begun
if none is, DBAPI errors come out as SQLAlchemy's (``IntegrityError`` and the other
``DBAPIError`` classes, parameters hidden: they carry message content), and a connection
the error shows to be lost is invalidated. What it leaves out: Python-side column defaults
(every column with one must be given a value; compiling refuses otherwise). The SQL text
and parameters are SQLAlchemy's ``construct_expanded_state``, rendered once per set of
lengths of the expanding parameters (``IN`` lists; single executions only). ``first``
and ``all`` give the DBAPI's raw values (read only row ids, counts and strings from them);
``mapping`` gives a row as a dict by column name (``mappings``: every row), each value
read by its column type's result processor as SQLAlchemy reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

# Database values are Any here, as in SQLAlchemy's own rows: each statement's columns have
# types of their own, and the DBAPI's raw values are not typed at all.
Params = Mapping[str, Any]  # one execution's values, by bind name
RawRow = tuple[Any, ...]  # a result row as the DBAPI gives it
Row = dict[str, Any]  # a result row by column name, each value read by its column's type
Processor = Callable[[Any], Any]  # a bind or result processor of SQLAlchemy's


class Direct:
    """One Core statement, executed on the DBAPI cursor (see the module's docstring)."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[tuple[Dialect, tuple[str, ...]], _Plan] = {}

    def execute(self, conn: Connection, rows: Sequence[Params]) -> None:
        """Execute once per row (one row, or ``executemany`` for several)."""
        if not rows:
            return
        plan = self._plan(conn.dialect, rows[0])
        if len(rows) == 1:
            self._run(conn, *plan.bind(rows[0])).close()
        else:
            self._run(conn, *plan.bind_many(rows), many=True).close()

    def first(self, conn: Connection, row: Params) -> RawRow | None:
        """Execute for one row; the first row of its result (RETURNING, SELECT), raw."""
        return self._first(conn, self._plan(conn.dialect, row), row)

    def all(self, conn: Connection, row: Params) -> list[RawRow]:
        """Execute for one row; every row of its result, raw."""
        cursor = self._run(conn, *self._plan(conn.dialect, row).bind(row))
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def mapping(self, conn: Connection, row: Params) -> Row | None:
        """Execute a SELECT for one row; its first row by column name, values typed."""
        plan = self._plan(conn.dialect, row)
        first = self._first(conn, plan, row)
        return None if first is None else plan.typed(first)

    def mappings(self, conn: Connection, row: Params) -> list[Row]:
        """Execute a SELECT for one row; every row by column name, values typed."""
        plan = self._plan(conn.dialect, row)
        return [plan.typed(raw) for raw in self.all(conn, row)]

    def _first(self, conn: Connection, plan: _Plan, row: Params) -> RawRow | None:
        cursor = self._run(conn, *plan.bind(row))
        try:
            first: RawRow | None = cursor.fetchone()
            return first
        finally:
            cursor.close()

    def _plan(self, dialect: Dialect, row: Params) -> _Plan:
        key = (dialect, tuple(row))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(self.statement, dialect, key[1])
        return plan

    @staticmethod
    def _run(conn: Connection, sql: str, args: Any, many: bool = False) -> DBAPICursor:
        if not conn.in_transaction():
            conn.begin()  # as Connection.execute begins one
        cursor = conn.connection.cursor()
        try:
            if many:
                cursor.executemany(sql, args)
            else:
                cursor.execute(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                sql,
                args,
                exc,
                conn.dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=lost,
                dialect=conn.dialect,
                ismulti=many,
            ) from exc
        return cursor


class _Plan:
    """A statement compiled for one dialect and set of given columns."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SELECT, INSERT, UPDATE or DELETE: {statement!r}")
        if compiled.insert_prefetch or compiled.update_prefetch:
            missing = [c.key for c in (*compiled.insert_prefetch, *compiled.update_prefetch)]
            raise ValueError(f"give every column a value; these have Python defaults: {missing}")
        self.compiled = compiled
        self.positional = compiled.positional
        self._processors = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }
        # The IN lists: the SQL text depends only on their lengths, rendered once for each.
        self.lists = [compiled.bind_names[bind] for bind in compiled.post_compile_params]
        self._rendered: dict[tuple[int, ...], tuple[str, list[_Entry]]] = {}
        # The result's columns (a SELECT or RETURNING) and their types' result processors.
        self.columns = [
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in getattr(statement, "selected_columns", ())
        ]
        if len({name for name, _ in self.columns}) != len(self.columns):
            raise ValueError("label the result's columns with names of their own")

    def typed(self, raw: Sequence[Any]) -> Row:
        """A result row by column name, each value read by its type's result processor."""
        return {
            name: processor(value) if processor else value
            for (name, processor), value in zip(self.columns, raw, strict=True)
        }

    def bind(self, row: Params) -> tuple[str, Any]:
        """The SQL text and the DBAPI parameters for one execution."""
        sql, entries = self._render(row)
        return sql, self._args(entries, row)

    def bind_many(self, rows: Sequence[Params]) -> tuple[str, list[Any]]:
        """The SQL text and the DBAPI parameters of each row, for an executemany."""
        if self.lists:
            raise ValueError("expanding parameters (IN lists) in an executemany")
        sql, entries = self._render(rows[0])
        return sql, [self._args(entries, row) for row in rows]

    def _render(self, row: Params) -> tuple[str, list[_Entry]]:
        lengths = tuple(len(row[name]) for name in self.lists)
        rendered = self._rendered.get(lengths)
        if rendered is None:
            rendered = self._rendered[lengths] = self._expand(row)
        return rendered

    def _expand(self, row: Params) -> tuple[str, list[_Entry]]:
        """SQLAlchemy's rendering for these list lengths: the SQL text, and for each DBAPI
        parameter where its value comes from and its bind processor."""
        state = self.compiled.construct_expanded_state(row)  # a value missing fails here
        source = {
            rendered: (name, index)
            for name, names in state.parameter_expansion.items()
            for index, rendered in enumerate(names)
        }
        names = state.positiontup if self.positional else list(state.parameters)
        entries: list[_Entry] = []
        for name in names or ():
            found, index = source.get(name, (name, None))
            # None: a literal of the statement itself ("hits + 1")
            key = found if found in row else None
            # The rendered members of an IN list have processors of their own.
            processor = state.processors.get(name) or self._processors.get(name)
            entries.append((name, key, index, processor, state.parameters[name]))
        return state.statement, entries

    def _args(self, entries: list[_Entry], row: Params) -> Any:
        values = []
        for _name, key, index, processor, constant in entries:
            value = constant if key is None else row[key] if index is None else row[key][index]
            values.append(processor(value) if processor else value)
        if self.positional:
            return values
        return dict(zip((entry[0] for entry in entries), values, strict=True))


# A DBAPI parameter: its rendered name, the row's key giving its value (None: the constant),
# the index in that key's list (IN lists), its bind processor, the statement's constant.
_Entry = tuple[str, str | None, int | None, Processor | None, Any]
