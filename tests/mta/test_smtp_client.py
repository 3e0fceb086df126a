"""The delivery SMTP client against real aiosmtpd servers on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import time

import pytest

from mta.eventloop import new_event_loop
from mta.smtp_client import (
    _LINE_END,
    CHUNK,
    BuildLimit,
    ClientSettings,
    Envelope,
    Reply,
    _crlf,
    _stuff,
    _stuffed,
    deliver,
)
from tests import smtppeer
from tests.smtppeer import server_tls_context

smtp_peer = smtppeer.smtp_peer
make_smtp_peer = smtppeer.make_smtp_peer

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b"\r\n"
    b"the end\r\n"
)


def settings(peer, **options) -> ClientSettings:
    options.setdefault("command_timeout", 10)
    return ClientSettings(helo_name="out.postern.test", port=peer.port, **options)


def envelope(n: int, rcpt: str | None = None, data: bytes = MESSAGE) -> Envelope:
    return Envelope(f"b-{n}@sl.example.com", rcpt or f"user{n}@example.net", data, ref=n)


def run(coroutine):
    """``coroutine`` on the event loop the delivery worker runs on (uvloop's)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coroutine)


def send(peer, envelopes, addresses=("127.0.0.1",), deadline=None, **options):
    return run(deliver(list(addresses), envelopes, settings(peer, **options), deadline=deadline))


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


# -- delivering ---------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [False, True])
def test_several_envelopes_over_one_connection(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)
    envelopes = [envelope(n) for n in range(1, 5)]
    outcomes = send(peer, envelopes)
    assert [o.ref for o in outcomes] == [1, 2, 3, 4]
    assert statuses(outcomes) == ["delivered"] * 4
    assert outcomes[0].code == 250
    assert outcomes[0].enhanced == "2.0.0"
    assert outcomes[0].host == f"127.0.0.1:{peer.port}"
    assert len(peer.connections) == 1
    assert [(m.mail_from, m.rcpt_tos) for m in peer.messages] == [
        (f"b-{n}@sl.example.com", [f"user{n}@example.net"]) for n in range(1, 5)
    ]
    assert {m.helo for m in peer.messages} == {"out.postern.test"}
    assert peer.connections[0].reads[-1] == b"QUIT\r\n"


@pytest.mark.parametrize(
    "data",
    [
        MESSAGE,
        b".starts with a dot\r\n",
        b"Subject: x\r\n\r\n.\r\n.\r\n..\r\n. \r\n",
        b"Subject: no final line break\r\n\r\nlast line",
        b"",
    ],
)
def test_data_arrives_byte_exact(smtp_peer, data):
    outcomes = send(smtp_peer, [envelope(1, data=data)])
    assert statuses(outcomes) == ["delivered"]
    expected = data if data.endswith(b"\r\n") or not data else data + b"\r\n"
    assert smtp_peer.messages[0].data == expected


def test_dot_stuffing_on_the_wire(smtp_peer):
    send(smtp_peer, [envelope(1)])
    wire = smtp_peer.connections[0].received
    body = wire[wire.index(b"DATA\r\n") + 6 : wire.index(b"QUIT\r\n")]
    assert body == (
        b"From: Alice <alice@example.com>\r\n"
        b"To: bob@example.net\r\n"
        b"Subject: dots\r\n"
        b"\r\n"
        b"..a line that starts with a dot\r\n"
        b"..\r\n"
        b"...two dots\r\n"
        b"\r\n"
        b"the end\r\n"
        b".\r\n"
    )


def test_bare_line_feeds_are_sent_as_crlf(smtp_peer):
    send(smtp_peer, [envelope(1, data=b"Subject: x\n\nline\n.\nlone CR\rend\r\n")])
    assert smtp_peer.messages[0].data == b"Subject: x\r\n\r\nline\r\n.\r\nlone CR\r\nend\r\n"


@pytest.mark.parametrize(
    "data",
    [b"", b"a\r\nb\r\n", b"a\rb\r\n", b"a\nb\r\n", b"a\r\n\r", b"\n\r", b"\r\r\n\n"],
)
def test_line_ends_made_crlf_as_the_substitution_makes_them(data):
    assert _crlf(data) == _LINE_END.sub(b"\r\n", data)


def test_a_large_message_is_stuffed_in_pieces_as_it_is_whole():
    rng = random.Random(5)
    for _ in range(30):
        starts = [b"", b".", b"..", b". ", b"x"]
        lines = [
            rng.choice(starts) + b"y" * rng.randrange(3000) for _ in range(rng.randrange(40, 300))
        ]
        data = b"\r\n".join(lines) + rng.choice([b"", b"\r\n", b"\r\n.", b"\r\n.\r\n"])
        pieces = list(_stuffed(data))
        assert b"".join(pieces) == _stuff(data)
        assert len(data) <= CHUNK or max(map(len, pieces)) < CHUNK + 6100


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_large_message_arrives_byte_exact(make_smtp_peer, pipelining):
    """Every line begins with a dot, so every piece does."""
    peer = make_smtp_peer(pipelining=pipelining)
    line = b"." + b"x" * 900 + b"\r\n"
    data = b"Subject: big\r\n\r\n" + line * (5 * CHUNK // len(line)) + b".\r\n..last"
    outcomes = send(peer, [envelope(1, data=data), envelope(2)])
    assert statuses(outcomes) == ["delivered", "delivered"]
    assert peer.messages[0].data == data + b"\r\n"
    assert peer.messages[1].data == MESSAGE


def test_line_ends_made_crlf_on_random_mixes():
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.choice(b"\r\nx") for _ in range(rng.randrange(12)))
        assert _crlf(data) == _LINE_END.sub(b"\r\n", data), data


def test_eight_bit_message_uses_8bitmime(smtp_peer):
    data = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
    outcomes = send(smtp_peer, [envelope(1, data=data)])
    assert statuses(outcomes) == ["delivered"]
    assert smtp_peer.messages[0].data == data
    assert "BODY=8BITMIME" in smtp_peer.messages[0].mail_options


def test_seven_bit_message_uses_no_extension_but_size(smtp_peer):
    send(smtp_peer, [envelope(1)])
    assert smtp_peer.messages[0].mail_options == [f"SIZE={len(MESSAGE)}"]


def test_utf8_address_uses_smtputf8(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1, rcpt="j\u00fcrgen@example.net")])
    assert statuses(outcomes) == ["delivered"]
    assert smtp_peer.messages[0].rcpt_tos == ["j\u00fcrgen@example.net"]
    assert "SMTPUTF8" in smtp_peer.messages[0].mail_options


