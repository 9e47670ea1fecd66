"""Signing in to the console with the gemeente's identity provider: the OpenID Connect authorization-code
flow with PKCE (RFC 7636, S256). The browser never sees a token: the gateway exchanges the code itself and
keeps only the session it opens."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from gateway.exceptions import ConfigurationError
from gateway.http.console.security import SignIn
from gateway.settings import Settings
from policies.exceptions import AuthenticationFailed

EXCHANGE_SECONDS = 10.0


def authorization_url(settings: Settings, sign_in: SignIn, redirect_uri: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.oidc_client_id or "",
            "redirect_uri": redirect_uri,
            "scope": "openid profile",
            "state": sign_in.state,
            "nonce": sign_in.nonce,
            "code_challenge": sign_in.code_challenge,
            "code_challenge_method": "S256",
        }
    )
    endpoint = settings.oidc_authorization_endpoint or ""
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def exchange_code(settings: Settings, sign_in: SignIn, code: str, redirect_uri: str) -> str:
    """The ID token for ``code``, from the provider's token endpoint (with the PKCE verifier, and the client
    secret of a confidential client). Any failure is an ``AuthenticationFailed`` that names no secret."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": settings.oidc_client_id or "",
        "code_verifier": sign_in.code_verifier,
    }
    if settings.oidc_client_secret_path is not None:
        try:
            form["client_secret"] = settings.oidc_client_secret_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError("the console's OIDC client secret file cannot be read") from exc
    try:
        response = httpx.post(
            settings.oidc_token_endpoint or "", data=form, timeout=EXCHANGE_SECONDS, follow_redirects=False
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise AuthenticationFailed(f"the identity provider could not be reached ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise AuthenticationFailed(f"the identity provider refused the sign-in (HTTP {response.status_code})")
    try:
        token = response.json().get("id_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise AuthenticationFailed("the identity provider's answer holds no ID token")
    return token
