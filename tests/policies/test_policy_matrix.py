"""The authorisation matrix: every (principal, domain, dataset, action, purpose) case of a policy with
roles, role inheritance, dataset patterns, purposes, a principal's own grant and deny rules, checked
against the intended rule written out below, and against plain casbin on the same lines (the engine
answers from an index of its own). Runs on SQLite and PostgreSQL alike."""

from __future__ import annotations

import itertools

import casbin
from sqlalchemy.orm import Session, sessionmaker

from policies import service
from policies.enforcer import ACTIONS, PolicyEngine, _rule_lines, model_text, principal_subject
from tests.factories import NOW, grant

MEMBERS = {  # principal -> (organisation, roles)
    "ana": ("sd", ["analist"]),
    "sam": ("sd", ["senior"]),  # senior inherits analist
    "otto": ("sd", ["onderzoeker"]),
    "dirk": ("sd", []),  # no role; one grant of his own
    "piet": ("wonen", ["partner"]),
    "xander": ("wonen", ["analist", "partner"]),
}
DATASETS = ["sd_bijstand", "sd_jeugd", "wonen_huur", "residents"]
PURPOSES = ["beleid", "onderzoek", "toezicht"]


def intended(principal: str, domain: str, dataset: str, action: str, purpose: str) -> bool:
    """The policy in words: what the grants below are meant to allow."""
    organisation, roles = MEMBERS[principal]
    if domain != organisation:
        return False  # grants and roles live in a domain; nothing carries over to another
    held = set(roles) | ({"analist"} if "senior" in roles else set())
    allowed = (
        (organisation == "sd" and "analist" in held and dataset.startswith("sd_") and action == "aggregate"
         and purpose == "beleid")
        or (organisation == "sd" and "onderzoeker" in held and dataset == "sd_jeugd" and action == "export"
            and purpose == "onderzoek")
        or (principal == "dirk" and action == "audit:read" and purpose == "toezicht")
        or (organisation == "wonen" and "partner" in held and dataset.startswith("wonen_") and action == "export"
            and purpose in ("onderzoek", "beleid"))
        or (organisation == "wonen" and "analist" in held and action == "aggregate" and purpose == "beleid"
            and dataset == "wonen_huur")
    )  # fmt: skip
    denied = (organisation == "sd" and "senior" in held and dataset == "sd_jeugd" and action == "aggregate") or (
        principal == "xander" and action == "export"
    )
    return allowed and not denied


def _policy(session: Session) -> None:
    for code in PURPOSES:
        service.register_purpose(session, code=code, description=code, owner="FG")
    for principal, (organisation, roles) in MEMBERS.items():
        service.create_principal(
            session, principal_id=principal, display_name=principal, organisation=organisation, kind="user", now=NOW
        )
        for role in roles:
            service.assign_role(session, principal_id=principal, role=role, domain=organisation)
    service.inherit_role(session, role="senior", parent="analist", domain="sd")
    grant(session, subject="role:analist", domain="sd", dataset="sd_*", purpose="beleid")
    grant(session, subject="role:onderzoeker", domain="sd", dataset="sd_jeugd", action="export", purpose="onderzoek")
    grant(session, subject="principal:dirk", domain="sd", dataset="*", action="audit:read", purpose="toezicht")
    for purpose in ("onderzoek", "beleid"):
        grant(session, subject="role:partner", domain="wonen", dataset="wonen_*", action="export", purpose=purpose)
    grant(session, subject="role:analist", domain="wonen", dataset="wonen_huur", purpose="beleid")
    service.add_deny_rule(
        session, subject="role:senior", domain="sd", dataset="sd_jeugd", action="aggregate", purpose="*"
    )
    service.add_deny_rule(
        session, subject="principal:xander", domain="wonen", dataset="*", action="export", purpose="*"
    )
    session.commit()


