"""A real SMTP server on loopback (aiosmtpd) that tests use as "the recipient's MX".

It records every accepted message and every connection, and fails on demand::

    with SMTPPeer(pipelining=True) as peer:
        peer.fail_rcpt("nobody@example.com", 550, "5.1.1 No such user")
        ...  # deliver to ("127.0.0.1", peer.port)
        assert peer.messages[0].data == sent

Options: ``starttls`` (a self-signed certificate made with ``cryptography``),
``require_starttls``, ``implicit_tls`` (TLS from the first byte, like port 465),
``pipelining`` (advertised in the EHLO reply; aiosmtpd reads commands line by line from
its buffer, so pipelined commands work without more), ``size_limit`` (the SIZE
extension), ``auth`` (``{"user": "password"}``: AUTH PLAIN/LOGIN, required after
STARTTLS with ``starttls``, offered only otherwise; ``auth_mechanisms`` to offer fewer),
``ehlo=False`` (EHLO refused, HELO only), ``keep_data=False`` (record each message's size
but not its bytes), ``tls_context`` (a server SSLContext of the
test's own instead of the self-signed certificate's), ``host``/``port`` (default
127.0.0.1 and a free port). Or use the ``smtp_peer`` and ``make_smtp_peer`` fixtures
(import them into the test module).

Slow on demand: ``hold_data`` records a message and holds its 250 for some seconds;
``stall_data`` stops reading once DATA is answered with 354. ``ChildPeer`` runs a peer
in a process of its own, for tests that measure their own process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, TLSSetupException

from mta.tls import self_signed_pem

HOST = "127.0.0.1"
HOSTNAME = "mx.peer.test"  # given to aiosmtpd, which would otherwise ask socket.getfqdn()
DEFAULT_SIZE_LIMIT = 33554432  # aiosmtpd's own default


@dataclass
class Connection:
    """One client connection as the server saw it."""

    peer: tuple
    #: The bytes of every read from the socket, in order (after STARTTLS: decrypted).
    #: Commands a client pipelines arrive together in one read.
    reads: list[bytes] = field(default_factory=list)
    tls: bool = False  # implicit TLS, or after a successful STARTTLS
    tls_version: str | None = None

    @property
    def received(self) -> bytes:
        return b"".join(self.reads)


@dataclass
class Message:
    """One accepted message."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # as the client meant it: dot-stuffing undone, final "." line removed
    mail_options: list[str]
    peer: tuple
    helo: str | None
    tls: bool
    tls_version: str | None
    login: str | None  # the AUTH user, when the client authenticated
    connection: Connection
    size: int = 0  # of the data, kept or not


@dataclass
class _Rule:
    code: int
    text: str
    times: int | None  # None: until cleared
    address: str | None = None
    seconds: float = 0.0  # how long a "hold" rule holds its reply

    def take(self) -> bool:
        """Whether the rule fires now (counting down a limited rule)."""
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True

    @property
    def reply(self) -> str:
        """The reply line(s): a text with newlines makes a multi-line reply."""
        lines = self.text.split("\n")
        return "\r\n".join(
            f"{self.code}{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)
        )


@functools.cache
def certificate(hostname: str = HOSTNAME) -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) for ``hostname``, 127.0.0.1 and ::1, and its key."""
    return self_signed_pem(hostname, addresses=("127.0.0.1", "::1"), days=30)


def server_tls_context(hostname: str = HOSTNAME) -> ssl.SSLContext:
    cert_pem, key_pem = certificate(hostname)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


class _Handler:
    """aiosmtpd hooks: apply the peer's failure rules, record accepted messages."""

    def __init__(self, peer: SMTPPeer):
        self.peer = peer

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if not self.peer.ehlo:
            return ['502 5.5.2 Error: command "EHLO" not recognized']
        session.host_name = hostname
        if self.peer.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        rule = self.peer._take("mail")
        if rule is not None:
            return rule.reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        rule = self.peer._take("rcpt", address)
        if rule is not None:
            return rule.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.peer._take("drop") is not None:
            server.transport.close()
            await asyncio.get_running_loop().create_future()  # cancelled by connection_lost
        rule = self.peer._take("data")
        if rule is not None:
            return rule.reply
        conn = server.conn
        message = Message(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content) if self.peer.keep_data else b"",
            size=len(envelope.original_content),
            mail_options=list(envelope.mail_options),
            peer=session.peer,
            helo=session.host_name,
            tls=conn.tls,
            tls_version=conn.tls_version,
            login=session.auth_data if session.authenticated else None,
            connection=conn,
        )
        with self.peer._lock:
            self.peer.messages.append(message)
            number = len(self.peer.messages)
        hold = self.peer._take("hold")
        if hold is not None:  # cancelled by connection_lost if the client gives up first
            await asyncio.sleep(hold.seconds)
        return f"250 2.0.0 OK queued as {number}"

    async def handle_exception(self, error):
        if isinstance(error, TLSSetupException):  # the client gave up the handshake
            return "454 4.7.0 TLS handshake failed"
        self.peer.errors.append(error)
        return f"451 4.3.0 Error: ({type(error).__name__}) {error}"


