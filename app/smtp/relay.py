"""The SMTP relay: aiosmtpd listeners where mail programs submit with AddSMTP credentials."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import ssl
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from app import metrics
from commands.errors import CommandError
from commands.gateway import Gateway
from commands.keys.smtp_credentials import (
    REVOKED as CREDENTIAL_REVOKED,
)
from commands.keys.smtp_credentials import (
    SUSPENDED_DOMAIN,
    SUSPENDED_USER,
    SMTPCaller,
    authenticate_smtp,
    credential_state,
)
from commands.ratelimit import RateLimited, smtp_bucket
from core.settings import Config, ConfigError, sqlite_path
from mta.addresses import belongs, normalise_address
from mta.eventloop import new_event_loop
from mta.tls import ensure_self_signed

log = logging.getLogger("postern.smtp")

_DATA_BLOCK = 1 << 20  # bytes asked of the reader at a time in DATA: more than it holds
_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's own replies
_TOO_MUCH_DATA = "552 Error: Too much mail data"

# ports[0] takes mail from anyone (bounces) and AUTH after STARTTLS; ports[1] is submission
# (STARTTLS and AUTH required); ports[2] speaks TLS from the first byte (AUTH required).
ROLES = ("inbound", "submission", "tls")

# How a refused submission is answered, by the send check's code.
REPLIES = {
    3: "550 5.7.1 {text}",
    14: "550 5.7.1 All recipients are in the suppression list",
    17: "451 4.7.1 Sending limit reached: try again later",
    19: "550 5.1.3 {text}",
    35: "550 5.6.0 {text}",  # a header block the signer could not read
    41: "550 5.7.1 {text}",  # a trace or authentication header a sender may not set
    12: "550 5.7.1 Account disabled",
    32: "550 5.7.1 Domain is not activated",
}
# MAIL FROM in a session whose credential was deleted, reset or disabled after it logged in.
REVOKED = "530 5.7.0 Authentication required: the credential was revoked or its password reset"


# An address in angle brackets made of dot-atoms only ("<local.part@host.example>"), the form
# nearly every client sends; the rest of the line (MAIL and RCPT parameters) follows it.
_PLAIN_ADDRESS = re.compile(
    r"\s*<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
)


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with a quicker reading of the plain addresses of MAIL and RCPT.

    aiosmtpd reads every address with the email package's header parser (and defines a
    class on each call); the plain ``<local@domain>`` form gives the same answer read by
    one regular expression, and anything else still goes to aiosmtpd's own reading.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A session begins (counted once: STARTTLS makes this call again)."""
        super().connection_made(transport)
        if not getattr(self, "_counted", False):
            self._counted = True
            handler = self.event_handler
            metrics.smtp_session(handler.role if isinstance(handler, RelayHandler) else "other")

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _PLAIN_ADDRESS.match(arg or "")
        if match is None:
            return super()._getaddr(arg)
        rest = arg[match.end() :].lstrip(" \t")
        if rest.startswith("("):  # a comment after the address: aiosmtpd's reading
            return super()._getaddr(arg)
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def smtp_DATA(self, arg: str) -> None:
        """DATA as aiosmtpd answers it, with the message read in blocks rather than lines.

        aiosmtpd awaits each line of a message on its own, and its reader holds at most two
        lines' worth, so an 8 KB message costs a hundred reads and as many pauses of the
        socket. This reads whatever has arrived and finds the end (``CRLF . CRLF``, or a
        first line of ``.``) in it, then gives back to the reader what follows the end (the
        next command, when the client pipelines). Lines are checked as aiosmtpd checks them,
        in the order they come: the first line that is too long (500) or takes the message
        past its size limit (552) decides the answer, given once the whole message has been
        read. Leading dots are undone as RFC 5321 4.5.2 says.
        """
        if self._decode_data:  # pragma: no cover - the relay keeps messages as bytes
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data, problem = await self._read_data()
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        if data is None:  # the connection closed before the end of the message
            return
        if problem is not None:
            await self.push(problem)
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's own, unannotated
            return
        if data.startswith(b"."):
            data = data[1:]
        content = data.replace(b"\r\n.", b"\r\n")
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else MISSING
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's own, unannotated
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes | None, str | None]:
        """The message up to its ending line, or the reply that refuses it (then it is read
        to its end but not kept). None when the connection closes first."""
        kept = bytearray()
        checked = 0  # kept[:checked] is whole lines that passed the checks
        problem: str | None = None
        while True:
            block = await self._reader.read(_DATA_BLOCK)
            if not block:
                return None, None
            start = len(kept)
            kept += block
            end = after = -1
            if problem is None and checked == 0 and kept.startswith(b".\r\n"):
                end, after = 0, 3  # the first line ends the message: it is empty
            else:
                found = kept.find(b"\r\n.\r\n", max(0, start - 4))
                if found >= 0:
                    end, after = found + 2, found + 5  # the message keeps its last CRLF
            if problem is None:
                stop = end if end >= 0 else kept.rfind(b"\r\n", checked) + 2  # whole lines
                if stop > max(checked, 1):
                    problem = self._check_lines(kept, checked, stop)
                    checked = stop
                unfinished = len(kept) - checked - kept.endswith(b"\r")
                if problem is None and end < 0 and unfinished > self.line_length_limit:
                    problem = _LINE_TOO_LONG  # a line longer than any allowed, still coming
            if end < 0:
                if problem is not None and len(kept) > 4:
                    del kept[:-4]  # refused: keep only what could begin the ending line
                    checked = len(kept)
                continue
            # The read took all the reader held (it stops the socket long before holding
            # _DATA_BLOCK), so what follows the end goes back to it in order.
            if len(kept) > after and not self._reader.at_eof():
                self._reader.feed_data(bytes(kept[after:]))
            return (b"", problem) if problem else (bytes(kept[:end]), None)

    def _check_lines(self, kept: bytearray, start: int, stop: int) -> str | None:
        """Check the whole lines of ``kept[start:stop]`` (the lines before ``start`` passed)
        in order, as aiosmtpd does: a line over its reader's limit is too long before it is
        counted; otherwise its bytes are added to the size, then its length is checked."""
        limit, longest = self.data_size_limit, self.line_length_limit
        lines = bytes(kept[start:stop]).split(b"\r\n")[:-1]
        if (not limit or stop <= limit) and max(map(len, lines)) + 2 <= longest:
            return None  # the usual case: nothing to refuse
        size = start
        for line in lines:
            if len(line) > longest:
                return _LINE_TOO_LONG
            size += len(line) + 2
            if limit and size > limit:
                return _TOO_MUCH_DATA
            if len(line) + 2 > longest:
                return _LINE_TOO_LONG
        return None


