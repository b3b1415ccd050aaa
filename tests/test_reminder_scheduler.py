"""Reminder delivery: due selection with an injected clock, exclusivity across schedulers,
crash and restart behaviour, cancellation, platforms without an adapter."""
from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.core.models import ChatRef, ChatType
from bot.core.outbound import OutboundRegistry
from bot.meetings import MeetingsFeature, ReminderScheduler
from bot.meetings.parse import parse_add
from bot.meetings.repo import MeetingRepo
from bot.meetings.tables import CANCELLED, MISSED, PENDING, SENT
from bot.store.db import Database
from tests.harness import RecordingOutbound, TestBot
from tests.test_meeting_feature import TZ, Clock, load_rules, local, make_db, make_settings

REF = ChatRef(platform="telegram", chat_id="-100", chat_type=ChatType.GROUP, user_id="42")
NOW = local(2025, 3, 3, 10, 0)
RULES = load_rules()


class World:
    """One database, a shared clock, and as many schedulers as a test wants."""

    def __init__(self, tmp_path: Path, now: datetime = NOW, **settings) -> None:
        self.clock = Clock(now)
        self.settings = make_settings(**settings)
        self.db = make_db(tmp_path)
        self.repo = MeetingRepo(self.db)

    def scheduler(self, outbound: RecordingOutbound | None = None, platform: str = "telegram", **kw) -> ReminderScheduler:
        registry = OutboundRegistry()
        if outbound is not None:
            registry.register(platform, outbound)
        # each scheduler has its own engine, like a separate process
        return ReminderScheduler(Database(self.db.url), self.settings, registry, RULES, clock=self.clock, **kw)

    def add(self, args: str, ref: ChatRef = REF) -> int:
        draft = parse_add(args, self.clock(), TZ)
        meeting, _ = self.repo.add(
            ref, draft, timezone_name=self.settings.timezone, offsets=self.settings.offsets,
            now=self.clock(), horizon=self.settings.offsets[0] + timedelta(days=1),
        )
        return meeting.id

    def statuses(self, meeting_id: int) -> list[str]:
        return [r.status for r in self.repo.reminders_for(meeting_id)]


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


