"""Model registry: registered models, their numbered versions, aliases and the history of alias moves (issue 22).

Revision ID: 0002_registry
Revises: 0001_feedback_store
Create Date: 2026-12-06

Names are spelled out (op.f), as in 0001, so this file creates the same schema whatever the models say later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_registry"
down_revision: str | None = "0001_feedback_store"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
VERSION = ["model_versions.version", "model_versions.model"]


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _one_of(column: str, values: tuple[str, ...], table: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{column}"))


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(64), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_registered_models")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("weights", sa.String(1024), nullable=False),
        sa.Column("base_model", sa.String(1024), nullable=False),
        sa.Column("base_digest", sa.String(64), nullable=False),
        sa.Column("lineage", JSON_DOCUMENT, nullable=False),
        sa.Column("lineage_digest", sa.String(64), nullable=False),
        sa.Column("evaluation", JSON_DOCUMENT, nullable=True),
        _timestamp("created_at"),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.ForeignKeyConstraint(
            ["model"], ["registered_models.name"], name=op.f("fk_model_versions_model_registered_models")
        ),
        sa.UniqueConstraint("model", "version", name=op.f("uq_model_versions_model_version")),
        _one_of("kind", ("lora", "prefix", "ptuning", "full"), "model_versions"),
    )
    op.create_index(op.f("ix_model_versions_model_digest"), "model_versions", ["model", "digest"])
    op.create_table(
        "model_aliases",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _timestamp("updated_at"),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias", name=op.f("pk_model_aliases")),
        sa.ForeignKeyConstraint(["version", "model"], VERSION, name=op.f("fk_model_aliases_version_model_versions")),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
        _timestamp("at"),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_events")),
        sa.ForeignKeyConstraint(
            ["to_version", "model"], VERSION, name=op.f("fk_alias_events_to_version_model_versions")
        ),
        sa.ForeignKeyConstraint(
            ["from_version", "model"], VERSION, name=op.f("fk_alias_events_from_version_model_versions")
        ),
        _one_of("action", ("promote", "rollback"), "alias_events"),
    )
    op.create_index(op.f("ix_alias_events_model_alias_id"), "alias_events", ["model", "alias", "id"])


def downgrade() -> None:
    # Dependents first: aliases and events point at versions, versions at registered models.
    for table in ("alias_events", "model_aliases", "model_versions", "registered_models"):
        op.drop_table(table)
