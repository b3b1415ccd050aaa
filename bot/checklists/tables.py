"""Database tables for checklist progress (portable SQL: SQLite and PostgreSQL).

One :class:`ChecklistProgress` row per (platform, chat, user, checklist) holds the current step
and timestamps; one :class:`ChecklistStepMark` row per step the user marked holds ``done`` or
``skipped``. Import this module before :meth:`bot.store.db.Database.create_schema`.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.db import Base, UTCDateTime, utcnow

DONE = "done"
SKIPPED = "skipped"


class ChecklistProgress(Base):
    """Where one user stands in one checklist in one chat."""

    __tablename__ = "checklist_progress"
    __table_args__ = (
        UniqueConstraint("platform", "chat_id", "user_id", "checklist_id", name="uq_checklist_progress_owner"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    checklist_id: Mapped[str] = mapped_column(String(32))
    #: index of the step shown next (0-based); equals the step count once finished
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, default=None)


class ChecklistStepMark(Base):
    """How a user left one step: ``done`` or ``skipped`` (no row = not reached yet)."""

    __tablename__ = "checklist_step_marks"

    progress_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("checklist_progress.id", ondelete="CASCADE"), primary_key=True
    )
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(8))
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
