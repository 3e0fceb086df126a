"""mta.signing: every DKIM signature Postern makes verifies with dkimpy, and equals dkimpy's."""

from __future__ import annotations

import base64
import random
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from dkim.util import parse_tag_value

from commands.domains.dkim import new_key, private_pem, txt_value
from core.crypto import SecretBox
from mta.message import Address, Attachment, MessageSpec, build_message
from mta.signing import (
    _RELAXED,
    DEFAULT_SIGNED_HEADERS,
    SigningKey,
    load_private_key,
    relaxed_body,
    sign_message,
)

DOMAIN = "example.com"
NOW = 1_743_500_000
BOX = SecretBox(b"test-signing-secret-key-0123456789abcdef")


@pytest.fixture(scope="module")
def keyring():
    """Keys made the way Postern makes them, and the DNS that publishes them."""
    keys, records = {}, {}
    for selector, algorithm, bits in [
        ("rsa2048", "rsa", 2048),
        ("rsa1024", "rsa", 1024),
        ("ed", "ed25519", 0),
    ]:
        row = new_key(BOX, selector, algorithm, rsa_bits=bits or 2048)
        keys[selector] = SigningKey(DOMAIN, selector, algorithm, private_pem(BOX, row))
        records[f"{selector}._domainkey.{DOMAIN}.".encode()] = txt_value(row).encode()
    return SimpleNamespace(keys=keys, records=records)


@pytest.fixture(scope="module")
def dns(keyring):
    def lookup(name, timeout=5):
        return keyring.records.get(name)

    return lookup


def verifies(message: bytes, dns, idx: int = 0) -> bool:
    return dkim.DKIM(message).verify(idx=idx, dnsfunc=dns)


def signatures(message: bytes) -> list[dict[bytes, bytes]]:
    return [
        parse_tag_value(value)
        for name, value in dkim.rfc822_parse(message)[0]
        if name.lower() == b"dkim-signature"
    ]


def spec(**changes) -> MessageSpec:
    values = dict(
        sender=Address("zoe@example.com", "Zoë Ünïcode"),
        to=[Address("jurgen@example.org", "Jürgen Groß"), Address("bob@example.net")],
        cc=[Address("carol@example.org", "Carol")],
        reply_to=[Address("help@example.com")],
        subject="Grüße aus Köln — your order is ready",
        html=None,
        text="Hello Zoë,\nyour order is ready.\n",
        attachments=[],
        headers={},
        tags=["order", "ready"],
        message_id="<0b7c4e2a9f@example.com>",
        date=datetime(2025, 4, 1, 12, 0, tzinfo=UTC),
    )
    values.update(changes)
    return MessageSpec(**values)


HTML = "<h1>Hallo Zoë</h1><p>Your order <a href='https://shop.example.com/o/1'>is here</a>.</p>"

