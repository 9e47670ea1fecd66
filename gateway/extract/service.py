"""Record-level extracts for partners, re-identification and the data-subject lookup.

An extract is authorised (``export`` for the purpose), held to the dataset's export profile for that
purpose (data minimisation), planned and counted at the source (generalisation, k-anonymity,
l-diversity), recorded and audited, and only then streamed: batch by batch from the source, the privacy
unit replaced by the partner's pseudonym, rows in each batch put in pseudonym order so the source's row
order does not show. When the stream ends, or the client goes away, what actually left is recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pacompute
from sqlalchemy.orm import Session
from sqlglot import exp

from anonymization import MasterSecret, Pseudonymiser, fingerprint_of
from audit import extracts as extract_records
from audit import service as audit_service
from audit.models import ExtractRecord
from gateway.audit_trail import AuditContext
from gateway.data.catalog import DatasetSpec
from gateway.data.relations import ident, source_dialect, source_relation, string_literal, typed_projection
from gateway.exceptions import ConfigurationError, DatasetNotFound, InvalidExtract, NotFound
from gateway.extract.compile import CompiledExtract, compile_extract, output_columns
from gateway.extract.formats import Format, Writer
from gateway.query.sql_frontend import check_condition
from gateway.query.validate import check_condition_columns
from gateway.state import GatewayState
from policies import service as policy_service
from policies.exceptions import PolicyDenied

logger = logging.getLogger("datapoort.extract")
BATCH_SIZE = 2_048  # DuckDB's vector size: smaller batches, less memory held, no slower
INZAGE_PARTNER = "datapoort:inzage"
"""The pseudonym domain under which inzage events name the person (so that a person's requests can be
told apart and counted without the log holding a BSN)."""


@dataclass(frozen=True, slots=True)
class PreparedExtract:
    extract_id: str
    dataset_name: str
    dataset: DatasetSpec
    compiled: CompiledExtract
    pseudonymiser: Pseudonymiser
    format: Format
    k: int
    l_diversity: str | None
    records_released: int
    records_suppressed: int
    classes_released: int

    @property
    def generalisations(self) -> str:
        return ";".join(
            f"{column.source}:{column.rule.describe()}" for column in self.compiled.columns if column.rule is not None
        )

    def headers(self) -> dict[str, str]:
        return {
            "X-Datapoort-Extract-Id": self.extract_id,
            "X-Datapoort-K": str(self.k),
            "X-Datapoort-L-Diversity": self.l_diversity or "",
            "X-Datapoort-Records": str(self.records_released),
            "X-Datapoort-Suppressed": str(self.records_suppressed),
            "X-Datapoort-Generalisations": self.generalisations,
            "X-Datapoort-Pseudonym-Version": str(self.pseudonymiser.version),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "extract_id": self.extract_id,
            "k": self.k,
            "l_diversity": self.l_diversity,
            "records": self.records_released,
            "suppressed": self.records_suppressed,
            "classes": self.classes_released,
            "generalisations": self.generalisations,
            "pseudonym_version": self.pseudonymiser.version,
        }


def _newest_secret(state: GatewayState) -> MasterSecret:
    if not state.master_secrets:
        raise ConfigurationError("pseudonym master secrets are not configured, so no extract can be made")
    return state.master_secrets[max(state.master_secrets)]


def _exportable(state: GatewayState, name: str) -> DatasetSpec:
    dataset = state.catalog.dataset(name)
    if dataset is None or "export" not in dataset.actions:
        raise DatasetNotFound(f"no dataset {name!r} can be exported")
    return dataset


def prepare_extract(
    session: Session,
    state: GatewayState,
    principal: policy_service.AuthenticatedPrincipal,
    audit: AuditContext,
    *,
    dataset_name: str,
    purpose: str,
    columns: list[str],
    where: exp.Expression | None,
    format: Format,
) -> PreparedExtract:
    """Authorise, check against the export profile, and count what the extract will hold."""
    dataset = _exportable(state, dataset_name)
    grant = policy_service.authorize(
        session,
        state.policy_engine,
        principal,
        dataset=dataset_name,
        action="export",
        purpose=purpose,
        now=audit.started_at,
    )
    audit.event.legal_basis = grant.legal_basis
    profile = dataset.exports.get(purpose)
    if profile is None:
        raise PolicyDenied(f"dataset {dataset_name!r} has no export profile for purpose {purpose!r}")
    if len(set(columns)) != len(columns):
        raise InvalidExtract("a column is asked for twice")
    for name in columns:
        if name not in profile.columns:
            raise PolicyDenied(f"column {name!r} is not released for purpose {purpose!r}")
        if dataset.columns[name].kind == "identifier" and name != dataset.unit:
            raise PolicyDenied(f"column {name!r} is a direct identifier and is never released")  # pragma: no cover
    if where is not None:
        check_condition(where)
        check_condition_columns(dataset_name, dataset, where)
        for node in where.find_all(exp.Column):
            name = str(node.name)
            spec = dataset.columns[name]
            # Only by what the extract shows as it is: a filter on a raw date would tell what its year
            # hides, one on a sensitive column would pick records by what l-diversity protects.
            if name not in profile.columns or spec.kind in ("identifier", "sensitive") or spec.rule is not None:
                raise PolicyDenied(
                    f"an extract for {purpose!r} can select records only by columns it releases as they are, "
                    f"not by {name!r}"
                )
    k = grant.k_anonymity or policy_service.DEFAULT_K_ANONYMITY
    diverse = (profile.l_diversity.column, profile.l_diversity.l) if profile.l_diversity is not None else None
    state.sources.check_ready(dataset_name, dataset)
    compiled = compile_extract(dataset, output_columns(dataset, columns), where, k=k, diverse=diverse)
    secret = _newest_secret(state)
    summary = [row for batch in state.sources.stream(dataset_name, dataset, compiled.summary_sql) for row in batch]
    released, suppressed, classes = (int(value) for value in summary[0])
    return PreparedExtract(
        extract_id=secrets.token_hex(16),
        dataset_name=dataset_name,
        dataset=dataset,
        compiled=compiled,
        pseudonymiser=Pseudonymiser(secret, partner=principal.organisation, dataset=dataset_name),
        format=format,
        k=k,
        l_diversity=f"{diverse[0]}:{diverse[1]}" if diverse else None,
        records_released=released,
        records_suppressed=suppressed,
        classes_released=classes,
    )


def record_extract(
    session: Session, prepared: PreparedExtract, audit: AuditContext, principal: policy_service.AuthenticatedPrincipal
) -> None:
    """The extract's record, in the transaction of its authorising event."""
    extract_records.open_extract(
        session,
        ExtractRecord(
            id=prepared.extract_id,
            request_id=audit.request_id,
            principal_id=principal.id,
            organisation=principal.organisation,
            dataset=prepared.dataset_name,
            purpose=audit.event.purpose or "",
            key_version=prepared.pseudonymiser.version,
            spec=audit.event.query or "",
            generalisations=prepared.generalisations,
            k_anonymity=prepared.k,
            l_diversity=prepared.l_diversity,
            records_suppressed=prepared.records_suppressed,
            records_planned=prepared.records_released,
            created_at=audit.started_at,
            status="streaming",
        ),
    )


