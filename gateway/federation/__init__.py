"""Comparing gemeenten: one question put to peer gateways, each answering under its own budget and log."""
