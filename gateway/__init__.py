"""The Datapoort service, in layers from the edge inward: ``cli`` and ``http``; ``extract``, ``demo`` and
``query``; ``state``; ``data``, ``store`` and ``keys``; then the request's ``audit_trail``, ``settings``
and ``exceptions``, over the domains (``policies``, ``audit``, ``anonymization``)."""

__version__ = "0.1.0"
