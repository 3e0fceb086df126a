"""Structured logging: one JSON object per line, and one line per HTTP request.

Database errors are logged without the values their text may quote: PostgreSQL's DETAIL
(``Key (token_digest)=(…) already exists``) and MariaDB's messages (``Duplicate entry '…'``)
carry them, and the engines already hide statement parameters (``hide_parameters``). Such an
error is shown by its class, its code and its statement; SQLite's texts, which name tables
and columns but never values, are kept."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import TextIO

from sqlalchemy.exc import DBAPIError

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


_DRIVERS = ("psycopg", "psycopg2", "pymysql", "MySQLdb", "mysql", "sqlite3")
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def database_error_text(exc: BaseException) -> str | None:
    """What a log may show of a database error (None: ``exc`` is not one)."""
    orig: BaseException | None = exc.orig if isinstance(exc, DBAPIError) else exc
    if orig is None or type(orig).__module__.split(".")[0] not in _DRIVERS:
        return None
    kind = f"{type(orig).__module__}.{type(orig).__name__}"
    if type(orig).__module__ == "sqlite3":
        text = f"({kind}) {orig}"
    else:
        code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig.args else "")
        text = f"({kind}) code {code} (the database's text is not logged: it may quote values)"
    if isinstance(exc, DBAPIError) and exc.statement:
        text += f"\n[SQL: {exc.statement}]"
    return text


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def safe_exception(ei: ExcInfo) -> str:
    """A traceback, database errors' texts replaced by ``database_error_text``."""
    text = "".join(traceback.format_exception(*ei)).rstrip("\n")
    for exc in _chain(ei[1]):
        shown = database_error_text(exc)
        quoted = str(exc)
        if shown is not None and quoted:
            text = text.replace(quoted, shown)
    return text


def safe_message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, a database error among its arguments shown safely."""
    args = record.args
    if isinstance(args, tuple) and any(isinstance(a, BaseException) for a in args):
        safe = tuple(
            (database_error_text(a) or a) if isinstance(a, BaseException) else a for a in args
        )
        return str(record.msg) % safe
    return record.getMessage()


class JSONFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        return safe_exception(ei)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": safe_message(record),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        return safe_exception(ei)

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        line = (
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.levelname} {record.name}: "
            f"{safe_message(record)}" + (f" {extra}" if extra else "")
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class PosternHandler(logging.StreamHandler[TextIO]):
    """The handler configure_logging adds, told apart from any other of the same logger."""


def formatter_for(fmt: str) -> logging.Formatter:
    return JSONFormatter() if fmt == "json" else TextFormatter()


def configure_logging(level: str, fmt: str) -> None:
    """Send Postern's log lines to stderr in the configured format."""
    root = logging.getLogger("postern")
    root.setLevel(level)
    root.propagate = False
    if not any(isinstance(h, PosternHandler) for h in root.handlers):
        root.addHandler(PosternHandler(sys.stderr))
    for h in root.handlers:
        if isinstance(h, PosternHandler):
            h.setFormatter(formatter_for(fmt))
