"""Tables of the meetings feature (import this module before ``Database.create_schema``).

``meetings`` holds one row per ``/meeting add`` (a recurring meeting is one row with its rule);
``meeting_reminders`` holds one row per (occurrence, offset), created when the meeting is added
and, for recurring meetings, as later occurrences come within the horizon. The unique constraint
makes that materialisation idempotent across replicas. All datetimes are UTC.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.db import Base, UTCDateTime, utcnow

# Meeting.status
LIVE = "live"
CANCELLED = "cancelled"

# MeetingReminder.status
PENDING = "pending"  # not sent yet (possibly claimed: see claimed_by / claim_expires_at)
SENT = "sent"
MISSED = "missed"  # fell due more than the grace period ago without being sent
DROPPED = "cancelled"  # its meeting was cancelled


class MeetingRow(Base):
    __tablename__ = "meetings"
    __table_args__ = (Index("ix_meetings_chat", "platform", "chat_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    chat_type: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(128))  # who registered it
    meeting_type: Mapped[str] = mapped_column(String(40))
    place: Mapped[str] = mapped_column(String(200))
    topic: Mapped[str] = mapped_column(String(600))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())  # first occurrence
    recurrence: Mapped[str | None] = mapped_column(String(300), nullable=True)  # Recurrence JSON
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=LIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelled_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Recurring only: reminders exist for every occurrence up to this instant.
    materialised_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Bumped with every extension: the compare-and-set token (integers compare exactly everywhere).
    materialise_version: Mapped[int] = mapped_column(Integer, default=0)


class ReminderRow(Base):
    __tablename__ = "meeting_reminders"
    __table_args__ = (
        UniqueConstraint("meeting_id", "occurs_at", "offset_seconds", name="uq_meeting_reminder"),
        Index("ix_meeting_reminders_due", "status", "remind_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meeting_id: Mapped[int] = mapped_column(ForeignKey("meetings.id"), index=True)
    occurs_at: Mapped[datetime] = mapped_column(UTCDateTime())
    offset_seconds: Mapped[int] = mapped_column(Integer)
    remind_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    claimed_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # missed/cancelled
