"""Alembic environment: runs migrations on the engine handed over by models.migrate."""

from alembic import context

from models.base import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Rebuilding a table (batch mode) drops the old one, which with foreign keys on
        # deletes its rows first, cascades included. The pragma has no effect inside a
        # transaction: it is set on the driver's connection before one begins, and set
        # back before the connection goes back to the pool. A migration that rebuilds
        # tables checks the foreign keys itself (PRAGMA foreign_key_check).
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
