"""Master secrets for partner pseudonyms: loaded from a private key file or the environment, versioned.

The newest version pseudonymises new extracts; older versions stay loaded so that a privacy officer can
still re-identify and look people up in the extracts made under them. Removing a version from the file
makes its extracts' pseudonyms irreversible for the gateway too (crypto-shredding).

File format (mode 0600)::

    {"1": "<base64 of at least 32 random bytes>", "2": "..."}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tempfile
from pathlib import Path

from anonymization import InvalidPrivacyParameter, MasterSecret
from gateway.exceptions import ConfigurationError
from gateway.settings import Settings


def _secrets_from(pairs: dict[str, str], where: str) -> dict[int, MasterSecret]:
    found: dict[int, MasterSecret] = {}
    for version, encoded in pairs.items():
        try:
            number = int(version)
            found[number] = MasterSecret(number, base64.b64decode(encoded, validate=True))
        except (ValueError, binascii.Error, InvalidPrivacyParameter) as exc:
            raise ConfigurationError(f"{where}: version {version!r} is not a valid master secret") from exc
    return found


def load_master_secrets(settings: Settings) -> dict[int, MasterSecret]:
    """Every configured master secret by version; empty when extracts are not configured."""
    if settings.pseudonym_master_keys is not None:
        parts = [part.strip() for part in settings.pseudonym_master_keys.get_secret_value().split(",")]
        pairs = [part.split(":", 1) for part in parts]
        versions = [pair[0] for pair in pairs]
        if not parts or any(len(pair) != 2 for pair in pairs) or len(set(versions)) != len(versions):
            raise ConfigurationError(
                "DATAPOORT_PSEUDONYM_MASTER_KEYS must read 'version:base64,...', each version once"
            )
        return _secrets_from(dict(pairs), "DATAPOORT_PSEUDONYM_MASTER_KEYS")
    path = settings.pseudonym_key_file  # refuses a file others can read
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"pseudonym key file {path} is not readable JSON") from exc
    if not isinstance(document, dict) or not document:
        raise ConfigurationError(f"pseudonym key file {path} must map versions to base64 secrets")
    return _secrets_from({str(key): str(value) for key, value in document.items()}, str(path))


def add_version(path: Path) -> int:
    """Create the key file (0600) or add a new, higher version to it; return that version."""
    existing: dict[str, str] = {}
    if path.exists():
        existing = json.loads(path.read_text(encoding="utf-8"))
    version = max((int(key) for key in existing), default=0) + 1
    existing[str(version)] = base64.b64encode(secrets.token_bytes(32)).decode()
    # A new file of our own (mode 0600 from the start), on disk before it replaces the old one: a crash
    # leaves the old file or the new one, never a truncated mix that would lose every version.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(existing, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return version
