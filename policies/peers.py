"""The register of peer gateways (other gemeenten) this gateway may ask, each change described for the audit log.

As in ``policies.management``: changes are made in the caller's transaction and returned as a ``Change``;
the credential a peer issued is never part of one (it lives in a 0600 file, see ``gateway.keys``).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from policies.exceptions import PolicyConflict, UnknownObject
from policies.management import Change
from policies.models import Peer

TLS_MODES = ("verify", "ca_file", "plain_loopback")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, tls: str, ca_file: str | None) -> None:
    """HTTPS with certificate checks, unless explicitly plain HTTP to this host (for a demo or a test)."""
    if tls not in TLS_MODES:
        raise PolicyConflict(f"tls must be one of {', '.join(TLS_MODES)}")
    parts = urlsplit(url)
    if parts.username or parts.password or parts.query or parts.fragment or not parts.hostname:
        raise PolicyConflict("a peer URL is scheme://host[:port][/path], without credentials, query or fragment")
    if tls == "plain_loopback":
        if parts.scheme != "http" or not is_loopback(parts.hostname):
            raise PolicyConflict("plain_loopback is plain HTTP to this host only (127.0.0.1, ::1, localhost)")
    elif parts.scheme != "https":
        raise PolicyConflict("a peer is reached over HTTPS (tls verify or ca_file)")
    if (tls == "ca_file") != (ca_file is not None):
        raise PolicyConflict("ca_file is given exactly when tls is ca_file")


def peer_view(peer: Peer) -> dict[str, Any]:
    return {
        "name": peer.name,
        "gemeente": peer.gemeente,
        "url": peer.url,
        "tls": peer.tls,
        "ca_file": peer.ca_file,
        "created_at": peer.created_at.isoformat(),
        "disabled_at": peer.disabled_at.isoformat() if peer.disabled_at else None,
    }


def register_peer(
    session: Session, *, name: str, gemeente: str, url: str, tls: str, ca_file: str | None, now: datetime
) -> Change:
    if not _NAME.fullmatch(name):
        raise PolicyConflict("a peer's name is lowercase letters, digits and dashes (at most 64)")
    check_url(url, tls, ca_file)
    if session.get(Peer, name) is not None:
        raise PolicyConflict(f"peer {name!r} already exists")
    peer = Peer(name=name, gemeente=gemeente, url=url.rstrip("/"), tls=tls, ca_file=ca_file, created_at=now)
    session.add(peer)
    session.flush()
    return Change("peer.register", f"peer:{name}", None, peer_view(peer))


def list_peers(session: Session) -> list[dict[str, Any]]:
    return [peer_view(peer) for peer in session.scalars(select(Peer).order_by(Peer.name))]


def active_peers(session: Session) -> list[Peer]:
    return list(session.scalars(select(Peer).where(Peer.disabled_at.is_(None)).order_by(Peer.name)))


def disable_peer(session: Session, *, name: str, now: datetime) -> Change:
    peer = session.get(Peer, name)
    if peer is None:
        raise UnknownObject(f"there is no peer {name!r}")
    before = peer_view(peer)
    peer.disabled_at = peer.disabled_at or now
    session.flush()
    return Change("peer.disable", f"peer:{name}", before, peer_view(peer))
