"""Demo principals, purposes, grants and keys for Voorbeeldstad. Safe to run again: it only adds what is
missing and reuses keys that still work."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit_trail import AuditContext, commit_with_event
from policies import service as policy_service
from policies.enforcer import role_subject
from policies.exceptions import AuthenticationFailed
from policies.models import ApiKey, Grant, Principal, Purpose

KEYS_FILE = "demo-keys.json"


@dataclass(frozen=True, slots=True)
class DemoPrincipal:
    key_name: str
    principal_id: str
    display_name: str
    organisation: str
    kind: str
    role: str


ANALYST = DemoPrincipal(
    "analyst", "analist-sociaal-domein", "Analist Sociaal Domein", "sociaal-domein", "user", "analist"
)
PARTNER = DemoPrincipal(
    "partner", "zorgpartner-de-brug", "Jeugdhulp De Brug", "zorgaanbieder-de-brug", "partner", "partner"
)
PRIVACY_OFFICER = DemoPrincipal(
    "privacy_officer",
    "fg-voorbeeldstad",
    "Functionaris Gegevensbescherming",
    "gemeente-voorbeeldstad",
    "user",
    "privacy_officer",
)
ADMINISTRATOR = DemoPrincipal(
    "admin", "beheerder-voorbeeldstad", "Functioneel beheer Datapoort", "gemeente-voorbeeldstad", "user", "beheerder"
)
PRINCIPALS = (ANALYST, PARTNER, PRIVACY_OFFICER, ADMINISTRATOR)

_REGISTER = "https://voorbeeldstad.example/verwerkingsregister"
PURPOSES = (
    (
        "beleidsinformatie",
        "Stuurinformatie voor het sociaal domein: gebruik van voorzieningen per wijk",
        "Sociaal Domein",
    ),
    ("jeugdhulp-evaluatie", "Evaluatie van jeugdhulptrajecten door de gecontracteerde aanbieder", "Sociaal Domein"),
    (
        "toezicht",
        "Toezicht door de FG op de verwerkingen via Datapoort (AVG art. 39)",
        "Functionaris Gegevensbescherming",
    ),
    ("beheer", "Beheer van Datapoort: organisaties, sleutels, doelen en autorisaties", "Informatiebeveiliging"),
    (
        "herleiding",
        "Herleiding van een pseudoniem door de FG bij een gegronde aanleiding (calamiteit, inzageverzoek)",
        "Functionaris Gegevensbescherming",
    ),
)

DEMO_DELTA_PER_MONTH = 1e-7
# (principal, dataset, action, purpose, legal basis, explanation, epsilon per month)
GRANTS = (
    (
        ANALYST,
        "residents",
        "aggregate",
        "beleidsinformatie",
        "public_task",
        "Gemeentewet art. 160; Participatiewet art. 7",
        10.0,
    ),
    (ANALYST, "bijstand", "aggregate", "beleidsinformatie", "public_task", "Participatiewet art. 7", 10.0),
    (ANALYST, "jeugdzorg", "aggregate", "beleidsinformatie", "public_task", "Jeugdwet art. 2.1", 10.0),
    (ANALYST, "wmo", "aggregate", "beleidsinformatie", "public_task", "Wmo 2015 art. 2.1.1", 10.0),
    (ANALYST, "woninginbraak", "aggregate", "beleidsinformatie", "public_task", "Gemeentewet art. 172", 10.0),
    # Public reference figures: read, joined and divided by. An aggregate grant carries a budget, but no
    # query on a public table spends from it (a join spends from its private dataset's).
    (ANALYST, "kerncijfers", "aggregate", "beleidsinformatie", "public_task", "openbare CBS-statistiek", 1.0),
    (
        PARTNER,
        "jeugdzorg",
        "aggregate",
        "jeugdhulp-evaluatie",
        "public_task",
        "Jeugdwet art. 7.4.0; contract 2026-JH-014",
        3.0,
    ),
    # Records, not aggregates: pseudonymised and k-anonymous (k = 10, the default) for the same purpose.
    (
        PARTNER,
        "jeugdzorg",
        "export",
        "jeugdhulp-evaluatie",
        "public_task",
        "Jeugdwet art. 7.4.0; contract 2026-JH-014, bijlage gegevensuitwisseling",
        None,
    ),
    (
        PRIVACY_OFFICER,
        "jeugdzorg",
        "reidentify",
        "herleiding",
        "legal_obligation",
        "AVG art. 39 lid 1 sub b; Jeugdwet art. 7.4.0 (herleiding bij calamiteit)",
        None,
    ),
    (PRIVACY_OFFICER, "audit", "audit:read", "toezicht", "legal_obligation", "AVG art. 39 lid 1 sub b", None),
    # Oversight of every organisation's rules: read, never change.
    (PRIVACY_OFFICER, "*", "audit:read", "toezicht", "legal_obligation", "AVG art. 39 lid 1 sub b", None),
    # Administers every organisation and the register ("*" covers each target).
    (ADMINISTRATOR, "*", "admin", "beheer", "public_task", "Gemeentewet art. 160 lid 1 (bedrijfsvoering)", None),
)


def _existing_keys(session: Session, path: Path, now: datetime) -> dict[str, str] | None:
    """The keys in ``path`` if every one of them still authenticates as its demo principal."""
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for principal in PRINCIPALS:
        token = keys.get(principal.key_name) if isinstance(keys, dict) else None
        if not isinstance(token, str):
            return None
        try:
            if policy_service.authenticate_key(session, token, now=now).id != principal.principal_id:
                return None
        except AuthenticationFailed:
            return None
    return {principal.key_name: keys[principal.key_name] for principal in PRINCIPALS}


def _write_private(path: Path, content: str) -> None:
    """Create the file readable by its owner only, from the first byte on."""
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def provision(sessions: sessionmaker[Session], data_dir: Path, *, instance: str) -> dict[str, str]:
    """Create what is missing and return the demo keys (also written to ``data_dir/demo-keys.json``)."""
    now = datetime.now(UTC)
    changes: list[str] = []
    keys_path = data_dir / KEYS_FILE
    with sessions() as session:
        for code, description, owner in PURPOSES:
            if session.get(Purpose, code) is None:
                policy_service.register_purpose(
                    session, code=code, description=description, owner=owner, register_uri=f"{_REGISTER}/{code}/v1"
                )
                changes.append(f"purpose {code}")
        for demo in PRINCIPALS:
            if session.get(Principal, demo.principal_id) is None:
                policy_service.create_principal(
                    session,
                    principal_id=demo.principal_id,
                    display_name=demo.display_name,
                    organisation=demo.organisation,
                    kind=demo.kind,
                    now=now,
                )
                policy_service.assign_role(
                    session, principal_id=demo.principal_id, role=demo.role, domain=demo.organisation
                )
                changes.append(f"principal {demo.principal_id} with role {demo.role}")
        for demo, dataset, action, purpose, basis, basis_text, epsilon in GRANTS:
            exists = session.scalar(
                select(Grant.id).where(
                    Grant.subject == role_subject(demo.role),
                    Grant.domain == demo.organisation,
                    Grant.dataset == dataset,
                    Grant.action == action,
                    Grant.purpose == purpose,
                )
            )
            if exists is None:
                policy_service.create_grant(
                    session,
                    subject=role_subject(demo.role),
                    domain=demo.organisation,
                    dataset=dataset,
                    action=action,
                    purpose=purpose,
                    legal_basis=basis,
                    legal_basis_text=basis_text,
                    now=now,
                    epsilon_per_period=epsilon,
                    budget_period="month" if epsilon is not None else None,
                    # Room for about a hundred queries a month that select group keys from the data.
                    delta_per_period=DEMO_DELTA_PER_MONTH if action == "aggregate" else None,
                )
                changes.append(f"grant {action} on {dataset} for {purpose} to role {demo.role}@{demo.organisation}")

        keys = _existing_keys(session, keys_path, now)
        if keys is None:
            ids = [demo.principal_id for demo in PRINCIPALS]
            session.execute(
                update(ApiKey).where(ApiKey.principal_id.in_(ids), ApiKey.revoked_at.is_(None)).values(revoked_at=now)
            )
            keys = {}
            for demo in PRINCIPALS:
                new = policy_service.issue_key(session, principal_id=demo.principal_id, now=now, label="demo")
                keys[demo.key_name] = new.token
            changes.append("new demo API keys (earlier demo keys revoked)")

        if changes:
            context = AuditContext.for_system(
                "system:demo-setup", action="admin", instance=instance, request_id=f"demo-setup-{now:%Y%m%dT%H%M%S}"
            )
            draft = context.finish(decision="allow", reason="demo_setup", detail="; ".join(changes))
            commit_with_event(session, context, draft)
        else:
            session.commit()
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(keys_path, json.dumps(keys, indent=2) + "\n")
    return keys
