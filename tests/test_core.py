"""bot/core without any adapter: command parsing, rate limiting, Core.handle routing and errors,
replies shaped to capabilities, message splitting and answer formatting, all through the harness."""
from __future__ import annotations

import asyncio
import random
import re
import time

import pytest

from bot.core import texts
from bot.core.conversation import Resolved
from bot.core.engine import RateLimiter, parse_command
from bot.core.errors import StorageUnavailable
from bot.core.feature import Context
from bot.core.format import MAX_QUOTE_CHARS, format_answer
from bot.core.models import Button, ChatRef, ChatType, OutgoingFile, OutgoingMessage, Problem
from bot.core.split import split_text
from retrieval.answer import REFUSAL
from retrieval.models import Answer
from tests.harness import CITATION, PLAIN, StubAnswerer, TestBot, cite

ART18 = (
    "第十八条 党组议事决策一般采用党组会议形式。党组会议一般每月召开1次，遇有重要情况可以随时召开。\n"
    "党组会议议题由党组书记提出，或者由其他党组成员提出建议、党组书记综合考虑后确定。"
)
ART19 = "第十九条 党组会议由党组书记召集主持。党组会议应当有半数以上党组成员到会方可召开。"
TITLE = "中国共产党党组工作条例"


class ProbeFeature:
    """A tiny feature: /meeting and /meetings, buttons with prefix "mtg", consumes the text 完成,
    /files sends a file with buttons. Plain handlers (run in a thread), like the real features."""

    commands = ("meeting", "meetings", "files")
    callback_prefix = "mtg"
    help_lines = [
        ("/meeting add 周五 15:00 支部委员会", "登记会议（示例帮助行）"),
        ("/meeting plan", "查看会议安排（示例帮助行）"),
        ("/meetings", "查看会议列表（示例帮助行）"),
    ]

    def __init__(self) -> None:
        self.commands_seen: list[tuple[str, str, bool]] = []
        self.callbacks: list[str] = []

    def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        self.commands_seen.append((command, args, ctx.is_admin))
        if command == "files":
            return [OutgoingMessage(text="会议日程已生成", buttons=[[Button(label="完成", data="mtg:done"),
                                                                 Button(label="跳过", data="mtg:skip")]],
                                    file=OutgoingFile(filename="m.ics", content=b"BEGIN:VCALENDAR"))]
        return [OutgoingMessage(text=f"feature:{command}:{args}")]

    def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        self.callbacks.append(data)
        return [OutgoingMessage(text="", toast=f"got {data}")]

    def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        if ctx.msg.text.strip() == "完成":
            return [OutgoingMessage(text="feature consumed 完成")]
        return None


# parse_command -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("/help", ("help", "")),
    ("/help@dangjian_bot", ("help", "")),
    ("/HELP", ("help", "")),
    ("  /start  ", ("start", "")),
    ("/meeting add x", ("meeting", "add x")),
    ("/meeting@dangjian_bot add 周五 15:00 支部委员会", ("meeting", "add 周五 15:00 支部委员会")),
    ("/ask 党组会议纪要由谁签发？", ("ask", "党组会议纪要由谁签发？")),
])
def test_parse_command_recognises_commands(text: str, expected: tuple[str, str]) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize("text", ["/", "//x", "hello /help", "", "   ", "/@bot", "/-x", "党组会议 /ask"])
def test_parse_command_rejects_non_commands(text: str) -> None:
    assert parse_command(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("/ask\n党组会议多久召开一次？", ("ask", "党组会议多久召开一次？")),  # command, then Enter
    ("/ask\u3000党组会议多久召开一次？", ("ask", "党组会议多久召开一次？")),  # full-width IME space
    ("/meeting\tplan", ("meeting", "plan")),
])
def test_parse_command_any_whitespace_ends_the_command_word(text: str, expected: tuple[str, str]) -> None:
    assert parse_command(text) == expected


