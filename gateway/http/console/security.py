"""The console's browser-facing protections: its cookies, CSRF tokens and Content-Security-Policy.

Two cookies, both HttpOnly:

* the session cookie (``SameSite=Strict``): never sent with a request another site starts, so a link or
  form elsewhere cannot act as the officer;
* the sign-in cookie (``SameSite=Lax``, ten minutes): a random value from which the sign-in form's CSRF
  token and, for the identity provider, the ``state``, ``nonce`` and PKCE verifier are derived. It must be
  Lax because the provider's redirect back is a navigation from another site, which a Strict cookie does
  not come along with. Deriving all four from one secret the browser holds keeps the gateway stateless
  before sign-in: a forged callback cannot know them.

Behind TLS both are ``Secure`` and carry the ``__Host-`` prefix (no Domain, Path=/, Secure: a subdomain or
a plain-HTTP page cannot plant them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fastapi import Request, Response

from gateway.settings import Settings

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No inline script or style anywhere, nothing from another origin, never framed, forms only to us."""

SIGN_IN_SECONDS = 600


def cookies_secure(request: Request, settings: Settings) -> bool:
    return settings.console_cookie_secure == "always" or request.url.scheme == "https"


def session_cookie_name(secure: bool) -> str:
    return "__Host-datapoort-console" if secure else "datapoort-console"


def sign_in_cookie_name(secure: bool) -> str:
    return "__Host-datapoort-sign-in" if secure else "datapoort-sign-in"


SameSite = Literal["strict", "lax"]


def _set(
    response: Response,
    request: Request,
    settings: Settings,
    name: Callable[[bool], str],
    value: str,
    samesite: SameSite,
    **lifetime: Any,
) -> None:
    secure = cookies_secure(request, settings)
    response.set_cookie(name(secure), value, path="/", secure=secure, httponly=True, samesite=samesite, **lifetime)


def _clear(
    response: Response, request: Request, settings: Settings, name: Callable[[bool], str], samesite: SameSite
) -> None:
    secure = cookies_secure(request, settings)
    response.delete_cookie(name(secure), path="/", secure=secure, httponly=True, samesite=samesite)


def session_cookie(request: Request, settings: Settings) -> str | None:
    return request.cookies.get(session_cookie_name(cookies_secure(request, settings)))


def set_session_cookie(
    response: Response, request: Request, settings: Settings, value: str, expires_at: datetime
) -> None:
    _set(response, request, settings, session_cookie_name, value, "strict", expires=expires_at)


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    _clear(response, request, settings, session_cookie_name, "strict")


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SignIn:
    """What one sign-in attempt derives from the random value of its sign-in cookie."""

    secret: bytes

    @classmethod
    def new(cls) -> SignIn:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_cookie(cls, value: str | None) -> SignIn | None:
        if not value:
            return None
        try:
            secret = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, TypeError):
            return None
        return cls(secret) if len(secret) == 32 else None

    def _derive(self, label: bytes) -> str:
        return _encode(hmac.new(self.secret, b"datapoort-sign-in:" + label, hashlib.sha256).digest())

    @property
    def cookie_value(self) -> str:
        return _encode(self.secret)

    @property
    def csrf_token(self) -> str:
        return self._derive(b"csrf")

    @property
    def state(self) -> str:
        return self._derive(b"state")

    @property
    def nonce(self) -> str:
        return self._derive(b"nonce")

    @property
    def code_verifier(self) -> str:
        return self._derive(b"pkce")  # 43 characters of base64url: within RFC 7636's 43 to 128

    @property
    def code_challenge(self) -> str:
        return _encode(hashlib.sha256(self.code_verifier.encode()).digest())


def sign_in_from(request: Request, settings: Settings) -> SignIn | None:
    return SignIn.from_cookie(request.cookies.get(sign_in_cookie_name(cookies_secure(request, settings))))


def set_sign_in_cookie(response: Response, request: Request, settings: Settings, sign_in: SignIn) -> None:
    _set(response, request, settings, sign_in_cookie_name, sign_in.cookie_value, "lax", max_age=SIGN_IN_SECONDS)


def clear_sign_in_cookie(response: Response, request: Request, settings: Settings) -> None:
    _clear(response, request, settings, sign_in_cookie_name, "lax")


def tokens_match(presented: str | None, expected: str) -> bool:
    """Constant-time: a CSRF token is a secret, compared so that timing tells nothing of it."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())
