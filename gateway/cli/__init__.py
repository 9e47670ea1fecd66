"""The ``datapoort`` command, one module per audience: serving and the demo, the callers of a running
gateway, the audit log, and administration."""

from __future__ import annotations

from gateway.cli.base import app

# Importing the audiences registers their commands on ``app``, in the order ``datapoort --help`` lists.
# isort: off
from gateway.cli import serve, client, audit, admin, datasets, peers, console
# isort: on

__all__ = ["app", "main"]
_AUDIENCES = (serve, client, audit, admin, datasets, peers, console)


def main() -> None:
    app()
