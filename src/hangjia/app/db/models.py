"""Hangjia's tables, as SQLAlchemy 2 typed models: the web app's (issue 23) and the model registry's (issue 22).
Every judgement links to the whole exchange it judges (model version, messages, passages, answer, latency, user,
time), so feedback can become training data with lineage and the A/B report can group it by version.

```
users ◄── conversations ◄── exchanges ◄── feedback ◄── reviews
  ▲                            ▲ ▲           │ │
  └────────────────────────────┼─┼───────────┘ └── chosen / rejected exchange (a preference between two drafts)

registered_models ◄── model_versions ◄── model_aliases      (app/registry.py)
                                     ◄── alias_events
```
Schema changes go through a new migration in migrations/versions/ (tests/app/db checks the two agree).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

Role = Literal["user", "reviewer", "admin"]
FeedbackKind = Literal["thumbs", "rating", "comment", "correction", "preference"]
Reason = Literal["wrong", "not_in_documents", "incomplete", "outdated", "unsafe"]
Decision = Literal["accepted", "edited", "rejected"]
WeightsKind = Literal["lora", "prefix", "ptuning", "full"]
AliasAction = Literal["promote", "rollback"]

# Constraint and index names fixed by rule, so a later migration can name what it alters or drops (SQLite's
# table-copying migrations need names) and both databases get the same ones.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# Long enough for any of the choices above and a few more; a longer one later is a column migration.
CHOICE_LENGTH = 32
# A JSON document: JSONB on PostgreSQL (indexable, binary), JSON (text) on SQLite.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases: PostgreSQL's timestamptz; on SQLite, which keeps no offset,
    the UTC wall time, read back as UTC. A naive datetime is refused: its zone is unknown."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value} has no time zone; store datetime.now(UTC) or another aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def choice(values: Any, name: str) -> Enum:
    """A column holding one of a Literal's values: a string with a CHECK on both databases, not a PostgreSQL ENUM
    type (SQLite has none, and adding a value is then the same table migration on both)."""
    return Enum(
        *get_args(values),
        name=name,
        native_enum=False,
        create_constraint=True,
        length=CHOICE_LENGTH,
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A person who signs in to the web app. Users are deactivated, never deleted: their feedback keeps its author."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    """The password hasher's whole output (algorithm, parameters, salt, hash), e.g. an argon2 or scrypt string."""
    role: Mapped[Role] = mapped_column(choice(Role, "role"), default="user")
    """user: chat and give feedback; reviewer: also the review queue; admin: also users and the dashboard."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    """False: cannot sign in; the rows they made stay."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Conversation(Base):
    """One chat in the web app: the history a user sees and continues."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship()
    exchanges: Mapped[list[Exchange]] = relationship(back_populates="conversation", order_by="Exchange.id")


class Exchange(Base):
    """One question answered: what the model was given and what it said, by which version, how fast. The unit that
    feedback judges and that the A/B report and drift count."""

    __tablename__ = "exchanges"
    # Per version over time: the A/B report, the dashboard, drift windows.
    __table_args__ = (Index("ix_exchanges_model_version_created_at", "model_version", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    """None for an API request (an OpenAI client has no web conversation)."""
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    """None for an API request with no signed-in user."""
    model: Mapped[str] = mapped_column(String(128))
    """The name asked for: `domain`, `base`, `domain@candidate`, a serve.versions name."""
    model_version: Mapped[str] = mapped_column(String(128))
    """What answered: the version that name resolved to (a registry version once it exists, e.g. `domain@3`)."""
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    """The conversation as sent, OpenAI-style [{"role", "content"}, ...], the question last."""
    passages: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    """The retrieved passages put in front of the question, as the API's `citations` (index, chunk_id, source,
    section, page, start, end, text, score, cited); empty without RAG."""
    answer: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)
    """From the request's arrival to the answer's last token."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    conversation: Mapped[Conversation | None] = relationship(back_populates="exchanges")
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="exchange", foreign_keys="Feedback.exchange_id", order_by="Feedback.id"
    )


