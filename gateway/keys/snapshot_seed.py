"""The secret that chooses which rows of a unit a snapshot keeps when it has more than allowed.

Without it, the choice could be predicted from the data (and so steered by whoever writes the file); with
it, the choice is a keyed hash that no one without the seed can foresee. Created on first use (32 random
bytes, mode 0600); refused, like every key file, when others can read it."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from gateway.exceptions import ConfigurationError

SEED_BYTES = 32


def load_or_create_seed(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: a second process starting at the
        # same moment finds no file or a complete one, and the first link wins.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(SEED_BYTES).hex().encode())
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"snapshot seed {path} is accessible by group or others; chmod 600 it")
    try:
        seed = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"snapshot seed {path} is not readable hex") from exc
    if len(seed) < SEED_BYTES:
        raise ConfigurationError(f"snapshot seed {path} must hold at least {SEED_BYTES} bytes")
    return seed
