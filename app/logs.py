"""Structured logging: one JSON object per line, and one line per HTTP request."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        line = (
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.levelname} {record.name}: "
            f"{record.getMessage()}" + (f" {extra}" if extra else "")
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
