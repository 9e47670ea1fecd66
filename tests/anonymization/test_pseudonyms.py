"""Keyed pseudonyms: stable per partner and dataset, unlinkable across them, and really keyed HMAC."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from anonymization import (
    PSEUDONYM_LENGTH,
    InvalidPrivacyParameter,
    MasterSecret,
    Pseudonymiser,
    derive_key,
    fingerprint_of,
)

MASTER = MasterSecret(1, bytes(range(32)))
BSN = "123456782"


def test_the_same_identifier_gets_the_same_pseudonym_for_one_partner_and_dataset() -> None:
    first = Pseudonymiser(MASTER, partner="de-brug", dataset="jeugdzorg")
    again = Pseudonymiser(MASTER, partner="de-brug", dataset="jeugdzorg")
    assert first.pseudonym(BSN) == again.pseudonym(BSN)
    assert len(first.pseudonym(BSN)) == PSEUDONYM_LENGTH


def test_partners_datasets_and_secret_versions_cannot_be_joined() -> None:
    pseudonyms = {
        Pseudonymiser(MASTER, partner="de-brug", dataset="jeugdzorg").pseudonym(BSN),
        Pseudonymiser(MASTER, partner="woonstad", dataset="jeugdzorg").pseudonym(BSN),
        Pseudonymiser(MASTER, partner="de-brug", dataset="wmo").pseudonym(BSN),
        Pseudonymiser(MasterSecret(2, bytes(range(1, 33))), partner="de-brug", dataset="jeugdzorg").pseudonym(BSN),
    }
    assert len(pseudonyms) == 4


def test_the_pseudonym_is_hmac_sha256_under_the_hkdf_key() -> None:
    """Written out with the primitives, so a weakened construction (a plain hash, no derivation, a
    shorter digest) fails here."""
    info = b"datapoort/pseudonym/v1\x00de-brug\x00jeugdzorg"
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(MASTER.secret)
    assert derive_key(MASTER, partner="de-brug", dataset="jeugdzorg") == key
    digest = hmac.new(key, BSN.encode(), hashlib.sha256).digest()
    expected = base64.b32encode(digest[:20]).decode().lower()
    assert Pseudonymiser(MASTER, partner="de-brug", dataset="jeugdzorg").pseudonym(BSN) == expected
    assert expected != base64.b32encode(hashlib.sha256(BSN.encode()).digest()[:20]).decode().lower()


@given(st.lists(st.one_of(st.none(), st.text(max_size=20), st.integers()), max_size=40))
def test_a_batch_is_each_value_alone_and_carries_its_fingerprints(values: list[object]) -> None:
    pseudonymiser = Pseudonymiser(MASTER, partner="p", dataset="d")
    batch = pseudonymiser.batch(values)
    assert batch.pseudonyms == [None if value is None else pseudonymiser.pseudonym(str(value)) for value in values]
    present = [text for text in batch.pseudonyms if text is not None]
    assert [int(number) for number in batch.fingerprints] == [fingerprint_of(text) for text in present]


@pytest.mark.parametrize(
    ("version", "secret"), [(0, bytes(32)), (1, bytes(31)), (1, b"")], ids=["version-0", "short", "empty"]
)
def test_weak_master_secrets_are_refused(version: int, secret: bytes) -> None:
    with pytest.raises(InvalidPrivacyParameter):
        MasterSecret(version, secret)


def test_a_master_secret_never_shows_in_its_repr() -> None:
    assert "secret=<32 bytes>" in repr(MASTER)
    assert str(bytes(range(32))) not in repr(MASTER)


@pytest.mark.parametrize("text", ["short", "!" * PSEUDONYM_LENGTH, "1" * PSEUDONYM_LENGTH])
def test_only_pseudonyms_have_fingerprints(text: str) -> None:
    with pytest.raises(InvalidPrivacyParameter):
        fingerprint_of(text)