# RateLimiter -------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_window_slides_per_user() -> None:
    clock = Clock()
    rl = RateLimiter(3, clock=clock)
    assert [rl.allow("telegram", "1") for _ in range(3)] == [True, True, True]
    assert rl.allow("telegram", "1") is False
    assert rl.allow("telegram", "2") is True  # other user unaffected
    assert rl.allow("wecom", "1") is True  # same id on another platform is another user
    clock.now += 30
    assert rl.allow("telegram", "1") is False  # all three still inside the last 60 s
    clock.now += 31  # first three now older than 60 s
    assert rl.allow("telegram", "1") is True
    assert RateLimiter(0, clock=clock).allow("telegram", "1") is True  # 0 disables


def test_rate_limiter_forgets_idle_users() -> None:
    """Defect 6: every user who ever wrote used to keep an entry for good."""
    clock = Clock()
    rl = RateLimiter(3, clock=clock)
    for user in range(1000):
        assert rl.allow("telegram", str(user))
    assert len(rl) == 1000
    clock.now += 61  # a minute later only one of them writes again
    assert rl.allow("telegram", "7")
    assert len(rl) == 1
    clock.now += 30
    assert rl.allow("wecom", "x") and len(rl) == 2  # no sweep within the window


async def test_core_rate_limit_gives_polite_message_then_recovers() -> None:
    bot = TestBot()
    clock = Clock()
    bot.core.rate = RateLimiter(2, clock=clock)  # Core has no clock parameter; inject one here
    for _ in range(2):
        assert "依据" in (await bot.say("党组会议多久召开一次？")).text
    limited = await bot.say("党组会议多久召开一次？")
    assert limited.text == texts.RATE_LIMITED and "稍等" in limited.text
    assert len(bot.qa.questions) == 2  # the limited message never reached retrieval
    assert "依据" in (await bot.say("党组会议多久召开一次？", user="200")).text
    clock.now += 61
    assert "依据" in (await bot.say("党组会议多久召开一次？")).text
    assert len(bot.qa.questions) == 4


# Core.handle -------------------------------------------------------------------------------
async def test_plain_question_gets_formatted_answer_with_citation() -> None:
    bot = TestBot()
    reply = await bot.say("  党组会议一般多久召开一次？ ")
    assert bot.qa.questions == ["党组会议一般多久召开一次？"]
    assert reply.text.startswith("根据《")
    assert "依据" in reply.text
    assert CITATION in reply.text
    assert "每月召开1次" in reply.text
    assert reply.toast is None and reply.buttons == []


async def test_ask_command_answers_its_argument_and_rejects_empty() -> None:
    bot = TestBot()
    assert "依据" in (await bot.say("/ask 党组会议纪要由谁签发？")).text
    assert bot.qa.questions == ["党组会议纪要由谁签发？"]
    assert (await bot.say("/ask")).text == texts.EMPTY_QUESTION
    assert (await bot.say("/ask ？？")).text == texts.EMPTY_QUESTION
    assert len(bot.qa.questions) == 1


async def test_refusal_shows_no_basis_and_no_article_label() -> None:
    bot = TestBot(qa=StubAnswerer(reply=lambda q: Answer(question=q, answer=REFUSAL, refused=True)))
    reply = await bot.say("帮我写一首关于春天的诗")
    assert reply.text == REFUSAL
    assert "依据：" not in reply.text
    assert not re.search(r"第[一二三四五六七八九十百]+条", reply.text)
    assert "《" not in reply.text


async def test_start_and_help_list_every_command_including_features() -> None:
    bot = TestBot(ProbeFeature())
    start = (await bot.say("/start")).text
    help_ = (await bot.say("/help@dangjian_bot")).text
    assert start.startswith(texts.START)
    for text in (start, help_):
        assert texts.HELP_HEADER in text
        for usage, description in [*texts.BASE_HELP, *ProbeFeature.help_lines]:
            assert usage in text and description in text
        for word in ("/start", "/help", "/ask", "/meeting", "/meetings"):
            assert word in text


