"""The database: SQLAlchemy models, the engine and session factory, and Alembic migrations.

The same migrations serve the embedded SQLite file and PostgreSQL.
"""