class _PeerSMTP(SMTP):
    """aiosmtpd's SMTP with connection records, a 421 greeting on demand, 421 closing."""

    def __init__(self, handler: _Handler, **kwargs):
        super().__init__(handler, **kwargs)
        self.peer = handler.peer
        self.conn: Connection | None = None
        self.lost: asyncio.Future | None = None

    def connection_made(self, transport):
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)
        if first:
            self.conn = Connection(peer=transport.get_extra_info("peername"))
            self.lost = self.loop.create_future()
            self.peer._connected(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.conn.tls = True
            self.conn.tls_version = ssl_object.version()

    def connection_lost(self, error):
        super().connection_lost(error)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        self.peer._disconnected(self)

    def data_received(self, data):
        if self.conn is not None:
            self.conn.reads.append(bytes(data))
        super().data_received(data)

    async def _handle_client(self):
        rule = self.peer._take("connect") if self.peer._counting else None
        if rule is not None:
            await self.push(rule.reply)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def push(self, status):
        await super().push(status)
        line = status.encode() if isinstance(status, str) else status
        if line.startswith(b"421") and self.transport is not None:
            self.transport.close()
        stall = line.startswith(b"354") and self.peer._take("stall") is not None
        if stall and self.transport is not None:
            self.transport.pause_reading()  # the client's writes fill the buffers, then wait


class _Controller(Controller):
    """aiosmtpd's threaded Controller on a socket bound beforehand (any free port)."""

    def __init__(self, peer: SMTPPeer, sock: socket.socket, **kwargs):
        self._peer = peer
        self._sock = sock
        super().__init__(
            peer._handler,
            hostname=peer.host,
            port=peer.port,
            server_hostname=peer.hostname,
            **kwargs,
        )

    def factory(self):
        return _PeerSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SMTPPeer:
    """An aiosmtpd server on loopback that records what it receives and fails on demand."""

    def __init__(
        self,
        *,
        host: str = HOST,
        port: int = 0,
        hostname: str = HOSTNAME,
        starttls: bool = False,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        pipelining: bool = False,
        ehlo: bool = True,
        size_limit: int | None = DEFAULT_SIZE_LIMIT,
        auth: dict[str, str] | None = None,
        auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
        tls_context: ssl.SSLContext | None = None,
        keep_data: bool = True,
    ):
        self.host = host
        self.port = port
        self.hostname = hostname
        self.starttls = starttls or require_starttls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.pipelining = pipelining
        self.ehlo = ehlo
        self.size_limit = size_limit
        self.auth = auth
        self.auth_mechanisms = auth_mechanisms
        self.tls_context = tls_context  # instead of the self-signed certificate's
        self.keep_data = keep_data
        #: Every accepted message, in order.
        self.messages: list[Message] = []
        #: Every client connection since start() or reset(), in order.
        self.connections: list[Connection] = []
        #: Exceptions raised while serving (the client got a 451).
        self.errors: list[BaseException] = []
        self._handler = _Handler(self)
        self._rules: dict[str, list[_Rule]] = {}
        self._lock = threading.Lock()
        self._live: set[_PeerSMTP] = set()
        self._controller: _Controller | None = None
        self._counting = False

    # -- failures on demand --------------------------------------------------------------

    def fail_mail(self, code: int, text: str, times: int | None = None) -> None:
        """Answer MAIL FROM with ``code text`` (until cleared, or the next ``times`` times)."""
        self._add("mail", _Rule(code, text, times))

    def fail_rcpt(self, address: str, code: int, text: str, times: int | None = None) -> None:
        """Answer RCPT TO for ``address`` (any case) with ``code text``."""
        self._add("rcpt", _Rule(code, text, times, address.lower()))

    def fail_data(self, code: int, text: str, times: int | None = None) -> None:
        """Answer the end of DATA with ``code text`` (the message is not recorded)."""
        self._add("data", _Rule(code, text, times))

    def hold_data(self, seconds: float, times: int | None = None) -> None:
        """Record the message, then hold the reply to the end of DATA for ``seconds`` (a
        server that has taken the message but is slow to say so)."""
        self._add("hold", _Rule(250, "", times, seconds=seconds))

    def stall_data(self, times: int | None = None) -> None:
        """Stop reading once DATA is answered with 354: the message is never taken in (a
        destination that is slow to receive, at its slowest)."""
        self._add("stall", _Rule(0, "", times))

    def drop_on_data(self, times: int | None = None) -> None:
        """Close the connection at the end of DATA instead of answering it."""
        self._add("drop", _Rule(0, "", times))

    def fail_next_connections(
        self, n: int = 1, code: int = 421, text: str = "4.3.2 Service not available"
    ) -> None:
        """Greet the next ``n`` connections with ``code text`` instead of 220, and close."""
        self._add("connect", _Rule(code, text, n))

    def clear_failures(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset(self) -> None:
        """Forget messages, connections, errors and failure rules."""
        with self._lock:
            self._rules.clear()
            self.messages.clear()
            self.connections.clear()
            self.errors.clear()

    def _add(self, kind: str, rule: _Rule) -> None:
        with self._lock:
            self._rules.setdefault(kind, []).append(rule)

    def _take(self, kind: str, address: str | None = None) -> _Rule | None:
        with self._lock:
            for rule in self._rules.get(kind, []):
                if rule.address is not None and rule.address != (address or "").lower():
                    continue
                if rule.take():
                    return rule
        return None

    def _connected(self, server: _PeerSMTP) -> None:
        with self._lock:
            self._live.add(server)
            self.connections.append(server.conn)

    def _disconnected(self, server: _PeerSMTP) -> None:
        with self._lock:
            self._live.discard(server)

    # -- authentication ------------------------------------------------------------------

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self.auth is not None and self.auth.get(login) == password:
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    # -- running -------------------------------------------------------------------------

    def start(self) -> SMTPPeer:
        if self._controller is not None:
            raise RuntimeError("already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP given, or asyncio does not set TCP_NODELAY on accepted connections,
        # and the replies to pipelined commands wait on delayed ACKs.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        tls = None
        if self.starttls or self.implicit_tls:
            tls = self.tls_context or server_tls_context(self.hostname)
        kwargs = {
            "data_size_limit": self.size_limit,
            "tls_context": tls if self.starttls else None,
            "require_starttls": self.require_starttls,
            "ssl_context": tls if self.implicit_tls else None,
            "timeout": 30,
        }
        if self.auth is not None:
            # aiosmtpd requires AUTH only after STARTTLS (it warns when AUTH is required
            # without it, and does not see implicit TLS): otherwise AUTH is offered only.
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=self.starttls,
                auth_require_tls=self.starttls,
                auth_exclude_mechanism=[
                    m for m in ("PLAIN", "LOGIN") if m not in self.auth_mechanisms
                ],
            )
        controller = _Controller(self, sock, **kwargs)
        try:
            controller.start()
        except BaseException:
            with contextlib.suppress(Exception):
                controller.stop(no_assert=True)
            sock.close()
            raise
        self._controller = controller
        # start() made a connection of its own to wake the server: not the test's.
        with self._lock:
            self.connections.clear()
        self._counting = True
        return self

    def stop(self) -> None:
        """Close every client connection, then the server and its thread."""
        controller = self._controller
        if controller is None:
            return
        self._controller = None
        self._counting = False
        future = asyncio.run_coroutine_threadsafe(self._close_connections(), controller.loop)
        future.result(timeout=10)
        controller.stop()

    async def _close_connections(self) -> None:
        with self._lock:
            live = list(self._live)
        for server in live:
            if server.transport is not None:
                server.transport.close()
        waiting = [s.lost for s in live if s.lost is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=5)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __enter__(self) -> SMTPPeer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve_in_child(options: dict, pipe) -> None:
    """A child process's SMTPPeer: its port goes up the pipe; when the pipe says stop, a
    summary of each message received ((mail_from, rcpt_tos, size)) and the errors."""
    with SMTPPeer(**options) as peer:
        pipe.send(peer.port)
        pipe.recv()
        with peer._lock:
            summary = [(m.mail_from, m.rcpt_tos, m.size) for m in peer.messages]
            pipe.send((summary, [repr(e) for e in peer.errors]))


class ChildPeer:
    """An SMTPPeer in a process of its own, for tests that measure the memory of their own
    process: what the server allocates (aiosmtpd reads DATA into lists of lines) stays out.

    ``stop()`` returns what it received: ``(mail_from, rcpt_tos, size)`` per message."""

    def __init__(self, **options):
        self.options = {"keep_data": False, **options}
        self.host = self.options.get("host", HOST)
        self.port = 0
        self._pipe = None
        self._process = None

    def start(self) -> ChildPeer:
        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve_in_child, args=(self.options, theirs), daemon=True
        )
        self._process.start()
        theirs.close()
        if not self._pipe.poll(60):
            self._end()
            raise RuntimeError("the child SMTP peer did not start")
        self.port = self._pipe.recv()
        return self

    def stop(self) -> list[tuple[str, list[str], int]]:
        try:
            self._pipe.send("stop")
            if not self._pipe.poll(30):
                raise RuntimeError("the child SMTP peer did not answer")
            summary, errors = self._pipe.recv()
        finally:
            self._end()
        assert not errors, errors
        return summary

    def _end(self) -> None:
        if self._process is not None:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process.close()
            self._process = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


@pytest.fixture
def smtp_peer():
    """A running SMTPPeer with default options; stopped after the test (which fails if
    the server hit an error)."""
    with SMTPPeer() as peer:
        yield peer
    assert not peer.errors, peer.errors


@pytest.fixture
def make_smtp_peer():
    """Start SMTPPeers with options: ``make_smtp_peer(starttls=True)``; all stopped after."""
    peers: list[SMTPPeer] = []

    def make(**options) -> SMTPPeer:
        peer = SMTPPeer(**options).start()
        peers.append(peer)
        return peer

    yield make
    for peer in reversed(peers):
        peer.stop()
    for peer in peers:
        assert not peer.errors, peer.errors
