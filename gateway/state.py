"""What the running app holds: built in the lifespan, never at import time."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from anonymization import MasterSecret
from gateway.data.catalog import Catalog
from gateway.data.sources import Sources
from gateway.keys.identity_provider import TokenAuthority
from gateway.settings import Settings
from policies.enforcer import PolicyEngine


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    policy_engine: PolicyEngine
    catalog: Catalog
    sources: Sources
    tokens: TokenAuthority | None = None
    master_secrets: dict[int, MasterSecret] = field(default_factory=dict)
    """Pseudonym master secrets by version; empty: extracts are not configured."""
