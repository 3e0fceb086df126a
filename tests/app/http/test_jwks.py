"""GET /.well-known/jwks.json: the Postal webhook key's public half, without authentication."""

import base64

from cryptography.hazmat.primitives.asymmetric import rsa

from commands.webhooks.postal import load_signer


def _number(text):
    assert "=" not in text  # base64url without padding, as JWKs take it
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def test_jwks_serves_the_stored_key(client, database, box, base_config, make_app):
    resp = client.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.get_json()
    (jwk,) = body["keys"]
    assert set(jwk) == {"kty", "n", "e", "use", "alg", "kid"}
    assert (jwk["kty"], jwk["use"], jwk["alg"]) == ("RSA", "sig", "RS256")
    signer = load_signer(database, box, base_config)  # the key the webhook sender uses
    numbers = signer.key.public_key().public_numbers()
    assert isinstance(signer.key, rsa.RSAPrivateKey)
    assert (_number(jwk["n"]), _number(jwk["e"])) == (numbers.n, numbers.e)
    assert jwk["kid"] == signer.kid
    # Another application on the same database serves the same key.
    other = make_app().client.get("/.well-known/jwks.json").get_json()
    assert other == body
    assert "d" not in jwk and "p" not in jwk  # the public half only


def test_jwks_refuses_other_methods_without_a_traceback(client):
    resp = client.post("/.well-known/jwks.json")
    assert resp.status_code == 405