def test_what_a_plain_smtp_server_cannot_take_bounces(make_smtp_peer):
    peer = make_smtp_peer(ehlo=False)  # HELO only: no 8BITMIME, no SMTPUTF8
    outcomes = send(
        peer,
        [
            envelope(1, rcpt="j\u00fcrgen@example.net"),
            envelope(2, data="Subject: caf\u00e9\r\n\r\n".encode()),
            envelope(3),
        ],
    )
    assert statuses(outcomes) == ["bounced", "bounced", "delivered"]
    assert [o.enhanced for o in outcomes[:2]] == ["5.6.7", "5.6.3"]
    assert [o.code for o in outcomes[:2]] == [None, None]
    assert [m.mail_from for m in peer.messages] == ["b-3@sl.example.com"]


def test_no_envelopes_no_connection(smtp_peer):
    assert send(smtp_peer, []) == []
    assert smtp_peer.connections == []


# -- pipelining ---------------------------------------------------------------------------


def test_pipelining_when_advertised(make_smtp_peer):
    peer = make_smtp_peer(pipelining=True)
    send(peer, [envelope(1), envelope(2)])
    reads = peer.connections[0].reads
    batches = [r for r in reads if b"MAIL FROM:" in r]
    assert len(batches) == 2
    for batch, n in zip(batches, (1, 2), strict=True):
        assert (
            batch
            == (
                f"MAIL FROM:<b-{n}@sl.example.com> SIZE={len(MESSAGE)}\r\n"
                f"RCPT TO:<user{n}@example.net>\r\n"
                "DATA\r\n"
            ).encode()
        )


