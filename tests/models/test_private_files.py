"""The SQLite database and the files beside it are created readable by their owner only."""

import os
import stat

from sqlalchemy import text

from core.settings import load_config, resolve_secret_key
from models import Database
from models.migrate import upgrade


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_database_and_its_companions_are_created_mode_0600(tmp_path):
    old = os.umask(0o022)  # the usual umask, which leaves files readable by everyone
    try:
        path = tmp_path / "postern.db"
        db = Database(f"sqlite:///{path}")
        try:
            upgrade(db.engine)
            with db.transaction() as s:
                s.execute(text("SELECT 1 FROM users"))
            files = ["postern.db", "postern.db-wal", "postern.db-shm", "postern.db-writers"]
            assert {f: mode(tmp_path / f) for f in files} == dict.fromkeys(files, 0o600)
        finally:
            db.dispose()
        config = load_config(environ={}).replace(database__url=f"sqlite:///{path}")
        resolve_secret_key(config)
        assert mode(tmp_path / "postern.key") == 0o600
    finally:
        os.umask(old)


def test_an_existing_database_keeps_its_mode(tmp_path):
    path = tmp_path / "postern.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    db = Database(f"sqlite:///{path}")
    try:
        upgrade(db.engine)
    finally:
        db.dispose()
    assert mode(path) == 0o640
