"""Checklist progress in the database: start, resume, advance, go back, start over.

Every change is one conditional ``UPDATE … WHERE current_step = :expected AND finished_at IS NULL``,
so a stale or duplicated button press (完成 pressed twice, two replicas handling the same press)
changes nothing: only the first matching update sees the expected step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.checklists.tables import DONE, SKIPPED, ChecklistProgress, ChecklistStepMark
from bot.store.db import Database, utcnow


class Move(str, Enum):
    """What a user can do to the current step."""

    DONE = "done"
    SKIP = "skip"
    BACK = "back"


@dataclass(frozen=True)
class ProgressKey:
    """Progress belongs to one user, in one chat, on one platform, for one checklist."""

    platform: str
    chat_id: str
    user_id: str
    checklist_id: str


class Progress(BaseModel):
    """A snapshot of one progress row and its step marks."""

    model_config = ConfigDict(frozen=True)

    checklist_id: str
    current_step: int  # 0-based; equals the step count once finished
    marks: dict[int, str]  # step index → "done" / "skipped"
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def indices(self, status: str) -> list[int]:
        return sorted(i for i, s in self.marks.items() if s == status)


class ProgressStore:
    """Reads and changes checklist progress; every method is one short transaction."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self._clock = clock

    # Reading ---------------------------------------------------------------
    def get(self, key: ProgressKey) -> Progress | None:
        """The user's progress in this checklist, or None if never started (or reset away)."""
        with self.db.session() as s:
            return _read(s, key)

    def for_user(self, platform: str, chat_id: str, user_id: str) -> list[Progress]:
        """All of a user's checklists in one chat, most recently touched first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(ChecklistProgress)
                .where(
                    ChecklistProgress.platform == platform,
                    ChecklistProgress.chat_id == chat_id,
                    ChecklistProgress.user_id == user_id,
                )
                .order_by(ChecklistProgress.updated_at.desc(), ChecklistProgress.id.desc())
            ).all()
            return [_snapshot(s, row) for row in rows]

    # Changing --------------------------------------------------------------
    def start(self, key: ProgressKey, size: int) -> Progress:
        """Resume the user's progress, or start at step 0 if there is none.

        ``size`` is the checklist's current step count: if the checklist shrank since the user
        started, an unfinished progress past its end is moved back to the last step.
        """
        existing = self.get(key)
        if existing is None:
            existing = self._create(key)
        if not existing.finished and existing.current_step >= size > 0:
            with self.db.session() as s:
                s.execute(
                    update(ChecklistProgress)
                    .where(*_owner(key), ChecklistProgress.finished_at.is_(None))
                    .values(current_step=size - 1)
                    .execution_options(synchronize_session=False)
                )
            existing = self.get(key) or existing
        return existing

    def restart(self, key: ProgressKey) -> Progress:
        """Forget the user's progress in this checklist and start again at step 0."""
        with self.db.session() as s:
            ids = select(ChecklistProgress.id).where(*_owner(key)).scalar_subquery()
            s.execute(delete(ChecklistStepMark).where(ChecklistStepMark.progress_id.in_(ids)))
            s.execute(delete(ChecklistProgress).where(*_owner(key)))
        return self._create(key)

    def apply(self, key: ProgressKey, expected_step: int, move: Move, size: int) -> Progress | None:
        """Apply a move made on step ``expected_step``; None when it no longer applies.

        The update only happens if the user is still on ``expected_step`` of an unfinished
        checklist, so pressing 完成 twice advances once. ``done``/``skip`` mark the step and move
        on (finishing after the last step); ``back`` returns to the previous step and keeps marks.
        """
        if not 0 <= expected_step < size:
            return None
        if move is Move.BACK and expected_step == 0:
            return None
        now = self._clock()
        new_step = expected_step - 1 if move is Move.BACK else expected_step + 1
        values: dict[str, object] = {"current_step": new_step, "updated_at": now}
        if new_step >= size:
            values["finished_at"] = now
        with self.db.session() as s:
            # The conditional UPDATE is the transaction's first statement: on SQLite it takes the
            # write lock before anything is read, on PostgreSQL it locks the row and re-checks.
            result = s.connection().execute(
                update(ChecklistProgress)
                .where(
                    *_owner(key),
                    ChecklistProgress.current_step == expected_step,
                    ChecklistProgress.finished_at.is_(None),
                )
                .values(**values)
            )
            if result.rowcount != 1:
                return None
            if move is not Move.BACK:
                progress_id = s.scalar(select(ChecklistProgress.id).where(*_owner(key)))
                status = DONE if move is Move.DONE else SKIPPED
                mark = s.get(ChecklistStepMark, (progress_id, expected_step))
                if mark is None:
                    s.add(ChecklistStepMark(
                        progress_id=progress_id, step_index=expected_step, status=status, marked_at=now,
                    ))
                else:
                    mark.status = status
                    mark.marked_at = now
                s.flush()
            return _read(s, key)

    def _create(self, key: ProgressKey) -> Progress:
        now = self._clock()
        try:
            with self.db.session() as s:
                s.add(ChecklistProgress(
                    platform=key.platform, chat_id=key.chat_id, user_id=key.user_id,
                    checklist_id=key.checklist_id, current_step=0, started_at=now, updated_at=now,
                ))
        except IntegrityError:
            pass  # started concurrently by another request: use that row
        progress = self.get(key)
        if progress is None:  # pragma: no cover - deleted in between by a concurrent reset
            raise RuntimeError("checklist progress vanished while starting")
        return progress


def _owner(key: ProgressKey) -> tuple:
    return (
        ChecklistProgress.platform == key.platform,
        ChecklistProgress.chat_id == key.chat_id,
        ChecklistProgress.user_id == key.user_id,
        ChecklistProgress.checklist_id == key.checklist_id,
    )


def _read(s: Session, key: ProgressKey) -> Progress | None:
    row = s.scalars(
        select(ChecklistProgress).where(*_owner(key)).execution_options(populate_existing=True)
    ).first()
    return None if row is None else _snapshot(s, row)


def _snapshot(s: Session, row: ChecklistProgress) -> Progress:
    marks = s.execute(
        select(ChecklistStepMark.step_index, ChecklistStepMark.status)
        .where(ChecklistStepMark.progress_id == row.id)
    ).all()
    return Progress(
        checklist_id=row.checklist_id, current_step=row.current_step,
        marks={index: status for index, status in marks},
        started_at=_aware(row.started_at), updated_at=_aware(row.updated_at),
        finished_at=None if row.finished_at is None else _aware(row.finished_at),
    )


def _aware(moment: datetime) -> datetime:
    """UTC-aware datetime; SQLite may hand back naive UTC values despite ``UTCDateTime``."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
