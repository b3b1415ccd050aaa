"""Storage of meetings and their reminders (synchronous; portable SQLite / PostgreSQL SQL).

Reminder delivery is made exclusive by *claims*: :meth:`MeetingRepo.claim` is one conditional
``UPDATE … WHERE status='pending' AND (claim_expires_at IS NULL OR claim_expires_at < now)``;
the database serialises concurrent updates of a row (SQLite: one writer at a time; PostgreSQL:
the second UPDATE waits for the first and re-checks its WHERE clause under READ COMMITTED), so
exactly one process/replica sees ``rowcount == 1``. A claim is a lease: if its holder dies, the
row becomes claimable again after ``claim_expires_at`` — but only while it is still ``pending``,
never once it has been marked ``sent``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.core.errors import StorageUnavailable
from bot.core.models import ChatRef, ChatType
from bot.meetings.parse import MeetingDraft, Recurrence
from bot.meetings.tables import CANCELLED, DROPPED, LIVE, MISSED, PENDING, SENT, MeetingRow, ReminderRow
from bot.store.db import Database

log = logging.getLogger(__name__)

_M = MeetingRow.__table__
_R = ReminderRow.__table__
_ONE_US = timedelta(microseconds=1)
MAX_OCCURRENCES_PER_PASS = 500


class MeetingInfo(BaseModel):
    """A meeting as the feature and the scheduler see it."""

    id: int
    ref: ChatRef
    meeting_type: str
    place: str
    topic: str
    starts_at: datetime  # UTC; the first occurrence of a recurring meeting
    recurrence: Recurrence | None = None
    timezone: str
    status: str
    created_at: datetime

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def live(self) -> bool:
        return self.status == LIVE

    def next_occurrence(self, now: datetime) -> datetime | None:
        """The next start strictly after ``now`` (None for a one-off meeting in the past)."""
        if self.recurrence is None:
            return self.starts_at if self.starts_at > now else None
        return self.recurrence.next_after(self.tz, max(now, self.starts_at - _ONE_US))

    def occurrences_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Starts in ``[start, end)`` (never before the first occurrence)."""
        if self.recurrence is None:
            return [self.starts_at] if start <= self.starts_at < end else []
        after = max(start, self.starts_at) - _ONE_US
        return [t for t in self.recurrence.occurrences(self.tz, after, end) if t < end]


class ReminderInfo(BaseModel):
    id: int
    meeting_id: int
    occurs_at: datetime
    offset_seconds: int
    remind_at: datetime
    status: str
    late: bool
    attempts: int
    claimed_by: str | None = None
    claim_expires_at: datetime | None = None
    sent_at: datetime | None = None


class DueReminder(BaseModel):
    """A reminder this process has claimed, with its meeting."""

    reminder: ReminderInfo
    meeting: MeetingInfo