class Feedback(Base):
    """One judgement of an exchange by a user. `kind` says which fields it fills (CHECKs enforce them): thumbs
    (up/down, a reason when down, maybe a comment), rating (1-5), comment, correction (the user's better answer),
    preference (of two drafts shown side by side, the one picked and the one not)."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating_range"),
        CheckConstraint("kind != 'thumbs' OR thumbs IS NOT NULL", name="thumbs_given"),
        CheckConstraint("kind != 'rating' OR rating IS NOT NULL", name="rating_given"),
        CheckConstraint("kind != 'comment' OR comment IS NOT NULL", name="comment_given"),
        CheckConstraint("kind != 'correction' OR corrected_answer IS NOT NULL", name="correction_given"),
        CheckConstraint(
            "kind != 'preference' OR (chosen_exchange_id IS NOT NULL AND rejected_exchange_id IS NOT NULL "
            "AND chosen_exchange_id != rejected_exchange_id)",
            name="preference_pair",
        ),
        CheckConstraint("reason IS NULL OR (kind = 'thumbs' AND NOT thumbs)", name="reason_on_thumbs_down"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exchange_id: Mapped[int] = mapped_column(ForeignKey("exchanges.id"), index=True)
    """The exchange judged; for a preference, the draft shown first."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[FeedbackKind] = mapped_column(choice(FeedbackKind, "kind"))
    thumbs: Mapped[bool | None] = mapped_column(Boolean)
    """True: up, False: down."""
    reason: Mapped[Reason | None] = mapped_column(choice(Reason, "reason"))
    """Why thumbs down: wrong, not in the documents, incomplete, outdated, unsafe."""
    rating: Mapped[int | None] = mapped_column(Integer)
    """1 (bad) to 5 (good)."""
    comment: Mapped[str | None] = mapped_column(Text)
    corrected_answer: Mapped[str | None] = mapped_column(Text)
    """The answer as the user corrected it."""
    chosen_exchange_id: Mapped[int | None] = mapped_column(ForeignKey("exchanges.id"))
    rejected_exchange_id: Mapped[int | None] = mapped_column(ForeignKey("exchanges.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    exchange: Mapped[Exchange] = relationship(back_populates="feedback", foreign_keys=[exchange_id])
    reviews: Mapped[list[Review]] = relationship(back_populates="feedback", order_by="Review.id")


class Review(Base):
    """A reviewer's decision on a feedback row; only accepted or edited items become training data. A later review
    of the same row overrides an earlier one, and both stay: who decided what, when."""

    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint("decision != 'edited' OR edited_text IS NOT NULL", name="edit_given"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feedback_id: Mapped[int] = mapped_column(ForeignKey("feedback.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    decision: Mapped[Decision] = mapped_column(choice(Decision, "decision"))
    edited_text: Mapped[str | None] = mapped_column(Text)
    """The reviewer's version of the corrected answer, for `edited`."""
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    feedback: Mapped[Feedback] = relationship(back_populates="reviews")


class RegisteredModel(Base):
    """A model that numbered versions are registered under (`domain`). Every registry write first updates its row:
    that UPDATE is the lock that serialises registrations and alias moves of one model (app/registry.py)."""

    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    """The last registration or alias move."""


class ModelVersion(Base):
    """One registered version: its weights (content-addressed, stored once), the base they apply to, and its lineage.
    Never changed once written, except `evaluation`, which a later registration of the same weights and lineage may
    fill in (the model evaluated after it was registered)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model", "version"),
        Index("ix_model_versions_model_digest", "model", "digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(ForeignKey("registered_models.name"))
    version: Mapped[int] = mapped_column(Integer)
    """1, 2, 3, ... per model, in registration order."""
    kind: Mapped[WeightsKind] = mapped_column(choice(WeightsKind, "kind"))
    """lora, prefix or ptuning (a PEFT adapter on `base_model`), or full (a whole model)."""
    digest: Mapped[str] = mapped_column(String(64))
    """sha256 over the weight folder's files (relative path and content, sorted by path)."""
    weights: Mapped[str] = mapped_column(String(1024))
    """Where the weights are, relative to the workspace: registry/blobs/<digest>."""
    base_model: Mapped[str] = mapped_column(String(1024))
    """The base model's folder as training resolved it."""
    base_digest: Mapped[str] = mapped_column(String(64))
    """sha256 over the base model folder's files: a server refuses to put an adapter on another base."""
    lineage: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    """What made the weights: stages' configs and fingerprints, dataset versions, source files' hashes, code version,
    training metrics (app/lineage.py)."""
    lineage_digest: Mapped[str] = mapped_column(String(64))
    """sha256 of the lineage's canonical JSON: the same weights with the same lineage are the same version."""
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    """eval/results.json and the gate's verdict, when the evaluation of these weights is known."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))

    @property
    def ref(self) -> str:
        """`domain@3`: the name a server serves it under."""
        return f"{self.model}@{self.version}"


class ModelAlias(Base):
    """A movable name for one version (`production`, `candidate`); a version may carry several."""

    __tablename__ = "model_aliases"
    # (version, model) rather than (model, version): the naming convention names a foreign key after its first column.
    __table_args__ = (ForeignKeyConstraint(["version", "model"], ["model_versions.version", "model_versions.model"]),)

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


class AliasEvent(Base):
    """One move of an alias, never changed or deleted: the history that `rollback` reads and people audit."""

    __tablename__ = "alias_events"
    __table_args__ = (
        ForeignKeyConstraint(["to_version", "model"], ["model_versions.version", "model_versions.model"]),
        ForeignKeyConstraint(["from_version", "model"], ["model_versions.version", "model_versions.model"]),
        Index("ix_alias_events_model_alias_id", "model", "alias", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    action: Mapped[AliasAction] = mapped_column(choice(AliasAction, "action"))
    from_version: Mapped[int | None] = mapped_column(Integer)
    """Where the alias pointed before; None when this move created it."""
    to_version: Mapped[int] = mapped_column(Integer)
    by: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
