"""The SMTP relay with real clients on loopback: smtplib and swaks."""

import asyncio
import base64
import contextlib
import email.policy
import errno
import json
import random
import shutil
import smtplib
import ssl
import subprocess
import threading
from email.message import EmailMessage

import dkim
import pytest
from sqlalchemy import select

from app.smtp.relay import Relay
from app.workers.delivery import Worker
from commands import Gateway
from commands.errors import CommandError
from commands.keys.smtp_credentials import authenticate_smtp
from commands.ratelimit import RateLimited, smtp_bucket
from core.crypto import SecretBox
from models import Delivery, Event, Message, RateCounter
from models.messages import raw_entry, raw_message
from tests import smtppeer
from tests.conftest import SECRET_KEY
from tests.dnsserver import dns_txt
from tests.livesrv import free_port

smtp_peer = smtppeer.smtp_peer
NO_VERIFY = ssl._create_unverified_context()  # noqa: S323 - the relay's self-signed test certificate


@pytest.fixture
def relay_for(base_config, database, clock, tmp_path):
    started = []

    def start(**changes):
        from mta.tls import ensure_self_signed

        ensure_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "mx.postern.test")
        for attempt in range(5):
            # A free port may be taken by another socket before the relay binds it (an
            # outgoing connection's ephemeral port, another test run): try other ports.
            ports = [free_port() for _ in range(3)]
            config = base_config.replace(
                smtp__ports=ports,
                smtp__tls_cert=str(tmp_path / "c.pem"),
                smtp__tls_key=str(tmp_path / "k.pem"),
                **changes,
            )
            relay = Relay(Gateway(config, database, clock=clock))
            try:
                relay.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 4:
                    raise
                relay.stop()
                relay.gateway.close()
                continue
            break
        started.append(relay)
        relay.ports = dict(zip(("inbound", "submission", "tls"), ports, strict=True))
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(relay_for):
    return relay_for()


