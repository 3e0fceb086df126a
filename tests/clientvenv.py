"""Vendors' client libraries that cannot share the test environment, each in a virtual
environment of its own, made on first use and kept under ``.venv-clients/`` (git-ignored).

postal-py needs niquests, whose urllib3-future replaces urllib3 for every program of the
environment it is installed in (and so breaks requests); Infobip's 6.x client pins versions
that its 5.x line does not. A test runs a small script of ``tests/clients/`` with the
environment's Python (``run_client``), which prints what the client did as JSON.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
VENVS = Path(os.environ.get("POSTERN_CLIENT_VENVS", ROOT / ".venv-clients"))


def client_python(name: str, requirements: list[str]) -> Path:
    """The Python of a virtual environment holding ``requirements`` (made once, then kept;
    two test runs making it at once wait for each other)."""
    digest = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:12]
    home = VENVS / f"{name}-{digest}"
    python = home / "bin" / "python"
    if python.exists():
        return python
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists():
            return python
        building = home.with_name(home.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        subprocess.run(
            [str(building / "bin" / "pip"), "install", "-q", *requirements],
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        building.rename(home)  # scripts run from the environment by its python's path
        fix_paths(home, building)
    return python


def fix_paths(home: Path, was: Path) -> None:
    """A venv names its own folder in pyvenv.cfg and its scripts: made under another name,
    point them at ``home``."""
    for path in [home / "pyvenv.cfg", *(home / "bin").iterdir()]:
        if path.is_file() and not path.is_symlink():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            if str(was) in text:
                path.write_text(text.replace(str(was), str(home)))


def run_client(python: Path, script: str, **args: Any) -> Any:
    """Run ``tests/clients/<script>`` with ``python``, ``args`` as JSON on its input; what it
    printed, read as JSON. A failure of the script fails the test with its output."""
    done = subprocess.run(
        [str(python), str(CLIENTS / script)],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"{script} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout)


def node_package(folder: Path, marker: str) -> str | None:
    """``node`` ready to run the scripts of ``folder`` (a package.json with its lockfile):
    ``npm ci`` there on first use (its node_modules is git-ignored), until ``marker`` (a
    path under node_modules) exists. None when node or npm is not installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    if (folder / "node_modules" / marker).exists():
        return node
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "node_modules" / marker).exists():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(folder)],
                check=True,
                capture_output=True,
            )
    return node
