"""Signing in to the console, and who a console request comes from.

An API key (or the identity provider's sign-in) is exchanged for a session once; the key itself is never
kept by the browser. Only a principal the policies grant oversight (``audit:read`` on the audit log for
``toezicht``) may open a session, and every page decides again on the officer's grants as they are at that
moment. Sign-in, refused sign-in and sign-out are audit events like any other request.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from sqlalchemy.orm import Session

from gateway.audit_trail import AuditContext, commit_with_event
from gateway.exceptions import ConfigurationError, FormRejected
from gateway.http import identity
from gateway.http.console import oidc
from gateway.http.console.rendering import html, redirect, render
from gateway.http.console.security import (
    SignIn,
    clear_session_cookie,
    clear_sign_in_cookie,
    session_cookie,
    set_session_cookie,
    set_sign_in_cookie,
    sign_in_from,
    tokens_match,
)
from gateway.http.dependencies import AuditDep, SessionDep, StateDep, audited_as, identify, take_rate
from gateway.http.routers.audit import oversee
from gateway.state import GatewayState
from gateway.store.database import read_snapshot
from policies import console_sessions, tokens
from policies import service as policy_service
from policies.exceptions import AuthenticationFailed

router = APIRouter(prefix="/console", include_in_schema=False)
CsrfField = Annotated[str | None, Form(max_length=128)]


def current_officer(request: Request, state: StateDep, audit: AuditDep) -> console_sessions.ActiveSession:
    """The session behind the request's cookie, checked in a short read of its own, with the officer's
    identity put on the request's audit event."""
    cookie = session_cookie(request, state.settings)
    if not cookie:
        raise AuthenticationFailed("not signed in to the console")
    with state.sessions() as session:
        read_snapshot(session)
        active = console_sessions.resolve(
            session,
            cookie,
            now=audit.started_at,
            idle=timedelta(minutes=state.settings.console_session_minutes),
        )
        identify(session, state, audit, active.principal)
    audit.console_session_id = active.session_id if active.needs_touch else None
    request.state.console_officer = active  # a refusal page still offers sign-out
    take_rate(request, active.principal.key_id or f"principal:{active.principal.id}")
    return active


OfficerDep = Annotated[console_sessions.ActiveSession, Depends(current_officer)]


def check_form(active: console_sessions.ActiveSession, csrf_token: str | None) -> None:
    if not tokens_match(csrf_token, active.csrf_token):
        raise FormRejected("this form did not come from a page of your console session; reload the page")


@router.get("/login")
def sign_in_form(request: Request, state: StateDep, ended: Annotated[bool, Query()] = False) -> Response:
    """The form holds nothing of the log, so showing it is not an audit event; using it is."""
    sign_in = sign_in_from(request, state.settings) or SignIn.new()  # a second tab keeps the first one's form valid
    content = render(
        "login.html",
        officer=None,
        csrf_token=sign_in.csrf_token,
        oidc=state.settings.console_oidc_enabled,
        ended=ended,
        request_id=None,
    )
    response = html(content)
    set_sign_in_cookie(response, request, state.settings, sign_in)
    return response


def _open(
    request: Request,
    session: Session,
    state: GatewayState,
    audit: AuditContext,
    principal: policy_service.AuthenticatedPrincipal,
    *,
    via: str,
    not_after: datetime | None,
) -> console_sessions.OpenedSession:
    """Decide oversight, open the session and commit it with the sign-in's event (one transaction: a
    session exists only with the event that records it). A session the browser still holds ends."""
    oversee(session, state, principal, audit)
    previous = session_cookie(request, state.settings)
    if previous:
        console_sessions.revoke_presented(session, previous, audit.started_at)
    console_sessions.purge(session, audit.started_at)
    opened = console_sessions.open_session(
        session,
        principal,
        via=via,
        now=audit.started_at,
        lifetime=timedelta(hours=state.settings.console_session_hours),
        not_after=not_after,
    )
    audit.event.query = f"console sign-in via {via}"
    commit_with_event(session, audit, audit.finish(decision="allow", detail=f"session {opened.session_id}"))
    return opened


