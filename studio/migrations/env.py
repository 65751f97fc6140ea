"""Alembic environment for the studio database (no alembic.ini: see `studio.store.alembic_config`).

`Store.open` passes its own connection in `config.attributes["connection"]` so migrations run with the
same SQLite pragmas and locking as the app. Run by hand (from the repo root) with
`python -c "from studio.store import alembic_config; from alembic import command; command.upgrade(alembic_config(URL), 'head')"`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from studio.store import Base

config = context.config
target_metadata = Base.metadata


def _configure(sqlite: bool, **kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=sqlite,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (`alembic upgrade --sql`)."""
    url = config.get_main_option("sqlalchemy.url") or ""
    _configure(url.startswith("sqlite"), url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection.dialect.name == "sqlite", connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _configure(conn.dialect.name == "sqlite", connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
