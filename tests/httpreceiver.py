"""A real HTTP server on loopback that tests use as a webhook receiver.

It records every request and answers a scripted sequence, then 200::

    with HTTPReceiver() as receiver:
        receiver.answer(500, 500)          # the first two requests get 500, then 200
        receiver.answer(Answer(200, delay=2.0))  # or answer late
        ...  # post to receiver.url("/hook")
        receiver.wait_for(3)
        assert receiver.requests[0].json()["event"] == "delivered"

Or use the ``http_receiver`` fixture (import it into the test module).
``assert_signed(request, signing_key)`` checks both signatures of a webhook POST.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook as StandardWebhook

from commands.webhooks.payload import standard_webhooks_secret

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering
    body: bytes = b"ok"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: float = field(default_factory=time.time)

    def json(self):
        return json.loads(self.body)


class HTTPReceiver:
    def __init__(self, host: str = HOST, port: int = 0):
        self.requests: list[Request] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the http.server hook's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = receiver._record(
                    Request(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:  # the client gave up waiting
                    self.close_connection = True

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def answer(self, *answers: int | Answer) -> None:
        """Queue the answers to the next requests (a status code, or an Answer)."""
        with self._lock:
            self._script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def _record(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            return self._script.popleft() if self._script else Answer()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Request]:
        """Wait until ``count`` requests have arrived; all of them."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} requests arrived, not {count}")
            return list(self.requests)

    def start(self) -> HTTPReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HTTPReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def assert_signed(request, key):
    """Both signatures check out: X-Postern-Signature by hand, Standard Webhooks by its package."""
    fields = dict(part.split("=", 1) for part in request.headers["x-postern-signature"].split(","))
    expected = hmac.new(key.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(fields["v1"], expected.hexdigest())
    assert StandardWebhook(standard_webhooks_secret(key)).verify(request.body, request.headers)
    secret = "whsec_" + base64.b64encode(bytes.fromhex(key)).decode()  # as docs/api.md says
    assert StandardWebhook(secret).verify(request.body, request.headers) == request.json()


@pytest.fixture
def http_receiver():
    with HTTPReceiver() as receiver:
        yield receiver
