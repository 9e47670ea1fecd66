"""``/v1/admin/peers``: the register of peer gateways this gemeente may put comparisons to.

An administrator of the register (``admin`` on ``register``, purpose ``beheer``) registers a peer with the
key the peer issued to this gemeente; the key goes into a 0600 file, never into the state database, an
answer or the audit log. Listings are open to the privacy officer's oversight, as other admin listings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Response
from fastapi import Path as FastApiPath
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.json_schema import SkipJsonSchema

from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.routers.admin import _REFUSALS, READ, WRITE, _authorise, _changed, _listing
from gateway.keys.peer_credentials import write_credential
from policies import management
from policies import peers as peer_register
from policies.exceptions import PolicyConflict

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)
PeerName = Annotated[str, FastApiPath(pattern=r"^[a-z][a-z0-9-]{0,63}$")]


class PeerRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,63}$", description="How this gateway calls the peer.")
    gemeente: str = Field(min_length=1, max_length=200, description="The gemeente, as answers name it.")
    url: str = Field(min_length=8, max_length=500, description="The peer gateway's base URL (https://...).")
    tls: Literal["verify", "ca_file", "plain_loopback"] = "verify"
    ca_file: Annotated[str, Field(min_length=1, max_length=1000)] | SkipJsonSchema[None] = None
    api_key: SecretStr = Field(description="The key the peer issued to this gemeente's organisation.")


@router.get("/peers", dependencies=READ, responses=_REFUSALS, summary="Peer gateways (never their credentials)")
def list_peers(principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER, read_only=True)
    return _listing(session, audit, "peers", peer_register.list_peers(session))


@router.post("/peers", dependencies=WRITE, responses=_REFUSALS, status_code=201)
def register_peer(
    body: PeerRegistration, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER)
    if body.tls == "plain_loopback" and not state.settings.allow_plain_loopback_peers:
        raise PolicyConflict("plain HTTP peers are off on this gateway (DATAPOORT_ALLOW_PLAIN_LOOPBACK_PEERS)")
    change = peer_register.register_peer(
        session,
        name=body.name,
        gemeente=body.gemeente,
        url=body.url,
        tls=body.tls,
        ca_file=body.ca_file,
        now=audit.started_at,
    )
    write_credential(state.settings.data_dir, body.name, body.api_key.get_secret_value())
    return _changed(session, state, audit, change, status_code=201)


@router.post("/peers/{name}/disable", dependencies=WRITE, responses=_REFUSALS)
def disable_peer(
    name: PeerName, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER)
    return _changed(session, state, audit, peer_register.disable_peer(session, name=name, now=audit.started_at))