@pytest.fixture
def credential(api, user, active_domain):
    domain = active_domain()
    smtp = api("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain.id)["SMTP"]
    return smtp["Username"], smtp["Password"]


def message(sender="news@example.com", to="rcpt@dest.example", size=0):
    msg = EmailMessage()
    msg["From"] = f"News <{sender}>"
    msg["To"] = to
    msg["Subject"] = "Over SMTP"
    msg.set_content("Hello from a mail program.\n" + ("x" * 70 + "\n") * (size // 71))
    return msg


def queued(database):
    with database.transaction(readonly=True) as s:
        return s.scalars(select(Delivery).order_by(Delivery.id)).all()


def test_submission_with_starttls(relay, credential, database):
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        refused = c.send_message(message(), to_addrs=["rcpt@dest.example", "two@dest.example"])
    assert refused == {}
    deliveries = queued(database)
    assert sorted(d.recipient for d in deliveries) == ["rcpt@dest.example", "two@dest.example"]
    with database.transaction(readonly=True) as s:
        m = s.scalars(select(Message)).one()
    assert (m.source, m.subject, m.from_email) == ("smtp", "Over SMTP", "news@example.com")
    stored = json.loads(m.payload)
    assert "raw" not in stored and raw_message(stored).startswith(b"From: News <news@example.com>")


def test_the_listeners_and_the_delivery_worker_run_on_uvloop(relay, base_config, database, clock):
    import uvloop  # a dependency wherever it builds (not Windows)

    assert len(relay.controllers) == 3
    assert all(isinstance(c.loop, uvloop.Loop) for c in relay.controllers)

    async def running_loop():
        return asyncio.get_running_loop()

    with Worker(base_config, database, SecretBox(SECRET_KEY.encode()), clock=clock) as worker:
        assert isinstance(worker._run_async(running_loop()), uvloop.Loop)


def test_payloads_keep_submitted_messages_compressed_and_read_the_older_form():
    data = message(size=9000).as_bytes(policy=email.policy.SMTP)
    kept = raw_entry(data)
    assert raw_message(kept) == data and len(kept["rawz"]) < len(data) / 3
    assert raw_message({"raw": base64.b64encode(data).decode()}) == data  # rows stored before
    assert raw_message({"html": "<p>x</p>"}) is None


def test_encoded_and_folded_headers_are_read_decoded(relay, credential, database):
    raw = (
        b"From: =?utf-8?q?Caf=C3=A9_News?= <news@example.com>\r\n"
        b"To: rcpt@dest.example\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9?= order\r\n  has shipped\r\n"
        b"X-Postern-Tags: order,\r\n shipping\r\n"
        b"\r\nHello.\r\n"
        # Header-like lines after the blank line are body, never read as headers.
        b"Subject: not this\r\nFrom: someone@elsewhere.example\r\n\r\nX-Postern-Tags: no\r\n"
    )
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        c.sendmail("news@example.com", ["rcpt@dest.example"], raw)
    with database.transaction(readonly=True) as s:
        m = s.scalars(select(Message)).one()
    assert (m.subject, m.from_email) == ("Café order  has shipped", "news@example.com")
    assert m.tags == '["order", "shipping"]'


def test_every_from_address_must_be_the_domains(relay, credential, database):
    raw = b"From: news@example.com, other@elsewhere.example\r\nTo: r@dest.example\r\n\r\nHi\r\n"
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("news@example.com", ["r@dest.example"], raw)
    assert refused.value.smtp_code == 550 and b"From must be" in refused.value.smtp_error
    assert queued(database) == []


def test_implicit_tls_and_the_250_names_the_message(relay, credential, database):
    with smtplib.SMTP_SSL("127.0.0.1", relay.ports["tls"], context=NO_VERIFY, timeout=10) as c:
        c.login(*credential)
        c.mail("news@example.com")
        c.rcpt("rcpt@dest.example")
        code, reply = c.data(message().as_bytes(policy=email.policy.SMTP))
    assert code == 250
    message_id = queued(database)[0].message_id
    assert message_id in reply.decode()


def test_inbound_port_takes_auth_after_starttls(relay, credential, database):
    with smtplib.SMTP("127.0.0.1", relay.ports["inbound"], timeout=10) as c:
        c.ehlo()
        with pytest.raises(smtplib.SMTPException):
            c.login(*credential)  # no AUTH in clear
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        c.send_message(message())
    assert len(queued(database)) == 1


def test_wrong_password(relay, credential):
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            c.login(credential[0], "not-the-password")
    assert err.value.smtp_code == 535


def test_no_auth_no_relay(relay, database):
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.ehlo()
        code, _ = c.mail("news@example.com")
        assert code == 530
    with smtplib.SMTP("127.0.0.1", relay.ports["inbound"], timeout=10) as c:
        c.ehlo()
        assert c.mail("someone@elsewhere.example")[0] == 250
        code, text = c.rcpt("victim@gmail.example")
        assert code == 550 and b"Relaying denied" in text
    assert queued(database) == []


def test_foreign_sender_refused(relay, credential, database):
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        c.ehlo()
        assert c.mail("ceo@bank.example")[0] == 553
        c.rset()
        c.mail("news@example.com")
        c.rcpt("rcpt@dest.example")
        code, text = c.data(message(sender="ceo@bank.example").as_bytes(policy=email.policy.SMTP))
        assert code == 550 and b"From must be an address at example.com" in text
    assert queued(database) == []


def test_oversize_and_too_many_recipients(relay_for, credential, database):
    relay = relay_for(
        sending__max_message_bytes=20000, sending__max_recipients=2, sending__max_bcc=1
    )
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        assert c.esmtp_features["size"] == "20000"
        big = message(size=40000).as_bytes(policy=email.policy.SMTP)
        # Declared too large: refused before anything is sent.
        assert c.mail("news@example.com", options=[f"SIZE={len(big)}"])[0] == 552
        c.mail("news@example.com")
        assert [c.rcpt(f"r{i}@dest.example")[0] for i in range(4)] == [250, 250, 250, 452]
        # Not declared, then too much data: refused.
        code, text = c.data(big)
        assert code == 552, text
    assert queued(database) == []


def test_repeated_failures_lock_the_client_out(relay_for, credential):
    relay = relay_for(smtp__auth_max_failures=2)
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=30) as c:
        c.starttls(context=NO_VERIFY)
        for _ in range(2):
            with pytest.raises(smtplib.SMTPAuthenticationError):
                c.login(credential[0], "wrong")
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            c.login(*credential)  # even the right password, for a while
    assert err.value.smtp_code == 454


def _login(relay, credential):
    c = smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=30)
    c.starttls(context=NO_VERIFY)
    c.login(*credential)
    return c


def test_the_rate_limit_refuses_the_message_then_mail_from_with_451(
    relay_for, credential, database, clock
):
    relay = relay_for(ratelimit__requests=2)
    caller, _ = authenticate_smtp(database, *credential)
    bucket = smtp_bucket(caller.credential_id)
    clock.freeze()  # the messages fall in one rate-limit window
    with _login(relay, credential) as c:
        for _ in range(2):
            assert c.send_message(message()) == {}
        # The third is counted in the transaction that would have accepted it, and refused.
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.send_message(message())
        assert err.value.smtp_code == 451
        assert b"Too many messages: wait" in err.value.smtp_error
        assert b"for another 2" in err.value.smtp_error
        # From then until the window ends, MAIL FROM is refused before any data is sent.
        code, text = c.mail("news@example.com")
        assert code == 451 and b"Too many messages: wait" in text and b"for another 2" in text
        c.rset()
        # The window ends on the gateway's clock: MAIL FROM and the message are taken again.
        clock.advance(seconds=60)
        assert c.send_message(message()) == {}
    assert len(queued(database)) == 3
    with database.transaction(readonly=True) as s:
        counted = s.scalars(select(RateCounter.hits).where(RateCounter.bucket == bucket)).all()
    assert sum(counted) == 4  # in the application database, with the mail it counts


def test_the_quota_refuses_the_message_with_451(relay_for, credential, database):
    relay = relay_for(sending__quota=1)
    with _login(relay, credential) as c:
        assert c.send_message(message()) == {}
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.send_message(message())
    assert err.value.smtp_code == 451 and b"Sending limit reached" in err.value.smtp_error
    assert len(queued(database)) == 1


def test_suppressed_recipients_are_skipped_and_all_suppressed_is_550(
    relay, credential, database, api, user
):
    api("Suppression.Add", APIKey=user.api_key, EmailAddress="gone@dest.example")
    with _login(relay, credential) as c:
        assert c.send_message(message(), to_addrs=["gone@dest.example", "here@dest.example"]) == {}
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.send_message(message(), to_addrs=["gone@dest.example"])
    assert err.value.smtp_code == 550
    assert sorted((d.recipient, d.status) for d in queued(database)) == [
        ("gone@dest.example", "suppressed"),
        ("here@dest.example", "queued"),
    ]


def test_clients_at_once_each_get_their_own_message_committed(relay, credential, database):
    """Submissions of several connections share transactions: every 250 names a message
    committed with that client's recipient and subject."""
    answers = {}

    def client(n):
        with _login(relay, credential) as c:
            for i in range(8):
                msg = message(to=f"c{n}m{i}@dest.example")
                msg.replace_header("Subject", f"c{n}m{i}")
                c.mail("news@example.com")
                c.rcpt(f"c{n}m{i}@dest.example")
                code, text = c.data(msg.as_bytes(policy=email.policy.SMTP))
                assert code == 250, text
                answers[f"c{n}m{i}"] = text.decode().rsplit(" ", 1)[1]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 32
    with database.transaction(readonly=True) as s:
        stored = {m.id: m.subject for m in s.scalars(select(Message))}
        recipients = {d.message_id: d.recipient for d in s.scalars(select(Delivery))}
    assert {answers[subject]: subject for subject in answers} == stored
    assert all(recipients[mid] == f"{stored[mid]}@dest.example" for mid in stored)


@pytest.fixture
def smtp_caller(credential, database):
    caller, why = authenticate_smtp(database, *credential)
    assert caller is not None, why
    return caller


def raw(sender="news@example.com", to="rcpt@dest.example"):
    return message(sender, to).as_bytes(policy=email.policy.SMTP)


def test_submissions_together_are_answered_each_on_their_own(
    gateway, smtp_caller, database, api, user
):
    api("Suppression.Add", APIKey=user.api_key, EmailAddress="gone@dest.example")
    results = gateway.submit_many(
        [
            (smtp_caller, ["a@dest.example"], raw(to="a@dest.example")),
            (smtp_caller, ["b@dest.example"], raw(sender="x@elsewhere.example")),
            (smtp_caller, ["gone@dest.example"], raw(to="gone@dest.example")),
            (smtp_caller, ["d@dest.example"], raw(to="d@dest.example")),
        ]
    )
    first, foreign, suppressed, last = results
    assert isinstance(foreign, CommandError) and foreign.code == 3
    assert isinstance(suppressed, CommandError) and suppressed.code == 14
    assert sorted(d.recipient for d in queued(database)) == ["a@dest.example", "d@dest.example"]
    with database.transaction(readonly=True) as s:
        assert {m.id for m in s.scalars(select(Message))} == {first, last}
        rejected = s.scalars(select(Event).where(Event.type == "rejected")).all()
    assert [e.recipient for e in rejected] == ["gone@dest.example"]  # 14 keeps its event


def test_submissions_together_count_toward_the_quota(base_config, database, clock, smtp_caller):
    gateway = Gateway(base_config.replace(sending__quota=2), database, clock=clock)
    results = gateway.submit_many(
        [(smtp_caller, [f"r{i}@dest.example"], raw(to=f"r{i}@dest.example")) for i in range(3)]
    )
    assert [isinstance(r, str) for r in results] == [True, True, False]
    assert results[2].code == 17
    assert len(queued(database)) == 2


def smtp_hits(database, caller) -> int:
    with database.transaction(readonly=True) as s:
        bucket = smtp_bucket(caller.credential_id)
        return sum(s.scalars(select(RateCounter.hits).where(RateCounter.bucket == bucket)))


def test_submissions_together_count_each_credentials_rate_limit_in_order(
    base_config, database, clock, smtp_caller, api, user
):
    clock.freeze()  # the submissions fall in one rate-limit window
    domain_id = database_domain_id(database)
    smtp = api("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain_id)["SMTP"]
    other, _ = authenticate_smtp(database, smtp["Username"], smtp["Password"])
    assert other.credential_id > smtp_caller.credential_id
    gateway = Gateway(base_config.replace(ratelimit__requests=2), database, clock=clock)
    callers = [other, smtp_caller, other, other, smtp_caller, smtp_caller]
    results = gateway.submit_many(
        [(c, [f"r{i}@dest.example"], raw(to=f"r{i}@dest.example")) for i, c in enumerate(callers)]
    )
    refused = [isinstance(r, RateLimited) for r in results]
    assert refused == [False, False, False, True, False, True]
    assert results[3].decision.limit == 2 and results[3].decision.retry_after >= 1
    assert len(queued(database)) == 4
    assert (smtp_hits(database, smtp_caller), smtp_hits(database, other)) == (3, 3)


def database_domain_id(database) -> int:
    from models import Domain

    with database.transaction(readonly=True) as s:
        return s.scalars(select(Domain.id)).one()


def test_a_failing_submission_among_others_fails_alone(gateway, smtp_caller, database, monkeypatch):
    import commands.sending.handlers

    write = commands.sending.handlers.write_message

    def failing(conn, message, recipients, blocked, now):
        if recipients[0].email == "bad@dest.example":
            raise RuntimeError("the disk is full")
        return write(conn, message, recipients, blocked, now)

    monkeypatch.setattr(commands.sending.handlers, "write_message", failing)
    results = gateway.submit_many(
        [
            (smtp_caller, [f"{n}@dest.example"], raw(to=f"{n}@dest.example"))
            for n in ["a", "bad", "c"]
        ]
    )
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert sorted(d.recipient for d in queued(database)) == ["a@dest.example", "c@dest.example"]
    # The undone transactions took their rate-limit hits back with them.
    assert smtp_hits(database, smtp_caller) == 2


@pytest.fixture
def signing_domain(credential, database, dns_server, publish):
    """The credential's domain with its DKIM key in DNS; dest.example resolves to loopback."""
    from models import Domain

    with database.transaction(readonly=True) as s:
        domain_id = s.scalars(select(Domain.id)).one()
    publish(domain_id, skip=("ownership",))
    dns_server.add("dest.example", "A", "127.0.0.1")
    return domain_id


@pytest.fixture
def deliver_queued(base_config, database, clock, smtp_peer):
    """Run a worker once against the peer: the number of deliveries it handled."""

    def run():
        config = base_config.replace(delivery__mx_port=smtp_peer.port)
        with Worker(config, database, SecretBox(SECRET_KEY.encode()), clock=clock) as worker:
            return worker.run_once()

    return run


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_through_starttls_arrives_signed(
    relay, credential, signing_domain, deliver_queued, smtp_peer, dns_server
):
    out = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(relay.ports["submission"]),
            "--tls",
            "--auth",
            "LOGIN",
            f"--auth-user={credential[0]}",
            f"--auth-password={credential[1]}",
            "--from",
            "news@example.com",
            "--to",
            "rcpt@dest.example",
            "--header",
            "Subject: Sent with swaks",
            "--body",
            "Hello from swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as" in out.stdout
    assert deliver_queued() == 1
    data = smtp_peer.messages[0].data
    assert dkim.verify(data, dnsfunc=dns_txt(dns_server))
    assert b"Sent with swaks" in data and b"message-id:" in data.lower()


def test_a_message_stored_in_the_older_uncompressed_form_is_still_delivered(
    relay, credential, signing_domain, deliver_queued, database, smtp_peer, dns_server
):
    from sqlalchemy import update

    with _login(relay, credential) as c:
        assert c.send_message(message(size=3000)) == {}
    with database.transaction() as s:
        m = s.scalars(select(Message)).one()
        data = raw_message(json.loads(m.payload))
        older = {"raw": base64.b64encode(data).decode(), "track_links": None, "track_opens": None}
        s.execute(update(Message).where(Message.id == m.id).values(payload=json.dumps(older)))
    assert deliver_queued() == 1
    received = smtp_peer.messages[0].data
    assert dkim.verify(received, dnsfunc=dns_txt(dns_server))
    assert received.endswith(data.partition(b"\r\n\r\n")[2])  # the body as submitted


def test_addresses_of_mail_and_rcpt_are_read_as_aiosmtpd_reads_them():
    """The relay's quick reading of plain <local@domain> addresses gives aiosmtpd's answers."""
    from aiosmtpd.smtp import SMTP

    from app.smtp.relay import RelaySMTP

    loop = asyncio.new_event_loop()  # the protocol objects want one; closed at the end
    ours, theirs = RelaySMTP(object(), loop=loop), SMTP(object(), loop=loop)
    rnd = random.Random(5)
    atext = "ab1!#$%&'*+/=?^_`{|}~-.\" ()@<>\t"
    cases = [
        "<a@b.c>",
        "<a.b+c@x-y.example> SIZE=100 BODY=8BITMIME",
        "<a@b.c>\tSIZE=1",
        "<a@b.c> (comment) SIZE=1",
        "<>",
        "a@b.c",
        "<a..b@c>",
        '<"q u"@b.c>',
        "<a@[127.0.0.1]>",
        "<@relay.example:a@b.c>",
        "<" + "x" * 65 + "@b.c>",
    ]
    for _ in range(5000):
        local = "".join(rnd.choice(atext) for _ in range(rnd.randint(0, 8)))
        host = "".join(rnd.choice("ab1-.") for _ in range(rnd.randint(0, 8)))
        tail = "".join(rnd.choice(" \t(x)=S") for _ in range(rnd.randint(0, 6)))
        cases.append(f"{rnd.choice(['', ' '])}<{local}@{host}>{tail}")
    try:
        for case in cases:
            assert ours._getaddr(case) == theirs._getaddr(case), case
    finally:
        loop.close()


class _Recorder:
    def __init__(self):
        self.contents = []

    async def handle_DATA(self, server, session, envelope):
        self.contents.append(envelope.original_content)
        return "250 OK"


@pytest.fixture(scope="module")
def data_servers():
    """aiosmtpd's own SMTP and the relay's RelaySMTP side by side, same settings."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    from app.smtp.relay import RelaySMTP

    servers = {}
    for name, cls in (("aiosmtpd", SMTP), ("relay", RelaySMTP)):

        class Ctl(Controller):
            def factory(self, cls=cls):
                return cls(self.handler, **self.SMTP_kwargs)

        recorder = _Recorder()
        ctl = Ctl(recorder, hostname="127.0.0.1", port=free_port(), data_size_limit=3000, ident="x")
        ctl.start()
        servers[name] = (ctl, recorder)
    yield servers
    for ctl, _ in servers.values():
        ctl.stop()


def _transcript(port: int, chunks: list[bytes], pause: float) -> bytes:
    """Send EHLO, one envelope and DATA, then ``chunks`` one by one, then QUIT; every reply."""
    import socket
    import time

    replies = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.sendall(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\n")
            for chunk in chunks:
                time.sleep(pause)
                s.sendall(chunk)
            time.sleep(pause)
            s.sendall(b"QUIT\r\n")
            while block := s.recv(65536):
                replies += block
        except (BrokenPipeError, ConnectionResetError):  # the server hung up (bad commands)
            with contextlib.suppress(OSError):
                while block := s.recv(65536):
                    replies += block
    return replies


def _compare(data_servers, chunks: list[bytes], pause: float = 0.0) -> None:
    seen = []
    for ctl, recorder in data_servers.values():
        recorder.contents.clear()
        seen.append((_transcript(ctl.port, chunks, pause), list(recorder.contents)))
    assert seen[0] == seen[1], chunks


DATA_CASES = {
    "plain": b"Subject: hi\r\n\r\nHello.\r\n.\r\n",
    "dots": b"..first\r\n.\r\n",
    "dot lines": b"a\r\n..\r\n...b\r\n.c\r\n\r\n.\r\n",
    "empty": b".\r\n",
    "blank first line": b"\r\n.\r\n",
    "bare LF and CR": b"a\nb\rc\r\n.\nd\r\n.\r\n",
    "no final line": b"a\r\n.\r\n",
    "pipelined next message": (
        b"one\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<r@d.example>\r\nDATA\r\ntwo\r\n.\r\n"
    ),
    "too much": b"".join(b"%04d" % i + b"x" * 60 + b"\r\n" for i in range(60)) + b".\r\n",
    "long line": b"a" * 1200 + b"\r\nb\r\n.\r\n",
    "line at the limit": b"a" * 999 + b"\r\n" + b"b" * 1000 + b"\r\n.\r\n",
    "long line, then too much": (
        b"a" * 1200 + b"\r\n" + b"".join(b"x" * 70 + b"\r\n" for _ in range(60)) + b".\r\n"
    ),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_data_is_read_as_aiosmtpd_reads_it(data_servers, case):
    """The relay reads DATA in blocks: the same replies and messages as aiosmtpd line by
    line, whether the message arrives at once or with its end split across packets."""
    raw = DATA_CASES[case]
    _compare(data_servers, [raw])
    end = raw.find(b"\r\n.\r\n")
    for cut in range(max(1, end - 1), min(len(raw), end + 6)):
        _compare(data_servers, [raw[:cut], raw[cut:]], pause=0.02)


def test_random_data_is_read_as_aiosmtpd_reads_it(data_servers):
    rnd = random.Random(7)
    pieces = [b".", b"..", b"\r\n", b"\r", b"\n", b"x", b"yz" * 20, b"\r\n.", b".\r\n"]
    pieces += [b"L" * 999, b"M" * 1200]  # lines near and past the length limit, and so the
    for _ in range(60):  # size limit (3000 bytes)
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 60))) + b"\r\n.\r\n"
        cuts = sorted(rnd.sample(range(1, len(raw)), min(3, len(raw) - 1)))
        chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        _compare(data_servers, chunks, pause=0.005)


MALFORMED_HEADERS = [
    b"From: News <news@example.com>\r\nTo: rcpt@dest.example\r\nNot a header\r\n\r\nHi\r\n",
    b"From : News <news@example.com>\r\nTo: rcpt@dest.example\r\n\r\nHi\r\n",
    b" folded\r\nFrom: news@example.com\r\n\r\nHi\r\n",
]


def test_a_header_block_the_signer_cannot_read_is_refused_at_data_and_the_session_goes_on(
    relay, credential, database
):
    """A header line without a colon (or with a space before it) would fail the message's
    signing, and with it its batch, after it was accepted: it is refused at DATA."""
    with _login(relay, credential) as c:
        for raw in MALFORMED_HEADERS:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail("news@example.com", ["rcpt@dest.example"], raw)
            assert refused.value.smtp_code == 550
            assert refused.value.smtp_error.startswith(b"5.6.0 Malformed message header: line")
        # The same connection goes on to submit a message whose header block is readable.
        assert (
            c.sendmail("news@example.com", ["rcpt@dest.example"], raw.replace(b" f", b"X: f")) == {}
        )
    assert [d.recipient for d in queued(database)] == ["rcpt@dest.example"]


def _smtp_id(api, user, username):
    domains = api("EmailGateway.GetDomains", APIKey=user.api_key)["Domains"]
    for d in domains:
        for row in api("EmailGateway.GetSMTPs", APIKey=user.api_key, DomainID=d["DomainID"])[
            "SMTPs"
        ]:
            if row["Username"] == username:
                return row["SMTPID"]
    raise AssertionError(username)


def test_a_deleted_credential_refuses_the_next_mail_from_of_an_open_session(
    relay, api, user, credential, database
):
    """Seen: a session logged in before DeleteSMTP still got 250."""
    smtp_id = _smtp_id(api, user, credential[0])
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        assert c.send_message(message()) == {}
        deleted = api("EmailGateway.DeleteSMTP", APIKey=user.api_key, smtpid=smtp_id)
        assert deleted["Success"] is True
        code, text = c.mail("news@example.com")
        assert code == 530 and b"revoked" in text
        c.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError):  # and it cannot log in again
            c.login(*credential)
    assert len(queued(database)) == 1


def test_a_reset_password_refuses_the_next_mail_from_until_the_new_one_logs_in(
    relay, api, user, credential, database
):
    smtp_id = _smtp_id(api, user, credential[0])
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        reset = api("EmailGateway.ResetSMTPPassword", APIKey=user.api_key, smtpid=smtp_id)
        assert reset["Success"] is True
        code, _ = c.mail("news@example.com")
        assert code == 530
        c.rset()
        c.login(credential[0], reset["SMTP"]["Password"])  # the same session, the new password
        assert c.send_message(message()) == {}
    assert len(queued(database)) == 1


LOCKOUT_START = 1_800_000_000  # a multiple of smtp.auth_lockout (900 s): a window begins there


def _auth(relay, credential, password, source):
    """One AUTH PLAIN on the submission port from the loopback address ``source``: the reply
    code (smtplib's ``login`` would try a second mechanism after a failure)."""
    with smtplib.SMTP(
        "127.0.0.1", relay.ports["submission"], timeout=30, source_address=(source, 0)
    ) as c:
        c.starttls(context=NO_VERIFY)
        c.ehlo()
        c.user, c.password = credential[0], password
        try:
            c.auth("PLAIN", c.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        return 235


def test_failed_logins_are_counted_where_every_relay_sees_them(relay_for, credential, clock):
    """Two relays (each with its own gateway, as two processes have) on one database."""
    from datetime import UTC, datetime, timedelta

    start = datetime.fromtimestamp(LOCKOUT_START, UTC)
    clock.freeze(start)
    first = relay_for(smtp__auth_max_failures=2)
    second = relay_for(smtp__auth_max_failures=2)
    right = credential[1]
    # The address: two failures for unknown usernames on the second relay; the first relay
    # refuses that address, the right password too, and takes another address.
    assert _auth(second, ("nobody1", ""), "wrong", "127.0.0.5") == 535
    assert _auth(second, ("nobody2", ""), "wrong", "127.0.0.5") == 535
    assert _auth(first, credential, right, "127.0.0.5") == 454
    assert _auth(first, credential, right, "127.0.0.6") == 235
    # The username: two failures on the first relay, from two addresses; the second relay
    # refuses the right password from a third.
    assert _auth(first, credential, "wrong", "127.0.0.2") == 535
    assert _auth(first, credential, "wrong", "127.0.0.3") == 535
    assert _auth(second, credential, right, "127.0.0.4") == 454
    clock.freeze(start + timedelta(seconds=900))  # the next window: both may log in again
    assert _auth(second, credential, right, "127.0.0.4") == 235
    assert _auth(second, credential, right, "127.0.0.5") == 235


REFUSED_AT_SUBMISSION = [
    "Authentication-Results",
    "ARC-Seal",
    "ARC-Message-Signature",
    "arc-authentication-results",
    "Received-SPF",
    "DKIM-Signature",
    "DomainKey-Signature",
]


def _submitted(extra: bytes) -> bytes:
    return (
        b"From: News <news@example.com>\r\nTo: rcpt@dest.example\r\n" + extra + b"Subject: Hi\r\n"
        b"\r\nHello\r\n"
    )


def test_trace_and_authentication_headers_are_refused_at_data(relay, credential, database):
    """A submitted message may not carry verdicts or signatures of other servers: 550 5.7.1
    at the end of DATA, and the session goes on."""
    with _login(relay, credential) as c:
        for name in REFUSED_AT_SUBMISSION:
            raw = _submitted(name.encode() + b": mx.example; dkim=pass\r\n")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail("news@example.com", ["rcpt@dest.example"], raw)
            assert refused.value.smtp_code == 550, name
            assert refused.value.smtp_error.startswith(b"5.7.1 Header " + name.encode()), (
                refused.value.smtp_error
            )
        assert c.sendmail("news@example.com", ["rcpt@dest.example"], _submitted(b"")) == {}
    assert [d.recipient for d in queued(database)] == ["rcpt@dest.example"]


def test_received_is_kept_and_return_path_and_delivery_headers_are_dropped(
    relay, credential, database, signing_domain, deliver_queued, smtp_peer, dns_server
):
    extra = (
        b"Received: from app.internal by mta.internal; Tue, 1 Apr 2025 12:00:00 +0000\r\n"
        b"Return-Path: <bounces@elsewhere.example>\r\n"
        b"Delivered-To: someone@elsewhere.example\r\n"
        b"X-Original-To: someone@elsewhere.example\r\n"
        b"Bcc: hidden@dest.example\r\n"
    )
    with _login(relay, credential) as c:
        assert c.sendmail("news@example.com", ["rcpt@dest.example"], _submitted(extra)) == {}
    assert deliver_queued() == 1
    received = smtp_peer.messages[0].data
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nreceived: from app.internal" in head
    for gone in (b"return-path:", b"delivered-to:", b"x-original-to:", b"bcc:"):
        assert gone not in head
    assert dkim.verify(received, dnsfunc=dns_txt(dns_server))
