"""Feature tests through the real Core: listing, starting, buttons, typed replies, resume after a
restart, stale/foreign/garbage presses, reset, status, the meeting-reminder offer and the summary."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.checklists import ChecklistFeature, load_checklists
from bot.checklists.feature import owner_tag
from bot.core.models import Capabilities, ChatType, OutgoingMessage
from bot.store.db import Database
from retrieval.models import Answer
from tests.harness import StubAnswerer, TestBot
from tests.test_checklist_loader import PROMPTS, fake_lookup

TELEGRAM = Capabilities(buttons=True, max_chars=4096)
WECOM = Capabilities(buttons=False, max_bytes=2048)
QA_TEXT = "（问答回复）"


class Bot:
    """The harness with the checklist feature on a SQLite file; ``restart`` = a new process.

    Button presses come from a group chat ("c1"), as on Telegram, and are not "addressed"."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.checklists = load_checklists(PROMPTS, fake_lookup())
        self.start()

    def start(self) -> None:
        self.db = Database(f"sqlite:///{self.db_path}")
        self.db.create_schema()
        self.feature = ChecklistFeature(self.db, self.checklists, timezone="Asia/Shanghai")
        refusal = StubAnswerer(reply=lambda q: Answer(question=q, answer=QA_TEXT, refused=True))
        self.harness = TestBot(self.feature, qa=refusal, caps=TELEGRAM)
        self.qa, self.core = self.harness.qa, self.harness.core

    def restart(self) -> None:
        self.db.engine.dispose()
        self.start()

    async def say(self, text: str, *, user: str = "u1", chat: str = "c1", caps: Capabilities = TELEGRAM,
                  platform: str = "telegram") -> list[OutgoingMessage]:
        return await self.harness.push(text, user=user, chat=chat, caps=caps, platform=platform)

    async def press(self, data: str, *, user: str = "u1", chat: str = "c1",
                    platform: str = "telegram") -> list[OutgoingMessage]:
        return await self.harness.push(callback=data, user=user, chat=chat, chat_type=ChatType.GROUP,
                                       addressed=False, platform=platform)


@pytest.fixture
def bot(tmp_path: Path) -> Bot:
    return Bot(tmp_path / "bot.db")


def one(messages: list[OutgoingMessage]) -> OutgoingMessage:
    assert len(messages) == 1, messages
    return messages[0]


def button(message: OutgoingMessage, label: str) -> str:
    for row in message.buttons:
        for b in row:
            if b.label == label:
                return b.data
    raise AssertionError(f"no button {label}: {message.buttons}")


# Listing ---------------------------------------------------------------------------------------
async def test_list_names_the_checklists_with_descriptions(bot: Bot) -> None:
    text = one(await bot.say("/checklist")).text
    assert "民主生活会" in text and "组织生活会" in text and "民主评议党员" in text
    for checklist in bot.checklists:
        assert checklist.description in text
        assert f"/checklist {checklist.id}" in text
    assert "/checklist" in bot.core.help_text()


async def test_unknown_name_shows_the_list(bot: Bot) -> None:
    text = one(await bot.say("/checklist 发展党员")).text
    assert "没有找到" in text and "发展党员" in text
    assert "民主生活会会前准备" in text and "组织生活会" in text
    assert bot.feature.store.for_user("telegram", "c1", "u1") == []


@pytest.mark.parametrize("name", ["民主生活会", "mzshh", "MZSHH", "民主生活会会前准备", "mzsh", "1", "《民主生活会》"])
async def test_aliases_id_title_and_number_start_the_same_checklist(bot: Bot, name: str) -> None:
    text = one(await bot.say(f"/checklist {name}")).text
    assert text.startswith("【民主生活会会前准备】第 1/12 步")


async def test_ambiguous_partial_name_shows_the_list(bot: Bot) -> None:
    text = one(await bot.say("/checklist 生活会")).text  # 民主生活会 or 组织生活会?
    assert "没有找到" in text


# Buttons ---------------------------------------------------------------------------------------
async def test_walk_with_buttons_and_resume_after_restart(bot: Bot) -> None:
    first = one(await bot.say("/checklist 民主生活会"))
    assert "《中共辽宁省机关事务管理局党组工作细则(试行)》第二十七条" in first.text
    assert "原则上每年召开一次" in first.text
    assert "谁来做：党组书记" in first.text and "时间：" in first.text
    labels = [b.label for row in first.buttons for b in row]
    assert labels[0] == "完成" and {"完成", "跳过", "上一步", "全部步骤"} <= set(labels)
    for row in first.buttons:
        for b in row:
            assert b.data.startswith("chk:mzshh:0:") and b.data.isascii() and len(b.data.encode()) <= 64

    second = one(await bot.press(first.buttons[0][0].data))  # 完成
    assert second.toast and "第 1 步" in second.toast
    assert second.text != first.text
    assert second.text.startswith("【民主生活会会前准备】第 2/12 步") and "《" in second.text and "》" in second.text
    assert button(second, "完成").startswith("chk:mzshh:1:")

    bot.restart()
    resumed = one(await bot.say("/checklist 民主生活会"))
    assert resumed.text == second.text
    assert resumed.buttons == second.buttons


