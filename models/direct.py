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
(every column with one must be given a value; compiling refuses otherwise). Expanding
parameters (``IN`` lists) are rendered for each execution by SQLAlchemy's
``construct_expanded_state``, in single executions only. ``first`` and ``all`` give the
DBAPI's raw values (read only row ids, counts and strings from them); ``mapping`` gives a
row as a dict by column name (``mappings``: every row), each value read by its column
type's result processor as SQLAlchemy reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

_Row = dict[str, Any]


class Direct:
    """One Core statement, executed on the DBAPI cursor (see the module's docstring)."""

    def __init__(self, statement: Executable):
        self.statement = statement
        self._plans: dict[tuple[Dialect, tuple[str, ...]], _Plan] = {}

    def execute(self, conn: Connection, rows: Sequence[_Row]) -> None:
        """Execute once per row (one row, or ``executemany`` for several)."""
        if not rows:
            return
        plan = self._plan(conn.dialect, rows[0])
        if len(rows) == 1:
            self._run(conn, *plan.bind(rows[0])).close()
        else:
            if plan.expanding:
                raise ValueError("expanding parameters (IN lists) in an executemany")
            self._run(conn, plan.sql, [plan.args(r) for r in rows], many=True).close()

    def first(self, conn: Connection, row: _Row) -> tuple | None:
        """Execute for one row; the first row of its result (RETURNING, SELECT), raw."""
        cursor = self._run(conn, *self._plan(conn.dialect, row).bind(row))
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def all(self, conn: Connection, row: _Row) -> list[tuple]:
        """Execute for one row; every row of its result, raw."""
        cursor = self._run(conn, *self._plan(conn.dialect, row).bind(row))
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def mapping(self, conn: Connection, row: _Row) -> dict[str, Any] | None:
        """Execute a SELECT for one row; its first row by column name, values typed."""
        first = self.first(conn, row)
        return None if first is None else self._plan(conn.dialect, row).typed(first)

    def mappings(self, conn: Connection, row: _Row) -> list[dict[str, Any]]:
        """Execute a SELECT for one row; every row by column name, values typed."""
        plan = self._plan(conn.dialect, row)
        return [plan.typed(raw) for raw in self.all(conn, row)]

    def _plan(self, dialect: Dialect, row: _Row) -> _Plan:
        key = (dialect, tuple(row))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(self.statement, dialect, key[1])
        return plan

    @staticmethod
    def _run(conn: Connection, sql: str, args: Any, many: bool = False):
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

    def __init__(self, statement: Executable, dialect: Dialect, keys: tuple[str, ...]):
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if compiled.insert_prefetch or compiled.update_prefetch:
            missing = [c.key for c in (*compiled.insert_prefetch, *compiled.update_prefetch)]
            raise ValueError(f"give every column a value; these have Python defaults: {missing}")
        self.compiled = compiled
        self.expanding = bool(compiled.post_compile_params)
        self.lists = [compiled.bind_names[bind] for bind in compiled.post_compile_params]
        self._expanded: dict[tuple[int, ...], tuple[str, list]] = {}
        self.sql = compiled.string
        self.positional = compiled.positional
        names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        given = set(keys)
        # (name, bind processor or None, whether the row gives it, the processed constant)
        self.order: list[tuple[str, Any, bool, Any]] = []
        for name in names:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if name in given:
                self.order.append((name, processor, True, None))
            elif bind.callable is None and not bind.required:
                # A literal of the statement itself ("hits + 1").
                value = processor(bind.value) if processor else bind.value
                self.order.append((name, None, False, value))
            else:
                raise ValueError(f"no value for the parameter {name}")
        # The result's columns (a SELECT or RETURNING) and their types' result processors.
        self.columns = [
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in getattr(statement, "selected_columns", ())
        ]
        if len({name for name, _ in self.columns}) != len(self.columns):
            raise ValueError("label the result's columns with names of their own")

    def typed(self, raw: Sequence[Any]) -> dict[str, Any]:
        """A result row by column name, each value read by its type's result processor."""
        return {
            name: processor(value) if processor else value
            for (name, processor), value in zip(self.columns, raw, strict=True)
        }

    def bind(self, row: _Row) -> tuple[str, Any]:
        """The SQL text and the DBAPI parameters for one execution."""
        if not self.expanding:
            return self.sql, self.args(row)
        # The SQL text depends only on the lengths of the lists: rendered once for each.
        lengths = tuple(len(row[name]) for name in self.lists)
        expanded = self._expanded.get(lengths)
        if expanded is None:
            expanded = self._expanded[lengths] = self._expand(row)
        sql, entries = expanded
        values = [
            processor(value) if processor else value
            for processor, value in (
                (processor, row[source][index] if index is not None else row.get(source, constant))
                for _name, source, index, processor, constant in entries
            )
        ]
        if self.positional:
            return sql, values
        return sql, dict(zip((entry[0] for entry in entries), values, strict=True))

    def _expand(self, row: _Row) -> tuple[str, list[tuple[str, str, int | None, Any, Any]]]:
        state = self.compiled.construct_expanded_state(row)
        source = {
            rendered: (name, index)
            for name, names in state.parameter_expansion.items()
            for index, rendered in enumerate(names)
        }
        names = state.positiontup if self.positional else list(state.parameters)
        entries = []
        for name in names or ():
            origin, index = source.get(name, (name, None))
            # (rendered name, the row's key, index in its list, processor, the constant)
            entries.append(
                (name, origin, index, state.processors.get(name), state.parameters[name])
            )
        return state.statement, entries

    def args(self, row: _Row) -> Any:
        values = [
            (processor(row[name]) if processor else row[name]) if given else constant
            for name, processor, given, constant in self.order
        ]
        if self.positional:
            return values
        return dict(zip((entry[0] for entry in self.order), values, strict=True))