def as_utc(value: datetime | None) -> datetime | None:
    """Aware UTC for any datetime read from or about to be written to the database.

    Naive values are taken as UTC: that is what UTCDateTime stores, and some backends/driver
    combinations return it without the offset.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _meeting_info(row) -> MeetingInfo:  # a MeetingRow or a Row of the meetings table
    return MeetingInfo(
        id=row.id,
        ref=ChatRef(platform=row.platform, chat_id=row.chat_id, chat_type=ChatType(row.chat_type), user_id=row.user_id),
        meeting_type=row.meeting_type, place=row.place, topic=row.topic, starts_at=as_utc(row.starts_at),
        recurrence=Recurrence.model_validate_json(row.recurrence) if row.recurrence else None,
        timezone=row.timezone, status=row.status, created_at=as_utc(row.created_at),
    )


def _reminder_info(row) -> ReminderInfo:
    return ReminderInfo(
        id=row.id, meeting_id=row.meeting_id, occurs_at=as_utc(row.occurs_at), offset_seconds=row.offset_seconds,
        remind_at=as_utc(row.remind_at), status=row.status, late=bool(row.late), attempts=row.attempts or 0,
        claimed_by=row.claimed_by, claim_expires_at=as_utc(row.claim_expires_at), sent_at=as_utc(row.sent_at),
    )


def _claim_free(now: datetime):
    return or_(_R.c.claim_expires_at.is_(None), _R.c.claim_expires_at < now)


class MeetingRepo:
    """All database access of the meetings feature."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ meetings
    def add(
        self,
        ref: ChatRef,
        draft: MeetingDraft,
        *,
        timezone_name: str,
        offsets: Sequence[timedelta],
        now: datetime,
        horizon: timedelta,
    ) -> tuple[MeetingInfo, list[ReminderInfo]]:
        """Store a meeting and the reminders of its first occurrence(s).

        Offsets whose reminder time is already past are not scheduled (a meeting added one hour
        ahead with offsets 1d,2h gets no reminder at all).
        """
        with self.db.session() as s:
            row = MeetingRow(
                platform=ref.platform, chat_id=ref.chat_id, chat_type=ref.chat_type.value, user_id=ref.user_id,
                meeting_type=draft.meeting_type, place=draft.place, topic=draft.topic,
                starts_at=draft.starts_at, timezone=timezone_name, status=LIVE, created_at=now, materialise_version=0,
                recurrence=draft.recurrence.model_dump_json() if draft.recurrence else None,
            )
            s.add(row)
            s.flush()
            info = _meeting_info(row)
            if draft.recurrence is None:
                occurrences = [draft.starts_at]
            else:
                bound = max(draft.starts_at, now + horizon)
                occurrences = info.occurrences_between(draft.starts_at, bound + _ONE_US)[:MAX_OCCURRENCES_PER_PASS]
                row.materialised_until = bound
                row.materialise_version = 1
            reminders: list[ReminderRow] = []
            for occurs_at in occurrences:
                for offset in offsets:
                    remind_at = occurs_at - offset
                    if remind_at > now:
                        reminders.append(self._new_reminder(row.id, occurs_at, offset, remind_at))
            s.add_all(reminders)
            s.flush()
            return info, sorted((_reminder_info(r) for r in reminders), key=lambda r: r.remind_at)

    @staticmethod
    def _new_reminder(meeting_id: int, occurs_at: datetime, offset: timedelta, remind_at: datetime) -> ReminderRow:
        return ReminderRow(
            meeting_id=meeting_id, occurs_at=occurs_at, offset_seconds=int(offset.total_seconds()),
            remind_at=remind_at, status=PENDING, attempts=0, late=False,
        )

    def get(self, meeting_id: int) -> MeetingInfo | None:
        with self.db.session() as s:
            row = s.get(MeetingRow, meeting_id)
            return _meeting_info(row) if row else None

    def get_in_chat(self, meeting_id: int, platform: str, chat_id: str) -> MeetingInfo | None:
        """The meeting if it belongs to this chat (any status), else None."""
        with self.db.session() as s:
            row = s.scalars(
                select(MeetingRow).where(
                    MeetingRow.id == meeting_id, MeetingRow.platform == platform, MeetingRow.chat_id == chat_id
                )
            ).first()
            return _meeting_info(row) if row else None

    def upcoming(self, platform: str, chat_id: str, now: datetime) -> list[MeetingInfo]:
        """Live meetings of the chat that still have an occurrence after ``now``, soonest first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(MeetingRow).where(
                    MeetingRow.platform == platform, MeetingRow.chat_id == chat_id, MeetingRow.status == LIVE,
                    or_(MeetingRow.recurrence.is_not(None), MeetingRow.starts_at > now),
                )
            ).all()
            infos = [_meeting_info(r) for r in rows]
        pairs = [(m.next_occurrence(now), m) for m in infos]
        return [m for at, m in sorted((p for p in pairs if p[0] is not None), key=lambda p: (p[0], p[1].id))]

    def live_since(self, platform: str, chat_id: str, since: datetime) -> list[MeetingInfo]:
        """Live meetings of the chat that may have an occurrence at or after ``since`` (for plans)."""
        with self.db.session() as s:
            rows = s.scalars(
                select(MeetingRow).where(
                    MeetingRow.platform == platform, MeetingRow.chat_id == chat_id, MeetingRow.status == LIVE,
                    or_(MeetingRow.recurrence.is_not(None), MeetingRow.starts_at >= since),
                ).order_by(MeetingRow.starts_at, MeetingRow.id)
            ).all()
            return [_meeting_info(r) for r in rows]

    def cancel(self, meeting_id: int, platform: str, chat_id: str, by_user: str, now: datetime) -> tuple[str, MeetingInfo | None]:
        """Cancel a chat's meeting: ("cancelled" | "already" | "not_found", meeting).

        Its pending reminders become ``cancelled`` in the same transaction, and the scheduler
        only claims reminders of live meetings, so none is sent afterwards.
        """
        info = self.get_in_chat(meeting_id, platform, chat_id)
        if info is None:
            return "not_found", None
        with self.db.session() as s:
            res = s.execute(
                update(_M).where(_M.c.id == meeting_id, _M.c.status == LIVE)
                .values(status=CANCELLED, cancelled_at=now, cancelled_by=by_user)
            )
            if res.rowcount != 1:
                return "already", info
            s.execute(
                update(_R).where(_R.c.meeting_id == meeting_id, _R.c.status == PENDING)
                .values(status=DROPPED, closed_at=now)
            )
        return "cancelled", info.model_copy(update={"status": CANCELLED})

    def reminders_for(self, meeting_id: int) -> list[ReminderInfo]:
        with self.db.session() as s:
            rows = s.scalars(
                select(ReminderRow).where(ReminderRow.meeting_id == meeting_id).order_by(ReminderRow.remind_at, ReminderRow.id)
            ).all()
            return [_reminder_info(r) for r in rows]

    # ------------------------------------------------------------------ recurring meetings
    def materialise(self, now: datetime, offsets: Sequence[timedelta], horizon: timedelta) -> int:
        """Create reminders for occurrences of recurring meetings that came within the horizon.

        Safe to run in several replicas at once: ``materialised_until`` is advanced with a
        compare-and-set on ``materialise_version`` in the same transaction as the inserts, so only one replica inserts a
        given window (and the unique constraint backs that up). Reminders whose time is already
        past (the bot was down) are created anyway; the scheduler sends them late within the
        grace period or records them as missed.
        """
        bound = now + horizon
        with self.db.session() as s:
            rows = s.execute(
                select(_M).where(
                    _M.c.status == LIVE, _M.c.recurrence.is_not(None),
                    or_(_M.c.materialised_until.is_(None), _M.c.materialised_until < bound),
                )
            ).all()
        created = 0
        for row in rows:
            info = _meeting_info(row)
            old = as_utc(row.materialised_until)
            version = row.materialise_version
            start = (old + _ONE_US) if old is not None else info.starts_at
            occurrences = info.occurrences_between(start, bound + _ONE_US)[:MAX_OCCURRENCES_PER_PASS]
            new_until = occurrences[-1] if len(occurrences) == MAX_OCCURRENCES_PER_PASS else bound
            try:
                with self.db.session() as s:
                    res = s.execute(
                        update(_M)
                        .where(_M.c.id == info.id, _M.c.status == LIVE, _M.c.materialise_version == version)
                        .values(materialised_until=new_until, materialise_version=version + 1)
                    )
                    if res.rowcount != 1:
                        continue  # another replica did it (or it was cancelled)
                    new = [
                        self._new_reminder(info.id, at, off, at - off) for at in occurrences for off in offsets
                    ]
                    s.add_all(new)
                    created += len(new)
            except (IntegrityError, StorageUnavailable) as exc:
                log.info("materialising meeting %s skipped (another process?): %s", info.id, type(exc).__name__)
        return created

    # ------------------------------------------------------------------ delivery
    def sweep_missed(self, now: datetime, grace: timedelta) -> list[ReminderInfo]:
        """Mark pending, unclaimed reminders older than the grace period as missed."""
        cutoff = now - grace
        with self.db.session() as s:
            ids = s.scalars(
                select(_R.c.id).where(_R.c.status == PENDING, _R.c.remind_at < cutoff, _claim_free(now))
            ).all()
        missed: list[ReminderInfo] = []
        for rid in ids:
            with self.db.session() as s:
                res = s.execute(
                    update(_R).where(_R.c.id == rid, _R.c.status == PENDING, _R.c.remind_at < cutoff, _claim_free(now))
                    .values(status=MISSED, closed_at=now)
                )
                if res.rowcount == 1:
                    missed.append(_reminder_info(s.execute(select(_R).where(_R.c.id == rid)).one()))
        return missed

    def due_ids(self, now: datetime, grace: timedelta, platforms: Sequence[str], limit: int = 50) -> list[int]:
        """Unclaimed pending reminders due now (within grace) whose platform this process serves."""
        if not platforms:
            return []
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(_R.c.id)
                    .join(_M, _M.c.id == _R.c.meeting_id)
                    .where(
                        _R.c.status == PENDING, _R.c.remind_at <= now, _R.c.remind_at >= now - grace,
                        _claim_free(now), _M.c.status == LIVE, _M.c.platform.in_(list(platforms)),
                    )
                    .order_by(_R.c.remind_at, _R.c.id)
                    .limit(limit)
                ).all()
            )

    def claim(self, reminder_id: int, owner: str, now: datetime, lease: timedelta) -> DueReminder | None:
        """Atomically take a pending reminder of a live meeting for ``lease``; None if someone else has it."""
        stmt = (
            update(_R)
            .where(
                _R.c.id == reminder_id, _R.c.status == PENDING, _claim_free(now),
                exists().where(and_(_M.c.id == _R.c.meeting_id, _M.c.status == LIVE)),
            )
            .values(claimed_by=owner, claim_expires_at=now + lease, attempts=_R.c.attempts + 1)
        )
        try:
            with self.db.session() as s:
                if s.execute(stmt).rowcount != 1:
                    return None
                r = s.execute(select(_R).where(_R.c.id == reminder_id)).one()
                m = s.execute(select(_M).where(_M.c.id == r.meeting_id)).one()
                return DueReminder(reminder=_reminder_info(r), meeting=_meeting_info(m))
        except StorageUnavailable as exc:  # e.g. SQLite busy beyond busy_timeout: try next tick
            log.warning("claiming reminder %s failed: %s", reminder_id, exc)
            return None

    def mark_sent(self, reminder_id: int, now: datetime, late: bool) -> bool:
        """Record a delivered reminder. Conditional on ``pending`` only (not on the claimer), so
        that a delivery is recorded even if the lease ran out meanwhile."""
        with self.db.session() as s:
            res = s.execute(
                update(_R).where(_R.c.id == reminder_id, _R.c.status == PENDING)
                .values(status=SENT, sent_at=now, late=late, last_error=None)
            )
            return res.rowcount == 1

    def release(self, reminder_id: int, owner: str, *, error: str | None, retry_at: datetime | None) -> None:
        """Give a claim back: free at once (``retry_at`` None) or held until ``retry_at`` (backoff)."""
        values: dict[str, object] = {"claim_expires_at": retry_at}
        if error is not None:
            values["last_error"] = error[:300]
        with self.db.session() as s:
            s.execute(
                update(_R).where(_R.c.id == reminder_id, _R.c.status == PENDING, _R.c.claimed_by == owner).values(**values)
            )

    def close_claimed(self, reminder_id: int, owner: str, status: str, now: datetime) -> bool:
        """Close a reminder this process holds (``missed`` or ``cancelled``)."""
        with self.db.session() as s:
            res = s.execute(
                update(_R).where(_R.c.id == reminder_id, _R.c.status == PENDING, _R.c.claimed_by == owner)
                .values(status=status, closed_at=now)
            )
            return res.rowcount == 1
