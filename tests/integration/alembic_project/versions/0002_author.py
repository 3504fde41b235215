"""Add notes.author, with an index.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notes") as batch:
        batch.add_column(sa.Column("author", sa.String(80), nullable=True))
        batch.create_index("ix_notes_author", ["author"])
    op.execute("INSERT INTO notes (text, author) VALUES ('created by migration 0002', 'alembic')")


def downgrade() -> None:
    with op.batch_alter_table("notes") as batch:
        batch.drop_index("ix_notes_author")
        batch.drop_column("author")