def test_every_case_follows_the_intended_rule_and_agrees_with_plain_casbin(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        _policy(session)
    engine = PolicyEngine(sessions, poll_seconds=0)
    with sessions() as session:
        model = casbin.Model()
        model.load_model_from_text(model_text())
        plain = casbin.Enforcer(model)
        for line in _rule_lines(session):
            ptype, *values = [part.strip() for part in line.split(",")]
            (plain.add_policy if ptype == "p" else plain.add_grouping_policy)(*values)
    cases = list(itertools.product(MEMBERS, ["sd", "wonen"], DATASETS, ACTIONS, PURPOSES))
    allowed = 0
    for principal, domain, dataset, action, purpose in cases:
        subject = principal_subject(principal)
        expected = intended(principal, domain, dataset, action, purpose)
        case = (principal, domain, dataset, action, purpose)
        assert engine.allows(subject, domain, dataset, action, purpose) is expected, case
        assert plain.enforce(subject, domain, dataset, action, purpose) is expected, case
        allowed += expected
    assert len(cases) == 6 * 2 * 4 * 5 * 3
    assert 10 < allowed < len(cases) // 4  # the matrix exercises both answers


def test_inherited_roles_are_reported_and_a_role_cannot_inherit_itself(sessions: sessionmaker[Session]) -> None:
    import pytest

    from policies.exceptions import PolicyConflict

    with sessions() as session:
        _policy(session)
        with pytest.raises(PolicyConflict, match="itself"):
            service.inherit_role(session, role="senior", parent="senior", domain="sd")
    engine = PolicyEngine(sessions, poll_seconds=0)
    assert engine.role_names("sam", "sd") == ["analist", "senior"]
    assert engine.role_names("sam", "wonen") == []


def test_role_chains_are_followed_as_deep_as_casbin_follows_them(sessions: sessionmaker[Session]) -> None:
    """casbin's role manager stops after 10 links; the index must not reach further (review finding)."""
    with sessions() as session:
        service.register_purpose(session, code="beleid", description="d", owner="o")
        service.create_principal(session, principal_id="p", display_name="p", organisation="sd", kind="user", now=NOW)
        service.assign_role(session, principal_id="p", role="r0", domain="sd")
        for level in range(14):
            service.inherit_role(session, role=f"r{level}", parent=f"r{level + 1}", domain="sd")
        for level in range(15):
            grant(session, subject=f"role:r{level}", domain="sd", dataset=f"d{level}", purpose="beleid")
        session.commit()
    engine = PolicyEngine(sessions, poll_seconds=0)
    model = casbin.Model()
    model.load_model_from_text(model_text())
    plain = casbin.Enforcer(model)
    with sessions() as session:
        for line in _rule_lines(session):
            ptype, *values = [part.strip() for part in line.split(",")]
            (plain.add_policy if ptype == "p" else plain.add_grouping_policy)(*values)
    answers = []
    for level in range(15):
        request = ("principal:p", "sd", f"d{level}", "aggregate", "beleid")
        assert engine.allows(*request) == plain.enforce(*request), level
        answers.append(engine.allows(*request))
    assert answers[0]  # both answers occur
    assert not answers[-1]


def test_a_reload_never_goes_back_to_an_older_policy(sessions: sessionmaker[Session]) -> None:
    """A transaction that began before the latest change sees an older version; reloading from it must
    not swap the older policy back in (review finding). Simulated by a version row that reads lower."""
    from sqlalchemy import update

    from policies.models import PolicyVersion

    with sessions() as session:
        _policy(session)
    engine = PolicyEngine(sessions, poll_seconds=0)
    with sessions() as session:
        service.add_deny_rule(
            session, subject="role:analist", domain="sd", dataset="*", action="aggregate", purpose="*"
        )
        session.commit()
        engine.reload(session)
    newest = engine.version
    assert not engine.allows("principal:ana", "sd", "sd_jeugd", "aggregate", "beleid")
    with sessions() as stale:
        stale.execute(update(PolicyVersion).values(version=newest - 1))
        engine.reload(stale)  # what an older transaction would see
        stale.rollback()
    assert engine.version == newest
    assert not engine.allows("principal:ana", "sd", "sd_jeugd", "aggregate", "beleid")
