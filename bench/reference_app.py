"""The reference for bench/send_bench.py: a bare Flask endpoint that inserts one SQLite row
per request (the request's body, committed durably in WAL mode), run under gunicorn with
the same workers and injector as Postern. Its rate on the machine of the day is the yardstick
for Postern's: 1,000 accepted messages/s is the target where this answers about 1,650/s.

    BENCH_REFERENCE_DB=/tmp/ref.db gunicorn -w 2 bench.reference_app:app
"""

from __future__ import annotations

import os
import sqlite3
import threading

from flask import Flask, jsonify, request

app = Flask(__name__)
_local = threading.local()


def _connection() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["BENCH_REFERENCE_DB"], timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body BLOB)")
        _local.conn = conn
    return conn


@app.post("/insert")
def insert():
    conn = _connection()
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.execute("INSERT INTO rows (body) VALUES (?)", (request.get_data(),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return jsonify(id=cursor.lastrowid)
