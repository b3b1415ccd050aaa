"""Follow-up questions in context (issue #14): the rule, the memory in the database (TTL,
per user, across restarts), the core's "（接上一问：…）" line, /new, and pointers to the tools."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import bot.conversation.tables  # noqa: F401 - registers the table before the db fixture creates it
from bot.checklists import ChecklistFeature
from bot.checklists.model import Checklist, Step
from bot.conversation import ConversationMemory
from bot.core.conversation import Resolved, Turn, resolve_follow_up
from bot.core.models import ChatRef, ChatType
from bot.meetings import MeetingsFeature
from bot.meetings.rules import MeetingRule, MeetingRules
from retrieval.models import Answer, Article
from retrieval.query import find_subjects
from tests.harness import PLAIN, StubAnswerer, TestBot, cite, make_settings

PREVIOUS = Turn(question="党组会议一般多久召开一次？", subject="党组会议", citation="《党组工作细则》第十八条")


# --------------------------------------------------------------------------- the rule
@pytest.mark.parametrize(("text", "searched", "understood"), [
    ("那表决呢？", "党组会议 表决", "党组会议"),
    ("要提前几天通知？", "党组会议 要提前几天通知？", "党组会议"),
    ("需要报谁批准？", "党组会议 需要报谁批准？", "党组会议"),
    ("它由谁主持？", "党组会议由谁主持？", "党组会议"),
    ("那党组民主生活会呢？", "党组民主生活会一般多久召开一次？", "党组民主生活会一般多久召开一次？"),
])
def test_a_follow_up_is_searched_with_the_previous_subject(text, searched, understood):
    assert resolve_follow_up(text, PREVIOUS, find_subjects) == Resolved(searched, understood)


@pytest.mark.parametrize("text", ["支委会多久开一次？", "入党要满多少岁？", "那支委会要多少人到会？"])
def test_a_question_with_its_own_subject_starts_fresh(text):
    resolved = resolve_follow_up(text, PREVIOUS, find_subjects)
    assert resolved.understood is None and "党组会议" not in resolved.question


def test_chatter_without_a_subject_is_not_dragged_back_to_the_previous_topic():
    known = {"帮我写一首关于春天的诗": 0.0, "要提前几天通知？": 1.0}.__getitem__
    assert resolve_follow_up("帮我写一首关于春天的诗", PREVIOUS, find_subjects, known=known) == Resolved("帮我写一首关于春天的诗")
    assert resolve_follow_up("要提前几天通知？", PREVIOUS, find_subjects, known=known).understood == "党组会议"


def test_the_share_of_known_words_comes_from_the_index(service):
    assert service.known_share("帮我写一首关于春天的诗") < 0.2 <= service.known_share("要提前几天通知？")


def test_without_a_previous_question_a_follow_up_is_answered_on_its_own():
    assert resolve_follow_up("那表决呢？", None, find_subjects) == Resolved("那表决呢？")


def test_a_model_rewrite_is_used_and_a_failed_one_falls_back_to_the_merge():
    rewritten = resolve_follow_up("那表决呢？", PREVIOUS, find_subjects, lambda turn, text: "党组会议怎样表决？")
    assert rewritten == Resolved("党组会议怎样表决？", "党组会议")
    failed = resolve_follow_up("那表决呢？", PREVIOUS, find_subjects, lambda turn, text: None)
    assert failed == Resolved("党组会议 表决", "党组会议")


# --------------------------------------------------------------------------- the memory
class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def answered(question: str) -> Answer:
    return Answer(question=question, answer=f"根据…：{question}", refused=False, citations=[cite()])


def refused(question: str) -> Answer:
    return Answer(question=question, answer="文件中没有找到…", refused=True)


def make_bot(db, clock: Clock, reply=answered, **kw) -> TestBot:
    memory = ConversationMemory(db, timedelta(minutes=30), find_subjects, clock=clock)
    return TestBot(qa=StubAnswerer(reply=reply), conversation=memory, **kw)


async def test_two_turns_merge_and_say_what_was_understood(db):
    bot = make_bot(db, Clock())
    first = await bot.say("党组会议一般多久召开一次？")
    assert "接上一问" not in first.text
    second = await bot.say("那表决呢？")
    assert second.text.startswith("（接上一问：党组会议）\n")
    assert bot.qa.questions == ["党组会议一般多久召开一次？", "党组会议 表决"]


async def test_a_new_subject_starts_fresh(db):
    bot = make_bot(db, Clock())
    await bot.say("党组会议一般多久召开一次？")
    reply = await bot.say("入党积极分子多久考察一次？")
    assert "接上一问" not in reply.text and bot.qa.questions[-1] == "入党积极分子多久考察一次？"


async def test_context_expires_after_the_ttl(db):
    clock = Clock()
    bot = make_bot(db, clock)
    await bot.say("党组会议一般多久召开一次？")
    clock.now += timedelta(minutes=31)
    reply = await bot.say("那表决呢？")
    assert "接上一问" not in reply.text and bot.qa.questions[-1] == "那表决呢？"


async def test_context_is_per_user_in_a_group_and_never_crosses_chats_or_platforms(db):
    bot = make_bot(db, Clock())
    await bot.say("党组会议一般多久召开一次？", user="alice", chat_type=ChatType.GROUP, chat="-1")
    assert "接上一问" not in (await bot.say("那表决呢？", user="bob", chat_type=ChatType.GROUP, chat="-1")).text
    assert "接上一问" not in (await bot.say("那表决呢？", user="alice", chat_type=ChatType.GROUP, chat="-2")).text
    assert "接上一问" not in (await bot.say("那表决呢？", user="alice", chat_type=ChatType.GROUP, chat="-1",
                                          platform="wecom")).text
    assert "接上一问" in (await bot.say("那表决呢？", user="alice", chat_type=ChatType.GROUP, chat="-1")).text


async def test_refusals_are_not_remembered(db):
    bot = make_bot(db, Clock(), reply=lambda q: refused(q) if "天气" in q else answered(q))
    await bot.say("党组会议一般多久召开一次？")
    await bot.say("明天天气怎么样？")
    assert "（接上一问：党组会议）" in (await bot.say("那表决呢？")).text


async def test_new_and_restart_clear_the_context_and_always_acknowledge(db):
    bot = make_bot(db, Clock())
    assert "新的对话" in (await bot.say("/new")).text  # nothing to clear: still acknowledged
    await bot.say("党组会议一般多久召开一次？")
    assert "新的对话" in (await bot.say("重新开始")).text
    assert "接上一问" not in (await bot.say("那表决呢？")).text
    await bot.say("党组会议一般多久召开一次？")
    assert "新的对话" in (await bot.say("/new")).text
    assert "接上一问" not in (await bot.say("那表决呢？")).text


async def test_the_context_survives_a_restart(db):
    clock = Clock()
    await make_bot(db, clock).say("党组会议一般多久召开一次？")
    again = make_bot(db, clock)  # a new process (or another replica) on the same database
    assert "（接上一问：党组会议）" in (await again.say("那表决呢？")).text


async def test_a_broken_memory_never_stops_an_answer(db, caplog):
    bot = make_bot(db, Clock())

    def boom(*args):
        raise RuntimeError("database gone")

    bot.core.conversation.resolve = boom  # type: ignore[method-assign]
    bot.core.conversation.remember = boom  # type: ignore[method-assign]
    reply = await bot.say("那表决呢？")
    assert reply.text.startswith("根据") and "could not" in caplog.text


def test_expired_contexts_are_pruned(db):
    clock = Clock()
    memory = ConversationMemory(db, timedelta(minutes=30), find_subjects, clock=clock)
    key = ChatRef(platform="telegram", chat_id="7", user_id="7")
    memory.remember(key, Resolved("党组会议一般多久召开一次？"), answered("x"))
    assert memory.prune() == 0 and memory.last(key) is not None
    clock.now += timedelta(hours=1)
    assert memory.prune() == 1 and memory.last(key) is None


# --------------------------------------------------------------------------- pointers
def _article(label: str, text: str) -> Article:
    return Article(doc_id="zb", doc_title="中国共产党支部工作条例（试行）", label=label, text=text, source="zb.txt")


def _checklist() -> Checklist:
    step = Step(title="确定时间", text="确定召开时间", who="支委会", doc_id="zb", label="第十七条",
                citation="《中国共产党支部工作条例（试行）》第十七条", quote="党支部每年至少召开1次组织生活会")
    return Checklist(id="zzshh", title="组织生活会", aliases=("支部组织生活会",), description="d",
                     pointer_when=("准备", "怎么开", "流程"), steps=(step,))


def _rules() -> MeetingRules:
    rule = MeetingRule(type="支部党员大会", frequency="quarter", summary="每季度召开1次", doc_id="zb", label="第十一条",
                       quote="一般每季度召开1次")
    article = _article("第十一条", "第十一条 党支部党员大会一般每季度召开1次。")
    return MeetingRules([rule], lambda doc, label: article, pointer_when=["多久", "几次"])


async def test_answers_point_to_the_checklist_and_the_meeting_plan(db, tmp_path: Path):
    checklists = ChecklistFeature(db, [_checklist()], timezone="Asia/Shanghai")
    meetings = MeetingsFeature(db, make_settings(data_dir=tmp_path), _rules())
    bot = TestBot(meetings, checklists, caps=PLAIN)
    prepare = await bot.say("组织生活会召开前要做哪些准备？")
    assert prepare.text.endswith("可发送 /checklist 组织生活会 逐步准备，每步注明依据")
    often = await bot.say("支部党员大会多久开一次？")
    assert often.text.rstrip().endswith("每项注明依据") and "/meeting plan" in often.text
    assert "根据" in often.text  # the pointer never replaces the cited answer
    plain = await bot.say("党费怎么使用？")
    assert "/checklist" not in plain.text and "/meeting plan" not in plain.text
    no = TestBot(meetings, checklists, qa=StubAnswerer(reply=refused))
    assert "/checklist" not in (await no.say("组织生活会怎么准备？")).text  # no pointer under a refusal