class RelayController(Controller):
    def factory(self) -> SMTP:
        return RelaySMTP(self.handler, **self.SMTP_kwargs)


# One submission waiting for the submitter thread: who, to whom, what, and where to answer.
Queued = tuple[SMTPCaller, list[str], bytes, asyncio.AbstractEventLoop, "asyncio.Future[str]"]


class Submitter:
    """SMTP submissions of every listener, accepted in shared transactions (group commit).

    One thread takes whatever has queued up while its last transaction ran and accepts it
    all in one (``Gateway.submit_many``): one commit and one fsync for as many messages as
    arrived meanwhile, without waiting for more. Each submission's answer goes back to the
    event loop of its connection once that transaction has committed.
    """

    def __init__(self, gateway: Gateway, most: int = 64):
        self.gateway = gateway
        self.most = most
        self._queue: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()  # None: stop
        self._thread: threading.Thread | None = None

    def rate_limited(self, credential_id: int) -> str | None:
        """The 451 for MAIL FROM by a credential that its last submission found past its
        rate limit, while that window lasts on the gateway's clock and the count says so;
        None otherwise (the count itself is made in the transaction that accepts, and a
        refusal there answers the message's DATA)."""
        refused = self.gateway.limiter.refusal(smtp_bucket(credential_id))
        if refused is None:
            return None
        return _too_many(refused.limit, refused.retry_after)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="postern-submit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    async def submit(self, caller: SMTPCaller, recipients: list[str], data: bytes) -> str:
        """The message id once committed; or what refused the submission, raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queue.put((caller, recipients, data, loop, future))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.most:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # what was queued before stop() is still answered
                    stopping = True
                    break
                batch.append(item)
            try:
                results = self.gateway.submit_many([entry[:3] for entry in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting client gets its 451
                results = [exc] * len(batch)
            for (_, _, _, loop, future), result in zip(batch, results, strict=True):
                with contextlib.suppress(RuntimeError):  # its listener stopped: nobody waits
                    loop.call_soon_threadsafe(_settle, future, result)


def _settle(future: asyncio.Future[str], result: str | Exception) -> None:
    if future.done():  # the client went away meanwhile
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


class RelayHandler:
    """The SMTP conversation: every check happens before 250, the commit before the reply."""

    def __init__(self, gateway: Gateway, role: str, submitter: Submitter):
        self.gateway = gateway
        self.config = gateway.config
        self.role = role
        # Failed logins per client address and per username, counted where every relay
        # process sees them (the rate limiter's store): slowed, then refused a while.
        self.throttle = gateway.smtp_auth_throttle
        self.submitter = submitter
        self._domain_names: dict[int, str] = {}

    # -- authentication -----------------------------------------------------------------

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> str | object:
        """Before each AUTH: slow down a client after failures, refuse it past the limit."""
        peer = session.peer[0] if session.peer else "?"
        failures = self.throttle.failures(("ip", peer))
        if failures >= self.throttle.limits["ip"]:
            return "454 4.7.0 Too many failed logins from your address; try again later"
        if failures:
            await asyncio.sleep(min(0.5 * 2 ** (failures - 1), 4.0))
        return MISSING

    def authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        peer = session.peer[0] if session.peer else "?"
        username = auth_data.login.decode("utf-8", "replace").strip().lower()
        keys = [("ip", peer), ("user", username)]
        if self.throttle.wait(keys):
            metrics.smtp_auth_failed(self.role)
            return AuthResult(
                success=False,
                handled=False,
                message="454 4.7.0 Too many failed logins; try again later",
            )
        caller, why = authenticate_smtp(
            self.gateway.db, username, auth_data.password.decode("utf-8", "replace")
        )
        if caller is None:
            self.throttle.fail(keys)
            metrics.smtp_auth_failed(self.role)
            log.info(
                "smtp login refused", extra={"peer": peer, "username": username, "reason": why}
            )
            return AuthResult(success=False, handled=False)
        if self.throttle.failures(keys[1]):
            self.throttle.forget(keys[1])
        return AuthResult(success=True, auth_data=caller)

    # -- the envelope -------------------------------------------------------------------

    def _caller(self, session: Session) -> SMTPCaller | None:
        data = session.auth_data if session.authenticated else None
        return data if isinstance(data, SMTPCaller) else None

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        caller = self._caller(session)
        if caller is None:
            if self.role != "inbound":
                return "530 5.7.0 Authentication required"
        elif (
            state := await asyncio.to_thread(credential_state, self.gateway.db, caller)
        ) == CREDENTIAL_REVOKED:
            # Deleted, its password reset, or disabled since this session logged in: the
            # session is logged out, and may log in again (with the new password).
            session.authenticated, session.auth_data = False, None
            log.info("smtp credential revoked", extra={"credential": caller.credential_id})
            return REVOKED
        elif state == SUSPENDED_USER:
            return REPLIES[12]  # suspended by an administrator: the session stays logged in
        elif state == SUSPENDED_DOMAIN:
            return REPLIES[32]
        elif not belongs(address or "", caller.domain_name):
            return f"553 5.7.1 The sender must be an address at {caller.domain_name}"
        else:
            refusal = self.submitter.rate_limited(caller.credential_id)
            if refusal is not None:
                return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._caller(session) is None:
            # Without credentials, only mail for Postern's own return paths (bounces and
            # complaints) is taken, and only on the inbound port: never an open relay.
            if self.role == "inbound" and await asyncio.to_thread(
                self.gateway.accepts_for, address or ""
            ):
                if len(envelope.rcpt_tos) >= 10:
                    return "452 4.5.3 Too many recipients"
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"
            return "550 5.7.1 Relaying denied: authenticate first"
        limits = self.config.sending
        if len(envelope.rcpt_tos) >= limits.max_recipients + limits.max_bcc:
            return "452 4.5.3 Too many recipients"
        if normalise_address(address or "") is None:
            return "550 5.1.3 Bad recipient address syntax"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        caller = self._caller(session)
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes), "the relay keeps messages as bytes (decode_data off)"
        if caller is None:  # mail for a return path (RCPT took nothing else)
            try:
                result = await asyncio.to_thread(
                    self.gateway.receive_report, list(envelope.rcpt_tos), data
                )
            except Exception:  # noqa: BLE001 - the sender retries a 4xx
                log.exception("bounce processing failed")
                return "451 4.3.0 Temporary failure; please try again later"
            log.info(
                "mail to a return path",
                extra={
                    "report": "none" if result is None else vars(result),
                    "peer": session.peer[0] if session.peer else None,
                },
            )
            # Taken either way: refusing would only send a bounce back to a bounce.
            return "250 2.0.0 Ok"
        try:
            message_id = await self.submitter.submit(caller, list(envelope.rcpt_tos), data)
        except RateLimited as exc:
            return _too_many(exc.decision.limit, exc.decision.retry_after)
        except CommandError as exc:
            return REPLIES.get(exc.code, "554 5.6.0 {text}").format(text=exc.text)
        except Exception:  # noqa: BLE001 - the client retries a 4xx; nothing was accepted
            log.exception("smtp submission failed", extra={"credential": caller.credential_id})
            return "451 4.3.0 Temporary failure; please try again later"
        return f"250 2.0.0 Ok: queued as {message_id}"


def _too_many(limit: int, wait: int) -> str:
    return f"451 4.7.1 Too many messages: wait {wait} seconds for another {limit}"


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def certificate_files(config: Config) -> tuple[Path, Path]:
    """The TLS certificate and key: configured, or self-signed beside the SQLite database."""
    if config.smtp.tls_cert and config.smtp.tls_key:
        return Path(config.smtp.tls_cert), Path(config.smtp.tls_key)
    db_file = sqlite_path(config)
    if db_file is None:
        raise ConfigError(
            "smtp.tls_cert: must be set (with smtp.tls_key) when the database is not an SQLite file"
        )
    cert, key = db_file.with_suffix(".smtp.crt"), db_file.with_suffix(".smtp.key")
    ensure_self_signed(cert, key, config.smtp.hostname)
    return cert, key


class Relay:
    """The listeners of ``smtp.ports`` (at most three, by role), each in its own thread."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.controllers: list[Controller] = []
        self.submitter = Submitter(gateway)
        metrics.install()  # count the messages submitted

    def start(self) -> None:
        config = self.gateway.config
        cert, key = certificate_files(config)
        tls = _server_context(cert, key)
        self.submitter.start()
        for role, port in zip(ROLES, config.smtp.ports, strict=False):
            handler = RelayHandler(self.gateway, role, self.submitter)
            options: dict[str, Any] = dict(
                loop=new_event_loop(),  # one per listener, run and closed by its thread
                hostname=config.smtp.listen_host,
                port=port,
                server_hostname=config.smtp.hostname,
                ident="Postern ESMTP",
                authenticator=handler.authenticator,
                auth_require_tls=not config.smtp.allow_plain_auth,
                data_size_limit=config.sending.max_message_bytes,
                timeout=300,
            )
            if role == "tls":
                # Encrypted from the first byte (aiosmtpd only recognises TLS begun by STARTTLS);
                # handle_MAIL refuses anyone who has not logged in.
                options["auth_require_tls"] = False
                controller = RelayController(handler, ssl_context=tls, **options)
            else:
                controller = RelayController(
                    handler,
                    tls_context=tls,
                    require_starttls=role == "submission",
                    auth_required=role == "submission",
                    **options,
                )
            controller.start()
            self.controllers.append(controller)
            log.info("smtp listening", extra={"role": role, "port": port})

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()
        self.controllers = []
        self.submitter.stop()
