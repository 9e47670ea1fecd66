"""Runtime configuration, from the environment (prefix ``DATAPOORT_``) or a ``.env`` file."""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SIGNING_KEY = "audit-signing-key.pem"
DEFAULT_PUBLIC_KEY = "audit-signing-key.pub.pem"
DEFAULT_PSEUDONYM_KEYS = "pseudonym-keys.json"
DEFAULT_SNAPSHOT_SEED = "snapshot-seed.key"


def private_key_file(path: Path) -> Path:
    """Key material readable by other users is refused: better not to start than to run with it."""
    if not path.is_file():
        raise ValueError(f"key file {path} does not exist")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"key file {path} is accessible by group or others; chmod 600 it")
    return path


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATAPOORT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".datapoort"), description="Where the embedded state and demo data live.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the state database; default: SQLite file in data_dir."
    )
    catalog: Path | None = Field(default=None, description="Catalog YAML; default: data_dir/catalog.yaml.")
    audit_signing_key_path: Path | None = Field(
        default=None, description="Ed25519 private key (PEM) that signs audit checkpoints. No default."
    )
    audit_public_key_paths: list[Path] = Field(
        default_factory=list,
        description="Ed25519 public keys (PEM) that verify checkpoints, e.g. keys rotated out; the signing "
        "key's own public key is always included.",
    )
    audit_checkpoint_every_events: int = Field(default=1000, ge=1, description="Sign the chain head this often...")
    audit_checkpoint_every_seconds: float = Field(default=300, gt=0, description="... or after this long.")
    audit_retention_days: int = Field(
        default=3653, ge=1, description="How long audit events are kept; `datapoort audit prune` removes older ones."
    )
    pseudonym_key_path: Path | None = Field(
        default=None,
        description="Versioned master secrets for partner pseudonyms (JSON: version -> base64), mode 0600; "
        "default: data_dir/pseudonym-keys.json if it exists.",
    )
    pseudonym_master_keys: SecretStr | None = Field(
        default=None, description="... or the secrets themselves, as 'version:base64,version:base64'."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    instance: str = Field(default_factory=socket.gethostname, description="Names this process in audit events.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For is believed (JSON list); none by default, "
        "so the audited client address is the connection's.",
    )
    worker_threads: int = Field(
        default=16, ge=1, le=256, description="Threads that run requests; the state DB pool is sized from it."
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, description="/v1 requests run at once per process (default: worker_threads)."
    )
    queue_seconds: float = Field(
        default=0.25, gt=0, le=30, description="How long a request waits for a slot before 503 overloaded."
    )
    state_write_wait_seconds: float = Field(
        default=5.0, gt=0, le=120, description="How long a write to the state DB waits for the writer (SQLite)."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="The largest request body accepted.")
    rate_limit_per_second: float = Field(
        default=20.0, gt=0, description="Requests a second one caller (API key or token user) may make on average."
    )
    rate_limit_burst: float = Field(default=40.0, ge=1, description="Requests one caller may make at once.")
    statement_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="An aggregate statement (DuckDB or PostgreSQL) is stopped after this long; it stays charged.",
    )
    default_query_epsilon: float = Field(default=0.5, gt=0, description="Epsilon a query costs when it names none.")
    max_query_epsilon: float = Field(default=2.0, gt=0, description="The most a single query may spend.")
    default_query_delta: float = Field(
        default=1e-9,
        gt=0,
        lt=1,
        description="Delta of a query that selects group keys from the data, if it names none.",
    )
    max_query_delta: float = Field(default=1e-6, gt=0, lt=1, description="The most delta a single query may spend.")
    policy_poll_seconds: float = Field(
        default=1.0,
        ge=0,
        le=1.5,
        description="How often each process checks the state database for policy changes (0: every decision). "
        "At most 1.5, so a revocation anywhere is obeyed everywhere within 2 seconds.",
    )
    oidc_issuer: str | None = Field(default=None, description="OIDC: the identity provider's issuer (iss).")
    oidc_audience: str | None = Field(default=None, description="OIDC: this gateway's audience (aud).")
    oidc_jwks_file: Path | None = Field(default=None, description="OIDC: the provider's JWKS as a file ...")
    oidc_jwks_url: str | None = Field(default=None, description="... or its URL (cached).")
    oidc_jwks_cache_seconds: float = Field(default=300, gt=0, le=86_400)
    oidc_algorithms: list[str] = Field(default=["RS256", "ES256"])
    oidc_leeway_seconds: int = Field(default=60, ge=0, le=300, description="Allowed clock skew.")
    oidc_principal_claim: str = "sub"
    oidc_organisation_claim: str | None = "organisation"
    oidc_default_organisation: str | None = Field(
        default=None, description="The organisation of a token without the organisation claim."
    )
    oidc_roles_claim: str = "roles"
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict, description="Provider role/group -> Datapoort role (JSON); empty: names as they are."
    )
    oidc_authorization_endpoint: str | None = Field(
        default=None, description="Console sign-in with the identity provider: its authorization endpoint ..."
    )
    oidc_token_endpoint: str | None = Field(default=None, description="... its token endpoint ...")
    oidc_client_id: str | None = Field(
        default=None, description="... and the console's client id (the audience of the ID tokens it receives)."
    )
    oidc_client_secret_path: Path | None = Field(
        default=None, description="A confidential client's secret, in a 0600 file (PKCE is used either way)."
    )
    console_session_minutes: int = Field(
        default=30, ge=2, le=720, description="A console session unused this long has ended."
    )
    console_session_hours: float = Field(
        default=8, gt=0, le=24, description="A console session ends this long after sign-in, however it is used."
    )
    console_cookie_secure: Literal["auto", "always"] = Field(
        default="auto",
        description="auto: the console's cookies are Secure when the request came over TLS (uvicorn's "
        "--proxy-headers counts a trusted proxy's X-Forwarded-Proto); always: also behind a proxy that hides it.",
    )
    console_verify_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="The console's overview shows a chain verification at most this old (0: verify at every "
        "view); its 'verify now' button verifies at once. A long log takes seconds to verify.",
    )
    dataset_roots: list[Path] = Field(
        default_factory=list,
        description="Directories whose files datasets added while running may read (JSON list), besides the "
        "catalog file's; never the gateway's own state, keys or snapshots.",
    )
    dataset_url_envs: list[str] = Field(
        default_factory=list,
        description="Environment variables with database URLs that datasets added while running may name "
        "(JSON list), besides those the catalog file names; never the state database's.",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#]+$",
        description="The gateway's address as browsers see it: the console's OIDC redirect URI is built from it.",
    )
    max_groups: int = Field(default=10_000, ge=1, description="The most groups one answer may hold.")
    peer_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="How long a comparison waits for each peer gateway."
    )
    peer_max_answer_bytes: int = Field(default=1_048_576, ge=1024, description="The largest answer read from a peer.")
    allow_plain_loopback_peers: bool = Field(
        default=False,
        description="Allow peers reached over plain HTTP on this host (demos and tests); never across machines.",
    )
    max_join_contributions: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="The most joined rows one person contributes to a join; beyond the product of the "
        "datasets' max_contributions the statement keeps a random subset of this many.",
    )
    duckdb_memory_limit: str = Field(
        default="256MB",
        pattern=r"^[0-9]+(\.[0-9]+)?\s?(KB|MB|GB|KiB|MiB|GiB)$",
        description="Beyond this DuckDB spills.",
    )
    extract_duckdb_memory_limit: str = Field(
        default="32MB",
        pattern=r"^[0-9]+(\.[0-9]+)?\s?(KB|MB|GB|KiB|MiB|GiB)$",
        description="Extracts read files through a DuckDB of their own, which spills beyond this: an extract's "
        "memory does not grow with the data, nor take the aggregates' room.",
    )
    snapshot_seed_path: Path | None = Field(
        default=None,
        description="The secret that chooses the rows a snapshot keeps of a unit with too many (created, "
        "mode 0600, if absent); default: data_dir/snapshot-seed.key.",
    )
    extract_duckdb_threads: int = Field(
        default=1, ge=1, le=64, description="Threads of the extracts' DuckDB (each holds buffers of its own)."
    )
    metrics_bind: str | None = Field(
        default=None,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$",
        description="Serve Prometheus metrics on this host:port too (e.g. 127.0.0.1:9108), without a token: "
        "bind it where only the scraper reaches. Default: no second server.",
    )
    metrics_token_path: Path | None = Field(
        default=None,
        description="A 0600 file holding the bearer token GET /metrics on the main port asks for; "
        "without it /metrics there answers 404.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="`datapoort serve`'s logs: one JSON object per line, or plain text."
    )

    @field_validator("audit_signing_key_path", "pseudonym_key_path", "oidc_client_secret_path", "metrics_token_path")
    @classmethod
    def _key_file_is_private(cls, path: Path | None) -> Path | None:
        return None if path is None else private_key_file(path)

    @model_validator(mode="after")
    def _epsilon_defaults_agree(self) -> Settings:
        if self.default_query_epsilon > self.max_query_epsilon:
            raise ValueError("default_query_epsilon may not exceed max_query_epsilon")
        if self.default_query_delta > self.max_query_delta:
            raise ValueError("default_query_delta may not exceed max_query_delta")
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        configured = [self.oidc_issuer, self.oidc_audience, self.oidc_jwks_file or self.oidc_jwks_url]
        if any(configured) and not all(configured):
            raise ValueError("OIDC needs oidc_issuer, oidc_audience and oidc_jwks_file or oidc_jwks_url together")
        if self.oidc_jwks_file is not None and self.oidc_jwks_url is not None:
            raise ValueError("give oidc_jwks_file or oidc_jwks_url, not both")
        console = [self.oidc_authorization_endpoint, self.oidc_token_endpoint, self.oidc_client_id, self.public_url]
        if any(console[:3]) and not (all(console) and self.oidc_enabled):
            raise ValueError(
                "console sign-in with the identity provider needs oidc_authorization_endpoint, "
                "oidc_token_endpoint, oidc_client_id and public_url (its redirect URI is registered with the "
                "provider) together, besides the provider's issuer and keys"
            )
        return self

    @property
    def oidc_enabled(self) -> bool:
        return self.oidc_issuer is not None

    @property
    def console_oidc_enabled(self) -> bool:
        return self.oidc_enabled and self.oidc_client_id is not None

    @property
    def state_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'state.db').resolve()}"

    @property
    def signing_key_file(self) -> Path | None:
        """The configured checkpoint signing key, or the one ``datapoort demo`` keeps in the data dir."""
        if self.audit_signing_key_path is not None:
            return self.audit_signing_key_path
        default = self.data_dir / DEFAULT_SIGNING_KEY
        if default.is_file():
            return private_key_file(default)
        return None

    @property
    def pseudonym_key_file(self) -> Path | None:
        """The configured master-secret file, or the one ``datapoort demo`` keeps in the data dir."""
        if self.pseudonym_key_path is not None:
            return self.pseudonym_key_path
        default = self.data_dir / DEFAULT_PSEUDONYM_KEYS
        return private_key_file(default) if default.is_file() else None

    @property
    def in_flight(self) -> int:
        return self.max_in_flight or self.worker_threads

    @property
    def snapshot_seed_file(self) -> Path:
        return self.snapshot_seed_path or self.data_dir / DEFAULT_SNAPSHOT_SEED

    @property
    def snapshot_dir(self) -> Path:
        """Where verified snapshots of file-backed datasets are kept (mode 0700)."""
        return self.data_dir / "snapshots"

    @property
    def catalog_path(self) -> Path:
        return self.catalog or self.data_dir / "catalog.yaml"
