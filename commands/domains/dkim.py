"""DKIM key pairs: generation, the public p= value for DNS, and the encrypted private key."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from core.crypto import SecretBox
from models import DKIMKey


def new_key(box: SecretBox, selector: str, algorithm: str, rsa_bits: int = 2048) -> DKIMKey:
    """A fresh key pair as an (unsaved) DKIMKey row."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif algorithm == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        # RFC 8463: p= is the raw 32-byte public key.
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r}")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return DKIMKey(
        selector=selector,
        algorithm=algorithm,
        private_key_encrypted=box.encrypt(pem),
        public_key=base64.b64encode(public).decode("ascii"),
    )


def txt_value(key: DKIMKey) -> str:
    """The TXT record value that publishes ``key``."""
    return f"v=DKIM1; k={key.algorithm}; p={key.public_key}"


def private_pem(box: SecretBox, key: DKIMKey) -> bytes:
    return box.decrypt(key.private_key_encrypted).encode("ascii")
