"""The identity provider the gateway trusts: how its tokens are checked, the keys they are signed with,
and which token identities this process has already brought in line with the state database."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.settings import Settings
from policies import tokens


@dataclass(slots=True)
class TokenAuthority:
    config: tokens.OidcConfig
    keys: tokens.SigningKeys
    synced: dict[tokens.TokenIdentity, int] = field(default_factory=dict)
    """Identities known to match the state database, with the policy version they were checked at."""
    issued: dict[str, int] = field(default_factory=dict)
    """Per principal, the ``iat`` of the newest token applied."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuthority | None:
        if not settings.oidc_enabled:
            return None
        config = tokens.OidcConfig(
            issuer=settings.oidc_issuer or "",
            audience=settings.oidc_audience or "",
            algorithms=tuple(settings.oidc_algorithms),
            leeway_seconds=settings.oidc_leeway_seconds,
            principal_claim=settings.oidc_principal_claim,
            organisation_claim=settings.oidc_organisation_claim,
            default_organisation=settings.oidc_default_organisation,
            roles_claim=settings.oidc_roles_claim,
            role_map=dict(settings.oidc_role_map),
        )
        keys: tokens.SigningKeys
        if settings.oidc_jwks_file is not None:
            keys = tokens.JwksFile(settings.oidc_jwks_file)
        else:
            keys = tokens.JwksUrl(settings.oidc_jwks_url or "", lifespan=settings.oidc_jwks_cache_seconds)
        return cls(config, keys)