MESSAGES = {
    "non-ascii text": build_message(spec()),
    "html, text, inline and attachments": build_message(
        spec(
            html=HTML + '<img src="cid:logo">',
            text="Hallo Zoë\n",
            attachments=[
                Attachment(
                    "logo.png", b"\x89PNG" + bytes(range(256)) * 20, "image/png", "inline", "logo"
                ),
                Attachment(
                    "Rechnung März.pdf", b"%PDF" + bytes(range(256)) * 50, "application/pdf"
                ),
            ],
            headers={"X-Campaign": "spring", "X-Note": "Grüße"},
            extra_headers={
                "List-Unsubscribe": "<https://example.com/u/" + "a1" * 80 + ">",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
    ),
    "long lines": build_message(
        spec(text="é" * 3000 + "\n" + "a" * 5000 + "\n", html="<p>" + "x" * 4000)
    ),
    "raw: trailing blank lines and whitespace": (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: blanks\r\n\r\n"
        b"body line  \r\n\tindented\t \r\n\r\n\r\n\r\n"
    ),
    "raw: folded header whitespace": (
        b"From:   Someone   <a@example.com>  \r\n"
        b"To: b@example.org,\r\n\t  c@example.org\r\n"
        b"Subject:  a subject\r\n   folded\t\tover \r\n lines\r\n"
        b"X-Postern-Tags: a,\r\n b\r\n"
        b"Date: Tue, 01 Apr 2025 12:00:00 +0000\r\n\r\n"
        b"text with   spaces   \r\n" + b"y" * 3000 + b"\r\n"
    ),
    "raw: empty body": b"From: a@example.com\r\nSubject: nothing\r\n\r\n",
}

KEYSETS = [["rsa2048"], ["rsa1024"], ["ed"], ["rsa2048", "ed"]]


@pytest.mark.parametrize("selectors", KEYSETS, ids="+".join)
@pytest.mark.parametrize("name", list(MESSAGES))
def test_every_signature_verifies(keyring, dns, name, selectors):
    message = MESSAGES[name]
    signed = sign_message(message, [keyring.keys[s] for s in selectors], now=NOW)
    assert signed.endswith(message)
    assert len(signatures(signed)) == len(selectors)
    for idx, selector in enumerate(selectors):
        assert verifies(signed, dns, idx), (name, selector)
        assert signatures(signed)[idx][b"s"] == selector.encode()
    if len(selectors) == 1:
        assert dkim.verify(signed, dnsfunc=dns)


def test_signature_tags(keyring):
    keys = [keyring.keys["rsa2048"], keyring.keys["ed"]]
    signed = sign_message(MESSAGES["non-ascii text"], keys, now=NOW)
    rsa_sig, ed_sig = signatures(signed)
    assert rsa_sig[b"a"] == b"rsa-sha256"
    assert ed_sig[b"a"] == b"ed25519-sha256"
    for sig in (rsa_sig, ed_sig):
        assert sig[b"v"] == b"1"
        assert sig[b"c"] == b"relaxed/relaxed"
        assert sig[b"d"] == b"example.com"
        assert sig[b"t"] == str(NOW).encode()
        assert sig[b"bh"] == rsa_sig[b"bh"]
        h = [x.strip() for x in sig[b"h"].split(b":")]
        assert h == [
            b"from",
            b"from",
            b"to",
            b"cc",
            b"subject",
            b"date",
            b"message-id",
            b"reply-to",
            b"mime-version",
            b"content-type",
            b"content-transfer-encoding",
            b"x-postern-tags",
        ]
    # Lines stay short and CRLF-terminated.
    head = signed[: signed.index(b"\r\nFrom:") + 2]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert head.count(b"\n") == head.count(b"\r\n")


def test_h_lists_present_headers_from_always(keyring):
    message = (
        b"From: a@example.com\r\nX-Extra: 1\r\nTo: b@example.org\r\nTo: c@example.org\r\n\r\nhi\r\n"
    )
    signed = sign_message(message, [keyring.keys["ed"]], signed_headers=("to", "subject"), now=NOW)
    (sig,) = signatures(signed)
    assert [x.strip() for x in sig[b"h"].split(b":")] == [b"from", b"from", b"to", b"to"]


@pytest.mark.parametrize("selector", ["rsa2048", "ed"])
@pytest.mark.parametrize(
    "where",
    ["before the From", "after the From", "at the end of the header"],
)
def test_from_is_over_signed_so_no_from_can_be_added(keyring, dns, selector, where):
    """h= lists From once more than the message has it: the signature verifies (dkimpy), and
    a second From added anywhere breaks it (with From signed once, a From added above the
    original one was not covered: dkimpy signs the last From, the original)."""
    signed = sign_message(MESSAGES["non-ascii text"], [keyring.keys[selector]], now=NOW)
    (sig,) = signatures(signed)
    assert [x.strip() for x in sig[b"h"].split(b":")].count(b"from") == 2
    assert verifies(signed, dns)
    evil = b"From: ceo@example.com\r\n"
    start = signed.index(b"\r\nFrom:") + 2
    at = {
        "before the From": start,
        "after the From": signed.index(b"\r\n", start) + 2,
        "at the end of the header": signed.index(b"\r\n\r\n") + 2,
    }[where]
    tampered = signed[:at] + evil + signed[at:]
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_default_time_is_now(keyring):
    before = int(time.time())
    (sig,) = signatures(sign_message(MESSAGES["raw: empty body"], [keyring.keys["ed"]]))
    assert before <= int(sig[b"t"]) <= int(time.time())


@pytest.mark.parametrize("selector", ["rsa2048", "rsa1024", "ed"])
@pytest.mark.parametrize("name", list(MESSAGES))
def test_signature_is_byte_for_byte_dkimpys(keyring, monkeypatch, name, selector):
    """PKCS#1 v1.5 and Ed25519 are deterministic: same key, time and message, same header."""
    message = MESSAGES[name]
    key = keyring.keys[selector]
    ours = sign_message(message, [key], now=NOW)
    header = ours[: len(ours) - len(message)]
    include = [x.strip() for x in signatures(ours)[0][b"h"].split(b":")]

    monkeypatch.setattr(dkim, "time", SimpleNamespace(time=lambda: NOW))
    if key.algorithm == "rsa":
        privkey, algorithm = key.private_pem, b"rsa-sha256"
    else:
        seed = load_private_key(key.private_pem).private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        privkey, algorithm = base64.b64encode(seed), b"ed25519-sha256"
    theirs = dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        privkey,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=algorithm,
        include_headers=include,
    )
    assert header == theirs


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"your order is ready", b"your order is READY"),
        lambda m: m.replace(b"Hello", b"Hullo"),
        lambda m: m + b"appended\r\n",
        lambda m: m.replace(b"Message-ID: <0b7c4e2a9f", b"Message-ID: <0b7c4e2a9e"),
        lambda m: m.replace(b"\r\nTo: ", b"\r\nTo: eve@example.net, "),
        lambda m: m.replace(b"\r\nX-Postern-Tags: order", b"\r\nX-Postern-Tags: spam"),
        lambda m: m.replace(b"\r\nDate: ", b"\r\nFrom: eve@example.net\r\nDate: "),
        lambda m: m.replace(b"; t=%d;" % NOW, b"; t=%d;" % (NOW + 1)),
    ],
    ids=["body", "body-2", "appended", "message-id", "to", "tags", "second-from", "t-tag"],
)
@pytest.mark.parametrize("selector", ["rsa2048", "ed"])
def test_tampering_fails_verification(keyring, dns, tamper, selector):
    signed = sign_message(MESSAGES["non-ascii text"], [keyring.keys[selector]], now=NOW)
    assert verifies(signed, dns)
    tampered = tamper(signed)
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_relaxed_survives_refolding_and_unsigned_headers(keyring, dns):
    signed = sign_message(MESSAGES["non-ascii text"], [keyring.keys["rsa2048"]], now=NOW)
    changed = signed.replace(b"\r\nSubject: ", b"\r\nSubject:   \r\n\t ").replace(
        b"\r\nDate: ", b"\r\nReceived: from relay\r\nX-Spam-Score: 0\r\nDate: "
    )
    assert dkim.verify(changed, dnsfunc=dns)


