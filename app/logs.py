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

# The longest log line written, in characters: a message, a field or a traceback that would
# make it longer is cut in its middle (its beginning and its end are kept), so no request,
# however hostile, can write more than this per line.
MAX_LINE = 8192
MAX_FIELD = 1024  # the most of one field (the message, an extra value)
MAX_EXC = 4096  # the most of a traceback

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


def bounded(text: str, limit: int) -> str:
    """``text``, cut in its middle to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    note = f" ...[{len(text) - limit} characters cut]... "
    keep = max(limit - len(note), 0)
    return text[: keep // 2] + note + text[len(text) - (keep - keep // 2) :]


def _field(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    return bounded(str(value), MAX_FIELD)


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        k: _field(v)
        for k, v in vars(record).items()
        if k not in _STANDARD and not k.startswith("_")
    }


class JSONFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        return safe_exception(ei)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": bounded(safe_message(record), MAX_FIELD),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = bounded(self.formatException(record.exc_info), MAX_EXC)
        line = json.dumps(out)  # ASCII: escapes can make it up to 6 times the characters
        if len(line) > MAX_LINE:
            for key in out:
                if isinstance(out[key], str) and key not in ("ts", "level", "logger"):
                    out[key] = bounded(str(out[key]), 120)
            out["truncated"] = True
            line = json.dumps(out)
        if len(line) > MAX_LINE:  # many fields: the first ones only
            keep = ("ts", "level", "logger", "msg", "request_id", "truncated")
            line = json.dumps({k: v for k, v in out.items() if k in keep})
        return line


class TextFormatter(logging.Formatter):
    """One line per record (line breaks in fields written as \\n), then the traceback, if
    any, on the lines after it."""

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        return safe_exception(ei)

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = (
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.levelname} {record.name}: "
            f"{bounded(safe_message(record), MAX_FIELD)}" + (f" {extra}" if extra else "")
        )
        line = bounded(_one_line(line), MAX_LINE - MAX_EXC - 1)
        if record.exc_info:
            line += "\n" + bounded(self.formatException(record.exc_info), MAX_EXC)
        return line


def _one_line(text: str) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
