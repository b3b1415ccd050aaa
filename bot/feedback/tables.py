"""The question log table (portable SQL: SQLite and PostgreSQL).

One :class:`QuestionLogRow` per answered or refused question; the member's rating of the answer
is written into the same row, so a rating reaches the right row whichever replica receives it.
Import this module before :meth:`bot.store.db.Database.create_schema`.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.db import Base, UTCDateTime, utcnow

UP = "up"  # 有用
DOWN = "down"  # 没用
MAX_QUESTION_CHARS = 500
MAX_CITATION_CHARS = 300


class QuestionLogRow(Base):
    """One question, how it was answered, and how the member rated the answer."""

    __tablename__ = "question_log"
    __table_args__ = (Index("ix_question_log_asker", "platform", "chat_id", "user_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    chat_type: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(128))
    question: Mapped[str] = mapped_column(String(MAX_QUESTION_CHARS))
    refused: Mapped[bool] = mapped_column(Boolean)
    citation: Mapped[str | None] = mapped_column(String(MAX_CITATION_CHARS), nullable=True)  # 《…》第十八条
    document: Mapped[str | None] = mapped_column(String(MAX_CITATION_CHARS), nullable=True)  # its title
    mode: Mapped[str] = mapped_column(String(16))  # extractive | llm
    latency_ms: Mapped[int] = mapped_column(Integer)
    rating: Mapped[str | None] = mapped_column(String(8), nullable=True)  # up | down
    rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