def test_no_pipelining_when_not_advertised(smtp_peer):
    send(smtp_peer, [envelope(1), envelope(2)])
    reads = smtp_peer.connections[0].reads
    # The client waits for each reply: every command arrives in a read of its own.
    assert not any(r.count(b"\r\n") > 1 for r in reads if not r.startswith(b"From:"))
    assert reads[:4] == [
        b"EHLO out.postern.test\r\n",
        f"MAIL FROM:<b-1@sl.example.com> SIZE={len(MESSAGE)}\r\n".encode(),
        b"RCPT TO:<user1@example.net>\r\n",
        b"DATA\r\n",
    ]


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [False, True])
def test_rcpt_550_bounces_and_the_next_envelope_is_delivered(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)
    peer.fail_rcpt("user2@example.net", 550, "5.1.1 No such user")
    outcomes = send(peer, [envelope(1), envelope(2), envelope(3)])
    assert statuses(outcomes) == ["delivered", "bounced", "delivered"]
    bounce = outcomes[1]
    assert (bounce.ref, bounce.code, bounce.enhanced) == (2, 550, "5.1.1")
    assert bounce.text == "5.1.1 No such user"
    assert bounce.host == f"127.0.0.1:{peer.port}"
    assert len(peer.connections) == 1
    assert [m.rcpt_tos for m in peer.messages] == [["user1@example.net"], ["user3@example.net"]]
    assert b"RSET\r\n" in peer.connections[0].received


@pytest.mark.parametrize("pipelining", [False, True])
def test_rcpt_451_defers(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)
    peer.fail_rcpt("user1@example.net", 451, "4.7.1 Try later", times=1)
    outcomes = send(peer, [envelope(1), envelope(2)])
    assert statuses(outcomes) == ["deferred", "delivered"]
    assert (outcomes[0].code, outcomes[0].enhanced, outcomes[0].text) == (
        451,
        "4.7.1",
        "4.7.1 Try later",
    )


@pytest.mark.parametrize("pipelining", [False, True])
def test_mail_refused(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)
    peer.fail_mail(553, "5.7.1 Sender rejected", times=1)
    outcomes = send(peer, [envelope(1), envelope(2)])
    assert statuses(outcomes) == ["bounced", "delivered"]
    assert (outcomes[0].code, outcomes[0].enhanced) == (553, "5.7.1")
    assert len(peer.messages) == 1


@pytest.mark.parametrize("pipelining", [False, True])
def test_data_554_bounces(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)
    peer.fail_data(554, "5.7.1 Message rejected as spam", times=1)
    outcomes = send(peer, [envelope(1), envelope(2)])
    assert statuses(outcomes) == ["bounced", "delivered"]
    assert (outcomes[0].code, outcomes[0].enhanced) == (554, "5.7.1")
    assert outcomes[0].text == "5.7.1 Message rejected as spam"
    assert [m.rcpt_tos for m in peer.messages] == [["user2@example.net"]]


def test_data_452_defers(smtp_peer):
    smtp_peer.fail_data(452, "4.3.1 Insufficient system storage")
    outcomes = send(smtp_peer, [envelope(1), envelope(2)])
    assert statuses(outcomes) == ["deferred", "deferred"]
    assert {o.code for o in outcomes} == {452}


def test_multi_line_reply(smtp_peer):
    smtp_peer.fail_rcpt(
        "user1@example.net",
        550,
        "5.1.1 The email account that you tried to reach does not exist.\n"
        "5.1.1 Please check the address.\n"
        "5.1.1 https://help.example/NoSuchUser",
    )
    (outcome,) = send(smtp_peer, [envelope(1)])
    assert (outcome.status, outcome.code, outcome.enhanced) == ("bounced", 550, "5.1.1")
    assert outcome.text == (
        "5.1.1 The email account that you tried to reach does not exist. "
        "Please check the address. https://help.example/NoSuchUser"
    )


@pytest.mark.parametrize("pipelining", [False, True])
def test_421_closes_and_defers_the_rest(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)
    peer.fail_rcpt("user2@example.net", 421, "4.7.0 Too many errors, closing")
    outcomes = send(peer, [envelope(1), envelope(2), envelope(3)])
    assert statuses(outcomes) == ["delivered", "deferred", "deferred"]
    for outcome in outcomes[1:]:
        assert (outcome.code, outcome.enhanced) == (421, "4.7.0")
        assert outcome.text == "4.7.0 Too many errors, closing"
    assert len(peer.connections) == 1
    assert b"QUIT" not in peer.connections[0].received


