"""admission tickets: the public studio's queued-or-running jobs, counted across front-ends

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

A public studio admits a few jobs per visitor and per client address (studio/admission.py). With several
front-ends on one gallery the count must be the database's, not one process's: one row per live ticket, naming the
front-end instance holding it, so a dead front-end's tickets go with its instance row (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admission_tickets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("session", sa.String(length=200), nullable=True),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admission_tickets"),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name="fk_admission_tickets_instance_id_instances", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_admission_tickets_owner", "admission_tickets", ["owner"])
    op.create_index("ix_admission_tickets_address", "admission_tickets", ["address"])
    op.create_index("ix_admission_tickets_instance_id", "admission_tickets", ["instance_id"])


def downgrade() -> None:
    op.drop_index("ix_admission_tickets_instance_id", table_name="admission_tickets")
    op.drop_index("ix_admission_tickets_address", table_name="admission_tickets")
    op.drop_index("ix_admission_tickets_owner", table_name="admission_tickets")
    op.drop_table("admission_tickets")
