"""Delivery over SMTP: many envelopes over one connection, pipelined when the server allows.

``deliver`` connects to the first address that greets with 220 (a refused or timed-out
connection, or any other greeting, moves on to the next), says EHLO (HELO if refused),
STARTTLS and AUTH as the settings ask, then runs one MAIL/RCPT/DATA transaction per
envelope, RSET after a failed one. Outcomes: 2xx to the end of DATA is "delivered"; 5xx
to MAIL, RCPT or DATA "bounced" (but 530, AUTH needed, is about our session: deferred);
4xx, timeouts and network errors "deferred". A 421, or a connection that breaks, defers
every envelope not yet finished. Bounces decided here without sending: a message over
the server's SIZE, 8-bit data without 8BITMIME, non-ASCII addresses without SMTPUTF8.

An envelope's message may be a build, awaited only when its transaction begins and let
go once written (a build that raises is that envelope's "error"; the session goes on);
a ``BuildLimit`` shared by the sessions of a batch bounds what is built at once. A
``deadline`` ends the session wherever it is: what is unfinished is deferred (4.4.7).

A compact client of its own on ``asyncio`` rather than aiosmtplib: aiosmtplib's protocol
parses one reply per chunk received and ignores data that arrives while no command is
pending, so replies that arrive together, as pipelined ones do, are stranded; PIPELINING
(RFC 2920) cannot be built on its primitives, and its exception per reply would have to
be mapped back to codes for every outcome anyway. Here ``_Channel`` (an
``asyncio.Protocol``) buffers what the server sends and hands it out line by line, so
replies are read in turn however they arrive; STARTTLS is ``loop.start_tls`` on that
same protocol once its buffer is emptied (RFC 3207: nothing received before the
handshake may be read after it).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import cast

TLS_MODES = ("opportunistic", "required", "none", "implicit")
MAX_LINE = 8192  # the longest reply line accepted (RFC 5321 allows 512)
MAX_REPLY_LINES = 200
CLOSE_TIMEOUT = 5.0  # for QUIT's reply and the connection to close
CHUNK = 65536  # a large message is dot-stuffed and written in pieces of about this size

_REPLY_LINE = re.compile(r"([2-5]\d\d)([ -]|$)(.*)", re.ASCII | re.DOTALL)
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?=\s|$)", re.ASCII)
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")
_WANTED = (2, 2, 3)  # the reply class that lets MAIL FROM, RCPT TO and DATA go on


Build = Callable[[], Awaitable[bytes]]


@dataclass
class Envelope:
    mail_from: str
    rcpt_to: str
    # The complete signed message, or what builds it: a build is awaited once, when the
    # session is about to send the message, and what it returns is let go once sent.
    data: bytes | Build
    ref: object  # the caller's handle (delivery id), returned in the Outcome


@dataclass
class Outcome:
    ref: object
    status: str  # "delivered" | "deferred" | "bounced" | "error" (its build raised)
    code: int | None  # the reply code that decided it (None: network error, timeout, local)
    enhanced: str | None  # enhanced status code such as "5.1.1" if there was one
    text: str  # the reply text, or a description of the problem
    host: str | None  # the "host:port" it was about
    tls: bool = False  # whether the message went (or was refused) over TLS
    seconds: float | None = None  # how long its transaction took (None: none was begun)


@dataclass
class ClientSettings:
    helo_name: str
    port: int = 25
    # "opportunistic" (STARTTLS when offered), "required" (defer unless STARTTLS works),
    # "none", or "implicit" (TLS from the first byte, for smarthosts on 465)
    tls: str = "opportunistic"
    verify_certificates: bool = False
    ca_file: str | None = None  # the CA certificates to verify against (None: the system's)
    # AUTH PLAIN/LOGIN, only ever after a TLS handshake (verified when verify_certificates)
    username: str | None = None
    password: str | None = None
    connect_timeout: float = 30
    command_timeout: float = 60  # per reply; the reply to the end of DATA gets data_timeout
    data_timeout: float = 600


@dataclass(frozen=True)
class Reply:
    """One server reply: its code and the text of each of its lines."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code (RFC 3463) opening the first line, if its class fits."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        if match and match[1][0] == str(self.code)[0]:
            return match[1]
        return None

    @property
    def text(self) -> str:
        """The lines joined by spaces, without the enhanced code repeated on later lines."""
        enhanced = self.enhanced
        parts = []
        for i, line in enumerate(self.lines):
            if i and enhanced:
                match = _ENHANCED.match(line)
                if match and match[1] == enhanced:
                    line = line[match.end() :]
            if line.strip():
                parts.append(line.strip())
        return " ".join(parts)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


