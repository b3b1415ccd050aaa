"""Storage of meetings and reminders: scheduling, due selection, claims, cancel, recurrence."""
from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.core.models import ChatRef, ChatType
from bot.meetings.parse import parse_add
from bot.meetings.repo import MeetingRepo
from bot.meetings.tables import CANCELLED, MISSED, PENDING, SENT
from tests.test_meeting_feature import TZ, local, make_db

REF = ChatRef(platform="telegram", chat_id="-100", chat_type=ChatType.GROUP, user_id="42")
OFFSETS = [timedelta(days=1), timedelta(hours=2)]
HORIZON = timedelta(days=2)
GRACE = timedelta(hours=6)
LEASE = timedelta(seconds=60)
NOW = local(2025, 3, 3, 10, 0)


@pytest.fixture
def repo(tmp_path: Path) -> MeetingRepo:
    return MeetingRepo(make_db(tmp_path))


def add(repo: MeetingRepo, args: str, now=NOW, ref: ChatRef = REF):
    return repo.add(ref, parse_add(args, now, TZ), timezone_name="Asia/Shanghai", offsets=OFFSETS, now=now, horizon=HORIZON)


def test_datetimes_are_stored_as_utc(repo: MeetingRepo) -> None:
    meeting, _ = add(repo, "支委会 2025-03-12 15:00 三楼 议题")
    with repo.db.engine.connect() as conn:
        raw = conn.execute(text("SELECT starts_at FROM meetings WHERE id = :i"), {"i": meeting.id}).scalar_one()
    assert str(raw).startswith("2025-03-12 07:00:00")  # 15:00 in Shanghai
    stored = repo.get(meeting.id)
    assert stored.starts_at == local(2025, 3, 12, 15) and stored.starts_at.utcoffset() == timedelta(0)


def test_reminders_at_each_offset_and_due_selection(repo: MeetingRepo) -> None:
    meeting, reminders = add(repo, "支委会 2025-03-12 15:00 三楼 议题")
    assert [r.remind_at for r in reminders] == [local(2025, 3, 11, 15), local(2025, 3, 12, 13)]
    assert all(r.status == PENDING and r.occurs_at == meeting.starts_at for r in reminders)
    assert repo.due_ids(local(2025, 3, 11, 14, 59), GRACE, ["telegram"]) == []
    assert repo.due_ids(local(2025, 3, 11, 15), GRACE, ["telegram"]) == [reminders[0].id]
    assert repo.due_ids(local(2025, 3, 11, 21), GRACE, ["telegram"]) == [reminders[0].id]  # 6 h late
    # 22 h late the 1-day reminder is beyond the grace period; the 2-hour one is due
    assert repo.due_ids(local(2025, 3, 12, 13), GRACE, ["telegram"]) == [reminders[1].id]
    # only platforms this process serves
    assert repo.due_ids(local(2025, 3, 12, 13), GRACE, ["wecom"]) == []
    assert repo.due_ids(local(2025, 3, 12, 13), GRACE, []) == []
    # beyond the grace period a reminder is no longer "due": it is for sweep_missed
    assert repo.due_ids(local(2025, 3, 11, 21, 1), GRACE, ["telegram"]) == []
    # both due at once when the offsets are close together
    _, close = repo.add(
        REF, parse_add("支委会 2025-03-20 15:00 三楼 议题", NOW, TZ), timezone_name="Asia/Shanghai",
        offsets=[timedelta(hours=2), timedelta(hours=1)], now=NOW, horizon=HORIZON,
    )
    assert repo.due_ids(local(2025, 3, 20, 14, 30), GRACE, ["telegram"]) == [r.id for r in close]


def test_past_offsets_are_not_scheduled(repo: MeetingRepo) -> None:
    _, reminders = add(repo, "支委会 2025-03-03 20:00 三楼 议题")
    assert [r.offset_seconds for r in reminders] == [7200]
    _, none = add(repo, "支委会 2025-03-03 11:00 三楼 议题")
    assert none == []


