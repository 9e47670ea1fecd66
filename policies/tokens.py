"""Department users: OIDC bearer tokens (JWT) from the gemeente's identity provider.

A token is accepted only if its signature verifies against a key of the configured JWKS (a file, or a URL
whose key set is cached), with an algorithm on the configured list (never ``none``, never a symmetric
one: the keys are public), from the configured issuer, for the configured audience, and within its
validity (``exp`` required, ``nbf``/``iat`` honoured) give or take the configured clock skew. Verification
is PyJWT's; nothing here parses or checks a signature by hand.

Its claims then map to a principal by configuration: the subject claim names it, an organisation claim
(or a fixed organisation) gives its casbin domain, and a roles claim, through an optional mapping, gives
its roles. ``sync_principal`` records those roles as casbin role links, so a token user is decided by
exactly the same rules as a key holder; every change it makes is described for the audit log. For token
users the identity provider is the source of their roles: a role removed in Datapoort comes back with the
next token that carries it (to shut someone out, disable the principal or add a deny rule).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import jwt
from sqlalchemy import delete
from sqlalchemy.orm import Session

from policies import management, service
from policies.enforcer import bump_version, principal_subject, role_subject
from policies.exceptions import AuthenticationFailed
from policies.models import CasbinRule, Organisation, Principal

logger = logging.getLogger("datapoort.tokens")

# Asymmetric algorithms only: with a symmetric one the public JWKS would be the signing secret.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,100}$")


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: int = 60
    principal_claim: str = "sub"
    name_claim: str = "name"
    organisation_claim: str | None = "organisation"
    default_organisation: str | None = None
    roles_claim: str = "roles"
    role_map: Mapping[str, str] = field(default_factory=dict)
    """Identity-provider role or group -> Datapoort role. Only mapped names count: a group the operator
    did not map (an empty map: any group) gives no role, so the provider cannot invent Datapoort roles."""

    def __post_init__(self) -> None:
        unsafe = set(self.algorithms) - ALLOWED_ALGORITHMS
        if unsafe or not self.algorithms:
            raise ValueError(f"OIDC algorithms must be asymmetric ones from {sorted(ALLOWED_ALGORITHMS)}: {unsafe}")


class SigningKeys(Protocol):
    def key_for(self, token: str) -> Any: ...


class JwksFile:
    """A JWKS read once from a file (rotate by replacing the file and restarting, or use a URL)."""

    def __init__(self, path: Path) -> None:
        self._keys = jwt.PyJWKSet.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def key_for(self, token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key
        raise jwt.InvalidKeyError(f"no key with kid {kid!r} in the JWKS")


class JwksUrl:
    """A JWKS fetched from the identity provider and cached (``lifespan`` seconds); an unknown ``kid``
    makes PyJWT fetch again (rate-limited), so the provider's key rotation is followed."""

    def __init__(self, url: str, *, lifespan: float = 300) -> None:
        self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=lifespan, timeout=5)

    def key_for(self, token: str) -> Any:
        return self._client.get_signing_key_from_jwt(token)


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    principal_id: str
    display_name: str
    organisation: str
    roles: tuple[str, ...]
    issued_at: int = field(default=0, compare=False)
    """The token's ``iat`` (0 if absent): a token older than the one last applied changes no roles."""
    expires_at: int = field(default=0, compare=False)
    """The token's ``exp``: a console session opened with it ends then at the latest."""


def _principal_id(subject: str) -> str:
    """``oidc:<subject>``, or ``oidc:<sha256 of it>`` where the subject has characters casbin lines
    cannot carry."""
    return (
        f"oidc:{subject}"
        if _SAFE_ID.fullmatch(subject)
        else f"oidc:{hashlib.sha256(subject.encode()).hexdigest()[:40]}"
    )


