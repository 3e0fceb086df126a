"""Running the HTTP API under gunicorn, configured from Postern's settings."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from .config import Config


class GunicornServer(BaseApplication):
    """Gunicorn with Postern's settings; each worker builds its own app (and engine) after fork."""

    def __init__(self, config: Config):
        self.postern_config = config
        super().__init__()

    def load_config(self):
        c = self.postern_config
        fmt = "postern_json" if c.log.format == "json" else "postern_text"
        settings = {
            "bind": [f"{c.http.host}:{c.http.port}"],
            "workers": c.http.workers,
            "threads": c.http.threads,
            "worker_class": "gthread",
            "timeout": c.http.timeout,
            "graceful_timeout": 10,
            "accesslog": None,  # Postern logs each request itself, without query strings
            "loglevel": c.log.level.lower(),
            "proc_name": "postern",
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
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from .factory import create_app

        return create_app(self.postern_config)
