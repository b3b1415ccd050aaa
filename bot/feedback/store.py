"""The question log in the database: record, rate, query for the report, prune.

Every piece of state is a row in the shared database (no process memory), so with several
replicas a rating reaches the right row whichever replica receives the press or the typed 没用.
Times come from an injectable clock (tests fix it).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import and_, case, delete, func, select

from bot.feedback.tables import DOWN, MAX_CITATION_CHARS, MAX_QUESTION_CHARS, UP, QuestionLogRow
from bot.store.db import Database, utcnow

_T = QuestionLogRow


@dataclass(frozen=True)
class Asked:
    """What is recorded about one question (the log's columns, without id and rating)."""

    platform: str
    chat_id: str
    chat_type: str
    user_id: str
    question: str
    refused: bool
    citation: str | None
    document: str | None
    mode: str
    latency_ms: float


@dataclass(frozen=True)
class Logged:
    """One row of the log as the feature, the report and the CSV see it."""

    id: int
    at: datetime
    platform: str
    chat_id: str
    chat_type: str
    user_id: str
    question: str
    refused: bool
    citation: str | None
    document: str | None
    mode: str
    latency_ms: int
    rating: str | None


class Rated(str, Enum):
    """The outcome of a rating."""

    NEW = "new"  # first rating of this answer
    CHANGED = "changed"  # a different rating replaced the earlier one
    SAME = "same"  # the same rating again
    FOREIGN = "foreign"  # another member's answer: nothing changed
    GONE = "gone"  # older than the retention (or pruned): nothing changed
    INVALID = "invalid"  # no such answer in this chat, or a refusal: nothing changed


@dataclass(frozen=True)
class Totals:
    questions: int
    refused: int
    up: int
    down: int

    @property
    def answered(self) -> int:
        return self.questions - self.refused


def _logged(row: QuestionLogRow) -> Logged:
    return Logged(row.id, row.at, row.platform, row.chat_id, row.chat_type, row.user_id, row.question,
                  row.refused, row.citation, row.document, row.mode, row.latency_ms, row.rating)


class QuestionStore:
    """The log for ``days`` days (0: nothing is recorded and stored rows go at the next prune)."""

    def __init__(self, db: Database, days: int, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.days = max(0, days)
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return self.days > 0

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.days)

    # ------------------------------------------------------------------ writing
    def record(self, asked: Asked) -> tuple[int, bool] | None:
        """Store one question (cut to 500 characters); its id and whether it is the first answer
        (not refusal) kept for its chat. None when logging is off."""
        if not self.enabled:
            return None
        row = _T(at=self.clock(), platform=asked.platform, chat_id=asked.chat_id, chat_type=asked.chat_type,
                 user_id=asked.user_id, question=asked.question[:MAX_QUESTION_CHARS], refused=asked.refused,
                 citation=(asked.citation or None) and asked.citation[:MAX_CITATION_CHARS],
                 document=(asked.document or None) and asked.document[:MAX_CITATION_CHARS],
                 mode=asked.mode[:16], latency_ms=max(0, round(asked.latency_ms)))
        with self.db.session() as s:
            s.add(row)
            s.flush()
            earlier = s.scalar(select(func.count()).select_from(_T).where(
                _T.platform == asked.platform, _T.chat_id == asked.chat_id, _T.refused.is_(False), _T.id < row.id))
            return row.id, not earlier

    def rate(self, answer_id: int, platform: str, chat_id: str, user_id: str, rating: str) -> Rated:
        """Rate answer ``answer_id`` as ``rating`` (up/down) for this user in this chat; the last
        rating wins. Anything but the asker's own answer in this chat changes nothing."""
        assert rating in (UP, DOWN)
        with self.db.session() as s:
            row = s.get(_T, answer_id)
            if row is None:
                return Rated.GONE if self.enabled else Rated.INVALID
            if (row.platform, row.chat_id) != (platform, chat_id) or row.refused:
                return Rated.INVALID
            if row.user_id != user_id:
                return Rated.FOREIGN
            now = self.clock()
            if not self.enabled or row.at < now - self.retention:
                return Rated.GONE
            before, row.rating, row.rated_at = row.rating, rating, now
            return Rated.NEW if before is None else Rated.SAME if before == rating else Rated.CHANGED

    def prune(self) -> int:
        """Delete rows older than the retention (all of them when logging is off)."""
        cutoff = self.clock() - self.retention
        with self.db.session() as s:
            return s.execute(delete(_T).where(_T.at < cutoff) if self.enabled else delete(_T)).rowcount

    # ------------------------------------------------------------------ reading
    def latest(self, platform: str, chat_id: str, user_id: str, within: timedelta) -> Logged | None:
        """This user's latest question in this chat asked within ``within``."""
        since = self.clock() - within
        with self.db.session() as s:
            row = s.scalars(select(_T).where(_T.platform == platform, _T.chat_id == chat_id, _T.user_id == user_id,
                                             _T.at >= since).order_by(_T.at.desc(), _T.id.desc()).limit(1)).first()
            return _logged(row) if row is not None else None

    def rows(self, since: datetime) -> list[Logged]:
        """Every row since ``since``, oldest first (the CSV)."""
        with self.db.session() as s:
            return [_logged(r) for r in s.scalars(select(_T).where(_T.at >= since).order_by(_T.at, _T.id))]

    def totals(self, since: datetime) -> Totals:
        with self.db.session() as s:
            q, r, u, d = s.execute(select(
                func.count(), func.sum(case((_T.refused.is_(True), 1), else_=0)),
                func.sum(case((_T.rating == UP, 1), else_=0)), func.sum(case((_T.rating == DOWN, 1), else_=0)),
            ).where(_T.at >= since)).one()
        return Totals(q or 0, r or 0, u or 0, d or 0)

    def per_platform(self, since: datetime) -> list[tuple[str, int]]:
        with self.db.session() as s:
            return [(p, n) for p, n in s.execute(select(_T.platform, func.count()).where(_T.at >= since)
                                                 .group_by(_T.platform).order_by(func.count().desc(), _T.platform))]

    def cited_documents(self, since: datetime, limit: int) -> list[tuple[str, int]]:
        with self.db.session() as s:
            n = func.count()
            return [(d, c) for d, c in s.execute(
                select(_T.document, n).where(_T.at >= since, _T.refused.is_(False), _T.document.is_not(None))
                .group_by(_T.document).order_by(n.desc(), _T.document).limit(limit))]

    def refused_questions(self, since: datetime) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(_T.question).where(_T.at >= since, _T.refused.is_(True)).order_by(_T.at)))

    def rated(self, since: datetime, rating: str) -> list[tuple[str, str | None]]:
        """(question, citation) of the answers rated ``rating``, latest first."""
        with self.db.session() as s:
            return [(q, c) for q, c in s.execute(
                select(_T.question, _T.citation).where(and_(_T.at >= since, _T.rating == rating))
                .order_by(_T.at.desc(), _T.id.desc()))]
