"""The smarthost's certificate is verified by default, and credentials are sent only after a
verified TLS handshake: real aiosmtpd peers on loopback with certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import smtppeer
from tests.app.workers.test_dispatch import item, send

make_smtp_peer = smtppeer.make_smtp_peer

RELAY = "relay.test"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca_and_server(tmp_path, hostname: str = RELAY):
    """A test CA (its PEM file) and a server context with a certificate it signed for
    ``hostname`` and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Postern test CA"))
        .issuer_name(_name("Postern test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(hostname))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = tmp_path / "relay.pem", tmp_path / "relay.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return str(ca_file), context


@pytest.fixture
def relay_ca(tmp_path):
    return make_ca_and_server(tmp_path)


@pytest.fixture
def smarthost(base_config, dns_server):
    """The configuration for a smarthost ``relay.test`` (on 127.0.0.1) at ``peer``."""

    def config(peer, **changes):
        dns_server.add(RELAY, "A", "127.0.0.1")
        return base_config.replace(
            delivery__smarthost=RELAY,
            delivery__smarthost_port=peer.port,
            delivery__smarthost_username="relay-user",
            delivery__smarthost_password="relay-pass",
            delivery__timeout=5.0,
            **changes,
        )

    return config


def no_auth_sent(peer) -> bool:
    return all(
        b"AUTH" not in c.received and b"relay-pass" not in c.received for c in peer.connections
    )


def test_an_unverified_certificate_gets_no_credentials(make_smtp_peer, smarthost, relay_ca):
    _, context = relay_ca  # signed by a CA the system does not trust
    peer = make_smtp_peer(starttls=True, tls_context=context, auth={"relay-user": "relay-pass"})
    (outcome,) = send([item(1, "a@anywhere.example")], smarthost(peer))  # verified by default
    assert outcome.status == "deferred"
    assert outcome.text.startswith("TLS handshake failed: certificate verification failed")
    assert peer.messages == []
    assert len(peer.connections) == 1  # no plaintext retry
    assert no_auth_sent(peer)


def test_the_ca_file_setting_verifies_the_smarthost(make_smtp_peer, smarthost, relay_ca):
    ca_file, context = relay_ca
    peer = make_smtp_peer(starttls=True, tls_context=context, auth={"relay-user": "relay-pass"})
    config = smarthost(peer, delivery__smarthost_ca_file=ca_file)
    outcomes = send([item(1, "a@anywhere.example"), item(2, "b@elsewhere.example")], config)
    assert [o.status for o in outcomes] == ["delivered", "delivered"]
    assert {m.login for m in peer.messages} == {"relay-user"}
    assert all(m.tls for m in peer.messages)
    assert len(peer.connections) == 1  # one group through the smarthost


def test_the_ca_file_does_not_vouch_for_another_name(make_smtp_peer, smarthost, tmp_path):
    ca_file, context = make_ca_and_server(tmp_path, hostname="other.test")
    peer = make_smtp_peer(starttls=True, tls_context=context, auth={"relay-user": "relay-pass"})
    (outcome,) = send(
        [item(1, "a@anywhere.example")], smarthost(peer, delivery__smarthost_ca_file=ca_file)
    )
    assert outcome.status == "deferred"
    assert "certificate verification failed" in outcome.text
    assert no_auth_sent(peer)


def test_verification_turned_off(make_smtp_peer, smarthost):
    peer = make_smtp_peer(starttls=True, auth={"relay-user": "relay-pass"})  # self-signed
    (outcome,) = send(
        [item(1, "a@anywhere.example")], smarthost(peer, delivery__smarthost_verify=False)
    )
    assert outcome.status == "delivered"
    assert peer.messages[0].login == "relay-user" and peer.messages[0].tls


@pytest.mark.parametrize("tls", ["starttls", "none"])
def test_without_tls_credentials_are_never_sent(make_smtp_peer, smarthost, tls):
    peer = make_smtp_peer(auth={"relay-user": "relay-pass"})  # no STARTTLS; AUTH offered
    (outcome,) = send(
        [item(1, "a@anywhere.example")],
        smarthost(peer, delivery__smarthost_tls=tls, delivery__smarthost_verify=False),
    )
    assert outcome.status == "deferred"
    assert outcome.text in (
        "the server does not offer STARTTLS, and TLS is required",
        "will not send the password: the connection is not encrypted",
    )
    assert peer.messages == []
    assert no_auth_sent(peer)
