"""API keys: recognisable, 256-bit, checksummed, stored only as a hash, verified in constant time."""

from __future__ import annotations

import base64
import hashlib

import pytest

from policies import api_keys


def test_a_key_has_the_prefix_and_length() -> None:
    key = api_keys.generate_key()
    assert key.token.startswith("dpk_")
    assert len(key.token) == 4 + 68 + 7
    assert key.token[4:].isalnum()
    assert key.token[4:] == key.token[4:].lower()


def test_a_key_carries_256_random_bits_and_keys_differ() -> None:
    tokens = {api_keys.generate_key().token for _ in range(200)}
    assert len(tokens) == 200
    parsed = api_keys.parse_key(next(iter(tokens)))
    assert parsed is not None
    assert len(parsed.secret) == 32


def test_parse_round_trips_and_matches_the_stored_hash() -> None:
    key = api_keys.generate_key()
    parsed = api_keys.parse_key(key.token)
    assert parsed is not None
    assert parsed.key_id == key.key_id
    assert key.secret_sha256 == hashlib.sha256(parsed.secret).hexdigest()
    assert api_keys.secret_matches(parsed.secret, key.secret_sha256)


def test_the_stored_hash_does_not_contain_the_secret() -> None:
    key = api_keys.generate_key()
    body = key.token[4:-7]
    assert body not in key.secret_sha256
    assert key.secret_sha256 != body


@pytest.mark.parametrize("position", [4, 20, 60, 75])
def test_the_checksum_catches_a_changed_character(position: int) -> None:
    token = api_keys.generate_key().token
    replacement = "a" if token[position] != "a" else "b"
    assert api_keys.parse_key(token[:position] + replacement + token[position + 1 :]) is None


@pytest.mark.parametrize("token", ["", "dpk_", "Bearer x", "ghp_" + "a" * 75, "dpk_" + "a" * 200])
def test_malformed_keys_do_not_parse(token: str) -> None:
    assert api_keys.parse_key(token) is None


def test_a_wrong_secret_with_a_valid_checksum_does_not_match() -> None:
    key = api_keys.generate_key()
    other = api_keys.generate_key()
    parsed_other = api_keys.parse_key(other.token)
    assert parsed_other is not None
    assert not api_keys.secret_matches(parsed_other.secret, key.secret_sha256)


def test_an_unknown_key_never_matches_even_the_dummy() -> None:
    assert not api_keys.secret_matches(b"\x00" * 32, None)


def test_a_scanner_can_recognise_a_key_offline() -> None:
    """What a secret scanner would do: prefix, alphabet, and the CRC-32 check, without the gateway."""
    import zlib

    token = api_keys.generate_key().token
    body, checksum = token[4:-7], token[-7:]
    expected = base64.b32encode(zlib.crc32(body.encode()).to_bytes(4, "big")).decode().rstrip("=").lower()
    assert checksum == expected