async def deliver(
    addresses: list[str],
    envelopes: list[Envelope],
    settings: ClientSettings,
    *,
    server_name: str | None = None,
    deadline: float | None = None,
    limit: BuildLimit | None = None,
) -> list[Outcome]:
    """Send every envelope over one connection to the first of ``addresses`` that works.

    ``addresses`` are IP literals, tried in order (port ``settings.port``). ``server_name``
    is the host name for TLS (SNI, and what the certificate must match when
    ``verify_certificates``); the address itself by default. ``deadline`` (a
    ``time.monotonic()`` value) ends the session however far it got: every envelope not yet
    finished is deferred (4.4.7). ``limit``, shared by the sessions of a batch, bounds
    the builds under way and the built messages not yet written. Returns one Outcome per
    envelope, in order; network trouble is reported in the outcomes, never raised.
    """
    if settings.tls not in TLS_MODES:
        raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}, not {settings.tls!r}")
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"not an IP address: {address!r}") from None
    if not envelopes:
        return []
    outcomes: list[Outcome] = []
    session: _Session | None = None
    # One limit over everything the session awaits (connecting, TLS, each reply, each
    # build), so that no operation's own timeout can carry it past the deadline.
    scope = asyncio.timeout_at(loop_time(deadline))
    try:
        async with scope:
            try:
                session = await _connect(addresses, settings, server_name)
            except _Failure as failure:
                return [failure.outcome(env) for env in envelopes]
            session.limit = limit
            try:
                for env in envelopes:
                    began = time.monotonic()
                    outcome = await session.transaction(env)
                    outcome.seconds = round(time.monotonic() - began, 3)
                    outcomes.append(outcome)
            except _Failure as exc:
                exc.host = session.host
                outcomes += [exc.outcome(env) for env in envelopes[len(outcomes) :]]
            await session.finish()
    except TimeoutError:
        if not scope.expired():
            raise
        # An envelope whose message was sent and whose reply had not come is deferred too:
        # the server may or may not have taken it, and the only outcome that cannot lose
        # mail is to send it again later (RFC 5321 6.1: a duplicate is the lesser harm).
        # Calling it delivered could lose it; bouncing it would tell the sender a lie.
        if session is None:
            when, host = "while connecting", None
        else:
            session.channel.abort()
            when, host = f"while {session.doing}", session.host
        for env in envelopes[len(outcomes) :]:
            outcomes.append(deadline_outcome(env.ref, when, host))
            if session is not None:
                when = "before it was sent"  # the envelopes after the one under way
    except BaseException:  # cancelled: drop the connection at once
        if session is not None:
            session.channel.abort()
        raise
    return outcomes


@dataclass
class _Held:
    """A built message counted by a BuildLimit, and how many recipients hold it."""

    data: bytes
    holders: int = 0


