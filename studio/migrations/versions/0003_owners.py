"""owners on generations and app settings; consent; ids never reused

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Every row gets an owner (existing rows: the local owner, today's single user). `generations` is rebuilt with
SQLite's AUTOINCREMENT so a deleted id is never handed to a later row. `app_settings` is keyed by (owner, key)
so one visitor's last settings are never shown to another.

PostgreSQL alters the tables in place: its sequences never reuse an id, and rebuilding `generations` there would
copy the rows under a new sequence left at 1 (the next insert would collide with row 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCAL_OWNER = "local"  # frozen copy of studio.store.LOCAL_OWNER: migrations never import the live models


def _recreate() -> str:
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    with op.batch_alter_table(
        "generations", recreate=_recreate(), table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=False, server_default=LOCAL_OWNER))
        batch.add_column(sa.Column("consent", sa.Boolean(), nullable=True))
        batch.create_index("ix_generations_owner", ["owner"])
    with op.batch_alter_table("app_settings", recreate=_recreate()) as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=False, server_default=LOCAL_OWNER))
        batch.drop_constraint("pk_app_settings", type_="primary")
        batch.create_primary_key("pk_app_settings", ["owner", "key"])


def downgrade() -> None:
    # Other owners' settings would collide on the old one-column key: only the local owner's survive.
    op.execute(sa.text("DELETE FROM app_settings WHERE owner != :o").bindparams(o=LOCAL_OWNER))
    with op.batch_alter_table("app_settings", recreate=_recreate()) as batch:
        batch.drop_constraint("pk_app_settings", type_="primary")
        batch.drop_column("owner")
        batch.create_primary_key("pk_app_settings", ["key"])
    with op.batch_alter_table("generations", recreate=_recreate()) as batch:
        batch.drop_index("ix_generations_owner")
        batch.drop_column("consent")
        batch.drop_column("owner")
