"""Migrations build exactly the schema the models describe, on every database."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models import Base
from models.migrate import current_revision, head_revision, is_current


def test_upgraded_database_matches_the_models(database):
    assert current_revision(database.engine) == head_revision()
    assert is_current(database.engine)
    with database.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []
