"""API key format, generation and verification.

A key looks like ``dpk_<body><checksum>``:

* ``dpk_`` — a fixed prefix, so secret scanners and people recognise a Datapoort key;
* ``body`` — base32 (lower case, no padding) of 10 random bytes of lookup id followed by 32 random bytes
  (256 bits) of secret;
* ``checksum`` — base32 of the CRC-32 of the body, so a scanner can tell a real key from random text
  without asking the gateway. It is not a security measure; the secret is.

Only the lookup id and SHA-256 of the secret are stored. A plain hash suffices because the secret is
256 random bits: there is nothing to brute-force, so a slow password hash would only cost latency.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import zlib
from dataclasses import dataclass

KEY_PREFIX = "dpk_"
_ID_BYTES = 10
_SECRET_BYTES = 32
_BODY_CHARS = 68  # base32 of 42 bytes, unpadded
_CHECKSUM_CHARS = 7  # base32 of 4 bytes, unpadded


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _unb32(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    return base64.b32decode(padded)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    secret: bytes


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key. ``token`` is shown once and never stored."""

    key_id: str
    token: str
    secret_sha256: str


def _checksum(body: str) -> str:
    return _b32(zlib.crc32(body.encode()).to_bytes(4, "big"))


def generate_key() -> NewKey:
    """A new key from the operating system's CSPRNG."""
    raw = secrets.token_bytes(_ID_BYTES + _SECRET_BYTES)
    body = _b32(raw)
    key_id, secret = raw[:_ID_BYTES].hex(), raw[_ID_BYTES:]
    return NewKey(key_id=key_id, token=KEY_PREFIX + body + _checksum(body), secret_sha256=hash_secret(secret))


def hash_secret(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def parse_key(token: str) -> ParsedKey | None:
    """Split a presented key into lookup id and secret; ``None`` if it is not a well-formed key."""
    if not token.startswith(KEY_PREFIX) or len(token) != len(KEY_PREFIX) + _BODY_CHARS + _CHECKSUM_CHARS:
        return None
    body = token[len(KEY_PREFIX) : len(KEY_PREFIX) + _BODY_CHARS]
    if not hmac.compare_digest(_checksum(body), token[-_CHECKSUM_CHARS:]):
        return None
    try:
        raw = _unb32(body)
    except ValueError:
        return None
    if len(raw) != _ID_BYTES + _SECRET_BYTES:
        return None
    return ParsedKey(key_id=raw[:_ID_BYTES].hex(), secret=raw[_ID_BYTES:])


# Compared against when the lookup id is unknown, so that unknown and wrong keys take the same time.
_DUMMY_SHA256 = hash_secret(b"\x00" * _SECRET_BYTES)


def secret_matches(secret: bytes, stored_sha256: str | None) -> bool:
    """Constant-time comparison of a presented secret with the stored hash (or the dummy if unknown)."""
    presented = hash_secret(secret)
    expected = stored_sha256 if stored_sha256 is not None else _DUMMY_SHA256
    return hmac.compare_digest(presented, expected) and stored_sha256 is not None
