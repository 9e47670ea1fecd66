"""Authorisation: deny by default, purpose-bound, domain-bound, deny rules win, grants expire."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from policies import service
from policies.enforcer import PolicyEngine
from policies.exceptions import AuthenticationFailed, PolicyConflict, PolicyDenied
from policies.models import ApiKey
from tests.factories import NOW, grant, grant_arguments


def _seed(session: Session) -> dict[str, str]:
    service.register_purpose(session, code="beleidsinformatie", description="Beleid", owner="SD")
    service.register_purpose(session, code="onderzoek", description="Onderzoek", owner="SD")
    tokens = {}
    for principal_id, organisation, role in [
        ("ana", "sociaal-domein", "analist"),
        ("bob", "sociaal-domein", "analist"),
        ("vera", "veiligheid", "analist"),
    ]:
        service.create_principal(
            session,
            principal_id=principal_id,
            display_name=principal_id,
            organisation=organisation,
            kind="user",
            now=NOW,
        )
        service.assign_role(session, principal_id=principal_id, role=role, domain=organisation)
        tokens[principal_id] = service.issue_key(session, principal_id=principal_id, now=NOW).token
    grant(session)
    session.commit()
    return tokens


@pytest.fixture
def seeded(sessions: sessionmaker[Session]) -> tuple[sessionmaker[Session], PolicyEngine, dict[str, str]]:
    with sessions() as session:
        tokens = _seed(session)
    return sessions, PolicyEngine(sessions, poll_seconds=0), tokens


def _principal(session: Session, token: str) -> service.AuthenticatedPrincipal:
    return service.authenticate_key(session, token, now=NOW)


def test_matrix_follows_the_rule(seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]]) -> None:
    """Only the analist role in sociaal-domein may aggregate residents for beleidsinformatie."""
    sessions, engine, tokens = seeded
    with sessions() as session:
        for name, dataset, action, purpose in itertools.product(
            ["ana", "bob", "vera"],
            ["residents", "jeugdzorg"],
            ["aggregate", "export", "reidentify"],
            ["beleidsinformatie", "onderzoek"],
        ):
            principal = _principal(session, tokens[name])
            expected = principal.organisation == "sociaal-domein" and (dataset, action, purpose) == (
                "residents",
                "aggregate",
                "beleidsinformatie",
            )
            try:
                service.authorize(session, engine, principal, dataset=dataset, action=action, purpose=purpose, now=NOW)
                allowed = True
            except PolicyDenied:
                allowed = False
            assert allowed == expected, (name, dataset, action, purpose)


def test_wrong_purpose_is_denied_naming_the_purpose(
    seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]],
) -> None:
    sessions, engine, tokens = seeded
    with sessions() as session:
        principal = _principal(session, tokens["ana"])
        with pytest.raises(PolicyDenied, match="'onderzoek'"):
            service.authorize(session, engine, principal, dataset="residents", action="aggregate", purpose="onderzoek")
        with pytest.raises(PolicyDenied, match="not in the purpose register"):
            service.authorize(session, engine, principal, dataset="residents", action="aggregate", purpose="marketing")


def test_a_deny_rule_beats_an_allow(seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]]) -> None:
    sessions, engine, tokens = seeded
    with sessions() as session:
        service.add_deny_rule(
            session,
            subject="principal:bob",
            domain="sociaal-domein",
            dataset="residents",
            action="aggregate",
            purpose="*",
        )
        session.commit()
    with sessions() as session:
        service.authorize(
            session,
            engine,
            _principal(session, tokens["ana"]),
            dataset="residents",
            action="aggregate",
            purpose="beleidsinformatie",
            now=NOW,
        )
        with pytest.raises(PolicyDenied):
            service.authorize(
                session,
                engine,
                _principal(session, tokens["bob"]),
                dataset="residents",
                action="aggregate",
                purpose="beleidsinformatie",
                now=NOW,
            )


def test_an_expired_grant_decides_nothing(seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]]) -> None:
    sessions, engine, tokens = seeded
    with sessions() as session:
        grant(
            session,
            subject="principal:vera",
            domain="veiligheid",
            dataset="woninginbraak",
            purpose="onderzoek",
            now=NOW - timedelta(days=30),
            valid_until=NOW - timedelta(days=1),
        )
        session.commit()
    with sessions() as session:
        principal = _principal(session, tokens["vera"])
        with pytest.raises(PolicyDenied, match="not active"):
            service.authorize(
                session, engine, principal, dataset="woninginbraak", action="aggregate", purpose="onderzoek", now=NOW
            )
        # Within its window the same grant allows.
        service.authorize(
            session,
            engine,
            principal,
            dataset="woninginbraak",
            action="aggregate",
            purpose="onderzoek",
            now=NOW - timedelta(days=2),
        )


def test_a_dataset_pattern_grant_covers_matching_datasets_only(
    seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]],
) -> None:
    sessions, engine, tokens = seeded
    with sessions() as session:
        grant(
            session,
            subject="principal:vera",
            domain="veiligheid",
            dataset="inbraak*",
            purpose="onderzoek",
            budget_period="year",
        )
        session.commit()
    with sessions() as session:
        principal = _principal(session, tokens["vera"])
        service.authorize(
            session, engine, principal, dataset="inbraak_2025", action="aggregate", purpose="onderzoek", now=NOW
        )
        with pytest.raises(PolicyDenied):
            service.authorize(
                session, engine, principal, dataset="residents", action="aggregate", purpose="onderzoek", now=NOW
            )


def test_keys_fail_alike_when_unknown_revoked_or_expired(
    seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]],
) -> None:
    sessions, _, tokens = seeded
    from policies.api_keys import generate_key, parse_key

    with sessions() as session:
        with pytest.raises(AuthenticationFailed, match="not valid"):
            service.authenticate_key(session, generate_key().token, now=NOW)
        expiring = service.issue_key(session, principal_id="ana", now=NOW, expires_at=NOW + timedelta(hours=1))
        session.commit()
        assert service.authenticate_key(session, expiring.token, now=NOW).id == "ana"
        with pytest.raises(AuthenticationFailed, match="not valid"):
            service.authenticate_key(session, expiring.token, now=NOW + timedelta(hours=2))
        parsed = parse_key(tokens["bob"])
        assert parsed is not None
        key = session.get(ApiKey, parsed.key_id)
        assert key is not None
        key.revoked_at = NOW
        session.commit()
        with pytest.raises(AuthenticationFailed, match="not valid"):
            service.authenticate_key(session, tokens["bob"], now=NOW)


def test_a_used_key_records_when(seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]]) -> None:
    sessions, _, tokens = seeded
    from policies.api_keys import parse_key

    with sessions() as session:
        principal = service.authenticate_key(session, tokens["ana"], now=NOW)
        service.record_key_use(session, principal.key_id, NOW)
        session.commit()
        parsed = parse_key(tokens["ana"])
        assert parsed is not None
        key = session.get(ApiKey, parsed.key_id)
        assert key is not None
        assert key.last_used_at == NOW


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("action", "delete", "action"),
        ("legal_basis", "because", "legal basis"),
        ("purpose", "unregistered", "purpose register"),
        ("subject", "a, b", "subject"),
        ("dataset", "res,idents", "dataset pattern"),
        ("epsilon_per_period", None, "epsilon_per_period"),
    ],
)
def test_invalid_grants_are_refused(sessions: sessionmaker[Session], field: str, value: object, message: str) -> None:
    arguments = grant_arguments()
    arguments[field] = value
    with sessions() as session:
        service.register_purpose(session, code="beleidsinformatie", description="d", owner="o")
        with pytest.raises(PolicyConflict, match=message):
            service.create_grant(session, **arguments)


def test_a_principal_named_like_a_role_does_not_get_its_grants(
    seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]],
) -> None:
    sessions, engine, _ = seeded
    with sessions() as session:
        service.create_principal(
            session, principal_id="analist", display_name="x", organisation="sociaal-domein", kind="user", now=NOW
        )
        token = service.issue_key(session, principal_id="analist", now=NOW).token
        session.commit()
        principal = _principal(session, token)
        assert engine.role_names("analist", "sociaal-domein") == []
        with pytest.raises(PolicyDenied):
            service.authorize(
                session,
                engine,
                principal,
                dataset="residents",
                action="aggregate",
                purpose="beleidsinformatie",
                now=NOW,
            )


def test_roles_are_reported_by_name(seeded: tuple[sessionmaker[Session], PolicyEngine, dict[str, str]]) -> None:
    _, engine, _ = seeded
    assert engine.role_names("ana", "sociaal-domein") == ["analist"]
    assert engine.role_names("ana", "veiligheid") == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("subject", "ana", "principal:<id>"),
        ("dataset", "res,idents", "dataset pattern"),
        ("purpose", "a, b", "purpose"),
        ("action", "drop", "action"),
    ],
)
def test_invalid_deny_rules_are_refused(sessions: sessionmaker[Session], field: str, value: str, message: str) -> None:
    arguments = {
        "subject": "principal:ana",
        "domain": "sociaal-domein",
        "dataset": "residents",
        "action": "aggregate",
        "purpose": "*",
    }
    arguments[field] = value
    with sessions() as session, pytest.raises(PolicyConflict, match=message):
        service.add_deny_rule(session, **arguments)
