"""Administration on the host: organisations, principals, API keys, grants, purposes and pseudonym
master secrets; the same changes as ``/v1/admin``, each one audited with before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.base import DataDir, app, cli_actor, load_settings, parse_moment, upgrade_state

pseudonyms_app = typer.Typer(help="Master secrets of partner pseudonyms.", no_args_is_help=True)
app.add_typer(pseudonyms_app, name="pseudonyms")
orgs_app = typer.Typer(help="Organisations (casbin domains).", no_args_is_help=True)
principals_app = typer.Typer(help="Principals and their roles.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
grants_app = typer.Typer(help="Grants and deny rules.", no_args_is_help=True)
purposes_app = typer.Typer(help="The purpose register.", no_args_is_help=True)
for _name, _sub in (
    ("orgs", orgs_app),
    ("principals", principals_app),
    ("keys", keys_app),
    ("grants", grants_app),
    ("purposes", purposes_app),
):
    app.add_typer(_sub, name=_name)


def _administer(data_dir: Path, work: Any, *, read: bool = False) -> None:
    """Run ``work(session, now)`` on the state database as ``system:cli:<user>``; write its audit event
    (a change's before and after, or the listing) in the same transaction; print the result as JSON."""
    from datetime import UTC, datetime

    from gateway.audit_trail import AuditContext, commit_with_event, describe_change
    from gateway.keys.audit_signing import checkpoint_policy
    from gateway.store.database import create_state_engine, session_factory
    from policies.exceptions import PolicyError
    from policies.management import Change

    settings = load_settings(data_dir)
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        with session_factory(engine, checkpoint_policy(settings))() as session:
            context = AuditContext.for_system(
                cli_actor(), action="admin:read" if read else "admin", instance=settings.instance
            )
            now = datetime.now(UTC)
            try:
                result = work(session, now)
            except PolicyError as exc:
                session.rollback()
                context.event.occurred_at = now
                commit_with_event(
                    session, context, context.finish(decision="deny", reason=exc.code, detail=exc.message)
                )
                typer.echo(json.dumps({"error": exc.code, "detail": exc.message}), err=True)
                raise typer.Exit(1) from exc
            change, output = result if isinstance(result, tuple) else (result, None)
            if isinstance(change, Change):
                detail = describe_change(context, change)
                commit_with_event(session, context, context.finish(decision="allow", detail=detail))
                typer.echo(json.dumps(output if output is not None else change.describe(), indent=2, default=str))
            else:
                commit_with_event(session, context, context.finish(decision="allow", rows_released=len(change or [])))
                typer.echo(json.dumps(change, indent=2, default=str))
    finally:
        engine.dispose()


Org = Annotated[str | None, typer.Option("--org", help="Only this organisation.")]


@orgs_app.command("list", help="Organisations (casbin domains) and whether they are disabled.")
def orgs_list(data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_organisations(session), read=True)


@orgs_app.command("create", help="Register an organisation or department (audited).")
def orgs_create(
    organisation_id: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.create_organisation(
            session, organisation_id=organisation_id, display_name=name, now=now
        ),
    )


@orgs_app.command("disable")
def orgs_disable(organisation_id: str, data_dir: DataDir = Path(".datapoort")) -> None:
    """Every principal of the organisation fails authentication from now on."""
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.disable_organisation(session, organisation_id=organisation_id, now=now),
    )


@principals_app.command("list", help="Principals with their organisation, kind and roles.")
def principals_list(org: Org = None, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_principals(session, org), read=True)


