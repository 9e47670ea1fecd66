"""The demo gemeente Voorbeeldstad: synthetic data, a catalog, and demo principals."""
