"""The Alembic environment and versions of the state database (``datapoort db upgrade``)."""
