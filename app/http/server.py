"""Running the HTTP API under gunicorn, configured from Postern's settings."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from core.settings import Config

if TYPE_CHECKING:
    from flask import Flask


class QuietAccessLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """Gunicorn's logger without its access log: Postern logs each request itself (without
    query strings), and gunicorn would otherwise format an access line per request only to
    drop it."""

    def access(self, resp: object, req: object, environ: object, request_time: object) -> None:
        return None


def worker_class(threads: int) -> str:
    """Gunicorn's worker class for ``threads`` threads a process.

    One thread: ``sync``, which reads, answers and closes each connection in turn. A
    ``gthread`` worker with a single thread passes every request from its poller to that
    thread and back, and measured about a tenth more CPU per accepted message; what it
    adds, keep-alive, lets idle connections wait without holding the thread. Several
    threads: ``gthread``, with keep-alive.
    """
    return "sync" if threads == 1 else "gthread"


def worker_count(config: Config) -> int:
    """``http.workers``, or when it is 0: one process per core on SQLite, two on PostgreSQL
    and MariaDB.

    On SQLite a request never waits for a database server, only for the disk and the one
    write lock, so a process per core keeps the cores busy. More processes only take turns
    on them: on two cores, two workers accepted about a third more mail than four, at a
    fifth less CPU per message (each switch between processes costs caches, and each
    commit by another process makes SQLite read its pages again). A database on the
    network keeps requests waiting for answers, which other processes fill.
    """
    if config.http.workers:
        return config.http.workers
    cores = os.cpu_count() or 1
    return cores if config.is_sqlite else 2 * cores


def control_socket_settings(config: Config) -> dict[str, object]:
    """gunicorn's control socket: at ``http.control_socket``, or none when it is empty."""
    path = config.http.control_socket
    if not path:
        return {"control_socket_disable": True}
    return {"control_socket": os.path.abspath(path), "control_socket_disable": False}


def _forget_metrics_of(_server: object, worker: object) -> None:
    """gunicorn's child_exit: the metrics of a worker process that ended stop counting as
    live (its counters stay in the sums)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(getattr(worker, "pid", 0))  # type: ignore[no-untyped-call]


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
    """Gunicorn with Postern's settings; each worker builds its own app (and engine) after fork."""

    def __init__(self, config: Config, companions: list[list[str]] | None = None) -> None:
        self.postern_config = config
        # Commands run beside the API (the delivery worker under `postern serve`): started
        # when gunicorn is ready, stopped when it exits.
        self.companions = companions or []
        self._children: list[subprocess.Popen[bytes]] = []
        super().__init__()

    def load_config(self) -> None:
        c = self.postern_config
        fmt = "postern_json" if c.log.format == "json" else "postern_text"
        settings: dict[str, object] = {
            "bind": [f"{c.http.host}:{c.http.port}"],
            "workers": worker_count(c),
            "threads": c.http.threads,
            "worker_class": worker_class(c.http.threads),
            "timeout": c.http.timeout,
            "graceful_timeout": 10,
            "accesslog": None,  # Postern logs each request itself, without query strings
            "logger_class": QuietAccessLogger,
            "loglevel": c.log.level.lower(),
            "proc_name": "postern",
            # gunicorn's control socket defaults to one path per user
            # (~/.gunicorn/gunicorn.ctl), which a second instance on the host would take
            # over: each instance has its own (http.control_socket), or none.
            **control_socket_settings(c),
            "logconfig_dict": {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {
                    "postern_json": {"()": "app.logs.JSONFormatter"},
                    "postern_text": {"()": "app.logs.TextFormatter"},
                },
                "handlers": {
                    "stderr": {
                        "class": "logging.StreamHandler",
                        "formatter": fmt,
                        "stream": "ext://sys.stderr",
                    },
                },
                "loggers": {
                    "gunicorn.error": {
                        "handlers": ["stderr"],
                        "level": c.log.level,
                        "propagate": False,
                    },
                },
                "root": {"handlers": [], "level": "WARNING"},
            },
        }
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            settings["child_exit"] = _forget_metrics_of
        if self.companions:
            settings["when_ready"] = self._start_companions
            settings["on_exit"] = self._stop_companions
        for key, value in settings.items():
            if key.startswith("control_socket") and key not in self.cfg.settings:
                continue  # a gunicorn before 25.1 has no control socket
            self.cfg.set(key, value)

    def _start_companions(self, _server: object) -> None:
        self._children = [subprocess.Popen(cmd) for cmd in self.companions]  # noqa: S603

    def _stop_companions(self, _server: object) -> None:
        for child in self._children:
            child.terminate()
        for child in self._children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def load(self) -> Flask:
        from app.http.factory import create_app

        return create_app(self.postern_config)