def stream_extract(
    state: GatewayState,
    prepared: PreparedExtract,
    opening: audit_service.EventDraft,
    *,
    batch_size: int = BATCH_SIZE,
) -> Generator[bytes, None, None]:
    """The extract's bytes. Whatever ends the stream (its end, an error, the client going away and the
    generator being closed), the records handed out and their fingerprints are recorded, with a
    completion event carrying the digest of the bytes."""
    writer = Writer(prepared.format, prepared.compiled.columns)
    # Where each output column is in a batch from the source: ``__unit`` first, then the released ones.
    released = [column for column in prepared.compiled.columns if not column.is_unit]
    layout = [None if column.is_unit else 1 + released.index(column) for column in prepared.compiled.columns]
    digest = hashlib.sha256()
    fingerprints = extract_records.FingerprintCollector(prepared.records_released)
    sent = 0
    status = "aborted"
    source: Generator[pa.RecordBatch, None, None] | None = None
    try:
        chunk = writer.header()
        digest.update(chunk)
        yield chunk
        source = state.sources.stream_arrow(
            prepared.dataset_name, prepared.dataset, prepared.compiled.stream_sql, batch_size=batch_size
        )
        for batch in source:
            pseudonyms = prepared.pseudonymiser.batch(batch.column(0).to_pylist())
            fingerprints.add(pseudonyms.fingerprints)
            pseudonym_column = pa.array(pseudonyms.pseudonyms, pa.string())
            arrays = [pseudonym_column if at is None else batch.column(at) for at in layout]
            table = pa.Table.from_arrays(arrays, names=writer.names)
            # The source's own order (which may follow the identifier) must not show: pseudonym order
            # where pseudonyms are released, otherwise a random one (which also parts a person's records).
            order = (
                pacompute.sort_indices(pseudonym_column)
                if None in layout
                else np.random.default_rng(secrets.randbits(128)).permutation(batch.num_rows)
            )
            table = table.take(order)
            chunk = writer.rows(table)
            sent += batch.num_rows
            digest.update(chunk)
            yield chunk
        chunk = writer.footer()
        digest.update(chunk)
        yield chunk
        status = "complete"
    finally:
        try:
            if source is not None:
                source.close()  # stops the source's cursor now, not whenever this frame is collected
        finally:
            _close(
                state, prepared, opening, status=status, sent=sent, digest=digest.hexdigest(), fingerprints=fingerprints
            )