def test_connection_lost_before_the_data_reply_defers(smtp_peer):
    smtp_peer.drop_on_data(times=1)
    outcomes = send(smtp_peer, [envelope(1), envelope(2)])
    assert statuses(outcomes) == ["deferred", "deferred"]
    assert outcomes[0].code is None
    assert outcomes[0].text.startswith("connection lost waiting for the reply to the end of DATA")
    assert smtp_peer.messages == []


def test_size_limit_bounces_without_sending(make_smtp_peer):
    peer = make_smtp_peer(size_limit=len(MESSAGE) + 10)
    big = MESSAGE + b"x" * 20 + b"\r\n"
    outcomes = send(peer, [envelope(1, data=big), envelope(2)])
    assert statuses(outcomes) == ["bounced", "delivered"]
    assert outcomes[0].code is None
    assert outcomes[0].enhanced == "5.3.4"
    assert outcomes[0].text == (
        f"message too big for the server: {len(big)} bytes, its limit is {len(MESSAGE) + 10}"
    )
    assert [m.mail_from for m in peer.messages] == ["b-2@sl.example.com"]
    assert b"b-1@" not in peer.connections[0].received


def test_invalid_address_bounces_without_sending(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1, rcpt="x@example.net>\r\nRSET"), envelope(2)])
    assert statuses(outcomes) == ["bounced", "delivered"]
    assert outcomes[0].enhanced == "5.1.3"
    assert b"x@example.net" not in smtp_peer.connections[0].received


def test_helo_when_ehlo_is_refused(make_smtp_peer):
    peer = make_smtp_peer(ehlo=False)
    outcomes = send(peer, [envelope(1)])
    assert statuses(outcomes) == ["delivered"]
    assert peer.messages[0].helo == "out.postern.test"
    assert peer.messages[0].mail_options == []  # no SIZE without EHLO
    assert peer.connections[0].reads[:2] == [
        b"EHLO out.postern.test\r\n",
        b"HELO out.postern.test\r\n",
    ]


# -- addresses and connection failures ------------------------------------------------------


def test_connection_refused_moves_on_to_the_next_address(smtp_peer):
    # Nothing listens on 127.0.0.2 at the peer's port (which is bound on 127.0.0.1 only).
    outcomes = send(smtp_peer, [envelope(1)], addresses=["127.0.0.2", "127.0.0.1"])
    assert statuses(outcomes) == ["delivered"]
    assert outcomes[0].host == f"127.0.0.1:{smtp_peer.port}"


def test_all_addresses_dead_defers(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1), envelope(2)], addresses=["127.0.0.2", "127.0.0.3"])
    assert statuses(outcomes) == ["deferred", "deferred"]
    for outcome in outcomes:
        assert outcome.code is None
        assert outcome.text == "cannot connect: Connection refused"
        assert outcome.host == f"127.0.0.3:{smtp_peer.port}"
    assert smtp_peer.connections == []


def test_421_greeting_moves_on_to_the_next_address(make_smtp_peer):
    busy = make_smtp_peer()
    good = make_smtp_peer(host="127.0.0.2", port=busy.port)
    busy.fail_next_connections(1)
    outcomes = send(busy, [envelope(1)], addresses=["127.0.0.1", "127.0.0.2"])
    assert statuses(outcomes) == ["delivered"]
    assert outcomes[0].host == f"127.0.0.2:{busy.port}"
    assert len(busy.connections) == 1
    assert busy.messages == []
    assert len(good.messages) == 1


def test_every_greeting_refused_defers_with_the_last(make_smtp_peer):
    first = make_smtp_peer()
    second = make_smtp_peer(host="127.0.0.2", port=first.port)
    first.fail_next_connections(1)
    second.fail_next_connections(1, 554, "5.3.2 No service for you")
    outcomes = send(first, [envelope(1)], addresses=["127.0.0.1", "127.0.0.2"])
    assert statuses(outcomes) == ["deferred"]
    assert (outcomes[0].code, outcomes[0].enhanced) == (554, "5.3.2")
    assert outcomes[0].host == f"127.0.0.2:{first.port}"


