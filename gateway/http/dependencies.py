"""FastAPI dependencies: the state, the request's session, its audit context and its principal."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from gateway.audit_trail import AuditContext
from gateway.http import identity
from gateway.http.rate_limit import RateLimiter
from gateway.state import GatewayState
from gateway.store.database import read_snapshot
from policies import service as policy_service
from policies.exceptions import AuthenticationFailed


# The trivial dependencies are async so FastAPI runs them inline rather than in the thread pool.
async def get_state(request: Request) -> GatewayState:
    """The app's state as this request sees it: pinned once, so every step of it reads one catalog."""
    pinned: GatewayState | None = getattr(request.state, "gateway", None)
    if pinned is None:
        state: GatewayState = request.app.state.gateway
        pinned = request.state.gateway = state.pinned()
    return pinned


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, with no transaction until the route (on its own thread) uses it; each
    step then commits its own short transaction. Whatever is not committed is rolled back on the way out."""
    state: GatewayState = request.app.state.gateway
    with state.sessions() as session:
        yield session


async def get_audit_context(request: Request) -> AuditContext:
    context: AuditContext = request.state.audit
    return context


def audited_as(action: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A route dependency naming the action its audit events record. Listed in the route decorator, it
    runs before authentication, so a request refused at the door is recorded under the right action."""

    async def name_action(request: Request) -> None:
        context: AuditContext = request.state.audit
        context.event.action = action

    return name_action


_bearer = HTTPBearer(
    auto_error=False,
    description="A Datapoort API key (`Bearer dpk_...`) or an OIDC token from the gemeente's identity provider",
)


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> policy_service.AuthenticatedPrincipal:
    """Who is calling, read in a short read-only transaction of its own that ends here: nothing is held
    while the request waits for the thread its route runs on."""
    if credentials is None:
        raise AuthenticationFailed("send an API key or an identity-provider token as 'Authorization: Bearer ...'")
    state: GatewayState = request.app.state.gateway
    context: AuditContext = request.state.audit
    with state.sessions() as session:
        read_snapshot(session)
        principal = identity.authenticate(
            credentials.credentials,
            session=session,
            sessions=state.sessions,
            authority=state.tokens,
            engine=state.policy_engine,
            instance=state.settings.instance,
            now=datetime.now(UTC),
        )
        identify(session, state, context, principal)
    take_rate(request, principal.key_id or f"principal:{principal.id}")
    return principal


def identify(
    session: Session, state: GatewayState, context: AuditContext, principal: policy_service.AuthenticatedPrincipal
) -> None:
    """Put who is calling on the request's audit event, with the roles they hold now; and follow what
    changed elsewhere since (API and console alike)."""
    context.key_id = principal.key_id
    context.event.principal_id = principal.id
    context.event.organisation = principal.organisation
    with session.no_autoflush:
        state.policy_engine.ensure_current(session)  # the roles recorded are today's, not a cached snapshot's
        state.follow_changes(session)  # datasets added or changed through any process, rotated secrets
    context.event.roles = ",".join(state.policy_engine.role_names(principal.id, principal.organisation))


def take_rate(request: Request, caller: str) -> None:
    """One request of ``caller`` from the app's rate limiter (none configured: no limit)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.take(caller)


StateDep = Annotated[GatewayState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
AuditDep = Annotated[AuditContext, Depends(get_audit_context)]
PrincipalDep = Annotated[policy_service.AuthenticatedPrincipal, Depends(current_principal)]
