"""The routes, one module per area: query, catalog, admin, audit, extract, health."""
