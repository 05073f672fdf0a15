"""Feedback store: users, conversations, exchanges, feedback, reviews (issue 23).

Revision ID: 0001_feedback_store
Revises:
Create Date: 2026-12-06

Names are spelled out (op.f) rather than left to the naming convention, so this file creates the same schema
whatever the models say later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_feedback_store"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _one_of(column: str, values: tuple[str, ...], table: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{column}"))


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
        _one_of("role", ("user", "reviewer", "admin"), "users"),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_conversations_user_id_users")),
    )
    op.create_index(op.f("ix_conversations_user_id"), "conversations", ["user_id"])
    op.create_table(
        "exchanges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("messages", JSON_DOCUMENT, nullable=False),
        sa.Column("passages", JSON_DOCUMENT, nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchanges")),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], name=op.f("fk_exchanges_conversation_id_conversations")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_exchanges_user_id_users")),
    )
    op.create_index(op.f("ix_exchanges_conversation_id"), "exchanges", ["conversation_id"])
    op.create_index(op.f("ix_exchanges_user_id"), "exchanges", ["user_id"])
    op.create_index(op.f("ix_exchanges_model_version_created_at"), "exchanges", ["model_version", "created_at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exchange_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("thumbs", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("corrected_answer", sa.Text(), nullable=True),
        sa.Column("chosen_exchange_id", sa.Integer(), nullable=True),
        sa.Column("rejected_exchange_id", sa.Integer(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.ForeignKeyConstraint(["exchange_id"], ["exchanges.id"], name=op.f("fk_feedback_exchange_id_exchanges")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_feedback_user_id_users")),
        sa.ForeignKeyConstraint(
            ["chosen_exchange_id"], ["exchanges.id"], name=op.f("fk_feedback_chosen_exchange_id_exchanges")
        ),
        sa.ForeignKeyConstraint(
            ["rejected_exchange_id"], ["exchanges.id"], name=op.f("fk_feedback_rejected_exchange_id_exchanges")
        ),
        _one_of("kind", ("thumbs", "rating", "comment", "correction", "preference"), "feedback"),
        # NULL passes a CHECK, so a row without a reason is allowed by this one.
        _one_of("reason", ("wrong", "not_in_documents", "incomplete", "outdated", "unsafe"), "feedback"),
        sa.CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name=op.f("ck_feedback_rating_range")),
        sa.CheckConstraint("kind != 'thumbs' OR thumbs IS NOT NULL", name=op.f("ck_feedback_thumbs_given")),
        sa.CheckConstraint("kind != 'rating' OR rating IS NOT NULL", name=op.f("ck_feedback_rating_given")),
        sa.CheckConstraint("kind != 'comment' OR comment IS NOT NULL", name=op.f("ck_feedback_comment_given")),
        sa.CheckConstraint(
            "kind != 'correction' OR corrected_answer IS NOT NULL", name=op.f("ck_feedback_correction_given")
        ),
        sa.CheckConstraint(
            "kind != 'preference' OR (chosen_exchange_id IS NOT NULL AND rejected_exchange_id IS NOT NULL "
            "AND chosen_exchange_id != rejected_exchange_id)",
            name=op.f("ck_feedback_preference_pair"),
        ),
        sa.CheckConstraint(
            "reason IS NULL OR (kind = 'thumbs' AND NOT thumbs)", name=op.f("ck_feedback_reason_on_thumbs_down")
        ),
    )
    op.create_index(op.f("ix_feedback_exchange_id"), "feedback", ["exchange_id"])
    op.create_index(op.f("ix_feedback_user_id"), "feedback", ["user_id"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feedback_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("edited_text", sa.Text(), nullable=True),
        _timestamp("decided_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.ForeignKeyConstraint(["feedback_id"], ["feedback.id"], name=op.f("fk_reviews_feedback_id_feedback")),
        sa.ForeignKeyConstraint(["reviewer_id"], ["users.id"], name=op.f("fk_reviews_reviewer_id_users")),
        _one_of("decision", ("accepted", "edited", "rejected"), "reviews"),
        sa.CheckConstraint("decision != 'edited' OR edited_text IS NOT NULL", name=op.f("ck_reviews_edit_given")),
    )
    op.create_index(op.f("ix_reviews_feedback_id"), "reviews", ["feedback_id"])
    op.create_index(op.f("ix_reviews_reviewer_id"), "reviews", ["reviewer_id"])


def downgrade() -> None:
    # Dependents first: reviews point at feedback, feedback at exchanges, exchanges at conversations and users.
    for table in ("reviews", "feedback", "exchanges", "conversations", "users"):
        op.drop_table(table)
