"""DKIM signing throughput on one core: dkimpy's own signing against mta.signing."""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mta.message import Address, MessageSpec, build_message
from mta.signing import DEFAULT_SIGNED_HEADERS, SigningKey, sign_message

TARGET_SIZE = 8400  # bytes: a typical transactional message, HTML and text


def sample_message() -> bytes:
    """A built message (multipart/alternative, HTML and text) of about TARGET_SIZE bytes."""
    paragraphs: list[str] = []
    while True:
        n = len(paragraphs) + 1
        paragraphs.append(
            f"Item {n}: your order line with a <b>product</b> and a "
            f'<a href="https://shop.example.com/items/{n}?ref=mail">link to it</a>, '
            "shipped soon. Grüße from the shop."
        )
        html = "<html><body><h1>Your order</h1>" + "".join(f"<p>{p}</p>" for p in paragraphs)
        spec = MessageSpec(
            sender=Address("orders@shop.example.com", "The Shop"),
            to=[Address("customer@example.org", "Zoë Customer")],
            cc=[],
            reply_to=[Address("help@shop.example.com")],
            subject="Your order #12345 has shipped",
            html=html + "</body></html>",
            text=None,
            attachments=[],
            headers={"X-Campaign": "orders"},
            tags=["order", "shipped"],
            message_id="<0b7c4e2a9f3d@shop.example.com>",
            date=datetime(2025, 4, 1, 12, 0, tzinfo=UTC),
            extra_headers={"List-Unsubscribe": "<https://shop.example.com/u/abc>"},
        )
        message = build_message(spec)
        if len(message) >= TARGET_SIZE:
            return message


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def rate(fn: Callable[[], object], count: int) -> float:
    """Calls per second of ``fn`` over ``count`` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="messages signed per case")
    args = parser.parse_args()

    message = sample_message()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_signing = SigningKey("shop.example.com", "rsa", "rsa", pem(rsa_key))
    ed_signing = SigningKey("shop.example.com", "ed", "ed25519", pem(ed_key))
    ed_seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    include = [b"from", *(h.encode() for h in DEFAULT_SIGNED_HEADERS)]  # From over-signed

    def dkimpy(privkey: bytes, algorithm: bytes) -> Callable[[], object]:
        return lambda: dkim.sign(
            message,
            b"sel",
            b"shop.example.com",
            privkey,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=algorithm,
            include_headers=include,
        )

    cases = [
        ("dkimpy dkim.sign, RSA-2048", 1, dkimpy(rsa_signing.private_pem, b"rsa-sha256")),
        (
            "dkimpy dkim.sign, ed25519 (PyNaCl)",
            1,
            dkimpy(base64.b64encode(ed_seed), b"ed25519-sha256"),
        ),
        ("Postern sign_message, RSA-2048", 1, lambda: sign_message(message, [rsa_signing])),
        ("Postern sign_message, ed25519", 1, lambda: sign_message(message, [ed_signing])),
        (
            "Postern sign_message, RSA-2048 + ed25519",
            2,
            lambda: sign_message(message, [rsa_signing, ed_signing]),
        ),
    ]
    size = f"{len(message)} bytes ({len(message) / 1024:.1f} KiB)"
    print(f"message: {size}; {args.count} messages per case; one core")
    print(f"{'case':<42} {'messages/s':>11} {'signatures/s':>13} {'ms/message':>11}")
    baseline = None
    for label, per_message, fn in cases:
        messages = rate(fn, args.count)
        baseline = baseline or messages
        print(
            f"{label:<42} {messages:>11.0f} {messages * per_message:>13.0f} "
            f"{1000 / messages:>11.3f}   x{messages / baseline:.1f}"
        )


if __name__ == "__main__":
    main()
