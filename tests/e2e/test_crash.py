"""The crash test (bench/crash_test.py), small: messages over HTTP and SMTP while the API,
the worker and the relay are each killed with SIGKILL; nothing accepted is lost, nothing
refused is delivered, and no more duplicates than deliveries in flight at the worker's kills.

On the suite's database: SQLite, or a database of its own beside POSTERN_TEST_DATABASE_URL.
`.ci/run` runs the full-size script (10,000 messages) on SQLite and PostgreSQL.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_nothing_accepted_is_lost_when_every_role_is_killed(tmp_path):
    database = os.environ.get("POSTERN_TEST_DATABASE_URL", "").strip() or "sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "crash_test.py"),
            "--databases",
            database,
            "--count",
            "600",
            "--kills",
            "2",
            "--refuse-every",
            "20",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    [result] = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert result["ok"] and result["lost"] == 0 and result["refused_delivered"] == 0
    assert result["kills"] == {"api": 2, "worker": 2, "smtp": 2}
    assert result["submitted"] == 600 and result["queue_left"] == 0
    assert result["duplicated"] <= result["in_flight_at_kills"]
