"""Partners' record-level extracts, the privacy officer's re-identification and inzage, over HTTP."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from anonymization import Pseudonymiser, small_classes
from audit.models import AuditEvent, ExtractRecord
from gateway.extract import service as extract_service
from policies import service as policy_service
from policies.enforcer import role_subject
from tests.gateway.conftest import Api

PURPOSE = "jeugdhulp-evaluatie"
COLUMNS = ["person_id", "wijk", "start_date", "zorgvorm"]
JUSTIFICATION = "Calamiteitenmelding 2026-118: de hulpverlener moet weten om wie het gaat"


@pytest.fixture
def api(api: Api) -> Api:
    """The demo's export grant asks k = 10, which the tests' small Voorbeeldstad (3,000 residents) cannot
    meet in any class of persons; k = 2 leaves records to check. (k comes from the grant: see the headers.)"""
    api.execute("UPDATE \"grant\" SET k_anonymity = 2 WHERE action = 'export'")
    return api


def _extract(api: Api, key: str, **overrides: Any) -> Any:
    body = {"dataset": "jeugdzorg", "purpose": PURPOSE, "columns": COLUMNS, "format": "csv", **overrides}
    return api.client.post("/v1/extracts", json=body, headers={"Authorization": f"Bearer {key}"})


def _rows(response: Any, format: str = "csv") -> list[dict[str, Any]]:
    if format == "csv":
        return list(csv.DictReader(io.StringIO(response.text)))
    if format == "jsonl":
        return [json.loads(line) for line in response.text.splitlines()]
    return pq.read_table(pa.BufferReader(response.content)).to_pylist()  # type: ignore[no-any-return]


def _people(demo_dir: Path) -> dict[str, list[str]]:
    residents = pq.read_table(demo_dir / "residents.parquet", columns=["person_id", "bsn", "naam"])
    return {name: [str(value) for value in residents.column(name).to_pylist()] for name in residents.column_names}


def _reidentify(api: Api, pseudonym: str, key: str = "privacy_officer", **overrides: Any) -> Any:
    body = {"pseudonym": pseudonym, "dataset": "jeugdzorg", "purpose": "herleiding", "justification": JUSTIFICATION}
    headers = {"Authorization": f"Bearer {api.keys[key]}"}
    return api.client.post("/v1/reidentify", json={**body, **overrides}, headers=headers)


@pytest.mark.parametrize("format", ["csv", "jsonl", "parquet"])
def test_the_partner_pulls_a_pseudonymised_k_anonymous_extract(api: Api, format: str) -> None:
    response = _extract(api, api.keys["partner"], format=format)
    assert response.status_code == 200, response.text
    assert response.headers["x-datapoort-k"] == "2"
    assert response.headers["x-datapoort-generalisations"] == "start_date:year"
    assert response.headers["x-datapoort-l-diversity"] == "zorgvorm:2"
    rows = _rows(response, format)
    assert len(rows) == int(response.headers["x-datapoort-records"]) > 0
    assert int(response.headers["x-datapoort-suppressed"]) > 0  # the demo's small classes go
    assert list(rows[0]) == ["person_id_pseudonym", "wijk", "start_date", "zorgvorm"]
    records = [(row["wijk"], row["start_date"], row["person_id_pseudonym"], row["zorgvorm"]) for row in rows]
    assert small_classes(records, quasi_identifiers=[0, 1], unit=2, k=2, sensitive=3, l_diversity=2) == {}
    # A pseudonym links a person's records: each person's whole set of them is shared by k persons.
    signatures: dict[str, list[tuple[str, str]]] = {}
    for wijk, year, pseudonym, _ in records:
        signatures.setdefault(pseudonym, []).append((wijk, year))
    shared = Counter(tuple(sorted(own)) for own in signatures.values())
    assert min(shared.values()) >= 2
    assert all(len(row["start_date"]) == 4 for row in rows)  # years, not dates


@pytest.mark.parametrize("format", ["csv", "jsonl", "parquet"])
def test_no_identifier_or_name_ever_leaves(api: Api, format: str) -> None:
    response = _extract(api, api.keys["partner"], format=format)
    text = json.dumps(_rows(response, format), default=str)
    people = _people(api.demo_dir)
    leaked = [value for values in people.values() for value in values if value in text]
    assert leaked == []


def test_pseudonyms_are_stable_for_the_partner_and_unlinkable_for_another(api: Api) -> None:
    first = {row["person_id_pseudonym"] for row in _rows(_extract(api, api.keys["partner"]))}
    again = {row["person_id_pseudonym"] for row in _rows(_extract(api, api.keys["partner"]))}
    assert first == again
    other_key = _second_partner(api)
    response = _extract(api, other_key)
    assert response.status_code == 200, response.text
    other = {row["person_id_pseudonym"] for row in _rows(response)}
    assert other
    assert not other & first


def _second_partner(api: Api) -> str:
    """A housing corporation with the same export grant: a partner of its own."""
    now = datetime.now(UTC)
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        policy_service.create_principal(
            session,
            principal_id="woonstad-analist",
            display_name="Woonstad",
            organisation="woonstad",
            kind="partner",
            now=now,
        )
        policy_service.assign_role(session, principal_id="woonstad-analist", role="partner", domain="woonstad")
        policy_service.create_grant(
            session,
            subject=role_subject("partner"),
            domain="woonstad",
            dataset="jeugdzorg",
            action="export",
            purpose=PURPOSE,
            legal_basis="public_task",
            legal_basis_text="test",
            now=now,
            k_anonymity=3,
        )
        token = policy_service.issue_key(session, principal_id="woonstad-analist", now=now).token
        session.commit()
        api.client.app.state.gateway.policy_engine.reload(session)  # type: ignore[attr-defined]
    return token


@pytest.mark.parametrize(
    ("key", "overrides", "status", "reason"),
    [
        ("analyst", {}, 403, "policy_denied"),  # no export grant
        ("partner", {"columns": ["person_id", "kosten"]}, 403, "policy_denied"),  # not for this purpose
        ("partner", {"columns": ["record_id"]}, 403, "policy_denied"),  # a direct identifier
        ("partner", {"where": {"column": "kosten", "op": ">", "value": 1000}}, 403, "policy_denied"),
        ("partner", {"where": {"column": "wijk", "op": "=", "value": 3}}, 400, "invalid_query"),
        # Not by a raw date its year hides, nor by the care type l-diversity protects.
        ("partner", {"where": {"column": "start_date", "op": "=", "value": "2025-03-14"}}, 403, "policy_denied"),
        ("partner", {"where": {"column": "zorgvorm", "op": "=", "value": "verblijf"}}, 403, "policy_denied"),
        ("partner", {"dataset": "bijstand"}, 404, "dataset_not_found"),
        ("partner", {"purpose": "beleidsinformatie"}, 403, "policy_denied"),
        ("partner", {"columns": ["wijk", "wijk"]}, 400, "invalid_extract"),
        ("partner", {"format": "xlsx"}, 422, "invalid_request"),
    ],
)
def test_refused_extracts_are_clear_and_audited(
    api: Api, key: str, overrides: dict[str, Any], status: int, reason: str
) -> None:
    response = _extract(api, api.keys[key], **overrides)
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    last = api.events()[-1]
    assert (last.action, last.decision) == ("export", "deny")


def test_a_filtered_extract_only_holds_what_the_filter_selects(api: Api) -> None:
    everything = _rows(_extract(api, api.keys["partner"]))
    wijk = everything[0]["wijk"]
    response = _extract(api, api.keys["partner"], where={"column": "wijk", "op": "=", "value": wijk})
    rows = _rows(response)
    assert rows
    assert {row["wijk"] for row in rows} == {wijk}


def test_an_extract_is_audited_before_and_after_its_stream(api: Api) -> None:
    response = _extract(api, api.keys["partner"])
    opening, closing = api.events()[-2:]
    assert (opening.action, opening.decision, opening.dataset, opening.purpose) == (
        "export",
        "allow",
        "jeugdzorg",
        PURPOSE,
    )
    facts = json.loads(opening.detail or "{}")
    assert facts["k"] == 2
    assert facts["suppressed"] == int(response.headers["x-datapoort-suppressed"])
    assert facts["generalisations"] == "start_date:year"
    assert opening.legal_basis == "public_task"
    assert closing.reason == "extract_complete"
    assert closing.response_digest == hashlib.sha256(response.content).hexdigest()
    assert closing.rows_released == len(_rows(response))
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        record = session.get(ExtractRecord, response.headers["x-datapoort-extract-id"])
        assert record is not None
        assert (record.status, record.records_released, record.k_anonymity) == ("complete", closing.rows_released, 2)
        ending = json.loads(closing.detail or "{}")
        assert ending["fingerprints_sha256"] == hashlib.sha256(record.fingerprints or b"").hexdigest()


def test_no_extract_leaves_when_its_event_cannot_be_written(api: Api) -> None:
    api.refuse_audit_inserts()
    response = _extract(api, api.keys["partner"])
    assert response.status_code == 503
    assert response.json()["error"] == "audit_unavailable"
    assert "pseudonym" not in response.text
    assert "WK" not in response.text
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        assert session.scalars(select(ExtractRecord)).all() == []


def _recorded_extract(api: Api) -> tuple[extract_service.PreparedExtract, Any]:
    """An extract authorised, counted and recorded as the route does it, not yet streamed."""
    from gateway.audit_trail import AuditContext

    state = api.client.app.state.gateway  # type: ignore[attr-defined]
    principal = policy_service.AuthenticatedPrincipal("zorgpartner-de-brug", "zorgaanbieder-de-brug", "partner", None)
    audit = AuditContext.start(request_id="r", action="export", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
                               client_address=None, instance="test")  # fmt: skip
    audit.event.purpose = PURPOSE
    with state.sessions() as session:
        prepared = extract_service.prepare_extract(
            session, state, principal, audit, dataset_name="jeugdzorg", purpose=PURPOSE, columns=COLUMNS,
            where=None, format="csv",
        )  # fmt: skip
        extract_service.record_extract(session, prepared, audit, principal)
        session.commit()
    return prepared, audit


def test_a_stream_that_stops_early_records_what_left(api: Api) -> None:
    """A client that goes away closes the generator: the source's cursor stops and only the records
    already handed out are recorded (as aborted), with their fingerprints for inzage."""
    state = api.client.app.state.gateway  # type: ignore[attr-defined]
    prepared, audit = _recorded_extract(api)
    stream = extract_service.stream_extract(state, prepared, audit.finish(decision="allow"), batch_size=5)
    next(stream)  # the header
    first = next(stream)  # five records
    stream.close()
    assert first.count(b"\n") == 5
    with state.sessions() as session:
        record = session.get(ExtractRecord, prepared.extract_id)
        assert record is not None
        assert (record.status, record.records_released) == ("aborted", 5)
        assert len(record.fingerprints or b"") <= 5 * 8
    assert prepared.records_released > 5


def test_the_privacy_officer_reidentifies_one_pseudonym_with_a_justification(api: Api) -> None:
    rows = _rows(_extract(api, api.keys["partner"]))
    pseudonym = rows[0]["person_id_pseudonym"]
    response = _reidentify(api, pseudonym)
    assert response.status_code == 200, response.text
    identifier = response.json()["identifier"]
    assert identifier in _people(api.demo_dir)["person_id"]
    secret = api.client.app.state.gateway.master_secrets[1]  # type: ignore[attr-defined]
    assert (
        Pseudonymiser(secret, partner="zorgaanbieder-de-brug", dataset="jeugdzorg").pseudonym(identifier) == pseudonym
    )
    event = api.events()[-1]
    assert (event.action, event.decision, event.data_subject_id) == ("reidentify", "allow", pseudonym)
    assert JUSTIFICATION in (event.query or "")
    assert identifier not in json.dumps([event.query, event.detail, event.data_subject_id])
    assert event.response_digest is None  # a digest of the answer would give the identifier away to a search


def test_reidentification_without_the_grant_or_a_justification_is_refused_and_audited(api: Api) -> None:
    pseudonym = _rows(_extract(api, api.keys["partner"]))[0]["person_id_pseudonym"]
    refused = _reidentify(api, pseudonym, key="analyst")
    assert refused.status_code == 403
    event = api.events()[-1]
    assert (event.action, event.decision) == ("reidentify", "deny")
    assert JUSTIFICATION in (event.query or "")
    for justification in (None, "", "because"):
        body = {"pseudonym": pseudonym, "dataset": "jeugdzorg", "purpose": "herleiding"}
        if justification is not None:
            body["justification"] = justification
        response = api.client.post(
            "/v1/reidentify", json=body, headers={"Authorization": f"Bearer {api.keys['privacy_officer']}"}
        )
        assert response.status_code == 422
        assert (api.events()[-1].action, api.events()[-1].decision) == ("reidentify", "deny")
    unknown = _reidentify(api, "a" * 32)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")


def test_inzage_finds_the_extracts_that_held_a_person_without_storing_the_bsn(api: Api) -> None:
    response = _extract(api, api.keys["partner"])
    pseudonym = _rows(response)[0]["person_id_pseudonym"]
    identifier = _reidentify(api, pseudonym).json()["identifier"]
    people = _people(api.demo_dir)
    bsn = people["bsn"][people["person_id"].index(identifier)]
    headers = {"Authorization": f"Bearer {api.keys['privacy_officer']}"}
    found = api.client.post("/v1/audit/subjects/extracts", json={"bsn": bsn}, headers=headers)
    assert found.status_code == 200, found.text
    assert [item["extract_id"] for item in found.json()["extracts"]] == [response.headers["x-datapoort-extract-id"]]
    nobody = next(person for person in people["person_id"] if person != identifier)
    empty = api.client.post("/v1/audit/subjects/extracts", json={"privacy_unit_id": nobody}, headers=headers)
    released = {row["person_id_pseudonym"] for row in _rows(response)}
    secret = api.client.app.state.gateway.master_secrets[1]  # type: ignore[attr-defined]
    if Pseudonymiser(secret, partner="zorgaanbieder-de-brug", dataset="jeugdzorg").pseudonym(nobody) not in released:
        assert empty.json()["extracts"] == []
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        stored = json.dumps([list(row) for row in session.execute(select(AuditEvent.query, AuditEvent.detail,
                             AuditEvent.data_subject_id))], default=str)  # fmt: skip
        stored += json.dumps([record.spec for record in session.scalars(select(ExtractRecord))])
    assert bsn not in stored
    assert api.client.post("/v1/audit/subjects/extracts", json={"bsn": bsn}, headers={
        "Authorization": f"Bearer {api.keys['partner']}"}).status_code == 403  # fmt: skip


def test_extracts_need_master_secrets(api: Api) -> None:
    api.client.app.state.gateway.master_secrets.clear()  # type: ignore[attr-defined]
    response = _extract(api, api.keys["partner"])
    assert (response.status_code, response.json()["error"]) == (503, "not_configured")


def test_k_comes_from_the_grant(api: Api) -> None:
    api.execute("UPDATE \"grant\" SET k_anonymity = 10 WHERE action = 'export'")
    response = _extract(api, api.keys["partner"])
    assert response.headers["x-datapoort-k"] == "10"
    at_ten = int(response.headers["x-datapoort-records"])
    api.execute("UPDATE \"grant\" SET k_anonymity = 2 WHERE action = 'export'")
    assert int(_extract(api, api.keys["partner"]).headers["x-datapoort-records"]) > at_ten


def test_inzage_names_the_extracts_that_cannot_tell(api: Api) -> None:
    """An extract whose stream's end was never recorded (the gateway stopped) may hold anyone."""
    prepared, _ = _recorded_extract(api)
    headers = {"Authorization": f"Bearer {api.keys['privacy_officer']}"}
    found = api.client.post("/v1/audit/subjects/extracts", json={"privacy_unit_id": "P00000001"}, headers=headers)
    assert found.status_code == 200, found.text
    assert [item["extract_id"] for item in found.json()["extracts_without_record"]] == [prepared.extract_id]
