"""Running postern as a real process on a loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERN_")}
    env.update(extra)
    return env


def postern(*args: str, cwd: Path, env: dict[str, str], timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(condition, timeout=60):
    """Poll ``condition`` every 0.1 s until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@contextmanager
def running(role: str, cwd: Path, env: dict[str, str]):
    """Start ``postern ROLE``; yield (base_url, log_path) once /healthz answers; stop it.

    ``http.public_url`` is the server's own address unless ``env`` sets it, so that the
    tracking hosts' DNS records and tracking links point at this server's port.
    """
    port = free_port()
    smtp_ports = ",".join(str(free_port()) for _ in range(3))
    env = {
        "POSTERN_SMTP_PORTS": smtp_ports,
        "POSTERN_HTTP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        **env,
        "POSTERN_HTTP_PORT": str(port),
        "POSTERN_HTTP_WORKERS": "2",
    }
    log_path = cwd / f"{role}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", role],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"postern {role} exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postern {role} did not start: {log_path.read_text()}")
            time.sleep(0.1)
        yield base, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