# ---------------------------------------------------------------------- normal delivery
async def test_due_reminders_are_sent_once_at_their_time(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼会议室 研究发展党员工作")
    out = RecordingOutbound()
    s = w.scheduler(out)
    w.clock.now = local(2025, 3, 11, 14, 59, )
    assert await s.tick() == 0 and out.sent == []
    w.clock.now = local(2025, 3, 11, 15, 0)
    assert await s.tick() == 1
    assert await s.tick() == 0
    ref, messages = out.sent[0]
    assert ref == REF and len(messages) == 1
    text = messages[0].text
    for part in ("【会议提醒】1天后召开", "支委会", "2025-03-12（星期三）15:00", "三楼会议室", "研究发展党员工作"):
        assert part in text, text
    assert "党支部委员会会议一般每月召开1次" in text and "《中国共产党支部工作条例（试行）》第十二条" in text
    assert "补发" not in text
    w.clock.now = local(2025, 3, 12, 13, 0, )
    assert await s.tick() == 1
    assert "【会议提醒】2小时后召开" in out.texts[1]
    w.clock.advance(timedelta(hours=3))
    assert await s.tick() == 0
    assert w.statuses(mid) == [SENT, SENT]
    assert all(r.late is False for r in w.repo.reminders_for(mid))


async def test_party_group_meeting_reminder_cites_the_notice_rule(w: World) -> None:
    w.add("党组会议 2025-03-12 09:00 党组会议室 研究年度预算")
    out = RecordingOutbound()
    w.clock.now = local(2025, 3, 11, 9, 0)
    assert await w.scheduler(out).tick() == 1
    text = out.texts[0]
    assert "一般应于会议召开前两天通知党组成员" in text
    assert "《中共辽宁省机关事务管理局党组工作细则(试行)》第十八条" in text


async def test_type_without_rule_has_no_citation(w: World) -> None:
    w.add("读书会 2025-03-12 09:00 图书室 读书")
    out = RecordingOutbound()
    w.clock.now = local(2025, 3, 11, 9, 0)
    assert await w.scheduler(out).tick() == 1
    assert "读书会" in out.texts[0] and "《" not in out.texts[0]


async def test_seconds_offsets(tmp_path: Path) -> None:
    w = World(tmp_path, reminder_offsets="0s,60s")
    mid = w.add("支委会 2025-03-03 10:02 三楼 临时会议")
    out = RecordingOutbound()
    s = w.scheduler(out)
    w.clock.advance(timedelta(seconds=59))
    assert await s.tick() == 0
    w.clock.advance(timedelta(seconds=1))
    assert await s.tick() == 1 and "1分钟后召开" in out.texts[0]
    w.clock.advance(timedelta(seconds=60))
    assert await s.tick() == 1 and "会议现在开始" in out.texts[1]
    assert w.statuses(mid) == [SENT, SENT]


async def test_end_to_end_from_command_to_reminder(w: World) -> None:
    bot = TestBot(MeetingsFeature(w.db, w.settings, RULES, clock=w.clock))
    reply = await bot.say("/meeting add 主题党日 2025-03-05 09:00 党员活动室 学习 党章", chat="-100",
                          chat_type=ChatType.GROUP, user="42", chat_admin=True)
    assert reply.text.startswith("已登记会议 #")
    out = RecordingOutbound()
    s = w.scheduler(out)
    w.clock.now = local(2025, 3, 4, 9, 0)
    assert await s.tick() == 1
    assert out.sent[0][0] == REF and "学习 党章" in out.texts[0]


# ---------------------------------------------------------------------- exclusivity
async def test_two_schedulers_on_one_database_send_each_reminder_once(w: World) -> None:
    ids = [w.add(f"支委会 2025-03-{5 + i:02d} 15:00 三楼 议题{i}") for i in range(8)]
    a_out, b_out = RecordingOutbound(), RecordingOutbound()
    a, b = w.scheduler(a_out), w.scheduler(b_out)
    assert a.instance_id != b.instance_id
    t = local(2025, 3, 4, 15, 0)
    while t <= local(2025, 3, 13, 0, 0):
        w.clock.now = t
        await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
        t += timedelta(minutes=30)
    texts = a_out.texts + b_out.texts
    assert len(texts) == 16 and len(set(texts)) == 16
    for mid in ids:
        assert w.statuses(mid) == [SENT, SENT]


def test_schedulers_in_parallel_threads_never_duplicate(tmp_path: Path) -> None:
    """Two schedulers, each on its own event loop in its own thread, polling concurrently."""
    w = World(tmp_path, reminder_grace="1d")
    for i in range(12):
        w.add(f"支委会 2025-03-06 {8 + i}:00 三楼 议题{i}")
    w.clock.now = local(2025, 3, 5, 20, 0)  # every 1-day reminder is due, no 2-hour one
    outs = [RecordingOutbound(), RecordingOutbound()]
    scheds = [w.scheduler(outs[0]), w.scheduler(outs[1])]
    barrier = threading.Barrier(2)

    def run(s: ReminderScheduler) -> None:
        async def loop() -> None:
            barrier.wait()
            for _ in range(5):
                await s.tick()

        asyncio.run(loop())

    threads = [threading.Thread(target=run, args=(s,)) for s in scheds]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    texts = outs[0].texts + outs[1].texts
    due = [r for mid in range(1, 13) for r in w.repo.reminders_for(mid) if r.remind_at <= w.clock.now]
    assert len(texts) == len(due) == len(set(texts)) == 12
    assert all(r.status == SENT for r in due)


# ---------------------------------------------------------------------- crashes and restarts
async def test_crashed_claim_is_taken_over_after_the_lease_only(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题")
    rid = w.repo.reminders_for(mid)[0].id
    t = local(2025, 3, 11, 15, 0)
    w.clock.now = t
    assert w.repo.claim(rid, "crashed-process", t, timedelta(seconds=60)) is not None  # then kill -9
    out = RecordingOutbound()
    s = w.scheduler(out)
    assert await s.tick() == 0
    w.clock.now = t + timedelta(seconds=30)
    assert await s.tick() == 0
    w.clock.now = t + timedelta(seconds=61)
    assert await s.tick() == 1
    w.clock.now = t + timedelta(minutes=10)
    assert await s.tick() == 0
    assert len(out.sent) == 1 and w.statuses(mid)[0] == SENT


async def test_sent_reminder_with_expired_lease_is_never_resent(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题")
    rid = w.repo.reminders_for(mid)[0].id
    t = local(2025, 3, 11, 15, 0)
    assert w.repo.claim(rid, "other", t, timedelta(seconds=60))
    assert w.repo.mark_sent(rid, t, late=False)
    out = RecordingOutbound()
    s = w.scheduler(out)
    for minutes in (2, 30, 300):
        w.clock.now = t + timedelta(minutes=minutes)
        await s.tick()
    assert out.sent == []


async def test_restart_within_grace_sends_late_once_and_beyond_grace_records_missed(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼会议室 研究发展党员工作")
    late_mid = w.add("党小组会 2025-03-12 20:00 二楼 学习")  # reminders 3/11 20:00 and 3/12 18:00
    # The bot was down from before 3/11 15:00 until 3/12 14:00.
    w.clock.now = local(2025, 3, 12, 14, 0)
    out = RecordingOutbound()
    s = w.scheduler(out)
    assert await s.tick() == 1
    assert await s.tick() == 0
    # 支委会: the 1-day reminder is 23 h overdue (missed); the 2-hour one 1 h overdue (sent late)
    reminders = w.repo.reminders_for(mid)
    assert [r.status for r in reminders] == [MISSED, SENT]
    assert reminders[1].late is True
    text = out.texts[0]
    assert "【补发提醒】" in text and "2025-03-12（星期三）13:00" in text and "延迟" in text
    assert "2025-03-12（星期三）15:00" in text and "三楼会议室" in text
    assert "会议已于" not in text  # it has not started yet
    # 党小组会: the 1-day reminder (3/11 20:00) is 18 h overdue → missed, never sent
    assert w.statuses(late_mid) == [MISSED, PENDING]
    assert all("党小组会" not in t for t in out.texts)


async def test_late_reminder_after_the_meeting_started_says_so(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题")
    w.clock.now = local(2025, 3, 12, 15, 30)  # 2-hour reminder 2.5 h overdue, within grace
    out = RecordingOutbound()
    assert await w.scheduler(out).tick() == 1
    assert "【补发提醒】" in out.texts[0] and "会议已于 2025-03-12（星期三）15:00 开始" in out.texts[0]
    assert w.statuses(mid) == [MISSED, SENT]


async def test_a_few_seconds_behind_is_not_late(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题")
    w.clock.now = local(2025, 3, 11, 15, 0) + timedelta(seconds=20)
    out = RecordingOutbound()
    assert await w.scheduler(out).tick() == 1
    assert "补发" not in out.texts[0] and w.repo.reminders_for(mid)[0].late is False


# ---------------------------------------------------------------------- cancellation, platforms, failures
async def test_cancelled_meeting_is_never_reminded(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题")
    keep = w.add("党小组会 2025-03-12 15:00 二楼 学习")
    w.repo.cancel(mid, "telegram", "-100", "42", NOW)
    out = RecordingOutbound()
    s = w.scheduler(out)
    for t in (local(2025, 3, 11, 15), local(2025, 3, 12, 13), local(2025, 3, 12, 23)):
        w.clock.now = t
        await s.tick()
    assert len(out.sent) == 2 and all("党小组会" in t for t in out.texts)
    assert w.statuses(mid) == [CANCELLED, CANCELLED] and w.statuses(keep) == [SENT, SENT]


async def test_platform_without_adapter_stays_pending_until_beyond_grace(w: World) -> None:
    wecom = REF.model_copy(update={"platform": "wecom", "chat_id": "grp"})
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题", ref=wecom)
    telegram_only = w.scheduler(RecordingOutbound())
    w.clock.now = local(2025, 3, 11, 15, 0)
    assert await telegram_only.tick() == 0
    w.clock.now = local(2025, 3, 11, 20, 0)
    assert await telegram_only.tick() == 0
    assert w.statuses(mid) == [PENDING, PENDING]
    # another replica serving WeCom picks it up, late but within grace
    out = RecordingOutbound()
    assert await w.scheduler(out, platform="wecom").tick() == 1
    assert out.sent[0][0] == wecom and "【补发提醒】" in out.texts[0]
    # the 2-hour reminder is never served in time: recorded missed once beyond grace
    w.clock.now = local(2025, 3, 12, 19, 0)
    assert await telegram_only.tick() == 0
    assert w.statuses(mid) == [PENDING, PENDING][:0] + [SENT, PENDING]
    w.clock.now = local(2025, 3, 12, 19, 1)
    await telegram_only.tick()
    assert w.statuses(mid) == [SENT, MISSED]


async def test_adapter_that_stopped_releases_the_claim(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题")
    s = w.scheduler(RecordingOutbound())
    s.outbound = OutboundRegistry()  # adapter gone after the due list was built
    s.outbound.platforms = lambda: ["telegram"]  # type: ignore[method-assign]
    w.clock.now = local(2025, 3, 11, 15, 0)
    assert await s.tick() == 0
    out = RecordingOutbound()
    assert await w.scheduler(out).tick() == 1  # not held back by a lease
    assert w.statuses(mid)[0] == SENT


async def test_failed_send_is_retried_after_the_lease(w: World) -> None:
    mid = w.add("支委会 2025-03-12 15:00 三楼 议题")
    out = RecordingOutbound(fail_first=1)
    s = w.scheduler(out)
    t = local(2025, 3, 11, 15, 0)
    w.clock.now = t
    assert await s.tick() == 0
    r = w.repo.reminders_for(mid)[0]
    assert r.status == PENDING and r.attempts == 1
    w.clock.now = t + timedelta(seconds=30)
    assert await s.tick() == 0  # backing off
    w.clock.now = t + timedelta(seconds=61)
    assert await s.tick() == 1
    r = w.repo.reminders_for(mid)[0]
    assert r.status == SENT and r.attempts == 2 and len(out.sent) == 1


async def test_recurring_meeting_reminds_every_occurrence_once(w: World) -> None:
    mid = w.add("主题党日 每周五 09:00 党员活动室 集中学习")
    out = RecordingOutbound()
    s = w.scheduler(out)
    t = NOW
    while t < local(2025, 3, 22, 0):
        w.clock.now = t
        await s.tick()
        t += timedelta(hours=1)
    fridays = ["2025-03-07", "2025-03-14", "2025-03-21"]
    assert len(out.texts) == 6
    for day in fridays:
        assert sum(day in text for text in out.texts) == 2
    assert all("《中国共产党支部工作条例（试行）》第十六条" in text for text in out.texts)
    assert set(w.statuses(mid)) <= {SENT, PENDING}
    assert w.statuses(mid).count(SENT) == 6


async def test_a_cancellation_arriving_as_a_send_completes_stops_the_loop(w: World) -> None:
    """Python 3.11's wait_for lost such a cancellation: run_forever went on, shutdown hung (and so
    did test_run_forever_survives_errors, now and then, under load)."""
    w.add("支委会 2025-03-12 15:00 三楼 议题")
    w.clock.now = local(2025, 3, 11, 15, 0)
    task: asyncio.Task[None] | None = None

    class CancelledAsItSends(RecordingOutbound):
        async def send(self, ref, messages) -> None:
            await super().send(ref, messages)
            assert task is not None
            asyncio.get_running_loop().call_soon(task.cancel)  # before the scheduler resumes

    out = CancelledAsItSends()
    s = w.scheduler(out)
    s.poll_seconds = 0.01
    task = asyncio.create_task(s.run_forever())
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        task.cancel()
    assert done and task.cancelled() and len(out.sent) == 1


async def test_run_forever_survives_errors(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w.add("支委会 2025-03-12 15:00 三楼 议题")
    w.clock.now = local(2025, 3, 11, 15, 0)
    out = RecordingOutbound()
    s = w.scheduler(out)
    s.poll_seconds = 0.01
    real = s.repo.materialise
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup")
        return real(*args, **kwargs)

    monkeypatch.setattr(s.repo, "materialise", flaky)
    task = asyncio.create_task(s.run_forever())
    try:
        await out.wait(1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls["n"] >= 2 and len(out.sent) == 1
