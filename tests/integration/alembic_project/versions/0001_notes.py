"""Create the notes table.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.String(200), nullable=False),
    )
    # The tests widen the window between the read of alembic_version and the commit, so that
    # two concurrent upgrades really overlap.
    time.sleep(float(os.environ.get("MIGRATION_DELAY", "0")))


def downgrade() -> None:
    op.drop_table("notes")
