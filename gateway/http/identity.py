"""Who is calling: an API key, or (when configured) an OIDC bearer token from the gemeente's identity
provider. A token user's principal and roles are brought in line with the token in a transaction of its
own, audited when anything changes, before the request's own transaction begins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit_trail import AuditContext, commit_with_event, describe_change
from gateway.keys.identity_provider import TokenAuthority
from policies import api_keys, tokens
from policies import service as policy_service
from policies.enforcer import PolicyEngine
from policies.exceptions import AuthenticationFailed
from policies.models import Principal


def authenticate(
    credential: str,
    *,
    session: Session,
    sessions: sessionmaker[Session],
    authority: TokenAuthority | None,
    engine: PolicyEngine,
    instance: str,
    now: datetime,
) -> policy_service.AuthenticatedPrincipal:
    if credential.startswith(api_keys.KEY_PREFIX) or authority is None:
        return policy_service.authenticate_key(session, credential, now=now)
    identity = tokens.verify(credential, authority.config, authority.keys)
    return authenticate_identity(
        identity, session=session, sessions=sessions, authority=authority, engine=engine, instance=instance, now=now
    )


def authenticate_identity(
    identity: tokens.TokenIdentity,
    *,
    session: Session,
    sessions: sessionmaker[Session],
    authority: TokenAuthority,
    engine: PolicyEngine,
    instance: str,
    now: datetime,
) -> policy_service.AuthenticatedPrincipal:
    """The principal of a verified token (a bearer token, or the console's ID token), its roles first
    brought in line with the token."""
    # An older token than the newest applied for this user (say, replayed after the provider removed a
    # role) changes nothing: the roles stay as the newer token left them. (Per process; tokens are short.)
    newest = authority.issued.get(identity.principal_id, 0)
    if identity.issued_at >= newest and authority.synced.get(identity) != engine.version:
        _sync(identity, sessions, engine, instance, now)
        authority.synced[identity] = engine.version
        authority.issued[identity.principal_id] = identity.issued_at
    elif identity.issued_at < newest and session.get(Principal, identity.principal_id) is None:
        raise AuthenticationFailed("the bearer token is older than one already used")
    principal = session.get(Principal, identity.principal_id)
    if principal is None or not policy_service.is_active(session, principal):
        raise AuthenticationFailed("this user is disabled in Datapoort")
    return policy_service.AuthenticatedPrincipal(
        id=identity.principal_id, organisation=identity.organisation, kind="user", key_id=None
    )


def _sync(
    identity: tokens.TokenIdentity, sessions: sessionmaker[Session], engine: PolicyEngine, instance: str, now: datetime
) -> None:
    for attempt in range(2):  # two first requests of a new user at once: the second finds it created
        with sessions() as sync:
            try:
                change = tokens.sync_principal(sync, identity, now=now)
                if change is None:
                    sync.commit()
                    return
                context = AuditContext.for_system("system:oidc", action="admin", instance=instance)
                context.event.organisation = identity.organisation
                detail = describe_change(context, change)
                commit_with_event(sync, context, context.finish(decision="allow", reason="oidc_sync", detail=detail))
                engine.reload(sync)
                return
            except IntegrityError:
                sync.rollback()
                if attempt == 1:
                    raise
