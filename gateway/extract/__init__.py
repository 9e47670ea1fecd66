"""Pseudonymised, k-anonymous record-level extracts for partners, re-identification and inzage."""
