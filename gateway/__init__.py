"""The Datapoort service: HTTP API, CLI, data sources, query compilation and the demo gemeente."""

__version__ = "0.1.0"