async def test_double_press_advances_once(bot: Bot) -> None:
    first = one(await bot.say("/checklist 组织生活会"))
    done = button(first, "完成")
    second = one(await bot.press(done))
    assert "第 2/10 步" in second.text
    again = one(await bot.press(done))
    assert again.text == "" and again.toast and "已经处理过" in again.toast
    assert one(await bot.say("/checklist 组织生活会")).text == second.text


async def test_other_users_press_is_refused(bot: Bot) -> None:
    first = one(await bot.say("/checklist 组织生活会", user="alice"))
    done = button(first, "完成")
    refused = one(await bot.press(done, user="bob"))
    assert refused.text == "" and refused.toast
    # bob has his own checklist on the same step: the press on alice's message is still refused
    await bot.say("/checklist 组织生活会", user="bob")
    assert one(await bot.press(done, user="bob")).text == ""
    # without the owner tag the press acts only on the presser's own progress
    untagged = done.rsplit(":", 1)[0]
    assert one(await bot.press(untagged, user="carol")).toast  # carol has not started it
    assert "第 1/10 步" in one(await bot.say("/checklist 组织生活会", user="alice")).text
    assert "第 1/10 步" in one(await bot.say("/checklist 组织生活会", user="bob")).text
    # the owner's press still works, also in the untagged form
    assert "第 2/10 步" in one(await bot.press(untagged, user="alice")).text


async def test_garbage_and_forged_data_change_nothing(bot: Bot) -> None:
    first = one(await bot.say("/checklist 组织生活会"))
    tag = owner_tag("telegram", "u1")
    for data in [
        "chk", "chk:", "chk:zzshh", "chk:zzshh:x:done", "chk:zzshh:-1:done", "chk:zzshh:0:explode",
        f"chk:nosuch:0:done:{tag}", f"chk:zzshh:99:done:{tag}", f"chk:zzshh:1:done:{tag}",
        f"chk:zzshh:0:done:{tag}:extra", "chk:zzshh:０:done", "chk:zzshh:0:done:deadbeef",
    ]:
        reply = one(await bot.press(data))
        assert reply.text == "" and reply.toast, data
    assert one(await bot.say("/checklist 组织生活会")).text == first.text


async def test_back_skip_all_and_summary(bot: Bot) -> None:
    message = one(await bot.say("/checklist 民主评议党员"))
    assert one(await bot.press(button(message, "上一步"))).toast == "已经是第一步了。"
    message = one(await bot.press(button(message, "完成")))  # step 1 done
    message = one(await bot.press(button(message, "跳过")))  # step 2 skipped
    assert "第 3/6 步" in message.text
    message = one(await bot.press(button(message, "上一步")))
    assert "第 2/6 步" in message.text and message.toast == "已返回第 2 步"

    overview = one(await bot.press(button(message, "全部步骤")))
    lines = overview.text.splitlines()
    assert "已完成 1，已跳过 1，共 6 步" in lines[0]
    assert lines[1].startswith("✅ 1.") and lines[2].startswith("👉 2.") and lines[3].startswith("⬜ 3.")
    back = one(await bot.press(button(overview, "回到当前步骤")))
    assert back.text == one(await bot.say("/checklist mzpy")).text

    message = back
    for action in ["跳过", "完成", "完成", "完成", "完成"]:
        message = one(await bot.press(button(message, action)))
    summary = message
    assert summary.toast == "全部步骤已完成"
    assert "全部步骤已走完" in summary.text
    assert "已完成 5 步" in summary.text and "已跳过 1 步" in summary.text
    assert "⏭ 2. 组织党员进行党性分析" in summary.text
    assert summary.buttons == []
    # the finished checklist answers with its summary; its old buttons are stale
    assert one(await bot.say("/checklist mzpy")).text == summary.text
    assert one(await bot.press(button(back, "完成"))).toast


async def test_meeting_step_offers_a_reminder_template(bot: Bot) -> None:
    message = one(await bot.say("/checklist 组织生活会"))
    with pytest.raises(AssertionError):
        button(message, "加入会议提醒")  # step 1 is no meeting
    for _ in range(6):
        message = one(await bot.press(button(message, "完成")))
    assert "第 7/10 步" in message.text
    reply = one(await bot.press(button(message, "加入会议提醒")))
    assert "/meeting add 组织生活会 YYYY-MM-DD HH:MM 地点 议题" in reply.text
    # offering the template changes nothing
    assert one(await bot.say("/checklist 组织生活会")).text == message.text