def test_claim_is_exclusive_and_leased(repo: MeetingRepo) -> None:
    _, reminders = add(repo, "支委会 2025-03-12 15:00 三楼 议题")
    rid = reminders[0].id
    t = local(2025, 3, 11, 15)
    first = repo.claim(rid, "a", t, LEASE)
    assert first is not None and first.meeting.place == "三楼" and first.reminder.attempts == 1
    assert repo.claim(rid, "b", t, LEASE) is None
    assert repo.claim(rid, "b", t + timedelta(seconds=59), LEASE) is None
    assert repo.due_ids(t + timedelta(seconds=59), GRACE, ["telegram"]) == []
    # the holder "crashed": after the lease another process may take it over
    second = repo.claim(rid, "b", t + timedelta(seconds=61), LEASE)
    assert second is not None and second.reminder.attempts == 2
    assert repo.mark_sent(rid, t + timedelta(seconds=62), late=False)
    # once sent, never claimable again, however long after
    assert repo.claim(rid, "c", t + timedelta(hours=1), LEASE) is None
    assert repo.mark_sent(rid, t + timedelta(hours=1), late=False) is False
    assert repo.reminders_for(repo.get(first.meeting.id).id)[0].status == SENT


def test_claim_race_between_threads(tmp_path: Path) -> None:
    """Many threads with their own engines on one SQLite file: each reminder has one winner."""
    db = make_db(tmp_path)
    repo = MeetingRepo(db)
    ids = [r.id for i in range(10) for r in add(repo, f"支委会 2025-03-{12 + i} 15:00 三楼 议题{i}")[1]]
    t = local(2025, 4, 1)
    wins: dict[int, list[str]] = {rid: [] for rid in ids}
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker(name: str) -> None:
        own = MeetingRepo(type(db)(db.url))
        barrier.wait()
        for rid in ids:
            if own.claim(rid, name, t, LEASE) is not None:
                with lock:
                    wins[rid].append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(len(w) == 1 for w in wins.values()), wins


def test_release_and_backoff(repo: MeetingRepo) -> None:
    _, reminders = add(repo, "支委会 2025-03-12 15:00 三楼 议题")
    rid = reminders[0].id
    t = local(2025, 3, 11, 15)
    assert repo.claim(rid, "a", t, LEASE)
    repo.release(rid, "other", error=None, retry_at=None)  # not the holder: no effect
    assert repo.claim(rid, "b", t, LEASE) is None
    repo.release(rid, "a", error="TimeoutError", retry_at=t + timedelta(minutes=5))
    assert repo.claim(rid, "b", t + timedelta(minutes=4), LEASE) is None
    assert repo.claim(rid, "b", t + timedelta(minutes=6), LEASE) is not None
    repo.release(rid, "b", error=None, retry_at=None)
    assert repo.claim(rid, "c", t + timedelta(minutes=6), LEASE) is not None


def test_cancel_closes_reminders_and_blocks_claims(repo: MeetingRepo) -> None:
    meeting, reminders = add(repo, "支委会 2025-03-12 15:00 三楼 议题")
    assert repo.cancel(meeting.id, "telegram", "-999", "42", NOW) == ("not_found", None)
    assert repo.cancel(meeting.id, "wecom", "-100", "42", NOW) == ("not_found", None)
    result, info = repo.cancel(meeting.id, "telegram", "-100", "42", NOW)
    assert result == "cancelled" and info.status == CANCELLED
    assert repo.cancel(meeting.id, "telegram", "-100", "42", NOW)[0] == "already"
    assert {r.status for r in repo.reminders_for(meeting.id)} == {"cancelled"}
    t = local(2025, 3, 12, 13)
    assert repo.due_ids(t, GRACE, ["telegram"]) == []
    assert repo.claim(reminders[0].id, "a", t, LEASE) is None
    assert repo.upcoming("telegram", "-100", NOW) == []


def test_cancel_while_claimed_wins_over_mark_sent(repo: MeetingRepo) -> None:
    meeting, reminders = add(repo, "支委会 2025-03-12 15:00 三楼 议题")
    t = local(2025, 3, 11, 15)
    assert repo.claim(reminders[0].id, "a", t, LEASE)
    repo.cancel(meeting.id, "telegram", "-100", "42", t)
    assert repo.mark_sent(reminders[0].id, t, late=False) is False
    assert repo.reminders_for(meeting.id)[0].status == "cancelled"


