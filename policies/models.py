"""Tables of the policies domain: who exists, how they prove it, what they may do, what they spent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from audit.db_types import UTCDateTime, new_metadata


class PoliciesBase(DeclarativeBase):
    metadata = new_metadata()


class Organisation(PoliciesBase):
    """An organisation or department: the casbin domain its principals, roles and grants live in.
    Disabling it makes every one of its principals fail authentication."""

    __tablename__ = "organisation"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Principal(PoliciesBase):
    """A person or system that calls the gateway. ``organisation`` is its casbin domain."""

    __tablename__ = "principal"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    organisation: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiKey(PoliciesBase):
    """An API key, stored only as the SHA-256 of its secret part; ``id`` is the public lookup part."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principal.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CasbinRule(PoliciesBase):
    """casbin's policy lines (``p`` and ``g``), the layout casbin's own database adapters use."""

    __tablename__ = "casbin_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ptype: Mapped[str] = mapped_column(String(8))
    v0: Mapped[str | None] = mapped_column(String(256))
    v1: Mapped[str | None] = mapped_column(String(256))
    v2: Mapped[str | None] = mapped_column(String(256))
    v3: Mapped[str | None] = mapped_column(String(256))
    v4: Mapped[str | None] = mapped_column(String(256))
    v5: Mapped[str | None] = mapped_column(String(256))


class PolicyVersion(PoliciesBase):
    """One row whose ``version`` goes up with every change to ``casbin_rule``, in the same transaction.

    Every gateway process compares it with the version its enforcer was loaded at before each decision,
    so a change made by any process (a revocation above all) is obeyed by the next request everywhere.
    """

    __tablename__ = "policy_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class Purpose(PoliciesBase):
    """A purpose (doelbinding) from the register of processing activities (AVG art. 30)."""

    __tablename__ = "purpose"

    code: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(256))
    register_uri: Mapped[str | None] = mapped_column(String(512))
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """A retired purpose allows nothing any more; it stays so that old grants and events still name it."""


class Grant(PoliciesBase):
    """What casbin cannot hold: the legal basis, the validity window and the privacy budget of an allow
    rule. Each grant has exactly one ``p`` line in ``casbin_rule`` with the same fields."""

    __tablename__ = "grant"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(128))
    domain: Mapped[str] = mapped_column(String(128))
    dataset: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(ForeignKey("purpose.code"))
    legal_basis: Mapped[str] = mapped_column(String(32))
    legal_basis_text: Mapped[str] = mapped_column(Text)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    epsilon_per_period: Mapped[float | None] = mapped_column(Float)
    delta_per_period: Mapped[float | None] = mapped_column(Float)
    """The delta a principal may spend per period on queries that select group keys from the data;
    ``None`` (or 0) allows only pure epsilon-DP queries."""
    budget_period: Mapped[str | None] = mapped_column(String(16))
    k_anonymity: Mapped[int | None] = mapped_column(Integer)
    """An export grant: the smallest number of persons an equivalence class of the extract may hold."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RateBucket(PoliciesBase):
    """The token bucket of one caller's rate limit (an API key, or a principal for a token user), in the
    state database so that every process of a PostgreSQL deployment shares it."""

    __tablename__ = "rate_bucket"

    caller: Mapped[str] = mapped_column(String(160), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BudgetTotal(PoliciesBase):
    """A running total of the ledger: what one principal (or, as ``*``, everyone) spent in a unit space
    in one period bucket (``2026-12``, ``2026`` or ``lifetime``), kept in the transaction of every spend,
    so a reservation reads five rows whatever the history. Sums are exact decimals of the spends' binary
    floats (text: SQLite has no exact decimal), so the test against a limit is the same as ``math.fsum``
    over every spend."""

    __tablename__ = "budget_total"

    unit_space: Mapped[str] = mapped_column(String(128), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    epsilon: Mapped[str] = mapped_column(Text)
    delta: Mapped[str] = mapped_column(Text)
    spends: Mapped[int] = mapped_column(Integer)


class BudgetSpend(PoliciesBase):
    """One entry of the privacy-budget ledger: (epsilon, delta) spent by a principal on a dataset.

    ``status`` is ``reserved`` from the moment the query may read the data, then ``released`` or
    ``failed`` in the transaction of the request's audit event (``request_id`` links the two). A row
    left ``reserved`` belongs to a request whose outcome was never recorded (a crash or an audit
    failure); it counts all the same."""

    __tablename__ = "budget_spend"
    __table_args__ = (
        # The ledger's two sums: everyone's spends in a space since a cap's start, and one principal's.
        Index("ix_budget_spend_unit_space_spent_at", "unit_space", "spent_at"),
        Index("ix_budget_spend_principal_id_unit_space_spent_at", "principal_id", "unit_space", "spent_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principal.id"), index=True)
    dataset: Mapped[str] = mapped_column(String(128))
    unit_space: Mapped[str] = mapped_column(String(128))
    """The privacy-unit space the dataset belonged to when the spend was made: what the spend counts
    against (see ``policies.budget``)."""
    grant_id: Mapped[int] = mapped_column(ForeignKey("grant.id"))
    period: Mapped[str] = mapped_column(String(16))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="released")
    request_id: Mapped[str] = mapped_column(String(64))
    spent_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Peer(PoliciesBase):
    """Another gemeente's gateway this one may put a comparison to (``/v1/compare``). To the peer this
    gateway is an ordinary principal of an organisation, with a key the peer issued (kept in a 0600 file
    under the data dir, never here), decided by the peer's own policies and budgets."""

    __tablename__ = "peer"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    gemeente: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(500))
    tls: Mapped[str] = mapped_column(String(16))
    """``verify`` (the system's CAs), ``ca_file`` (a CA bundle of its own), or ``plain_loopback`` (HTTP to
    this host only, and only where the gateway's settings allow it)."""
    ca_file: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsoleSession(PoliciesBase):
    """A signed-in browser of the web console (see ``policies.console_sessions``): stored as the SHA-256 of
    its secret, bound to the API key it was opened with (``None`` after an identity-provider sign-in)."""

    __tablename__ = "console_session"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    principal_id: Mapped[str] = mapped_column(ForeignKey("principal.id"), index=True)
    organisation: Mapped[str] = mapped_column(String(128))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_key.id"))
    via: Mapped[str] = mapped_column(String(16))
    """``api_key`` or ``oidc``: how the officer proved who they are."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CatalogChange(PoliciesBase):
    """One change to a dataset of the catalog made while the gateway runs (``datapoort datasets add``,
    ``/v1/admin/datasets``): the dataset's whole entry after the change (JSON), or ``None`` for its removal.
    The catalog in effect is the catalog file with, per dataset, its latest change applied; ``version``
    (the latest change's) is what every process polls and every cache is keyed by."""

    __tablename__ = "catalog_change"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(128), index=True)
    entry: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(160))