async def test_unknown_command_names_it_and_shows_help() -> None:
    bot = TestBot(ProbeFeature())
    reply = (await bot.say("/xyz 参数")).text
    assert reply.startswith("没有 /xyz 这个命令")
    assert texts.HELP_HEADER in reply and "/meeting plan" in reply
    assert bot.qa.questions == []


async def test_feature_command_routed_with_args_and_admin_flag() -> None:
    feature = ProbeFeature()
    bot = TestBot(feature, admins={"telegram:9001"})
    assert (await bot.say("/meeting@dangjian_bot add 周五")).text == "feature:meeting:add 周五"
    assert (await bot.say("/meetings", user="9001")).text == "feature:meetings:"
    assert feature.commands_seen == [("meeting", "add 周五", False), ("meetings", "", True)]
    assert bot.core.feature_commands() == {"meeting", "meetings", "files"}


async def test_feature_on_text_consumes_before_question_answering() -> None:
    bot = TestBot(ProbeFeature())
    assert (await bot.say("完成")).text == "feature consumed 完成"
    assert bot.qa.questions == []


async def test_group_chatter_not_addressed_gets_nothing() -> None:
    feature = ProbeFeature()
    bot = TestBot(feature)
    for text in ("大家好，明天开会吗？", "/help", "完成"):
        assert await bot.push(text, chat_type=ChatType.GROUP, addressed=False) == []
    assert bot.qa.questions == [] and feature.commands_seen == []
    addressed = await bot.say("党组会议多久召开一次？", chat_type=ChatType.GROUP)
    assert "依据" in addressed.text


@pytest.mark.parametrize("text", ["👍", "🙏🙏🙏", "？？？", "。。。!!!", "……", "😀 ！", "\u200b", "👨‍👩‍👧"])
async def test_emoji_or_punctuation_only_gets_hint_without_retrieval(text: str) -> None:
    bot = TestBot()
    assert (await bot.say(text)).text == texts.EMPTY_QUESTION
    assert bot.qa.questions == []


@pytest.mark.parametrize(("problem", "expected"), [
    (Problem.NOT_TEXT, texts.NOT_TEXT), (Problem.FILE_TOO_BIG, texts.FILE_TOO_BIG),
    (Problem.FILE_UNREADABLE, texts.FILE_UNREADABLE),
])
async def test_what_an_adapter_could_not_read_is_explained_by_the_core(problem: Problem, expected: str) -> None:
    bot = TestBot(ProbeFeature())
    assert (await bot.say(problem=problem)).text == expected
    assert await bot.push(problem=problem, chat_type=ChatType.GROUP, addressed=False) == []  # group chatter
    assert bot.qa.questions == []


async def test_raising_answerer_apologises_and_next_message_works(caplog) -> None:
    bot = TestBot(qa=StubAnswerer(fail=True))
    with caplog.at_level("ERROR"):
        reply = await bot.say("党组会议多久召开一次？")
    assert reply.text == texts.INTERNAL_ERROR
    assert "retrieval exploded" not in reply.text and "Traceback" not in reply.text
    assert any("handler failed" in r.getMessage() for r in caplog.records)
    bot.qa.fail = False
    assert "依据" in (await bot.say("党组会议多久召开一次？")).text
    assert len(bot.qa.questions) == 2


async def test_storage_outage_gets_the_polite_service_notice() -> None:
    bot = TestBot(qa=StubAnswerer(fail=StorageUnavailable("database unavailable: OperationalError")))
    reply = await bot.say("党组会议多久召开一次？")
    assert reply.text == texts.SERVICE_UNAVAILABLE and "Operational" not in reply.text


async def test_long_question_is_cut_before_retrieval() -> None:
    bot = TestBot(max_question_chars=50)
    question = "党组会议" * 100
    await bot.say(question)
    await bot.say("/ask " + question)
    assert [len(q) for q in bot.qa.questions] == [50, 50]
    assert bot.qa.questions[0] == question[:50]