def _close(
    state: GatewayState,
    prepared: PreparedExtract,
    opening: audit_service.EventDraft,
    *,
    status: str,
    sent: int,
    digest: str,
    fingerprints: extract_records.FingerprintCollector,
) -> None:
    now = datetime.now(UTC)
    try:
        packed = fingerprints.packed()
        # The chained event carries the fingerprints' digest: a record edited to hide someone from an
        # inzage no longer matches the audit log.
        facts = {"extract_id": prepared.extract_id, "records_sent": sent,
                 "fingerprints_sha256": hashlib.sha256(packed).hexdigest()}  # fmt: skip
        with state.sessions() as session:
            extract_records.close_extract(
                session,
                prepared.extract_id,
                status=status,
                completed_at=now,
                records_released=sent,
                response_digest=digest,
                fingerprints=packed,
            )
            audit_service.append_event(
                session,
                replace(
                    opening,
                    decision="allow",
                    reason=f"extract_{status}",
                    detail=json.dumps(facts),
                    rows_released=sent,
                    response_digest=digest,
                    occurred_at=now,
                    completed_at=None,
                ),
            )
            session.commit()
    except Exception:  # the data has left already; what must not be lost is the operator's attention
        logger.exception("extract %s ended (%s) but its record could not be written", prepared.extract_id, status)


# -- re-identification and inzage -------------------------------------------------------------------


def _units(
    state: GatewayState, name: str, dataset: DatasetSpec, where: str = "", where_columns: frozenset[str] = frozenset()
) -> Iterator[list[Any]]:
    """The distinct privacy units of a source, typed as an extract reads them (so a CSV's ``007`` is the
    same 7 its pseudonym was made from)."""
    dialect = source_dialect(dataset)
    unit = ident(dataset.unit, dialect)
    typed = typed_projection(dataset, {dataset.unit, *where_columns}, dialect)
    condition = f"{unit} IS NOT NULL" + (f" AND {where}" if where else "")
    relation = f"(SELECT {typed} FROM {source_relation(dataset, dialect)}) AS typed"  # noqa: S608
    sql = f"SELECT DISTINCT {unit} FROM {relation} WHERE {condition}"  # noqa: S608
    for batch in state.sources.stream(name, dataset, sql, batch_size=BATCH_SIZE):
        yield [row[0] for row in batch]


