"""A demo of several gemeenten that compare: each its own data dir, state, keys and process, peered.

Each gemeente admits every other as an ordinary principal of an organisation of its own (``gemeente-2``
on gemeente 1's gateway, and so on), with the role ``vergelijker`` and aggregate grants for
``beleidsinformatie`` on residents, jeugdzorg and the public kerncijfers, and registers the others as
peers with the keys they issued. Peers are reached over plain HTTP on loopback, which only a gateway
with ``DATAPOORT_ALLOW_PLAIN_LOOPBACK_PEERS`` accepts: a demo, never a deployment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gateway.keys.peer_credentials import write_credential
from policies import peers, service
from policies.enforcer import role_subject
from policies.models import Principal

NAMES = ("Voorbeeldstad", "Dorpsveen", "Havenmond", "Heidekamp", "Rivierwaard")
"""Synthetic gemeenten (fictitious names)."""
ROLE = "vergelijker"
DATASETS = (("residents", 5.0), ("jeugdzorg", 5.0), ("kerncijfers", 1.0))
PURPOSE = "beleidsinformatie"


def organisation_of(index: int) -> str:
    return f"gemeente-{index + 1}"


def admit(sessions: sessionmaker[Session], organisation: str, *, grants: bool = True) -> str:
    """On a gemeente's gateway: another gemeente as a principal of its own organisation; its new key."""
    now = datetime.now(UTC)
    principal = f"{organisation}-vergelijking"
    with sessions() as session:
        if session.get(Principal, principal) is None:
            service.create_principal(
                session,
                principal_id=principal,
                display_name=f"Vergelijkingen van {organisation}",
                organisation=organisation,
                kind="service",
                now=now,
            )
            service.assign_role(session, principal_id=principal, role=ROLE, domain=organisation)
            for dataset, epsilon in DATASETS if grants else ():
                service.create_grant(
                    session,
                    subject=role_subject(ROLE),
                    domain=organisation,
                    dataset=dataset,
                    action="aggregate",
                    purpose=PURPOSE,
                    legal_basis="public_task",
                    legal_basis_text="vergelijking van gemeenten (waarstaatjegemeente.nl), Gemeentewet art. 160",
                    now=now,
                    epsilon_per_period=epsilon,
                    budget_period="month",
                    delta_per_period=1e-7,
                )
        token = service.issue_key(session, principal_id=principal, now=now, label="demo-vergelijking").token
        session.commit()
    return token


def register(
    sessions: sessionmaker[Session], data_dir: Path, *, name: str, gemeente: str, url: str, secret: str
) -> None:
    """Register (or keep) a plain-loopback peer, with the key it issued in a 0600 file."""
    with sessions() as session:
        if not any(peer.name == name for peer in peers.active_peers(session)):
            peers.register_peer(
                session,
                name=name,
                gemeente=gemeente,
                url=url,
                tls="plain_loopback",
                ca_file=None,
                now=datetime.now(UTC),
            )
            session.commit()
    write_credential(data_dir, name, secret)