async def test_reset_and_status(bot: Bot) -> None:
    assert "还没有开始任何清单" in one(await bot.say("/checklist status")).text
    message = one(await bot.say("/checklist 民主生活会"))
    message = one(await bot.press(button(message, "完成")))
    message = one(await bot.press(button(message, "跳过")))
    await bot.say("/checklist 组织生活会")
    status = one(await bot.say("/checklist status")).text
    assert "民主生活会会前准备：第 3/12 步" in status and "已完成 1，已跳过 1" in status
    assert "组织生活会：第 1/10 步" in status
    assert "民主评议党员" not in status

    restarted = one(await bot.say("/checklist reset 民主生活会"))
    assert "重新开始" in restarted.text and "第 1/12 步" in restarted.text
    assert button(restarted, "完成").startswith("chk:mzshh:0:")
    assert "第 1/12 步" in one(await bot.say("/checklist 民主生活会")).text
    assert "请写明" in one(await bot.say("/checklist reset")).text
    assert "没有找到" in one(await bot.say("/checklist reset 不存在的清单")).text
    # status is per chat: another chat knows nothing of this progress
    assert "还没有开始任何清单" in one(await bot.say("/checklist status", chat="c2")).text


# Typed replies (WeCom, DingTalk) ---------------------------------------------------------------
async def test_typed_replies_without_buttons(bot: Bot) -> None:
    first = one(await bot.say("/checklist 组织生活会", caps=WECOM, platform="wecom"))
    assert first.buttons == []
    assert "回复“完成”" in first.text and "《中国共产党支部工作条例（试行）》第十七条" in first.text

    async def typed(text: str, **kw) -> OutgoingMessage:
        return one(await bot.say(text, caps=WECOM, platform="wecom", **kw))

    second = await typed("完成")
    assert second.text.startswith("【组织生活会】第 2/10 步") and second.buttons == []
    assert (await typed("上一步")).text == first.text
    assert (await typed("完成。")).text == second.text
    assert "第 3/10 步" in (await typed("跳过")).text
    overview = await typed("全部")
    assert "👉 3." in overview.text and "⏭ 2." in overview.text and "回复“继续”" in overview.text
    assert "第 3/10 步" in (await typed("继续")).text
    for _ in range(4):
        step = await typed("完成")
    assert "第 7/10 步" in step.text and "回复“提醒”" in step.text
    assert "/meeting add 组织生活会 YYYY-MM-DD HH:MM 地点 议题" in (await typed("提醒")).text

    # the same words elsewhere are questions: another user, another chat, another platform
    assert (await typed("完成", user="u2")).text == QA_TEXT
    assert (await typed("完成", chat="c2")).text == QA_TEXT
    assert one(await bot.say("完成", caps=WECOM, platform="dingtalk")).text == QA_TEXT
    assert bot.qa.questions == ["完成", "完成", "完成"]
    # a longer text is a question even with an active checklist
    assert (await typed("完成民主评议需要多久")).text == QA_TEXT

    # progress persists across a restart for typed replies too
    bot.restart()
    assert "第 8/10 步" in (await typed("完成")).text
    for _ in range(3):
        last = await typed("完成")
    assert "全部步骤已走完" in last.text and "已跳过 1 步" in last.text
    # nothing active any more: 完成 becomes a question again
    assert (await typed("完成")).text == QA_TEXT


async def test_typed_words_apply_to_the_most_recent_checklist(bot: Bot) -> None:
    await bot.say("/checklist 组织生活会", caps=WECOM)
    await bot.say("/checklist 民主生活会", caps=WECOM)
    reply = one(await bot.say("完成", caps=WECOM))
    assert reply.text.startswith("【民主生活会会前准备】第 2/12 步")
    remind = one(await bot.say("提醒", caps=WECOM))
    assert "没有需要登记的会议" in remind.text


async def test_replace_checklists_after_reindex(bot: Bot) -> None:
    message = one(await bot.say("/checklist 民主评议党员"))
    bot.feature.replace_checklists([c for c in bot.checklists if c.id != "mzpy"])
    assert "没有找到" in one(await bot.say("/checklist 民主评议党员")).text
    assert one(await bot.press(button(message, "完成"))).toast  # its buttons no longer work
    assert "民主评议党员" not in one(await bot.say("/checklist")).text
    assert "民主评议党员" not in one(await bot.say("/checklist status")).text


# No blocking work on the event loop ------------------------------------------------------------
async def test_a_slow_progress_query_in_one_chat_does_not_delay_another_chats_answer(bot: Bot, monkeypatch) -> None:
    real = bot.feature.store.for_user

    def slow_for_user(*args, **kwargs):
        time.sleep(2.0)  # the database is slow for this call (a lock, a long round trip…)
        return real(*args, **kwargs)

    monkeypatch.setattr(bot.feature.store, "for_user", slow_for_user)
    slow = asyncio.create_task(bot.say("/checklist status", chat="slow"))
    await asyncio.sleep(0.05)  # chat "slow" is inside its database call now
    started = time.monotonic()
    reply = one(await bot.say("/checklist 组织生活会", chat="other"))
    assert time.monotonic() - started < 1.0, "another chat waited for a slow database call"
    assert reply.text.startswith("【组织生活会】第 1/10 步") and not slow.done()
    assert "还没有开始任何清单" in one(await slow).text