@dataclass(frozen=True, slots=True)
class Reidentified:
    identifier: str
    privacy_unit: str
    extracts: list[dict[str, Any]]


def reidentify(session: Session, state: GatewayState, *, pseudonym: str, dataset_name: str) -> Reidentified:
    """The identifier behind a pseudonym that an extract of ``dataset_name`` released, by recomputing the
    pseudonyms of the source's units under that extract's key: no table from pseudonym to person is kept."""
    dataset = _exportable(state, dataset_name)
    fingerprint = fingerprint_of(pseudonym.lower())
    records = extract_records.extracts_with_pseudonym(session, fingerprint, dataset=dataset_name)
    if not records:
        raise NotFound("no extract of this dataset released that pseudonym")
    for organisation, version in sorted({(record.organisation, record.key_version) for record in records}):
        secret = state.master_secrets.get(version)
        if secret is None:
            continue
        pseudonymiser = Pseudonymiser(secret, partner=organisation, dataset=dataset_name)
        for units in _units(state, dataset_name, dataset):
            units = [str(unit) for unit in units]
            batch = pseudonymiser.batch(units)
            for position in np.flatnonzero(batch.fingerprints == np.uint64(fingerprint)):
                if batch.pseudonyms[int(position)] == pseudonym.lower():
                    return Reidentified(str(units[int(position)]), dataset.unit, [
                        extract_records.view(record) for record in records
                        if (record.organisation, record.key_version) == (organisation, version)
                    ])  # fmt: skip
    raise NotFound("the pseudonym's person is no longer in the source, or its key version is no longer held")


def persons_for_bsn(state: GatewayState, bsn: str) -> list[str]:
    """The privacy-unit identifiers the catalog's person register holds for a BSN."""
    register = state.catalog.persons
    if register is None:
        raise ConfigurationError("the catalog names no person register (persons: dataset, bsn)")
    dataset = state.catalog.datasets[register.dataset]
    dialect = source_dialect(dataset)
    column = ident(register.bsn, dialect)
    if dataset.columns[register.bsn].type == "integer":  # a stored number has lost its leading zero
        condition = f"{column} = {int(bsn)}"
    else:  # as written, with or without the leading zero of an eight-digit BSN
        forms = ", ".join(string_literal(form, dialect) for form in sorted({bsn, bsn.zfill(9), bsn.lstrip("0")}))
        condition = f"{column} IN ({forms})"
    units = _units(state, register.dataset, dataset, condition, frozenset({register.bsn}))
    return [str(unit) for batch in units for unit in batch]


def subject_pseudonym(state: GatewayState, identifier: str) -> str:
    """How audit events name the person of an inzage: a pseudonym in the gateway's own domain."""
    secret = _newest_secret(state)
    return Pseudonymiser(secret, partner=INZAGE_PARTNER, dataset="subjects", domain="inzage").pseudonym(identifier)


def extracts_of_subject(
    session: Session, state: GatewayState, identifiers: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every extract that released records of any of these privacy-unit identifiers; and the extracts that
    cannot tell (no record of what they released: the gateway stopped mid-stream, or their key version is
    no longer held), which an answer to an inzageverzoek must mention."""
    found: dict[str, ExtractRecord] = {}
    for identifier in identifiers:

        def fingerprint_under(key: extract_records.ExtractKey, identifier: str = identifier) -> int | None:
            secret = state.master_secrets.get(key.key_version)
            if secret is None:
                return None
            pseudonymiser = Pseudonymiser(secret, partner=key.organisation, dataset=key.dataset)
            return int(pseudonymiser.batch([identifier]).fingerprints[0])

        for record in extract_records.extracts_of_person(session, fingerprint_under):
            found[record.id] = record
    unknown = [
        extract_records.view(record)
        for record in extract_records.unverifiable(session, set(state.master_secrets))
        if record.id not in found
    ]
    return [
        extract_records.view(record) for record in sorted(found.values(), key=lambda record: record.created_at)
    ], unknown
