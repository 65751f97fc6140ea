"""front-end instances, file claims; rows record their instance; a case-folded prompt for search

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Several front-ends may share one database and media folder. `instances` holds one row per running front-end
(alive while its lease lock is held: studio/leases.py), `file_claims` the inputs an instance saved for a row it has
not created yet, and `generations.instance_id` the front-end running a row, so a starting front-end fails only the
rows of dead ones. `generations.prompt_folded` is `prompt.casefold()`: search folds case in Python, the same on
SQLite and on a PostgreSQL server of any locale. A later table (e.g. admission tickets) can name its instance the
same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "file_claims",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_file_claims"),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name="fk_file_claims_instance_id_instances", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_file_claims_path", "file_claims", ["path"])
    op.create_index("ix_file_claims_instance_id", "file_claims", ["instance_id"])
    # Plain ADD COLUMN on both databases (no table rebuild on SQLite).
    op.add_column("generations", sa.Column("instance_id", sa.Integer(), nullable=True))
    op.add_column("generations", sa.Column("prompt_folded", sa.Text(), nullable=False, server_default=""))
    _fold_prompts()


def _fold_prompts() -> None:
    """Fill prompt_folded for the rows already there, a batch at a time."""
    bind = op.get_bind()
    generations = sa.table(
        "generations", sa.column("id", sa.Integer), sa.column("prompt", sa.Text), sa.column("prompt_folded", sa.Text)
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(generations.c.id, generations.c.prompt)
            .where(generations.c.id > last)
            .order_by(generations.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            generations.update().where(generations.c.id == sa.bindparam("row_id")),
            [{"row_id": row_id, "prompt_folded": (prompt or "").casefold()} for row_id, prompt in rows],
        )
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("generations", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("prompt_folded")
        batch.drop_column("instance_id")
    op.drop_index("ix_file_claims_instance_id", table_name="file_claims")
    op.drop_index("ix_file_claims_path", table_name="file_claims")
    op.drop_table("file_claims")
    op.drop_table("instances")