def test_greeting_timeout_defers():
    listener = socket.socket()  # accepts at the TCP level (backlog) and never says a word
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        port = listener.getsockname()[1]
        options = ClientSettings(helo_name="out.postern.test", port=port, command_timeout=0.2)
        outcomes = run(deliver(["127.0.0.1"], [envelope(1)], options))
    finally:
        listener.close()
    assert statuses(outcomes) == ["deferred"]
    assert outcomes[0].code is None
    assert outcomes[0].text == "timed out after 0.2 s waiting for the reply to the greeting"


def test_ipv6_address():
    try:
        peer = smtppeer.SMTPPeer(host="::1").start()
    except OSError:
        pytest.skip("no IPv6 on loopback")
    try:
        outcomes = send(peer, [envelope(1)], addresses=["::1"])
    finally:
        peer.stop()
    assert statuses(outcomes) == ["delivered"]
    assert outcomes[0].host == f"[::1]:{peer.port}"


def test_no_address_defers(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1)], addresses=[])
    assert statuses(outcomes) == ["deferred"]
    assert (outcomes[0].code, outcomes[0].text, outcomes[0].host) == (
        None,
        "no address to deliver to",
        None,
    )


def test_addresses_must_be_ip_literals(smtp_peer):
    with pytest.raises(ValueError, match="not an IP address"):
        send(smtp_peer, [envelope(1)], addresses=["localhost"])
    with pytest.raises(ValueError, match="tls must be one of"):
        send(smtp_peer, [envelope(1)], tls="maybe")
    assert smtp_peer.connections == []


# -- TLS and AUTH -------------------------------------------------------------------------


def test_starttls_opportunistic(make_smtp_peer):
    peer = make_smtp_peer(starttls=True, pipelining=True)
    outcomes = send(peer, [envelope(1), envelope(2)])
    assert statuses(outcomes) == ["delivered", "delivered"]
    assert all(m.tls for m in peer.messages)
    assert peer.messages[0].tls_version in ("TLSv1.2", "TLSv1.3")
    assert len(peer.connections) == 1
    assert peer.connections[0].reads[:2] == [b"EHLO out.postern.test\r\n", b"STARTTLS\r\n"]


def test_opportunistic_without_starttls_is_plain(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1)])
    assert statuses(outcomes) == ["delivered"]
    assert not smtp_peer.messages[0].tls


def test_tls_none_does_not_starttls(make_smtp_peer):
    peer = make_smtp_peer(starttls=True)
    send(peer, [envelope(1)], tls="none")
    assert not peer.messages[0].tls
    assert b"STARTTLS" not in peer.connections[0].received


def test_tls_required_without_starttls_defers(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1), envelope(2)], tls="required")
    assert statuses(outcomes) == ["deferred", "deferred"]
    assert outcomes[0].code is None
    assert outcomes[0].text == "the server does not offer STARTTLS, and TLS is required"
    assert b"MAIL FROM" not in smtp_peer.connections[0].received
    assert smtp_peer.connections[0].reads[-1] == b"QUIT\r\n"


def test_tls_required_with_starttls(make_smtp_peer):
    peer = make_smtp_peer(require_starttls=True)
    outcomes = send(peer, [envelope(1)], tls="required")
    assert statuses(outcomes) == ["delivered"]
    assert peer.messages[0].tls


@pytest.mark.parametrize("tls", ["required", "opportunistic"])
def test_certificate_verification_fails_on_a_self_signed_certificate(make_smtp_peer, tls):
    peer = make_smtp_peer(starttls=True)
    outcomes = send(peer, [envelope(1)], tls=tls, verify_certificates=True)
    assert statuses(outcomes) == ["deferred"]
    assert outcomes[0].text.startswith("TLS handshake failed: certificate verification failed")
    assert peer.messages == []
    assert len(peer.connections) == 1  # no plaintext retry when certificates are verified


def test_failed_handshake_is_retried_in_plaintext(make_smtp_peer):
    context = server_tls_context()
    # TLS 1.2 with RSA key exchange only, and an ECDSA certificate: no cipher in common.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    peer = make_smtp_peer(starttls=True, tls_context=context)
    outcomes = send(peer, [envelope(1)])
    assert statuses(outcomes) == ["delivered"]
    assert not peer.messages[0].tls
    assert len(peer.connections) == 2
    assert b"STARTTLS" not in peer.connections[1].received