class BuildLimit:
    """What the sessions of a batch may build at once: at most ``builds`` builds under way,
    and none begun while the messages built and not yet written come to ``held`` bytes or
    more. Memory then stays under about ``held`` plus ``builds`` messages however many
    connections are open, while small messages are never kept waiting by it.

    A message still being written ``slow`` seconds after it was built no longer counts: a
    destination slow to take a large message holds back the others' builds for that long
    at most (its memory is then bounded by its one connection)."""

    def __init__(self, builds: int, held: int, slow: float = 10.0):
        if builds < 1 or held < 1 or slow <= 0:
            raise ValueError("builds, held and slow must be positive")
        self.builds = builds
        self.held = held
        self.slow = slow
        self.building = 0
        self.holding = 0  # bytes built and not yet written (nor slow)
        self._held: dict[int, _Held] = {}  # by the id of the message
        self._waiting: list[asyncio.Future[None]] = []

    async def build(self, build: Build) -> tuple[bytes, Callable[[], None]]:
        """``build()``'s message, once there is room for it, and what to call once it is
        written (or given up): until then, or until it is slow, it is counted."""
        while self.building >= self.builds or self.holding >= self.held:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        self.building += 1
        try:
            data = await build()
        finally:
            self.building -= 1
            self._wake()
        # One message shared by several recipients (the same object) is counted once; it is
        # kept here while counted, so that its id stays its own.
        key = id(data)
        entry = self._held.get(key)
        if entry is None:
            entry = self._held[key] = _Held(data)
            self.holding += len(data)
        entry.holders += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            timer.cancel()
            entry.holders -= 1
            if entry.holders == 0:
                self.holding -= len(entry.data)
                del self._held[key]
                entry.data = b""  # this function outlives the message: it must not keep it
            self._wake()

        timer = asyncio.get_running_loop().call_later(self.slow, release)
        return data, release

    def _wake(self) -> None:
        for waiter in self._waiting:  # each looks again whether there is room for it
            _wake(waiter)


def deadline_outcome(ref: object, when: str, host: str | None = None) -> Outcome:
    """The outcome of an envelope left unfinished at the deadline (``when``: how far it got,
    as "while connecting")."""
    return Outcome(ref, "deferred", None, "4.4.7", f"delivery deadline reached {when}", host)


