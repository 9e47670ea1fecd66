"""What the running app holds: built in the lifespan, never at import time.

Two parts of it change while the gateway runs, and every process follows within a poll interval, with no
restart: the catalog (the catalog file overlaid with the datasets added, changed or removed through
``datapoort datasets`` or ``/v1/admin/datasets``, versioned in the state database) and the pseudonym
master secrets (``datapoort pseudonyms rotate`` rewrites their file).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from anonymization import MasterSecret
from gateway.data.catalog import Catalog, with_changes
from gateway.data.sources import Sources
from gateway.exceptions import CatalogError, GatewayError
from gateway.keys.identity_provider import TokenAuthority
from gateway.keys.pseudonym_secrets import load_master_secrets
from gateway.settings import DEFAULT_PSEUDONYM_KEYS, Settings
from policies import catalog_changes
from policies.enforcer import PolicyEngine

logger = logging.getLogger("datapoort.state")


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    policy_engine: PolicyEngine
    catalog: Catalog
    """The catalog in effect: ``file_catalog`` with the recorded changes up to ``catalog_version``."""
    sources: Sources
    tokens: TokenAuthority | None = None
    master_secrets: dict[int, MasterSecret] = field(default_factory=dict)
    """Pseudonym master secrets by version; empty: extracts are not configured."""
    file_catalog: Catalog | None = None
    """The catalog file as read at start; ``None``: ``catalog`` is the file's (no changes followed)."""
    catalog_version: int = 0
    on_catalog: Callable[[int, Catalog], None] | None = None
    """Told of every catalog taken into effect (the operator's metrics)."""
    _checked_at: float = -1.0
    _secrets_file: tuple[int, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _origin: GatewayState | None = None

    def pinned(self) -> GatewayState:
        """This state for one request: the catalog and secrets as they are now, for the request's whole
        course (a change taking effect meanwhile cannot give its steps different datasets, such as a table
        that was private when checked and public when read); everything else is shared."""
        root = self._origin or self
        return dataclasses.replace(root, _origin=root)

    def follow_changes(self, session: Session, *, force: bool = False, strict: bool = False) -> None:
        """Bring the catalog and the master secrets up to date, at most once per poll interval (the
        policies' interval). Cheap when nothing changed: one indexed ``max()`` and one ``stat``.
        ``strict`` (at start): changes that no longer fit the catalog file stop the start."""
        if self._origin is not None:  # a request's pinned view: the app's state follows
            self._origin.follow_changes(session, force=force, strict=strict)
            return
        now = time.monotonic()
        if not force and now - self._checked_at < self.settings.policy_poll_seconds:
            return
        self._checked_at = now
        self._follow_catalog(session, strict=strict)
        self._follow_secrets()

    def _follow_catalog(self, session: Session, *, strict: bool = False) -> None:
        if self.file_catalog is None or catalog_changes.latest_version(session) == self.catalog_version:
            return
        version, entries = catalog_changes.overrides(session)
        try:
            catalog = with_changes(self.file_catalog, entries)
        except GatewayError as exc:  # changes are validated when made; a file edited since may clash
            if strict:  # at start: serving the file alone would bring back datasets removed through the API
                raise CatalogError(
                    f"the catalog file and the changes recorded up to version {version} do not fit together: "
                    f"{exc}; correct the file or the change (datapoort datasets update/remove)"
                ) from exc
            logger.error("catalog version %d cannot be applied, keeping %d: %s", version, self.catalog_version, exc)
            return
        with self._lock:
            if version <= self.catalog_version:
                return
            self.catalog, self.catalog_version = catalog, version
        logger.info("catalog version %d in effect (%d datasets)", version, len(catalog.datasets))
        if self.on_catalog is not None:
            self.on_catalog(version, catalog)

    def _secrets_stamp(self) -> tuple[int, int]:
        path = self.settings.pseudonym_key_path or self.settings.data_dir / DEFAULT_PSEUDONYM_KEYS
        try:
            status = os.stat(path)
        except OSError:
            return (0, 0)
        return (status.st_mtime_ns, status.st_size)

    def note_secrets_file(self) -> None:
        """Remember the key file the secrets in use were read from (at start)."""
        self._secrets_file = self._secrets_stamp()

    def _follow_secrets(self) -> None:
        if self.settings.pseudonym_master_keys is not None:  # from the environment: fixed for the process
            return
        stamp = self._secrets_stamp()
        if stamp == self._secrets_file or stamp == (0, 0):
            return
        try:
            secrets = load_master_secrets(self.settings)
        except (GatewayError, ValueError) as exc:
            logger.error("the pseudonym key file changed but cannot be read; keeping the secrets in use: %s", exc)
            return
        self.master_secrets, self._secrets_file = secrets, stamp
        logger.info("pseudonym master secrets reloaded: versions %s", sorted(secrets))