def test_implicit_tls(make_smtp_peer):
    peer = make_smtp_peer(implicit_tls=True)
    outcomes = send(peer, [envelope(1)], tls="implicit")
    assert statuses(outcomes) == ["delivered"]
    assert peer.messages[0].tls
    assert b"STARTTLS" not in peer.connections[0].received


def test_auth_after_starttls(make_smtp_peer):
    peer = make_smtp_peer(starttls=True, auth={"relay": "s3cret"})
    outcomes = send(peer, [envelope(1)], tls="required", username="relay", password="s3cret")
    assert statuses(outcomes) == ["delivered"]
    assert peer.messages[0].login == "relay"
    assert peer.messages[0].tls


def test_auth_over_implicit_tls(make_smtp_peer):
    peer = make_smtp_peer(implicit_tls=True, auth={"relay": "s3cret"})
    outcomes = send(peer, [envelope(1)], tls="implicit", username="relay", password="s3cret")
    assert statuses(outcomes) == ["delivered"]
    assert peer.messages[0].login == "relay"


def test_auth_never_in_plaintext(make_smtp_peer):
    peer = make_smtp_peer(auth={"relay": "s3cret"})  # AUTH offered without TLS
    for tls in ("opportunistic", "none"):
        outcomes = send(peer, [envelope(1)], tls=tls, username="relay", password="s3cret")
        assert statuses(outcomes) == ["deferred"]
        assert outcomes[0].text == "will not send the password: the connection is not encrypted"
    assert len(peer.connections) == 2
    assert all(b"AUTH" not in c.received for c in peer.connections)
    assert peer.messages == []


def test_auth_login(make_smtp_peer):
    peer = make_smtp_peer(starttls=True, auth={"relay": "s3cret"}, auth_mechanisms=("LOGIN",))
    outcomes = send(peer, [envelope(1)], username="relay", password="s3cret")
    assert statuses(outcomes) == ["delivered"]
    assert peer.messages[0].login == "relay"


def test_auth_wrong_password_defers(make_smtp_peer):
    peer = make_smtp_peer(starttls=True, auth={"relay": "s3cret"})
    outcomes = send(peer, [envelope(1)], username="relay", password="wrong")
    assert statuses(outcomes) == ["deferred"]
    assert (outcomes[0].code, outcomes[0].enhanced) == (535, "5.7.8")
    assert outcomes[0].text.startswith("authentication failed: 535 5.7.8")
    assert peer.messages == []


def test_auth_required_by_the_server(make_smtp_peer):
    peer = make_smtp_peer(starttls=True, auth={"relay": "s3cret"})
    outcomes = send(peer, [envelope(1), envelope(2)])
    # 530 is about our session (no AUTH), not the message: deferred, not bounced.
    assert statuses(outcomes) == ["deferred", "deferred"]
    assert (outcomes[0].code, outcomes[0].enhanced) == (530, "5.7.0")


def test_peer_failure_rules_count_down_and_reset(smtp_peer):
    smtp_peer.fail_rcpt("USER1@example.net", 450, "4.2.0 Mailbox busy", times=2)
    outcomes = send(smtp_peer, [envelope(1), envelope(1), envelope(1)])
    assert statuses(outcomes) == ["deferred", "deferred", "delivered"]
    smtp_peer.fail_data(451, "4.3.0 Later")
    smtp_peer.reset()
    assert (smtp_peer.messages, smtp_peer.connections) == ([], [])
    assert statuses(send(smtp_peer, [envelope(2)])) == ["delivered"]


# -- replies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "line", "enhanced"),
    [
        (550, "5.1.1 No such user", "5.1.1"),
        (451, "4.7.1 Try later", "4.7.1"),
        (250, "2.0.0 OK", "2.0.0"),
        (550, "No such user", None),
        (550, "4.1.1 wrong class", None),
        (550, "5.1.10 three digits", "5.1.10"),
        (550, "5.1.1234 too long", None),
        (550, "5.1.1: colon", None),
        (554, "5.7.1", "5.7.1"),
    ],
)
def test_reply_enhanced_code(code, line, enhanced):
    assert Reply(code, (line,)).enhanced == enhanced