def test_sweep_missed_only_takes_unclaimed_reminders_beyond_grace(repo: MeetingRepo) -> None:
    _, reminders = add(repo, "支委会 2025-03-12 15:00 三楼 议题")
    first, second = (r.id for r in reminders)
    assert repo.sweep_missed(local(2025, 3, 11, 21), GRACE) == []  # exactly 6 h: still within
    t = local(2025, 3, 12, 13, 30)
    missed = repo.sweep_missed(t, GRACE)
    assert [m.id for m in missed] == [first]
    statuses = {r.id: r.status for r in repo.reminders_for(reminders[0].meeting_id)}
    assert statuses == {first: MISSED, second: PENDING}
    # a claimed one is left to its holder
    assert repo.claim(second, "a", local(2025, 3, 12, 19, 59), LEASE)
    assert repo.sweep_missed(local(2025, 3, 12, 20), GRACE) == []


def test_recurring_meeting_materialises_occurrences_once(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    repo, other = MeetingRepo(db), MeetingRepo(type(db)(db.url))
    meeting, reminders = add(repo, "主题党日 每周五 09:00 活动室 学习")
    # horizon 2 days from Monday 10:00: only the first occurrence (Friday) is materialised
    assert {r.occurs_at for r in reminders} == {local(2025, 3, 7, 9)}
    assert len(reminders) == 2
    # Thursday: the next Friday is not within the horizon yet
    t = local(2025, 3, 6, 9)
    assert repo.materialise(t, OFFSETS, HORIZON) == 0
    # the following Wednesday: the second Friday enters the horizon; two replicas, one insert
    t = local(2025, 3, 12, 10)
    assert repo.materialise(t, OFFSETS, HORIZON) + other.materialise(t, OFFSETS, HORIZON) == 2
    assert repo.materialise(t, OFFSETS, HORIZON) == 0
    occurs = sorted({r.occurs_at for r in repo.reminders_for(meeting.id)})
    assert occurs == [local(2025, 3, 7, 9), local(2025, 3, 14, 9)]
    assert len(repo.reminders_for(meeting.id)) == 4


def test_recurring_catch_up_after_downtime_and_stop_after_cancel(repo: MeetingRepo) -> None:
    meeting, _ = add(repo, "主题党日 每周五 09:00 活动室 学习")
    # down for three weeks: the occurrences in between get reminders (to be sent late or missed);
    # the first Friday's were created with the meeting
    t = local(2025, 3, 27, 8)
    assert repo.materialise(t, OFFSETS, HORIZON) == 6
    occurs = sorted({r.occurs_at for r in repo.reminders_for(meeting.id)})
    assert occurs == [local(2025, 3, d, 9) for d in (7, 14, 21, 28)]
    missed = repo.sweep_missed(t, GRACE)
    assert len(missed) == 6  # everything except the reminders of 28 March
    repo.cancel(meeting.id, "telegram", "-100", "42", t)
    assert repo.materialise(local(2025, 4, 30), OFFSETS, HORIZON) == 0


def test_upcoming_orders_by_next_occurrence_and_is_per_chat(repo: MeetingRepo) -> None:
    late, _ = add(repo, "支委会 2025-03-20 15:00 三楼 议题")
    weekly, _ = add(repo, "主题党日 每周五 09:00 活动室 学习")
    soon, _ = add(repo, "党小组会 2025-03-04 15:00 二楼 学习")
    add(repo, "支委会 2025-03-05 15:00 三楼 议题", ref=REF.model_copy(update={"chat_id": "-200"}))
    assert [m.id for m in repo.upcoming("telegram", "-100", NOW)] == [soon.id, weekly.id, late.id]
    assert [m.id for m in repo.upcoming("telegram", "-100", local(2025, 3, 15))] == [late.id, weekly.id]


def test_reminder_created_concurrently_with_cancel_is_never_claimed(repo: MeetingRepo) -> None:
    """A replica materialising a series while another cancels it may insert a pending reminder
    after the cancel closed the others: claims still require the meeting to be live."""
    meeting, _ = add(repo, "主题党日 每周五 09:00 活动室 学习")
    repo.cancel(meeting.id, "telegram", "-100", "42", NOW)
    with repo.db.session() as s:
        s.add(MeetingRepo._new_reminder(meeting.id, local(2025, 3, 14, 9), timedelta(hours=2), local(2025, 3, 14, 7)))
    orphan = [r for r in repo.reminders_for(meeting.id) if r.status == PENDING]
    assert len(orphan) == 1
    t = local(2025, 3, 14, 7)
    assert repo.due_ids(t, GRACE, ["telegram"]) == []
    assert repo.claim(orphan[0].id, "a", t, LEASE) is None
