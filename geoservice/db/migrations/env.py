"""Alembic environment: runs migrations on the URL handed over by geoservice.db.migrate.

``alembic revision --autogenerate`` drafts the next migration from the models with the same
filter and options as the schema test (``geoservice.db.migrate.COMPARE_OPTIONS``), and with
GeoAlchemy2's writer and renderer for geometry columns and spatial indexes; there is no
alembic.ini, so call it as ``alembic.command.revision(geoservice.db.migrate.alembic_config(url),
message, autogenerate=True)`` on a database at head. Review the draft: migrations never import
the models, and CHECK constraints, partitioning and index methods are left to you.
"""

from alembic import context
from geoalchemy2 import alembic_helpers
from sqlalchemy import Connection, create_engine, pool

from geoservice.db.migrate import COMPARE_OPTIONS
from geoservice.db.models import metadata

config = context.config
target_metadata = metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        **COMPARE_OPTIONS,
    )


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _configure(connectable)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