def test_wrong_public_key_fails(keyring, dns):
    key = keyring.keys["rsa2048"]
    impostor = SigningKey(key.domain, "rsa1024", key.algorithm, key.private_pem)
    signed = sign_message(MESSAGES["non-ascii text"], [impostor], now=NOW)
    assert not dkim.verify(signed, dnsfunc=dns)


def test_keys_are_parsed_once(keyring):
    key = keyring.keys["rsa2048"]
    load_private_key(key.private_pem)
    hits = load_private_key.cache_info().hits
    misses = load_private_key.cache_info().misses
    for _ in range(5):
        sign_message(MESSAGES["raw: empty body"], [key], now=NOW)
    assert load_private_key.cache_info().hits == hits + 5
    assert load_private_key.cache_info().misses == misses


def test_no_keys_leaves_the_message_alone():
    assert sign_message(MESSAGES["raw: empty body"], []) == MESSAGES["raw: empty body"]


def test_default_signed_headers_are_lower_case_and_start_with_from():
    assert DEFAULT_SIGNED_HEADERS[0] == "from"
    assert all(name == name.lower() for name in DEFAULT_SIGNED_HEADERS)


@pytest.mark.parametrize(
    ("message", "key_changes", "kwargs", "match"),
    [
        (b"To: b@example.org\r\n\r\nhi\r\n", {}, {}, "no From"),
        (b"From: a@example.com\r\n\r\nhi\r\n", {}, {"signed_headers": ("from", "bcc")}, "bcc"),
        (b"From: a@example.com\r\n\r\nhi\r\n", {"algorithm": "dsa"}, {}, "unknown DKIM algorithm"),
        (b"From: a@example.com\r\n\r\nhi\r\n", {"algorithm": "ed25519"}, {}, "not an ed25519"),
        (b"From: a@example.com\r\nbad header line\r\n\r\nhi\r\n", {}, {}, "malformed"),
    ],
)
def test_refusals(keyring, message, key_changes, kwargs, match):
    key = keyring.keys["rsa1024"]
    key = SigningKey(**{**key.__dict__, **key_changes})
    with pytest.raises(ValueError, match=match):
        sign_message(message, [key], **kwargs)


def test_relaxed_body_is_dkimpys():
    """The body canonicalization gives dkimpy's bytes for bodies made of the characters that
    matter to it (white space, CR, LF, CRLF), thousands of them at random."""
    rng = random.Random(6376)
    pieces = [b"a", b"b", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r\n\r\n", b"\r", b"\n"]
    bodies = [b"", b"\r\n", b"\r\n\r\n", b" ", b"x", b" \r\n", b"x \t\r\n\r\n \r\n"]
    bodies += [b"".join(rng.choices(pieces, k=rng.randint(1, 40))) for _ in range(5000)]
    for body in bodies:
        assert relaxed_body(body) == _RELAXED.canonicalize_body(body), body


def test_bare_line_feeds_are_read_as_dkimpy_reads_them(keyring, dns):
    message = b"From: a@example.com\nSubject: lf\n\nline one  \nline two\n"
    signed = sign_message(message, [keyring.keys["rsa2048"]], now=NOW)
    assert verifies(signed, dns)
