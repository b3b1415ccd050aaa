"""Progress store tests on a real SQLite file: advance, skip, back, finish, resume after a restart,
duplicate and concurrent presses, other users, out-of-range moves."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.checklists import tables  # noqa: F401  (registers the tables)
from bot.checklists.progress import Move, ProgressKey, ProgressStore
from bot.store.db import Database

SIZE = 4
KEY = ProgressKey(platform="telegram", chat_id="100", user_id="u1", checklist_id="zzshh")


class Clock:
    """Injected clock: every call returns a time one minute later than the last."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 2, 8, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def open_db(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    db.create_schema()
    return db


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bot.db"


@pytest.fixture
def store(db_path: Path) -> ProgressStore:
    return ProgressStore(open_db(db_path), Clock())


def test_start_done_skip_back(store: ProgressStore) -> None:
    assert store.get(KEY) is None
    p = store.start(KEY, SIZE)
    assert (p.current_step, p.marks, p.finished) == (0, {}, False)

    p = store.apply(KEY, 0, Move.DONE, SIZE)
    assert p is not None and (p.current_step, p.marks) == (1, {0: "done"})
    p = store.apply(KEY, 1, Move.SKIP, SIZE)
    assert p is not None and (p.current_step, p.marks) == (2, {0: "done", 1: "skipped"})
    p = store.apply(KEY, 2, Move.BACK, SIZE)
    assert p is not None and p.current_step == 1
    assert p.marks == {0: "done", 1: "skipped"}  # going back keeps what was recorded
    p = store.apply(KEY, 1, Move.DONE, SIZE)  # redo the skipped step
    assert p is not None and (p.current_step, p.marks) == (2, {0: "done", 1: "done"})
    assert store.start(KEY, SIZE).current_step == 2  # start resumes, it does not reset


def test_finishing_sets_finished_and_refuses_more_moves(store: ProgressStore) -> None:
    store.start(KEY, SIZE)
    for i in range(SIZE):
        p = store.apply(KEY, i, Move.SKIP if i == 2 else Move.DONE, SIZE)
        assert p is not None
    assert p.finished and p.current_step == SIZE
    assert p.indices("done") == [0, 1, 3] and p.indices("skipped") == [2]
    assert p.finished_at is not None and p.finished_at.tzinfo is not None
    assert store.apply(KEY, SIZE - 1, Move.DONE, SIZE) is None
    assert store.apply(KEY, SIZE - 1, Move.BACK, SIZE) is None
    assert store.get(KEY) == p


def test_progress_survives_a_restart(db_path: Path) -> None:
    clock = Clock()
    first = ProgressStore(open_db(db_path), clock)
    first.start(KEY, SIZE)
    first.apply(KEY, 0, Move.DONE, SIZE)
    first.apply(KEY, 1, Move.SKIP, SIZE)
    before = first.get(KEY)
    first.db.engine.dispose()

    second = ProgressStore(open_db(db_path), clock)  # a new process on the same file
    after = second.get(KEY)
    assert after == before
    assert after is not None and after.current_step == 2 and after.marks == {0: "done", 1: "skipped"}
    assert after.started_at == datetime(2025, 1, 2, 8, 1, tzinfo=timezone.utc)
    assert after.updated_at == datetime(2025, 1, 2, 8, 3, tzinfo=timezone.utc)
    assert second.apply(KEY, 2, Move.DONE, SIZE) is not None


def test_double_press_advances_once(store: ProgressStore) -> None:
    store.start(KEY, SIZE)
    assert store.apply(KEY, 0, Move.DONE, SIZE) is not None
    assert store.apply(KEY, 0, Move.DONE, SIZE) is None  # same press again: stale
    assert store.apply(KEY, 0, Move.SKIP, SIZE) is None
    p = store.get(KEY)
    assert p is not None and p.current_step == 1 and p.marks == {0: "done"}


def test_concurrent_presses_from_two_replicas_advance_once(db_path: Path) -> None:
    """Two Database objects (two replicas) apply the same press at the same moment, repeatedly."""
    stores = [ProgressStore(open_db(db_path)), ProgressStore(open_db(db_path))]
    stores[0].start(KEY, 50)
    for step in range(15):
        barrier = threading.Barrier(2)
        results: list[object] = []

        def press(s: ProgressStore, step: int = step, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            results.append(s.apply(KEY, step, Move.DONE, 50))

        threads = [threading.Thread(target=press, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is not None for r in results) == 1, step
    p = stores[0].get(KEY)
    assert p is not None and p.current_step == 15 and sorted(p.marks) == list(range(15))


def test_progress_is_per_user_chat_platform_and_checklist(store: ProgressStore) -> None:
    store.start(KEY, SIZE)
    store.apply(KEY, 0, Move.DONE, SIZE)
    others = [
        ProgressKey("telegram", "100", "u2", "zzshh"),
        ProgressKey("telegram", "200", "u1", "zzshh"),
        ProgressKey("wecom", "100", "u1", "zzshh"),
        ProgressKey("telegram", "100", "u1", "mzshh"),
    ]
    for other in others:
        assert store.get(other) is None
        assert store.apply(other, 1, Move.DONE, SIZE) is None  # nothing started there: refused
    p = store.get(KEY)
    assert p is not None and p.current_step == 1
    store.start(others[0], SIZE)
    assert store.apply(others[0], 0, Move.DONE, SIZE) is not None
    assert store.get(KEY) == p  # another user's progress does not touch mine


def test_out_of_range_moves_change_nothing(store: ProgressStore) -> None:
    store.start(KEY, SIZE)
    before = store.get(KEY)
    assert store.apply(KEY, 0, Move.BACK, SIZE) is None
    assert store.apply(KEY, -1, Move.DONE, SIZE) is None
    assert store.apply(KEY, SIZE, Move.DONE, SIZE) is None
    assert store.apply(KEY, 3, Move.DONE, SIZE) is None  # not the current step
    assert store.get(KEY) == before


def test_restart_forgets_marks_and_returns_to_step_zero(store: ProgressStore) -> None:
    store.start(KEY, SIZE)
    for i in range(SIZE):
        store.apply(KEY, i, Move.DONE, SIZE)
    assert store.get(KEY).finished  # type: ignore[union-attr]
    p = store.restart(KEY)
    assert (p.current_step, p.marks, p.finished) == (0, {}, False)
    assert store.apply(KEY, 0, Move.DONE, SIZE) is not None


def test_for_user_lists_most_recent_first_and_start_clamps_a_shrunk_checklist(store: ProgressStore) -> None:
    other = ProgressKey("telegram", "100", "u1", "mzshh")
    store.start(KEY, SIZE)
    store.start(other, 12)
    for i in range(6):
        store.apply(other, i, Move.DONE, 12)
    store.apply(KEY, 0, Move.DONE, SIZE)  # touched last
    listed = store.for_user("telegram", "100", "u1")
    assert [p.checklist_id for p in listed] == ["zzshh", "mzshh"]
    assert store.for_user("telegram", "100", "u2") == []
    # The mzshh checklist now has only 3 steps: the unfinished progress moves to its last step.
    assert store.start(other, 3).current_step == 2