def test_reply_text():
    reply = Reply(550, ("5.1.1 first", "5.1.1 second", "", "5.1.2 third"))
    assert reply.text == "5.1.1 first second 5.1.2 third"
    assert str(reply) == "550 5.1.1 first second 5.1.2 third"
    assert str(Reply(250, ("",))) == "250"


# -- builds and the deadline --------------------------------------------------------------


def build_of(data: bytes, log: list, peer):
    async def build() -> bytes:
        log.append(len(peer.messages))  # how many were delivered when it was built
        return data

    return build


@pytest.mark.parametrize("pipelining", [False, True])
def test_each_message_is_built_when_its_turn_comes(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)
    log: list[int] = []
    envelopes = [
        Envelope(f"b-{n}@sl.example.com", f"user{n}@example.net", build_of(MESSAGE, log, peer), n)
        for n in range(3)
    ]
    outcomes = send(peer, envelopes)
    assert statuses(outcomes) == ["delivered"] * 3
    assert log == [0, 1, 2]  # one at a time, none before the one ahead was delivered
    assert [m.data for m in peer.messages] == [MESSAGE] * 3


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_build_that_raises_fails_its_envelope_alone(make_smtp_peer, pipelining):
    peer = make_smtp_peer(pipelining=pipelining)

    async def broken() -> bytes:
        raise KeyError("key1")

    envelopes = [envelope(1), Envelope("b-2@sl.example.com", "user2@example.net", broken, 2)]
    outcomes = send(peer, [*envelopes, envelope(3)])
    assert statuses(outcomes) == ["delivered", "error", "delivered"]
    assert (outcomes[1].ref, outcomes[1].code, outcomes[1].enhanced) == (2, None, "4.3.0")
    assert outcomes[1].text == "KeyError: 'key1'"
    assert [m.rcpt_tos for m in peer.messages] == [["user1@example.net"], ["user3@example.net"]]
    assert len(peer.connections) == 1
    assert b"user2" not in peer.connections[0].received  # nothing was sent for it


def test_a_build_still_running_at_the_deadline_is_deferred(smtp_peer):
    async def slow() -> bytes:
        await asyncio.sleep(30)
        return MESSAGE

    late = Envelope("b-2@sl.example.com", "user2@example.net", slow, 2)
    outcomes = send(smtp_peer, [envelope(1), late, envelope(3)], deadline=time.monotonic() + 1)
    assert statuses(outcomes) == ["delivered", "deferred", "deferred"]
    assert outcomes[1].text == "delivery deadline reached while building the message"
    assert outcomes[2].text == "delivery deadline reached before it was sent"
    assert outcomes[2].enhanced == "4.4.7"


@pytest.mark.parametrize("pipelining", [False, True])
def test_the_deadline_ends_a_reply_that_does_not_come(make_smtp_peer, pipelining):
    """The peer has the first message and holds its reply: deferred, for a message may come
    twice but must never be lost; the data timeout (600 s) does not matter."""
    peer = make_smtp_peer(pipelining=pipelining)
    peer.hold_data(60, times=1)
    deadline = time.monotonic() + 1
    outcomes = send(peer, [envelope(1), envelope(2)], deadline=deadline, data_timeout=600)
    assert statuses(outcomes) == ["deferred", "deferred"]
    assert (outcomes[0].code, outcomes[0].enhanced) == (None, "4.4.7")
    assert outcomes[0].text == (
        "delivery deadline reached while waiting for the reply to the end of DATA"
    )
    assert outcomes[0].host == f"127.0.0.1:{peer.port}"
    assert outcomes[1].text == "delivery deadline reached before it was sent"
    assert len(peer.messages) == 1
    assert b"QUIT" not in peer.connections[0].received  # the connection was dropped


def test_the_deadline_ends_a_greeting_that_does_not_come():
    listener = socket.socket()  # accepts at the TCP level (backlog) and never says a word
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        port = listener.getsockname()[1]
        options = ClientSettings(helo_name="out.postern.test", port=port, command_timeout=60)
        outcomes = run(
            deliver(
                ["127.0.0.1"], [envelope(1), envelope(2)], options, deadline=time.monotonic() + 0.5
            )
        )
    finally:
        listener.close()
    assert statuses(outcomes) == ["deferred", "deferred"]
    assert {o.text for o in outcomes} == {"delivery deadline reached while connecting"}
    assert {o.enhanced for o in outcomes} == {"4.4.7"}


