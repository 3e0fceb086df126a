"""WSGI entry point for gunicorn and other servers: ``gunicorn wsgi:app``.

Settings come from the file named by POSTERN_CONFIG (if any) and POSTERN_* variables.
"""

import os

from app.http.factory import create_app
from core.settings import load_config

app = create_app(load_config(os.environ.get("POSTERN_CONFIG")))
