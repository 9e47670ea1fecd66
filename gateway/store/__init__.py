"""The gateway's own state database: engine and sessions, the Alembic history, migrating."""