def loop_time(deadline: float | None) -> float | None:
    """A ``time.monotonic()`` deadline on the running loop's clock (uvloop keeps its own)."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


class _Failure(Exception):
    """The session cannot go on; the text (and reply) every unfinished envelope gets."""

    def __init__(self, text: str, reply: Reply | None = None, *, tls: bool = False):
        super().__init__(text)
        self.text = text
        self.reply = reply
        self.tls = tls  # the TLS handshake failed (plaintext may still work)
        self.host: str | None = None

    @classmethod
    def of(cls, reply: Reply) -> _Failure:
        return cls(reply.text or str(reply), reply)

    def outcome(self, env: Envelope) -> Outcome:
        reply = self.reply
        return Outcome(
            env.ref,
            "deferred",
            reply.code if reply else None,
            reply.enhanced if reply else None,
            self.text,
            self.host,
        )


class _Lost(Exception):
    """The connection ended; ``args[0]`` is the error that ended it, if any."""


async def _connect(
    addresses: list[str], settings: ClientSettings, server_name: str | None
) -> _Session:
    """The first session through the greeting, EHLO, STARTTLS and AUTH; else the last failure.

    In opportunistic mode a failed TLS handshake is retried once in plaintext on the same
    address (unless certificates are verified)."""
    failure = _Failure("no address to deliver to")
    plain_retry = settings.tls == "opportunistic" and not settings.verify_certificates
    for address in addresses:
        starttls = settings.tls in ("opportunistic", "required")
        while True:
            try:
                return await _open(address, settings, server_name, starttls)
            except _Failure as exc:
                failure = exc
            if not (failure.tls and starttls and plain_retry):
                break
            starttls = False
    raise failure


async def _open(
    address: str, settings: ClientSettings, server_name: str | None, starttls: bool
) -> _Session:
    loop = asyncio.get_running_loop()
    host = f"[{address}]:{settings.port}" if ":" in address else f"{address}:{settings.port}"
    channel = _Channel()
    implicit = settings.tls == "implicit"
    try:
        async with asyncio.timeout(settings.connect_timeout):
            await loop.create_connection(
                lambda: channel,
                address,
                settings.port,
                ssl=_tls_context(settings) if implicit else None,
                server_hostname=(server_name or address) if implicit else None,
                ssl_handshake_timeout=settings.connect_timeout if implicit else None,
                ssl_shutdown_timeout=CLOSE_TIMEOUT if implicit else None,
            )
    except TimeoutError:
        failure = _Failure(f"timed out after {settings.connect_timeout:g} s connecting")
        failure.host = host
        raise failure from None
    except OSError as exc:
        failure = _Failure(f"cannot connect: {_describe(exc)}", tls=implicit)
        failure.host = host
        raise failure from None
    session = _Session(channel, host, settings)
    session.tls = settings.tls == "implicit"
    try:
        try:
            await session.setup(server_name, starttls)
        except _Failure as exc:
            exc.host = host
            await session.finish()
            raise
    except _Failure:
        raise
    except BaseException:  # cancelled (the deadline, say), in the setup or in QUIT after it
        channel.abort()
        raise
    return session


class _Session:
    """One SMTP session on a channel: replies, commands, the setup and transactions."""

    def __init__(self, channel: _Channel, host: str, settings: ClientSettings):
        self.channel = channel
        self.host = host
        self.settings = settings
        self.extensions: dict[str, str] = {}  # EHLO keyword (upper case) -> its parameters
        self.tls = False
        self.broken = False  # no QUIT: the connection timed out, was lost or got a 421
        self.dirty = False  # a transaction failed half-way: RSET before the next one
        self.doing = "starting"  # what the session is doing, as a deadline outcome tells it
        self.limit: BuildLimit | None = None

    # -- replies and commands ------------------------------------------------------------

    async def reply(self, what: str, timeout: float | None = None) -> Reply:
        """Read one reply (to ``what``); a 421 or any trouble raises _Failure."""
        timeout = self.settings.command_timeout if timeout is None else timeout
        self.doing = f"waiting for the reply to {what}"
        try:
            async with asyncio.timeout(timeout):
                reply = await self._read_reply(what)
        except TimeoutError:
            raise self._broken(
                f"timed out after {timeout:g} s waiting for the reply to {what}"
            ) from None
        except _Lost as exc:
            raise self._broken(
                f"connection lost waiting for the reply to {what}{_why(exc)}"
            ) from None
        if reply.code == 421:  # the server is closing the connection
            self.broken = True
            raise _Failure.of(reply)
        return reply

    async def _read_reply(self, what: str) -> Reply:
        code, lines = 0, list[str]()
        while True:
            raw = await self.channel.readline()
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            match = _REPLY_LINE.fullmatch(line)
            if match is None or len(lines) >= MAX_REPLY_LINES:
                raise self._broken(f"malformed reply to {what}: {line[:100]!r}")
            code = code or int(match[1])
            lines.append(match[3])
            if match[2] != "-":
                return Reply(code, tuple(lines))

    async def send(self, data: bytes, what: str, timeout: float | None = None) -> None:
        await self.send_pieces(iter((data,)), what, timeout)

    async def send_pieces(
        self, pieces: Iterator[bytes], what: str, timeout: float | None = None
    ) -> None:
        """Write each piece once the connection takes more (all within one timeout)."""
        timeout = self.settings.command_timeout if timeout is None else timeout
        self.doing = f"sending {what}"
        try:
            async with asyncio.timeout(timeout):
                for piece in pieces:
                    self.channel.write(piece)
                    await self.channel.drain()
        except TimeoutError:
            raise self._broken(f"timed out after {timeout:g} s sending {what}") from None
        except _Lost as exc:
            raise self._broken(f"connection lost sending {what}{_why(exc)}") from None

    async def command(self, line: str, what: str | None = None) -> Reply:
        what = what or line.split(" ", 1)[0]
        await self.send(line.encode("utf-8") + b"\r\n", what)
        return await self.reply(what)

    def _broken(self, text: str) -> _Failure:
        self.broken = True
        return _Failure(text)

    async def finish(self) -> None:
        """QUIT if the connection is still sound, then close it."""
        if not self.broken and not self.channel.ended:
            try:
                await self.send(b"QUIT\r\n", "QUIT", CLOSE_TIMEOUT)
                await self.reply("QUIT", min(self.settings.command_timeout, CLOSE_TIMEOUT))
            except _Failure:
                pass
        await self.channel.close(abort=self.broken)

    # -- session setup -------------------------------------------------------------------

    async def setup(self, server_name: str | None, starttls: bool) -> None:
        """Greeting, EHLO (or HELO), STARTTLS and AUTH as the settings ask."""
        settings = self.settings
        greeting = await self.reply("the greeting")
        if greeting.code != 220:
            raise _Failure.of(greeting)
        await self.hello()
        if starttls and "STARTTLS" in self.extensions:
            reply = await self.command("STARTTLS")
            if reply.code == 220:
                try:
                    await self.channel.start_tls(
                        _tls_context(settings), server_name, settings.command_timeout
                    )
                except OSError as exc:
                    self.broken = True
                    raise _Failure(f"TLS handshake failed: {_describe(exc)}", tls=True) from None
                self.tls = True
                await self.hello()
            elif settings.tls == "required":
                raise _Failure(f"STARTTLS refused ({reply}), and TLS is required", reply)
        elif settings.tls == "required":
            raise _Failure("the server does not offer STARTTLS, and TLS is required")
        if settings.username is not None:
            await self.authenticate()

    async def hello(self) -> None:
        name = self.settings.helo_name
        reply = await self.command(f"EHLO {name}")
        if reply.code == 250:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.strip().partition(" ")
                self.extensions[keyword.upper()] = params.strip()
            return
        if reply.code >= 500:  # EHLO not understood: plain SMTP
            reply = await self.command(f"HELO {name}")
            if reply.code == 250:
                self.extensions = {}
                return
        raise _Failure.of(reply)

    async def authenticate(self) -> None:
        settings = self.settings
        if not self.tls:  # and a handshake that had to verify did (it fails otherwise)
            raise _Failure("will not send the password: the connection is not encrypted")
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        user = (settings.username or "").encode("utf-8")
        password = (settings.password or "").encode("utf-8")
        if "PLAIN" in mechanisms:
            token = _b64(b"\0" + user + b"\0" + password)
            reply = await self.command(f"AUTH PLAIN {token}", "AUTH")
        elif "LOGIN" in mechanisms:
            reply = await self.command("AUTH LOGIN", "AUTH")
            for secret in (user, password):
                if reply.code != 334:
                    break
                reply = await self.command(_b64(secret), "AUTH")
        elif "AUTH" in self.extensions:
            raise _Failure(
                f"no AUTH mechanism in common (the server offers {' '.join(mechanisms)})"
            )
        else:
            raise _Failure("the server does not offer AUTH")
        if reply.code != 235:
            raise _Failure(f"authentication failed: {reply}", reply)

    # -- transactions --------------------------------------------------------------------

    async def transaction(self, env: Envelope) -> Outcome:
        """MAIL, RCPT, DATA for one envelope (pipelined when offered), and its outcome.

        A build that raises fails its envelope alone ("error"): nothing was sent for it, so
        the session goes on with the next. What a build returned is let go (and handed back
        to the limit) once it is written, before the reply to it is awaited."""
        release: Callable[[], None] | None = None
        if isinstance(env.data, bytes):
            data = env.data
        else:
            self.doing = "building the message"
            try:
                if self.limit is None:
                    data = await env.data()
                else:
                    data, release = await self.limit.build(env.data)
            except Exception as exc:  # noqa: BLE001 - that envelope's failure, not the session's
                return Outcome(
                    env.ref, "error", None, "4.3.0", f"{type(exc).__name__}: {exc}", None
                )
        try:
            early = await self._hand_over(env, data)
        finally:
            del data
            if release is not None:
                release()
        if early is not None:
            return early
        reply = await self.reply("the end of DATA", self.settings.data_timeout)
        self.dirty = False
        return self._outcome(env, reply, final=True)

    async def _hand_over(self, env: Envelope, data: bytes) -> Outcome | None:
        """Everything up to the message written; an outcome if it ended earlier."""
        data = _crlf(data)  # no bare CR or LF on the wire
        refusal = self._refusal(env, data)
        if refusal is not None:
            return refusal
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={len(data)}")
        if not data.isascii():
            params.append("BODY=8BITMIME")
        if not (env.mail_from.isascii() and env.rcpt_to.isascii()):
            params.append("SMTPUTF8")
        mail = " ".join([f"MAIL FROM:<{env.mail_from}>", *params])
        rcpt = f"RCPT TO:<{env.rcpt_to}>"
        if "PIPELINING" in self.extensions:
            commands = ["RSET"] if self.dirty else []
            commands += [mail, rcpt, "DATA"]
            self.dirty = True
            batch = "".join(c + "\r\n" for c in commands).encode("utf-8")
            await self.send(batch, "the pipelined commands")
            if commands[0] == "RSET":
                self._check_rset(await self.reply("RSET"))
            replies = [await self.reply(what) for what in ("MAIL FROM", "RCPT TO", "DATA")]
            failed = next(
                (r for r, ok in zip(replies, _WANTED, strict=True) if r.code // 100 != ok), None
            )
            if failed is not None:
                if replies[2].code == 354:  # DATA accepted all the same: end it empty
                    await self.send(b".\r\n", "an empty message")
                    await self.reply("the end of an empty message")
                return self._outcome(env, failed)
        else:
            if self.dirty:
                self._check_rset(await self.command("RSET"))
            self.dirty = True
            steps = ((mail, "MAIL FROM"), (rcpt, "RCPT TO"), ("DATA", "DATA"))
            for (line, what), ok in zip(steps, _WANTED, strict=True):
                reply = await self.command(line, what)
                if reply.code // 100 != ok:
                    return self._outcome(env, reply)
        await self.send_pieces(_stuffed(data), "the message", self.settings.data_timeout)
        return None

    def _refusal(self, env: Envelope, data: bytes) -> Outcome | None:
        """A bounce decided here, without sending anything: what the server cannot take."""
        for address in (env.mail_from, env.rcpt_to):
            if _BAD_ADDRESS.search(address):
                return self._local(env, "5.1.3", f"invalid address {address!r}")
        size = self.extensions.get("SIZE", "")
        limit = int(size) if size.isdigit() else 0
        if limit and len(data) > limit:
            return self._local(
                env,
                "5.3.4",
                f"message too big for the server: {len(data)} bytes, its limit is {limit}",
            )
        if not data.isascii() and "8BITMIME" not in self.extensions:
            return self._local(env, "5.6.3", "8-bit message and the server lacks 8BITMIME")
        ascii_addresses = env.mail_from.isascii() and env.rcpt_to.isascii()
        if not ascii_addresses and "SMTPUTF8" not in self.extensions:
            return self._local(env, "5.6.7", "non-ASCII address and the server lacks SMTPUTF8")
        return None

    def _check_rset(self, reply: Reply) -> None:
        if reply.code // 100 != 2:  # the server is confused: no QUIT, just close
            self.broken = True
            raise _Failure(f"RSET refused: {reply}", reply)
        self.dirty = False

    def _outcome(self, env: Envelope, reply: Reply, final: bool = False) -> Outcome:
        if final and reply.code // 100 == 2:
            status = "delivered"
        elif reply.code // 100 == 5 and reply.code != 530:  # 530: AUTH needed, not our bounce
            status = "bounced"
        else:
            status = "deferred"
        return Outcome(
            env.ref, status, reply.code, reply.enhanced, reply.text, self.host, tls=self.tls
        )

    def _local(self, env: Envelope, enhanced: str, text: str) -> Outcome:
        return Outcome(env.ref, "bounced", None, enhanced, text, self.host, tls=self.tls)


class _Channel(asyncio.Protocol):
    """The connection: what arrives is buffered and read by lines; writes honour flow control."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended = False  # EOF received or connection lost
        self.error: BaseException | None = None
        self.lost = self.loop.create_future()
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        _wake(self._readable)

    def eof_received(self) -> bool:
        self.ended = True
        _wake(self._readable)
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.ended = True
        self.error = self.error or exc
        _wake(self._readable)
        _wake(self._writable)
        _wake(self.lost)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        _wake(self._writable)

    async def readline(self) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > MAX_LINE:
                raise _Lost(ValueError("reply line too long"))
            if self.ended:
                raise _Lost(self.error)
            self._readable = self.loop.create_future()
            try:
                await self._readable
            finally:
                self._readable = None

    def write(self, data: bytes) -> None:
        if self.ended or self.transport is None or self.transport.is_closing():
            raise _Lost(self.error)
        self.transport.write(data)

    async def drain(self) -> None:
        while self._paused and not self.ended:
            self._writable = self.loop.create_future()
            try:
                await self._writable
            finally:
                self._writable = None
        if self.ended:
            raise _Lost(self.error)

    async def start_tls(
        self, context: ssl.SSLContext, server_name: str | None, timeout: float
    ) -> None:
        self.buffer.clear()  # RFC 3207 4.2: plaintext received before the handshake is void
        raw = self.transport
        if raw is None:
            raise _Lost(self.error)
        try:
            self.transport = await self.loop.start_tls(
                raw,
                self,
                context,
                server_hostname=server_name or _peer_ip(raw),
                ssl_handshake_timeout=timeout,
                ssl_shutdown_timeout=CLOSE_TIMEOUT,
            )
        except BaseException:
            # start_tls closed the socket; connection_lost will not come to us.
            self.transport = None
            self.ended = True
            raise

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def close(self, abort: bool = False) -> None:
        """Close (or abort) the connection and wait, briefly, until it is closed."""
        transport = self.transport
        if transport is None:
            return
        if abort:
            transport.abort()
        elif not transport.is_closing():
            transport.close()
        await asyncio.wait([self.lost], timeout=CLOSE_TIMEOUT)
        if not self.lost.done():
            transport.abort()


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _crlf(data: bytes) -> bytes:
    """``data`` with every line ending CRLF: as it is when it has no bare CR or LF (counted,
    which is quicker than a substitution over every line of a signed message)."""
    pairs = data.count(b"\r\n")
    if data.count(b"\n") == pairs and data.count(b"\r") == pairs:
        return data
    return _LINE_END.sub(b"\r\n", data)


