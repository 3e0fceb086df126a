"""DKIM signing: dkimpy's header canonicalization and format, `cryptography` for the key step.

Why not ``dkim.sign`` as it is: dkimpy 1.1 does RSA in pure Python (about 100 signatures a
second for a 2048-bit key) and parses the PEM again for every message. It offers no hook for
the private-key operation alone: the RSA step is a call to the module-global
``RSASSA_PKCS1_v1_5_sign`` inside ``DomainSigner.gen_header``, while the key is parsed (with
dkimpy's own ASN.1 reader, or PyNaCl for ed25519) and ``t=`` read from ``time.time()`` inside
``DKIM.sign``. A subclass would have to copy both methods whole, and replacing the module
global would change signing for every other user of dkimpy in the process.

So ``_signature`` follows ``DKIM.sign`` and ``gen_header`` step by step with dkimpy's own
pieces (``rfc822_parse``, the relaxed header canonicalization, ``fold``, ``RE_BTAG``,
``hash_headers``); only the signature over the header hash comes from ``cryptography``:
RSASSA-PKCS1-v1_5 over the SHA-256 digest, or Ed25519 over it as RFC 8463 and dkimpy do.
The relaxed body canonicalization is ``relaxed_body`` (dkimpy's rewrites every space of the
body; the tests check both give the same bytes). Both signatures are deterministic, and the
tests check the result is byte-for-byte what ``dkim.sign`` itself produces. Verification
stays with dkimpy, untouched.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from functools import lru_cache

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-postern-tags",
)

# Signed once more than they occur: a second one cannot be added without breaking the signature.
OVERSIGNED = frozenset({"from"})

HEADER_NAME = b"DKIM-Signature"
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
_NEVER_SIGNED = frozenset(name.decode() for name in dkim.DKIM.SHOULD_NOT)  # bcc, received...

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    domain: str  # the d= domain
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    private_pem: bytes  # PKCS#8 PEM, as commands.dkim stores it


@lru_cache(maxsize=1024)
def load_private_key(pem: bytes) -> PrivateKey:
    """The parsed private key (cached: parsing and checking an RSA key takes milliseconds)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"DKIM keys are RSA or Ed25519, not {type(key).__name__}")
    return key


def sign_message(
    message: bytes,
    keys: list[SigningKey],
    *,
    signed_headers: tuple[str, ...] = DEFAULT_SIGNED_HEADERS,
    now: int | None = None,
) -> bytes:
    """``message`` (CRLF line ends) with one DKIM-Signature per key prepended, in key order.

    c=relaxed/relaxed; h= lists those of ``signed_headers`` the message has (each as often
    as it occurs), From always among them and once more than it occurs (over-signed); t=
    is ``now`` or the current time.
    """
    if not keys:
        return message
    try:
        headers, body = _split(message)
    except dkim.MessageFormatError as e:
        raise ValueError(f"cannot sign a malformed message: {e}") from e
    include = _included(headers, signed_headers)
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    canonical = _RELAXED.canonicalize_headers(headers)
    timestamp = str(int(time.time() if now is None else now)).encode("ascii")
    return b"".join(_signature(canonical, include, body_hash, k, timestamp) for k in keys) + message


def _split(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """The headers as ``dkim.rfc822_parse`` reads them, and the body.

    When every line ends in CRLF, only the header block goes through dkimpy's parser,
    which splits the whole message into lines and joins the body up again."""
    end = message.find(b"\r\n\r\n")
    parsed: tuple[list[list[bytes]], bytes]  # dkimpy has no type hints
    if end < 0 or message.count(b"\n") != message.count(b"\r\n"):
        parsed = dkim.rfc822_parse(message)
        return parsed
    parsed = dkim.rfc822_parse(message[: end + 2])
    return parsed[0], message[end + 4 :]


_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP_RUN = re.compile(rb"[\t ]{2,}|\t")  # a run that is not already a single space
_TRAILING_LINES = re.compile(rb"(?:\r\n)+\Z")


def relaxed_body(body: bytes) -> bytes:
    """The relaxed body canonicalization of RFC 6376 3.4.4, as dkimpy computes it.

    dkimpy replaces every run of white space, single spaces included (hundreds in a typical
    HTML body); this looks for the runs that change first, with byte searches."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if not body.endswith(b"\r\n"):
        return body + b"\r\n" if body else b""
    if body.endswith(b"\r\n\r\n"):
        body = _TRAILING_LINES.sub(b"\r\n", body)
    return b"" if body == b"\r\n" else body


def _included(headers: list[list[bytes]], signed_headers: tuple[str, ...]) -> tuple[bytes, ...]:
    """The h= list: the wanted headers present in the message, From first, and From once
    more than it occurs (over-signing, RFC 6376 8.15: the extra entry signs an absent From,
    so a From added anywhere later breaks the signature)."""
    wanted = dict.fromkeys(["from", *(name.lower() for name in signed_headers)])
    refused = _NEVER_SIGNED.intersection(wanted)
    if refused:
        raise ValueError(f"DKIM must not sign {', '.join(sorted(refused))}")
    present = [name.decode("ascii").lower() for name, _ in headers]
    if "from" not in present:
        raise ValueError("the message has no From header to sign")
    return tuple(
        name.encode("ascii")
        for name in wanted
        for _ in range(present.count(name) + (name in OVERSIGNED))
    )


def _signature(
    canonical: list[tuple[bytes, bytes]],
    include: tuple[bytes, ...],
    body_hash: bytes,
    key: SigningKey,
    timestamp: bytes,
) -> bytes:
    """One DKIM-Signature header line, CRLF-terminated, as ``dkim.DKIM.sign`` writes it."""
    algorithm = _ALGORITHMS.get(key.algorithm)
    if algorithm is None:
        raise ValueError(f"unknown DKIM algorithm {key.algorithm!r}")
    private = load_private_key(key.private_pem)
    if isinstance(private, rsa.RSAPrivateKey) != (key.algorithm == "rsa"):
        raise ValueError(f"the {key.selector!r} key is not an {key.algorithm} key")
    domain = key.domain.encode("ascii")
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", _RELAXED.to_c_value()),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", timestamp),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),  # a placeholder long enough to put b= on its own folded line
    ]
    unsigned = dkim.fold(_join(fields), namelen=len(HEADER_NAME))
    unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher, _RELAXED, canonical, include, (HEADER_NAME, b" " + unsigned), dict(fields)
    )
    fields[-1] = (b"b", base64.b64encode(_sign_digest(private, hasher.digest())))
    value: bytes = dkim.fold(_join(fields) + b"\r\n", namelen=len(HEADER_NAME))
    return HEADER_NAME + b": " + value


def _join(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(field) for field in fields)


def _sign_digest(private: PrivateKey, digest: bytes) -> bytes:
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return private.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 hash