def test_a_deadline_already_past_sends_nothing(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1)], deadline=time.monotonic() - 1)
    assert statuses(outcomes) == ["deferred"]
    assert outcomes[0].enhanced == "4.4.7"
    assert smtp_peer.messages == []


def test_a_deadline_that_is_not_reached_changes_nothing(smtp_peer):
    outcomes = send(smtp_peer, [envelope(1), envelope(2)], deadline=time.monotonic() + 60)
    assert statuses(outcomes) == ["delivered", "delivered"]
    assert smtp_peer.connections[0].reads[-1] == b"QUIT\r\n"


def test_the_build_limit_bounds_builds_and_bytes_held():
    """Two builds at once; none begun while 10 bytes or more are built and not written."""

    async def scenario() -> list[str]:
        limit = BuildLimit(builds=2, held=10)
        gates = {n: asyncio.Event() for n in range(5)}
        started: list[int] = []
        releases = []

        def build(n: int):
            async def make() -> bytes:
                started.append(n)
                await gates[n].wait()
                return bytes([n]) * 6  # an object of its own

            return make

        async def built(n: int) -> None:
            data, release = await limit.build(build(n))
            releases.append(release)

        async def settle() -> None:  # let every task run until it waits again
            for _ in range(50):
                await asyncio.sleep(0)

        tasks = [asyncio.ensure_future(built(n)) for n in range(5)]
        await settle()
        steps = [f"started {started}"]
        gates[0].set()
        gates[1].set()
        await settle()  # 12 bytes held: nothing more begins
        steps.append(f"started {started}, held {limit.holding}")
        releases[0]()
        releases[0]()  # once only
        await settle()  # 6 held: two more begin
        steps.append(f"started {started}, held {limit.holding}")
        for n in range(2, 5):
            gates[n].set()
        releases[1]()
        await settle()
        releases[2]()
        releases[3]()
        await asyncio.gather(*tasks)
        steps.append(f"started {started}, held {limit.holding}, building {limit.building}")
        return steps

    assert run(scenario()) == [
        "started [0, 1]",
        "started [0, 1], held 12",
        "started [0, 1, 2, 3], held 6",
        "started [0, 1, 2, 3, 4], held 6, building 0",
    ]


def test_a_message_shared_by_recipients_is_counted_once():
    async def scenario() -> list[int]:
        limit = BuildLimit(builds=4, held=10)
        shared = b"x" * 8

        async def make() -> bytes:
            return shared

        _, first = await limit.build(make)
        _, second = await limit.build(make)
        counts = [limit.holding]
        first()
        counts.append(limit.holding)  # the other recipient still holds it
        second()
        counts.append(limit.holding)
        return counts

    assert run(scenario()) == [8, 8, 0]


def test_a_message_slow_to_be_written_stops_counting():
    async def scenario() -> tuple[int, int]:
        limit = BuildLimit(builds=1, held=1, slow=0.05)

        async def make() -> bytes:
            return b"big"

        await limit.build(make)  # never released: its destination is stuck
        await limit.build(make)  # begins once the first has been held 0.05 s
        return limit.holding, limit.building

    assert run(scenario()) == (3, 0)


def test_a_shared_build_limit_is_handed_back_on_every_path(make_smtp_peer):
    """Delivered, bounced, refused without sending, and a raising build: nothing stays held."""
    peer = make_smtp_peer(pipelining=True, size_limit=1000)
    peer.fail_rcpt("user2@example.net", 550, "5.1.1 No such user")
    limit = BuildLimit(builds=1, held=1)

    def built(data: bytes):
        async def make() -> bytes:
            return data

        return make

    async def broken() -> bytes:
        raise OSError("no key")

    envelopes = [
        Envelope("b@sl.example.com", f"user{n}@example.net", build, n)
        for n, build in enumerate(
            [built(MESSAGE), built(MESSAGE), built(MESSAGE * 100), broken, built(MESSAGE)],
            start=1,
        )
    ]
    outcomes = run(deliver(["127.0.0.1"], envelopes, settings(peer), limit=limit))
    assert statuses(outcomes) == ["delivered", "bounced", "bounced", "error", "delivered"]
    assert (limit.holding, limit.building) == (0, 0)
