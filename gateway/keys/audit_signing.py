"""Which keys sign and verify audit checkpoints, from the settings (and the demo's data dir)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoints
from gateway.settings import DEFAULT_PUBLIC_KEY, Settings


def checkpoint_policy(settings: Settings) -> checkpoints.CheckpointPolicy | None:
    key_file = settings.signing_key_file
    if key_file is None:
        return None
    return checkpoints.CheckpointPolicy(
        signer=checkpoints.load_private_key(key_file),
        every_events=settings.audit_checkpoint_every_events,
        every_seconds=settings.audit_checkpoint_every_seconds,
    )


def verification_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Every public key that may have signed a checkpoint: those configured (keys rotated out among
    them), the data dir's public key file, and the current signing key's own."""
    paths = list(settings.audit_public_key_paths)
    if (settings.data_dir / DEFAULT_PUBLIC_KEY).is_file():
        paths.append(settings.data_dir / DEFAULT_PUBLIC_KEY)
    keys = checkpoints.load_public_keys(paths)
    policy = checkpoint_policy(settings)
    if policy is not None:
        keys[policy.key_id] = policy.signer.public_key()
    return keys