def verify(token: str, config: OidcConfig, keys: SigningKeys, *, nonce: str | None = None) -> TokenIdentity:
    """The identity in a valid token; ``AuthenticationFailed`` (saying why) for any other. With ``nonce``
    (an ID token of the console's sign-in), the token must carry exactly that nonce: a token obtained for
    another sign-in cannot be replayed into this one."""
    try:
        key = keys.key_for(token)
        claims = jwt.decode(
            token,
            key,
            algorithms=list(config.algorithms),
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway_seconds,
            options={"require": ["exp", "iss", "aud", config.principal_claim]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationFailed("the bearer token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthenticationFailed("the bearer token is not meant for this gateway (audience)") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthenticationFailed("the bearer token is not from the configured identity provider") from exc
    except (jwt.PyJWTError, ValueError) as exc:
        # The library's reason stays in the log: a caller learns only that the token was not accepted.
        logger.info("bearer token refused: %s", type(exc).__name__)
        raise AuthenticationFailed("the bearer token is not valid (signature, issuer, audience or time)") from exc
    if nonce is not None:
        presented = claims.get("nonce")
        if not isinstance(presented, str) or not hmac.compare_digest(presented.encode(), nonce.encode()):
            raise AuthenticationFailed("the ID token does not belong to this sign-in (nonce)")
    return _identity(claims, config)


def _identity(claims: Mapping[str, Any], config: OidcConfig) -> TokenIdentity:
    subject = claims.get(config.principal_claim)
    if not isinstance(subject, str) or not subject:
        raise AuthenticationFailed(f"the bearer token has no {config.principal_claim!r} claim")
    organisation = claims.get(config.organisation_claim) if config.organisation_claim else None
    organisation = organisation if isinstance(organisation, str) and organisation else config.default_organisation
    if organisation is None or not _SAFE_ID.fullmatch(organisation):
        raise AuthenticationFailed("the bearer token names no organisation this gateway knows how to use")
    raw = claims.get(config.roles_claim, [])
    names: Sequence[Any] = raw if isinstance(raw, list) else [raw]
    roles = set()
    for name in names:
        if not isinstance(name, str):
            continue
        role = config.role_map.get(name)
        if role is not None and _SAFE_ID.fullmatch(role):
            roles.add(role)
    display = claims.get(config.name_claim)
    issued = claims.get("iat")
    expires = claims.get("exp")
    return TokenIdentity(
        principal_id=_principal_id(subject),
        display_name=(display if isinstance(display, str) and display else subject)[:256],
        organisation=organisation,
        roles=tuple(sorted(roles)),
        issued_at=issued if isinstance(issued, int) and not isinstance(issued, bool) else 0,
        expires_at=expires if isinstance(expires, int) and not isinstance(expires, bool) else 0,
    )


def sync_principal(session: Session, identity: TokenIdentity, *, now: datetime) -> management.Change | None:
    """Make the principal and its role links match the token, in the caller's transaction. Returns the
    change (for the audit log), or ``None`` when everything already matched, which is the usual case."""
    organisation = session.get(Organisation, identity.organisation)
    if organisation is None or organisation.disabled_at is not None:
        # Organisations are registered by an administrator, never by a token.
        raise AuthenticationFailed(f"organisation {identity.organisation!r} is not registered or is disabled")
    principal = session.get(Principal, identity.principal_id)
    if principal is None:
        service.create_principal(
            session,
            principal_id=identity.principal_id,
            display_name=identity.display_name,
            organisation=identity.organisation,
            kind="user",
            now=now,
            from_token=True,
        )
        before = None
    else:
        if not service.is_active(session, principal):
            raise AuthenticationFailed("this user is disabled in Datapoort")
        if principal.organisation != identity.organisation:
            # Moving a person between organisations moves their casbin domain: an administrator's act.
            raise AuthenticationFailed(
                f"this user belongs to organisation {principal.organisation!r} in Datapoort, not "
                f"{identity.organisation!r}; an administrator must move them"
            )
        before = management.principal_view(session, principal)
        if before["roles"] == list(identity.roles):
            return None
    subject = principal_subject(identity.principal_id)
    session.execute(delete(CasbinRule).where(CasbinRule.ptype == "g", CasbinRule.v0 == subject))
    for role in identity.roles:
        session.add(CasbinRule(ptype="g", v0=subject, v1=role_subject(role), v2=identity.organisation))
    bump_version(session)
    session.flush()
    after = management.principal_view(session, session.get(Principal, identity.principal_id))  # type: ignore[arg-type]
    what = "principal.create" if before is None else "principal.sync_roles"
    return management.Change(what, f"principal:{identity.principal_id}", before, after, identity.organisation)