async def test_unknown_callback_prefix_gives_stale_button_toast() -> None:
    feature = ProbeFeature()
    bot = TestBot(feature)
    for data in ("old:1", "chk:next", "mtgx:1", "garbage"):
        reply = await bot.press(data)
        assert reply.toast == texts.STALE_BUTTON and reply.text == ""
    assert feature.callbacks == []


async def test_callback_routed_to_feature_owning_prefix() -> None:
    feature = ProbeFeature()
    bot = TestBot(feature)
    assert (await bot.press("mtg:cancel:7")).toast == "got mtg:cancel:7"
    # A button press in a group is not "addressed" text, but still reaches its feature.
    assert (await bot.press("mtg:ok", chat_type=ChatType.GROUP, addressed=False)).toast == "got mtg:ok"
    assert feature.callbacks == ["mtg:cancel:7", "mtg:ok"]


def test_commands_for_menu_lists_feature_commands_once() -> None:
    menu = TestBot(ProbeFeature()).core.commands_for_menu()
    words = [w for w, _ in menu]
    assert words[:2] == ["start", "help"]
    assert sorted(words) == sorted({"start", "help", "new", "meeting", "meetings"})
    assert len(words) == len(set(words))
    for word, description in menu:
        assert re.fullmatch(r"[a-z0-9_]{1,32}", word)  # Telegram setMyCommands rule
        assert 0 < len(description) <= 60


# Replies shaped to capabilities ------------------------------------------------------------
async def test_buttons_become_typed_replies_and_files_a_note_where_the_platform_has_none() -> None:
    rich, plain = TestBot(ProbeFeature()), TestBot(ProbeFeature(), caps=PLAIN, platform="wecom")
    full = await rich.say("/files")
    assert full.buttons and full.file is not None and full.text == "会议日程已生成"
    fitted = await plain.say("/files")
    assert fitted.buttons == [] and fitted.file is None
    first, hint, _, note = fitted.text.split("\n")
    assert first == "会议日程已生成" and hint == texts.BUTTONS_AS_TYPED.format(labels="完成 / 跳过")
    assert note == texts.FILE_NOT_SENT.format(filename="m.ics") and "mtg:" not in fitted.text
    toast = await plain.press("mtg:x")
    assert toast.text == "got mtg:x" and toast.toast is None  # no buttons, no toasts: shown as text


async def test_pushes_are_shaped_to_the_adapters_capabilities() -> None:
    bot = TestBot(caps=PLAIN, platform="wecom")
    ref = ChatRef(platform="wecom", chat_id="lisi", user_id="lisi")
    await bot.core.outbound.send(ref, [OutgoingMessage(text="第1步", buttons=[[Button(label="完成", data="chk:1")]])])
    assert bot.outbound.texts == ["第1步\n" + texts.BUTTONS_AS_TYPED.format(labels="完成")]


# No blocking work on the event loop --------------------------------------------------------
class SlowDatabaseFeature:
    """/status does a slow synchronous database call, like the real features' SQLAlchemy work."""

    commands = ("status",)
    callback_prefix = None
    help_lines: list[tuple[str, str]] = []

    def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        time.sleep(2.0)  # a locked table, a slow network round trip…
        return [OutgoingMessage(text="进度")]

    def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        return []

    def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        return None


async def test_a_slow_database_call_in_one_chat_does_not_delay_another_chats_answer() -> None:
    bot = TestBot(SlowDatabaseFeature())
    slow = asyncio.create_task(bot.say("/status", user="a"))
    await asyncio.sleep(0.05)  # chat a is inside its database call
    started = time.monotonic()
    answer = await bot.say("党组会议多久召开一次？", user="b")
    assert time.monotonic() - started < 1.0, "chat b waited for chat a's database call"
    assert "依据" in answer.text and not slow.done()
    assert (await slow).text == "进度"