def _stuffed(data: bytes) -> Iterator[bytes]:
    """The message as DATA sends it, in pieces cut after a line end: a large message is not
    copied whole (a line that begins a piece is stuffed as the first line)."""
    if len(data) <= CHUNK:
        yield _stuff(data)
        return
    start = 0
    while start < len(data):
        cut = data.find(b"\n", start + CHUNK)
        end = len(data) if cut < 0 else cut + 1
        piece = data[start:end]
        if piece.startswith(b"."):
            piece = b"." + piece
        yield piece.replace(b"\r\n.", b"\r\n..")
        start = end
    yield b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n"


def _stuff(data: bytes) -> bytes:
    """The message as DATA sends it: dot-stuffed, ending in CRLF.CRLF."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _tls_context(settings: ClientSettings) -> ssl.SSLContext:
    return _context(settings.verify_certificates, settings.ca_file)


@functools.cache
def _context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """A client context: verifying (against ``ca_file``, or the system's CAs) or not. Made
    once for each (a CA file is read when first used; restart to read it again)."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file or None)


def _peer_ip(transport: asyncio.BaseTransport | None) -> str | None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return peer[0] if peer else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own strerror repeats the address
    return str(exc) or type(exc).__name__


def _why(exc: _Lost) -> str:
    error = exc.args[0] if exc.args else None
    return f" ({_describe(error)})" if error is not None else ""
