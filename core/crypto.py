"""Secrets at rest: encryption with a key derived from the secret key, and token hashing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(secret_key: bytes, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived from the secret key (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"postern {purpose} v1".encode()
    ).derive(secret_key)


class SecretBox:
    """Encrypts and decrypts short secrets (keys, passwords, signing keys) for storage.

    It also holds ``tracking_key``, the MAC key of tracking URLs (mta.tracking).
    """

    def __init__(self, secret_key: bytes):
        derived = derive_key(secret_key, "secrets at rest")
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self.tracking_key = derive_key(secret_key, "tracking links")

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise ValueError(
                "a stored secret cannot be decrypted: security.secret_key differs from the "
                "key it was encrypted with"
            ) from None


def token_digest(token: str) -> str:
    """The indexed lookup value of a random token (hex SHA-256).

    Tokens carry at least 128 random bits, so a fast hash is enough: it cannot be
    reversed, and the database never holds a usable token.
    """
    # "surrogatepass": a token sent with a lone surrogate (a JSON \ud800 escape) gets a
    # digest too, one no issued token has.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def digests_match(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())


def new_token(prefix: str = "", nbytes: int = 20) -> str:
    """A fresh random token: ``nbytes`` random bytes (160 bits by default) in hex."""
    return prefix + secrets.token_hex(nbytes)


def new_signing_key() -> str:
    """A webhook's signing key: 256 random bits in upper-case hex."""
    return secrets.token_hex(32).upper()