# The answer hook (the question log) -------------------------------------------------------
class Hook:
    """Adds a line to answers; ``delay`` seconds slow, or raising when ``fail``."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.seen: list[tuple[str, str, bool, str]] = []

    def on_answer(self, ctx: Context, answered, reply: OutgoingMessage) -> OutgoingMessage:
        time.sleep(self.delay)
        if self.fail:
            raise StorageUnavailable("database unavailable: OperationalError")
        self.seen.append((ctx.msg.user_id, answered.question, answered.answer.refused, answered.answer.mode))
        return reply.model_copy(update={"text": reply.text + "\n（已记录）"})


async def test_the_answer_hook_sees_answers_and_refusals_but_no_command_replies() -> None:
    hook = Hook()
    bot = TestBot(qa=StubAnswerer(reply=lambda q: Answer(question=q, answer=REFUSAL, refused="诗" in q)),
                  on_answer=hook)
    assert (await bot.say("党组会议多久召开一次？")).text.endswith("（已记录）")
    assert (await bot.say("/ask 写一首诗", user="u2")).text.endswith("（已记录）")
    await bot.say("/help")
    assert hook.seen == [("u1", "党组会议多久召开一次？", False, "extractive"), ("u2", "写一首诗", True, "extractive")]


async def test_the_answer_hook_gets_the_members_own_words_not_the_merged_follow_up() -> None:
    class Memory:
        def resolve(self, ref, text):
            return Resolved(f"党组会议{text}", understood="党组会议")

        def remember(self, ref, resolved, answer):
            pass

    hook = Hook()
    bot = TestBot(on_answer=hook, conversation=Memory())
    assert "接上一问" in (await bot.say("那需要多少人到会呢？")).text
    assert bot.qa.questions == ["党组会议那需要多少人到会呢？"]
    assert hook.seen == [("u1", "那需要多少人到会呢？", False, "extractive")]


async def test_a_failing_or_slow_answer_hook_never_breaks_or_holds_back_the_answer(caplog) -> None:
    bot = TestBot(on_answer=Hook(fail=True))
    with caplog.at_level("ERROR"):
        reply = await bot.say("党组会议多久召开一次？")
    assert "依据" in reply.text and "已记录" not in reply.text and "answer hook failed" in caplog.text
    slow = TestBot(on_answer=Hook(delay=1.0))
    slow.core.answer_hook_seconds = 0.1
    started = time.monotonic()
    reply = await slow.say("党组会议多久召开一次？")
    assert time.monotonic() - started < 0.7 and "依据" in reply.text and "已记录" not in reply.text


# split_text --------------------------------------------------------------------------------
def assert_round_trip(text: str, chunks: list[str]) -> None:
    """Chunks are pieces of ``text`` in order; what lies between them is only whitespace.

    Runs of three or more newlines count as one block separator (split_text may shorten them).
    """
    body = re.sub(r"\n{3,}", "\n\n", text.strip("\n"))
    pos = 0
    for chunk in (re.sub(r"\n{3,}", "\n\n", c) for c in chunks):
        found = body.find(chunk, pos)
        assert found >= 0, f"chunk not found in order: {chunk[:40]!r}"
        assert body[pos:found].strip() == "", f"characters lost before {chunk[:40]!r}"
        pos = found + len(chunk)
    assert body[pos:].strip() == ""
    assert re.sub(r"\s", "", "".join(chunks)) == re.sub(r"\s", "", text)


def assert_limits(chunks: list[str], max_chars: int | None = None, max_bytes: int | None = None) -> None:
    assert chunks, "no chunks"
    for c in chunks:
        assert c.strip(), "empty chunk"
        if max_chars:
            assert len(c) <= max_chars
        if max_bytes:
            assert len(c.encode("utf-8")) <= max_bytes


def test_split_short_text_is_one_chunk() -> None:
    text = "根据第十八条：党组会议一般每月召开1次。\n\n依据：\n\n《细则》第十八条\n“…”"
    assert split_text(text, max_chars=4096) == [text]
    assert split_text(text, max_bytes=2048) == [text]
    assert split_text(text) == [text]
    assert split_text("") == [] and split_text("\n\n\n") == []


def test_split_keeps_blocks_whole_when_they_fit() -> None:
    blocks = [f"《文件{i}》第{i}条\n“" + "党组会议一般每月召开1次。" * (10 + 3 * i) + "”" for i in range(8)]
    text = "\n\n".join(blocks)
    limit = max(len(b) for b in blocks) + 10
    chunks = split_text(text, max_chars=limit)
    assert len(chunks) > 1
    assert_limits(chunks, max_chars=limit)
    assert_round_trip(text, chunks)
    for block in blocks:
        assert sum(block in c for c in chunks) == 1, "a block that fits was cut"
    # Blocks are packed: no chunk could have taken the next block too.
    for a, b in zip(chunks, chunks[1:]):
        assert len(a + "\n\n" + b.split("\n\n")[0]) > limit


def test_split_oversized_block_cut_at_lines_then_hard_cut() -> None:
    lines = [f"第{i}行：" + "支部委员会会议须有半数以上委员到会方可进行。" * 3 for i in range(20)]
    block = "\n".join(lines)
    text = "开头一句。\n\n" + block + "\n\n结尾一句。"
    chunks = split_text(text, max_chars=200)
    assert_limits(chunks, max_chars=200)
    assert_round_trip(text, chunks)
    for line in lines:  # each line fits, so none is cut
        assert any(line in c for c in chunks)

    long_line = "a" * 10000
    chunks = split_text(long_line, max_chars=4096)
    assert [len(c) for c in chunks] == [4096, 4096, 1808]
    assert "".join(chunks) == long_line


def test_split_chinese_by_bytes() -> None:
    line = "党组会议一般每月召开一次遇有重要情况可以随时召开" * 80  # 2000 CJK chars, one line
    chunks = split_text(line, max_bytes=2048)
    assert_limits(chunks, max_bytes=2048)
    assert len(chunks[0]) == 682  # 682 × 3 = 2046 bytes; one more would be 2049
    assert "".join(chunks) == line
    mixed = ("第1条 abc 党组会议。\n" * 300).strip()
    chunks = split_text(mixed, max_chars=4096, max_bytes=2048)
    assert_limits(chunks, max_chars=4096, max_bytes=2048)
    assert_round_trip(mixed, chunks)
    assert all(not c.startswith("\n") and not c.endswith("\n") for c in chunks)


def test_split_both_limits_the_stricter_wins() -> None:
    text = "\n\n".join("说明" * 400 for _ in range(5))  # each block 800 chars = 2400 bytes
    chunks = split_text(text, max_chars=4096, max_bytes=2048)
    assert_limits(chunks, max_chars=4096, max_bytes=2048)
    assert_round_trip(text, chunks)
    chunks = split_text(text, max_chars=500, max_bytes=100000)
    assert_limits(chunks, max_chars=500)
    assert_round_trip(text, chunks)


def test_split_never_returns_empty_chunks() -> None:
    text = "\n\n\n\n甲\n\n\n\n\n\n乙\n\n   \n\n\n\n" + "丙" * 30 + "\n\n\n"
    for limit in (1, 2, 3, 5, 31, 1000):
        chunks = split_text(text, max_chars=limit)
        assert_limits(chunks, max_chars=limit)
        assert_round_trip(text, chunks)


def test_split_random_texts_round_trip() -> None:
    rng = random.Random(20240601)
    alphabet = "党组会议支部委员每月召开一次abc 123，。！？😀"
    for _ in range(500):
        parts = []
        for _ in range(rng.randint(1, 12)):
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120))))
            parts.append(rng.choice(["\n", "\n\n", "\n\n\n", "", " \n", "\n \n", "\n\n \n\n"]))
        text = "".join(parts)
        max_chars = rng.choice([None, 1, 2, 10, 37, 100, 4096])
        max_bytes = rng.choice([None, 4, 16, 64, 300, 2048])  # ≥ 4: one emoji is 4 bytes
        chunks = split_text(text, max_chars=max_chars, max_bytes=max_bytes)
        if not text.strip():
            assert chunks == []
            continue
        assert_limits(chunks, max_chars, max_bytes)
        assert_round_trip(text, chunks)


# format_answer -----------------------------------------------------------------------------
def test_format_answer_answer_first_then_one_block_per_citation() -> None:
    answer = Answer(
        question="党组会议多久召开一次？", answer="根据《细则》第十八条：党组会议一般每月召开1次。",
        refused=False, citations=[cite("第十八条", ART18, 0.9), cite("第十九条", ART19, 0.8)],
    )
    text = format_answer(answer)
    blocks = text.split("\n\n")
    assert blocks[0] == answer.answer
    assert blocks[1] == "依据："
    assert blocks[2].startswith(f"《{TITLE}》第十八条\n“") and blocks[2].endswith("”")
    assert "每月召开1次" in blocks[2]
    assert "第十八条 党组" not in blocks[2]  # the label is not repeated inside the quote
    assert blocks[3].startswith(f"《{TITLE}》第十九条\n“")
    assert len(blocks) == 4
    assert "[1]" not in text  # extractive mode has no markers


def test_format_answer_hides_weak_secondary_citations_in_extractive_mode() -> None:
    answer = Answer(question="党组会议多久召开一次？", answer="根据…：每月召开1次。", refused=False,
                    citations=[cite("第十八条", ART18, 0.9), cite("第十九条", ART19, 0.3),
                               cite("第二十条", "第二十条 表决。", 0.2)])
    text = format_answer(answer)
    assert "第十八条" in text and "第十九条" not in text and "第二十条" not in text


def test_format_answer_long_quote_is_capped() -> None:
    long_sentence = "党组会议" + "应当按照规定程序研究决定重大事项" * 40 + "。"
    answer = Answer(question="党组会议", answer="根据《细则》第三十条：……", refused=False,
                    citations=[cite("第三十条", "第三十条 " + long_sentence, 0.9)])
    block = format_answer(answer).split("\n\n")[2]
    quote = block.split("\n", 1)[1]
    assert quote.startswith("“") and quote.endswith("……”")
    assert len(quote) == 1 + MAX_QUOTE_CHARS + 2 + 1
    assert quote[1:-3] == long_sentence[:MAX_QUOTE_CHARS]


def test_format_answer_llm_mode_numbers_citations() -> None:
    answer = Answer(
        question="党组会议多久召开一次？需要多少人到会？", mode="llm", refused=False,
        answer="党组会议一般每月召开1次[1]。应当有半数以上党组成员到会方可召开[2]。",
        citations=[cite("第十八条", ART18, 0.9), cite("第十九条", ART19, 0.1)],  # low score still shown
    )
    blocks = format_answer(answer).split("\n\n")
    assert blocks[0] == answer.answer and blocks[1] == "依据："
    assert blocks[2].startswith(f"[1] 《{TITLE}》第十八条\n“")
    assert blocks[3].startswith(f"[2] 《{TITLE}》第十九条\n“")


def test_format_answer_llm_every_marker_in_the_answer_has_its_citation() -> None:
    # The LLM may cite up to five passages (retrieval.llm.MAX_PASSAGES); no [n] may dangle.
    citations = [cite(f"第{n}条", f"第{n}条 规定{n}。", 0.5) for n in "一二三四"]
    answer = Answer(question="党组会议", mode="llm", refused=False, citations=citations,
                    answer="甲[1]。乙[2]。丙[3]。丁[4]。")
    text = format_answer(answer)
    for n in range(1, 5):
        assert f"\n[{n}] 《" in text, f"[{n}] is cited in the answer but has no citation block"


def test_format_refusal_and_no_citation_answers_are_plain() -> None:
    refused = Answer(question="写诗", answer=REFUSAL, refused=True)
    assert format_answer(refused) == REFUSAL
    bare = Answer(question="q", answer="没有引用的回答", refused=False)
    assert format_answer(bare) == "没有引用的回答"
