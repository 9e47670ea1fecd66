"""OIDC bearer tokens: signature, issuer, audience, expiry and clock skew are all checked, with RSA and EC
keys generated here; claims map to organisation and roles by configuration."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from policies.exceptions import AuthenticationFailed
from policies.tokens import JwksFile, OidcConfig, verify

ISSUER = "https://login.voorbeeldstad.example"
AUDIENCE = "datapoort"


class Provider:
    """A test identity provider with an RSA and an EC key, publishing a JWKS file."""

    def __init__(self, directory: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        keys = []
        for kid, key, algorithm in (("rsa-1", self.rsa, RSAAlgorithm), ("ec-1", self.ec, ECAlgorithm)):
            public = json.loads(algorithm.to_jwk(key.public_key()))
            keys.append({**public, "kid": kid, "use": "sig"})
        self.jwks = {"keys": keys}
        self.path = directory / "jwks.json"
        self.path.write_text(json.dumps(self.jwks))

    def token(self, *, kid: str = "rsa-1", **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "u-1234",
            "name": "Ada Analist",
            "organisation": "sociaal-domein",
            "roles": ["SD-Analisten", "Iedereen"],
            "iat": now,
            "exp": now + 300,
            **overrides,
        }
        claims = {key: value for key, value in claims.items() if value is not None}
        key, algorithm = (self.rsa, "RS256") if kid.startswith("rsa") else (self.ec, "ES256")
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def provider(tmp_path: Path) -> Provider:
    return Provider(tmp_path)


CONFIG = OidcConfig(issuer=ISSUER, audience=AUDIENCE, role_map={"SD-Analisten": "analist"}, leeway_seconds=30)


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_a_valid_token_maps_to_principal_organisation_and_roles(provider: Provider, kid: str) -> None:
    identity = verify(provider.token(kid=kid), CONFIG, JwksFile(provider.path))
    assert identity.principal_id == "oidc:u-1234"
    assert identity.organisation == "sociaal-domein"
    assert identity.roles == ("analist",)  # the unmapped group is ignored
    assert identity.display_name == "Ada Analist"


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["roles"] = ["SD-Analisten", "beheerder"]
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: _tampered(p.token()), "not valid"),
        (lambda p: p.token(exp=int(time.time()) - 120), "expired"),
        (lambda p: p.token(aud="another-service"), "audience"),
        (lambda p: p.token(iss="https://evil.example"), "identity provider"),
        (lambda p: p.token(exp=None), "not valid"),
        (lambda p: p.token(nbf=int(time.time()) + 600), "not valid"),
        (lambda p: p.token(kid="unknown"), "not valid"),
        (lambda p: p.token(sub=None), "not valid"),
        (lambda p: p.token(organisation=None), "organisation"),
        (
            lambda p: jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**40}, None, algorithm="none"),
            "not valid",
        ),
        (lambda p: "not.a.token", "not valid"),
    ],
)
def test_bad_tokens_are_refused_saying_why(provider: Provider, make: Any, reason: str) -> None:
    with pytest.raises(AuthenticationFailed, match=reason):
        verify(make(provider), CONFIG, JwksFile(provider.path))


def test_a_token_signed_with_the_public_key_as_an_hmac_secret_is_refused(provider: Provider) -> None:
    """The classic algorithm confusion: HS256 keyed with the (public) RSA key. Only asymmetric
    algorithms are accepted, so it cannot verify."""
    from cryptography.hazmat.primitives import serialization

    public_pem = provider.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "organisation": "sd", "exp": int(time.time()) + 60}
    # PyJWT itself refuses to sign HS256 with a PEM key, so the token is built by hand.
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(signature)}"
    with pytest.raises(AuthenticationFailed):
        verify(forged, CONFIG, JwksFile(provider.path))


def test_clock_skew_within_the_leeway_is_accepted(provider: Provider) -> None:
    recently_expired = provider.token(exp=int(time.time()) - 10)
    assert verify(recently_expired, CONFIG, JwksFile(provider.path)).principal_id == "oidc:u-1234"


def test_symmetric_algorithms_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        OidcConfig(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",))


def test_unmapped_roles_count_for_nothing_and_odd_subjects_are_hashed(provider: Provider) -> None:
    """The provider cannot invent Datapoort roles: without a mapping for it, a group gives no role."""
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, default_organisation="sociaal-domein")
    token = provider.token(sub="ada@voorbeeldstad.nl", organisation=None, roles=["analist", "beheerder"])
    identity = verify(token, config, JwksFile(provider.path))
    assert identity.roles == ()
    assert identity.organisation == "sociaal-domein"
    assert identity.principal_id.startswith("oidc:")
    assert "@" not in identity.principal_id
