"""The credentials peer gateways issued to this gemeente: one API key per peer, in a 0600 file.

Kept like the other key files: ``<data dir>/peers/<name>.key`` in a 0700 directory, written whole
(a crash leaves the old file or the new one), and refused when others can read it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from gateway.exceptions import ConfigurationError

PEERS_DIRECTORY = "peers"


def credential_path(data_dir: Path, name: str) -> Path:
    return data_dir / PEERS_DIRECTORY / f"{name}.key"


def write_credential(data_dir: Path, name: str, secret: str) -> Path:
    directory = data_dir / PEERS_DIRECTORY
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = credential_path(data_dir, name)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secret.strip() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_credential(data_dir: Path, name: str) -> str:
    """The peer's key; a missing file, or one others may read, is a configuration error."""
    path = credential_path(data_dir, name)
    try:
        mode = path.stat().st_mode
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"the credential of peer {name!r} ({path}) cannot be read") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"the credential of peer {name!r} ({path}) is readable by others; chmod 600 it")
    if not secret:
        raise ConfigurationError(f"the credential of peer {name!r} ({path}) is empty")
    return secret