@principals_app.command("create", help="Register a person or system that may call the gateway (audited).")
def principals_create(
    principal_id: str,
    org: Annotated[str, typer.Option("--org", help="Its organisation.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    kind: Annotated[str, typer.Option(help="user, partner or service.")] = "user",
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.create_principal(
            session, principal_id=principal_id, display_name=name, organisation=org, kind=kind, now=now
        ),
    )


@principals_app.command("disable", help="Disable a principal: its keys and sessions stop working at once (audited).")
def principals_disable(principal_id: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(
        data_dir, lambda session, now: management.disable_principal(session, principal_id=principal_id, now=now)
    )


@principals_app.command("assign-role", help="Give a principal a role in its organisation (audited).")
def principals_assign_role(principal_id: str, role: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.assign_role(session, principal_id=principal_id, role=role))


@principals_app.command("remove-role", help="Take a role from a principal (audited).")
def principals_remove_role(principal_id: str, role: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.remove_role(session, principal_id=principal_id, role=role))


@keys_app.command("list", help="API keys with their principal, label and expiry (never their secrets).")
def keys_list(org: Org = None, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_keys(session, organisation=org), read=True)


@keys_app.command("issue")
def keys_issue(
    principal_id: str,
    label: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    expires: Annotated[str | None, typer.Option(help="ISO time with zone, e.g. 2027-06-30T00:00Z.")] = None,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """Prints the key once; only its hash is kept."""
    from policies import management

    def issue(session: Any, now: Any) -> Any:
        new, change = management.issue_key(
            session, principal_id=principal_id, now=now, label=label, expires_at=parse_moment(expires)
        )
        return change, {**change.describe(), "token": new.token}

    _administer(data_dir, issue)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = Path(".datapoort")) -> None:
    """The key fails from its next request on."""
    from policies import management

    _administer(data_dir, lambda session, now: management.revoke_key(session, key_id=key_id, now=now))


@purposes_app.command("list", help="The purpose register (doelbinding): codes, owners, register URIs.")
def purposes_list(data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_purposes(session), read=True)


@purposes_app.command("register", help="Register a purpose that grants may name (audited).")
def purposes_register(
    code: str,
    description: Annotated[str, typer.Option(help="What the processing is for.")],
    owner: Annotated[str, typer.Option(help="Who is responsible for it.")],
    uri: Annotated[str | None, typer.Option(help="Its entry in the register of processing activities.")] = None,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.register_purpose(
            session, code=code, description=description, owner=owner, register_uri=uri
        ),
    )


@purposes_app.command("retire", help="Retire a purpose: grants naming it allow nothing from then on (audited).")
def purposes_retire(code: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.retire_purpose(session, code=code, now=now))


@grants_app.command("list")
def grants_list(
    org: Org = None,
    include_inactive: Annotated[bool, typer.Option("--all", help="Also expired and revoked grants.")] = False,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """Who may do what, on which dataset, for which purpose, on which legal basis, until when."""
    from policies import management

    def listing(session: Any, now: Any) -> Any:
        where = management.GrantFilter(organisation=org, include_inactive=include_inactive, now=now)
        return management.list_grants(session, where) + [
            {"deny_rule": rule} for rule in management.list_deny_rules(session, org)
        ]

    _administer(data_dir, listing, read=True)


@grants_app.command(
    "create", help="Grant an action on a dataset for a purpose, on a legal basis, with a budget (audited)."
)
def grants_create(
    subject: Annotated[str, typer.Option(help="principal:<id> or role:<name>.")],
    org: Annotated[str, typer.Option("--org", help="The organisation (domain).")],
    dataset: Annotated[str, typer.Option(help="A dataset, or a prefix ending in *.")],
    action: Annotated[str, typer.Option(help="aggregate, export, reidentify, audit:read or admin.")],
    purpose: Annotated[str, typer.Option(help="A registered purpose.")],
    basis: Annotated[str, typer.Option(help="AVG art. 6 basis, e.g. public_task.")],
    basis_text: Annotated[str, typer.Option(help="The legal provision, in words.")],
    until: Annotated[str | None, typer.Option(help="End of validity (ISO time with zone).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Aggregate: epsilon per period.")] = None,
    delta: Annotated[float | None, typer.Option(help="Aggregate: delta per period.")] = None,
    period: Annotated[str | None, typer.Option(help="Aggregate: month or year.")] = None,
    k: Annotated[int | None, typer.Option("--k", help="Export: the smallest equivalence class (default 10).")] = None,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.create_grant(
            session,
            subject=subject,
            domain=org,
            dataset=dataset,
            action=action,
            purpose=purpose,
            legal_basis=basis,
            legal_basis_text=basis_text,
            now=now,
            valid_until=parse_moment(until),
            epsilon_per_period=epsilon,
            delta_per_period=delta,
            budget_period=period or ("month" if action == "aggregate" else None),
            k_anonymity=k,
        ),
    )


@grants_app.command("revoke", help="Revoke a grant at once, in every process within two seconds (audited).")
def grants_revoke(grant_id: int, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.revoke_grant(session, grant_id=grant_id, now=now))


@grants_app.command("expire", help="Set the end of a grant's validity (audited).")
def grants_expire(
    grant_id: int,
    until: Annotated[str, typer.Option(help="End of validity (ISO time with zone).")],
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.expire_grant(
            session, grant_id=grant_id, valid_until=parse_moment(until), now=now
        ),
    )


@grants_app.command("deny")
def grants_deny(
    subject: Annotated[str, typer.Option(help="principal:<id> or role:<name>.")],
    org: Annotated[str, typer.Option("--org", help="The organisation (domain).")],
    dataset: Annotated[str, typer.Option(help="A dataset, or a prefix ending in *.")],
    action: Annotated[str, typer.Option(help="The action refused.")],
    purpose: Annotated[str, typer.Option(help="A purpose, or * for all.")] = "*",
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """A deny rule beats every grant it matches."""
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.add_deny_rule(
            session, subject=subject, organisation=org, dataset=dataset, action=action, purpose=purpose
        ),
    )


@grants_app.command("undeny", help="Remove a deny rule (audited).")
def grants_undeny(rule_id: int, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.remove_deny_rule(session, rule_id=rule_id))


@pseudonyms_app.command("rotate")
def pseudonyms_rotate(data_dir: DataDir = Path(".datapoort")) -> None:
    """Add a new master secret version (creating the key file, mode 0600, if needed). Extracts made from
    now on get new pseudonyms; older versions stay for re-identification and inzage until removed."""
    from gateway.keys.pseudonym_secrets import add_version
    from gateway.settings import DEFAULT_PSEUDONYM_KEYS

    settings = load_settings(data_dir)
    path = settings.pseudonym_key_path or settings.data_dir / DEFAULT_PSEUDONYM_KEYS
    version = add_version(path)
    typer.echo(f"pseudonym master secret version {version} added to {path}; restart the gateway to use it")