def _signed_in(
    request: Request, state: GatewayState, opened: console_sessions.OpenedSession, response: Response
) -> Response:
    set_session_cookie(response, request, state.settings, opened.cookie, opened.expires_at)
    clear_sign_in_cookie(response, request, state.settings)
    return response


@router.post("/login", dependencies=[Depends(audited_as("console:sign-in"))])
def sign_in_with_key(
    request: Request,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    api_key: Annotated[str, Form(min_length=1, max_length=256)],
    csrf_token: CsrfField = None,
) -> Response:
    sign_in = sign_in_from(request, state.settings)
    if sign_in is None or not tokens_match(csrf_token, sign_in.csrf_token):
        raise FormRejected("the sign-in form has expired or did not come from this gateway; reload it")
    take_rate(request, f"console-sign-in:{audit.event.client_address}")
    principal = policy_service.authenticate_key(session, api_key.strip(), now=audit.started_at)
    identify(session, state, audit, principal)
    opened = _open(request, session, state, audit, principal, via="api_key", not_after=None)
    return _signed_in(request, state, opened, redirect("/console"))


def _redirect_uri(request: Request, state: GatewayState) -> str:
    return f"{state.settings.public_url}/console/oidc/callback"  # never from the request's Host header


@router.get("/oidc/start")
def start_identity_provider_sign_in(request: Request, state: StateDep) -> Response:
    if not state.settings.console_oidc_enabled:
        raise ConfigurationError("sign-in with the identity provider is not configured on this gateway")
    sign_in = sign_in_from(request, state.settings) or SignIn.new()
    response = redirect(oidc.authorization_url(state.settings, sign_in, _redirect_uri(request, state)))
    set_sign_in_cookie(response, request, state.settings, sign_in)
    return response


@router.get("/oidc/callback", dependencies=[Depends(audited_as("console:sign-in"))])
def finish_identity_provider_sign_in(
    request: Request,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    callback_state: Annotated[str | None, Query(alias="state", max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    if not state.settings.console_oidc_enabled or state.tokens is None:
        raise ConfigurationError("sign-in with the identity provider is not configured on this gateway")
    sign_in = sign_in_from(request, state.settings)
    if sign_in is None or not tokens_match(callback_state, sign_in.state):
        raise FormRejected("this sign-in was not started here, or took longer than ten minutes; start again")
    if error is not None or code is None:
        raise AuthenticationFailed(f"the identity provider did not sign you in ({error or 'no code'})")
    id_token = oidc.exchange_code(state.settings, sign_in, code, _redirect_uri(request, state))
    config = dataclasses.replace(state.tokens.config, audience=state.settings.oidc_client_id or "")
    verified = tokens.verify(id_token, config, state.tokens.keys, nonce=sign_in.nonce)
    principal = identity.authenticate_identity(
        verified,
        session=session,
        sessions=state.sessions,
        authority=state.tokens,
        engine=state.policy_engine,
        instance=state.settings.instance,
        now=audit.started_at,
    )
    identify(session, state, audit, principal)
    # The session lasts as long as the ID token (no refresh tokens are kept): an officer signs in again then.
    latest = audit.started_at + timedelta(hours=state.settings.console_session_hours)
    expires = min(datetime.fromtimestamp(verified.expires_at, UTC), latest) if verified.expires_at else None
    opened = _open(request, session, state, audit, principal, via="oidc", not_after=expires)
    # Not a redirect: the provider's redirect here began on another site, and a browser keeps a SameSite=
    # Strict cookie out of every step of such a chain. A page of ours that moves on is a same-site step.
    response = html(render("signed_in.html", officer=None, request_id=audit.request_id))
    return _signed_in(request, state, opened, response)


@router.post("/logout", dependencies=[Depends(audited_as("console:sign-out"))])
def sign_out(
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    csrf_token: CsrfField = None,
) -> Response:
    check_form(officer, csrf_token)
    # Ended first, in a transaction of its own: if the sign-out's event then cannot be written, the session
    # is over all the same (the safe direction; nothing leaves with a sign-out).
    console_sessions.revoke(session, officer.session_id, audit.started_at)
    session.commit()
    audit.event.query = "console sign-out"
    commit_with_event(session, audit, audit.finish(decision="allow", detail=f"session {officer.session_id}"))
    response = redirect("/console/login")
    clear_session_cookie(response, request, state.settings)
    return response
