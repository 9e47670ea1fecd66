"""Sessions of the privacy officer's web console: a browser's stand-in for the credential it signed in with.

A session is opened after the officer proved who they are (an API key, or the gemeente's identity provider)
and is only as good as that proof stays: each use checks that the session is neither revoked, nor idle for
longer than allowed, nor past its absolute end, and that the API key it came from is still valid and the
principal still active. Revoking the key, disabling the principal or signing out ends the session at once,
in every process (the check reads the state database, never a cache).

The cookie holds ``<id>.<secret>``: a public lookup id and 256 random bits. Only the SHA-256 of the secret
is stored (as for API keys: a random secret has nothing to brute-force). The session's CSRF token is an HMAC
of its secret, so it needs no storage, is unknown to anyone who does not hold the cookie, and differs per
session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from policies import api_keys
from policies.exceptions import AuthenticationFailed
from policies.models import ApiKey, ConsoleSession, Principal
from policies.service import AuthenticatedPrincipal, is_active

_ID_BYTES = 16
_SECRET_BYTES = 32
TOUCH_EVERY = timedelta(seconds=60)
"""``last_seen_at`` is written at most this often: a page view is not worth a write each time."""


@dataclass(frozen=True, slots=True)
class OpenedSession:
    cookie: str
    """What the browser keeps: shown once, never stored."""
    session_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ActiveSession:
    session_id: str
    principal: AuthenticatedPrincipal
    csrf_token: str
    expires_at: datetime
    needs_touch: bool


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None


def csrf_token_for(secret: bytes) -> str:
    return _encode(hmac.new(secret, b"datapoort-console-csrf", hashlib.sha256).digest())


def open_session(
    session: Session,
    principal: AuthenticatedPrincipal,
    *,
    via: str,
    now: datetime,
    lifetime: timedelta,
    not_after: datetime | None = None,
) -> OpenedSession:
    """Add a session for ``principal`` (in the caller's transaction). It ends after ``lifetime`` at the
    latest, or sooner when the API key it was opened with expires, or at ``not_after`` (the expiry of the
    identity provider's token)."""
    session_id = secrets.token_hex(_ID_BYTES)
    secret = secrets.token_bytes(_SECRET_BYTES)
    ends = [now + lifetime]
    if not_after is not None:
        ends.append(not_after)
    key = session.get(ApiKey, principal.key_id) if principal.key_id is not None else None
    if key is not None and key.expires_at is not None:
        ends.append(key.expires_at)
    expires_at = min(ends)
    session.add(
        ConsoleSession(
            id=session_id,
            secret_sha256=api_keys.hash_secret(secret),
            principal_id=principal.id,
            organisation=principal.organisation,
            api_key_id=principal.key_id,
            via=via,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            revoked_at=None,
        )
    )
    return OpenedSession(cookie=f"{session_id}.{_encode(secret)}", session_id=session_id, expires_at=expires_at)


def _presented(session: Session, cookie: str) -> tuple[ConsoleSession, bytes] | None:
    """The stored session a cookie names, if the cookie holds its secret."""
    session_id, _, encoded = cookie.partition(".")
    secret = _decode(encoded) if encoded else None
    row = session.get(ConsoleSession, session_id) if len(session_id) == 2 * _ID_BYTES else None
    presented = api_keys.hash_secret(secret or b"")
    # Always compare, also for an unknown id, so that timing does not tell which ids exist.
    matches = hmac.compare_digest(presented, row.secret_sha256 if row is not None else "0" * 64)
    return (row, secret) if row is not None and secret is not None and matches else None


def resolve(session: Session, cookie: str, *, now: datetime, idle: timedelta) -> ActiveSession:
    """The session a cookie stands for, if it may still be used; every failure is the same failure."""
    if idle <= TOUCH_EVERY:
        raise ValueError("a session's idle limit must be longer than the interval its use is noted at")
    found = _presented(session, cookie)
    refused = AuthenticationFailed("the console session has ended; sign in again")
    if found is None:
        raise refused
    row, secret = found
    if row.revoked_at is not None or row.expires_at <= now or row.last_seen_at + idle <= now:
        raise refused
    principal = session.get(Principal, row.principal_id)
    if principal is None or not is_active(session, principal):
        raise refused
    if row.api_key_id is not None:
        key = session.get(ApiKey, row.api_key_id)
        if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            raise refused
    return ActiveSession(
        session_id=row.id,
        principal=AuthenticatedPrincipal(
            id=principal.id, organisation=principal.organisation, kind=principal.kind, key_id=row.api_key_id
        ),
        csrf_token=csrf_token_for(secret),
        expires_at=row.expires_at,
        needs_touch=row.last_seen_at + TOUCH_EVERY <= now,
    )


def touch(session: Session, session_id: str, now: datetime) -> None:
    """Note the session's use, in the caller's transaction (the one writing the page's audit event)."""
    session.execute(update(ConsoleSession).where(ConsoleSession.id == session_id).values(last_seen_at=now))


def revoke(session: Session, session_id: str, now: datetime) -> bool:
    result = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == session_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_presented(session: Session, cookie: str, now: datetime) -> None:
    """End the session a browser still holds when it signs in again (only with the cookie's secret: no one
    can end another's session by naming its id)."""
    found = _presented(session, cookie)
    if found is not None:
        revoke(session, found[0].id, now)


def purge(session: Session, now: datetime, *, keep: timedelta = timedelta(days=30)) -> None:
    """Forget sessions that ended more than ``keep`` ago (their sign-in and sign-out stay in the audit log)."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now - keep))


def revoke_all(session: Session, principal_id: str | None, now: datetime) -> int:
    """End every open session of one principal (or of everyone): for a lost laptop or an officer who left."""
    statement = update(ConsoleSession).where(ConsoleSession.revoked_at.is_(None), ConsoleSession.expires_at > now)
    if principal_id is not None:
        statement = statement.where(ConsoleSession.principal_id == principal_id)
    result = session.execute(statement.values(revoked_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]
