"""End to end: `dangjian run --adapter telegram` against the fake Bot API, with restarts."""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

from tests.e2e import TZ, BotProcess, ReminderClock, wait_until
from tests.fakes.telegram_api import FakeTelegram

USER = 42
ADMIN = 43
GROUP = -1001234
UNCOVERED = "帮我写一首关于春天的诗"
#: Seconds from process start until the first reminder may fall due: start-up, the secretary's
#: commands, then a crash before it is due.
REMINDER_DELAY = 25


def _env(tg: FakeTelegram, data, **extra) -> dict[str, str]:
    return {"DANGJIAN_TELEGRAM_TOKEN": tg.token, "DANGJIAN_TELEGRAM_BASE_URL": tg.base_url,
            "DANGJIAN_DATA_DIR": str(data), "DANGJIAN_ADMIN_IDS": f"telegram:{ADMIN}", **extra}


def _ready(tg: FakeTelegram, bot: BotProcess, since_calls: int = 0) -> None:
    wait_until(lambda: len(tg.calls("getUpdates")) > since_calls, 90, "the bot to poll", bot)


def _replies(messages: list) -> list:
    return [m for m in messages if "提醒】" not in (m.text or "")]  # a reminder may come any time


def _ask(tg: FakeTelegram, text: str, chat=USER, user=USER, timeout=30, **kw):
    mark = tg.mark()
    tg.push_text(chat, user, text, **kw)
    return _replies(tg.wait_for_messages_sync(lambda new: _replies(new), timeout=timeout, since=mark))[0]


def test_members_secretaries_and_restarts(tg, data_copy, tmp_path):
    clock = ReminderClock.start(REMINDER_DELAY)
    bot = BotProcess("telegram", _env(tg, data_copy, **clock.env), tmp_path / "bot.log").start()
    try:
        _ready(tg, bot)
        assert {c["command"] for c in tg.my_commands} >= {"start", "help", "meeting", "checklist", "reindex"}

        # A secretary registers two meetings, cancels one, lists.
        at = clock.meeting(margin=8)  # not due before the crash below
        day, hhmm = at.strftime("%Y-%m-%d"), at.strftime("%H:%M")
        kept = _ask(tg, clock.command(at))
        kept_id = re.search(r"#(\d+)", kept.text).group(1)
        dropped = _ask(tg, clock.command(at, "党小组会", "二楼小会议室"))
        dropped_id = re.search(r"#(\d+)", dropped.text).group(1)
        bad = _ask(tg, "/meeting add 支委会 2025-13-45 25:99 三楼会议室 议题")
        assert not re.search(r"#\d", bad.text) and "/meeting add" in bad.text
        cancelled = _ask(tg, f"/meeting cancel {dropped_id}")
        assert dropped_id in cancelled.text
        listing = _ask(tg, "/meetings")
        assert f"#{kept_id}" in listing.text and f"#{dropped_id}" not in listing.text and day in listing.text

        # A date as people type it: confirmed with tomorrow's date and weekday (either side of a
        # midnight passing while the command travels).
        tomorrow = {datetime.now(TZ).date() + timedelta(days=1)}
        typed = _ask(tg, "/meeting add 支委会 明天 15:00 三楼会议室 研究工作")
        tomorrow.add(datetime.now(TZ).date() + timedelta(days=1))
        assert re.match(r"已登记会议 #\d+\n", typed.text), typed.text
        shown = {f"时间：{d.isoformat()}（星期{'一二三四五六日'[d.weekday()]}）15:00" for d in tomorrow}
        assert any(s in typed.text for s in shown), typed.text

        # A checklist: step 1 with buttons, 完成 shows step 2.
        step1 = _ask(tg, "/checklist 民主生活会")
        assert "《" in step1.text and step1.reply_markup
        labels = [label for row in step1.buttons for label, _ in row]
        assert "完成" in labels
        done_data = next(data for row in step1.buttons for label, data in row if label == "完成")
        mark = tg.mark()
        tg.push_callback(USER, USER, done_data, message_id=step1.message_id)
        step2 = _replies(tg.wait_for_messages_sync(lambda new: _replies(new), timeout=30, since=mark))[0]
        assert "《" in step2.text and step2.text != step1.text and step2.reply_markup
        assert tg.callback_answers

        def reminders(meeting_type: str) -> list:
            return [m for m in tg.sent if m.chat_id == USER and meeting_type in m.text and "提醒】" in m.text]

        # Crash before the reminder is due, restart: progress and the reminder survive.
        assert not reminders("支委会")
        bot.kill()
        polls = len(tg.calls("getUpdates"))
        bot.start()
        _ready(tg, bot, polls)
        again = _ask(tg, "/checklist 民主生活会")
        assert again.text == step2.text

        # A member asks in private: a cited answer, first message, within the limit, with rating
        # buttons; 没用 is acknowledged with a toast.
        reply = _ask(tg, "党组会议一般多久召开一次？")
        assert "第十八条" in reply.text and "每月" in reply.text and "《" in reply.text
        assert all(len(m.text) <= 4096 for m in tg.sent)
        assert [label for row in reply.buttons for label, _ in row] == ["👍 有用", "👎 没用"]
        toasts = len(tg.callback_answers)
        tg.push_callback(USER, USER, reply.buttons[0][1][1], message_id=reply.message_id)
        wait_until(lambda: len(tg.callback_answers) > toasts, 30, "the rating toast", bot)
        assert "没用" in tg.callback_answers[-1]["text"]
        refusal = _ask(tg, UNCOVERED)
        assert not re.search(r"第[一二三四五六七八九十百]+条|[一二三四五六七八九十]+、（", refusal.text)
        assert not refusal.reply_markup
        again = _ask(tg, f"请问，{UNCOVERED}？")  # the same uncovered question, asked again
        assert not again.reply_markup
        # A follow-up leans on the last answered question (refusals are not remembered).
        follow = _ask(tg, "那党组民主生活会呢？")
        assert follow.text.startswith("（接上一问：") and "第二十七条" in follow.text
        assert "原则上每年召开一次" in follow.text

        # /stats: the admin sees the question rated 没用 with its article and the uncovered one
        # twice; a member is refused and sees none of it.
        refused = _ask(tg, "/stats")
        assert "管理员" in refused.text and UNCOVERED not in refused.text and "党组会议" not in refused.text
        stats = _ask(tg, "/stats", chat=ADMIN, user=ADMIN).text
        assert f"1. {UNCOVERED}（2 次）" in stats
        assert re.search(r"· 党组会议一般多久召开一次？ → 《[^》]+》第十八条", stats), stats
        assert str(USER) not in stats

        # In a group: silence on chatter, an answer when mentioned.
        mark = tg.mark()
        tg.push_text(GROUP, 7, "今天中午吃什么？", chat_type="supergroup")
        tg.push_text(GROUP, 7, f"@{tg.username} 党组会议纪要由谁签发？", chat_type="supergroup")
        [answer] = _replies(tg.wait_for_messages_sync(lambda new: _replies(new), timeout=30, since=mark))
        assert "第二十五条" in answer.text and answer.chat_id == GROUP
        assert len(_replies(tg.sent[mark:])) == 1

        wait_until(lambda: reminders("支委会"), 90, "the reminder", bot)
        time.sleep(3)  # a duplicate would follow within a couple of polls
        assert len(reminders("支委会")) == 1
        reminder = reminders("支委会")[0]
        assert "三楼会议室" in reminder.text and hhmm in reminder.text
        assert not reminders("党小组会")
        assert bot.alive
        assert bot.stop() == 0
    finally:
        bot.stop()
