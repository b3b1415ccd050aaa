"""The Telegram adapter in-process: its real PTB Application processes updates
(``Application.process_update``) and every Bot API call is answered by the fake Bot API through
a recording request (tests/fakes/telegram_request.py): no server, no polling."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from telegram import Update
from telegram.error import BadRequest

from bot.adapters import telegram as tg_adapter
from bot.adapters.telegram import CAPABILITIES, TelegramAdapter, derive_base_file_url
from bot.adapters.telegram.adapter import PerChatUpdateProcessor
from bot.core import texts
from bot.core.engine import Core
from bot.core.feature import Context
from bot.core.models import Button, ChatRef, IncomingFile, OutgoingFile, OutgoingMessage
from bot.settings import Settings
from bot.store.db import Database
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_request import FakeTelegramRequest
from tests.harness import ARTICLE, StubAnswerer, TestBot, make_settings as harness_settings

PRIVATE = 1001
USER = 1001
OTHER_USER = 1002
GROUP = -1001234567890
ARTICLE_TEXT = ARTICLE


@dataclass
class ProbeFeature:
    """A tiny feature: a keyboard, a group-admin probe, a file, and documents via on_text."""

    commands: tuple[str, ...] = ("tbtn", "tadmin", "tfile")
    callback_prefix: str | None = "t"
    help_lines: list[tuple[str, str]] = field(default_factory=lambda: [
        ("/tbtn", "测试按钮"), ("/tadmin", "测试群管理员"), ("/tfile 说明", "测试文件"),
    ])
    contexts: list[Context] = field(default_factory=list)
    files: list[IncomingFile] = field(default_factory=list)

    def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        self.contexts.append(ctx)
        if command == "tbtn":
            return [OutgoingMessage(text="请选择下一步：", buttons=[[Button(label="下一步", data="t:next")],
                                                                [Button(label="结束", data="t:end")]])]
        if command == "tadmin":
            return [OutgoingMessage(text=f"群管理员：{ctx.msg.sender_is_chat_admin}")]
        file = OutgoingFile(filename="meeting.ics", content=b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
                            mime_type="text/calendar")
        return [OutgoingMessage(text=args or "会议日程文件", file=file, buttons=[[Button(label="好", data="t:ok")]])]

    def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        self.contexts.append(ctx)
        if data == "t:end":
            return [OutgoingMessage(text="", toast="已结束")]
        return [OutgoingMessage(text="已进入下一步。", toast="已记录")]

    def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        if ctx.msg.file is None:
            return None
        self.files.append(ctx.msg.file)
        return [OutgoingMessage(text=f"收到文件 {ctx.msg.file.filename}（{len(ctx.msg.file.content)} 字节）")]


@dataclass
class Running:
    adapter: TelegramAdapter
    core: Core
    qa: StubAnswerer
    feature: ProbeFeature
    db: Database


def make_settings(fake: FakeTelegram, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        telegram_token=fake.token, telegram_base_url=fake.base_url, telegram_webhook_url=None,
        data_dir=tmp_path, admin_ids="",
    )
    values.update(overrides)
    return harness_settings(**values)


def make_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    db.create_schema()
    return db


@asynccontextmanager
async def running_bot(
    fake: FakeTelegram, tmp_path: Path, qa: StubAnswerer | None = None, *, start: bool = False, **overrides: object
) -> AsyncIterator[Running]:
    """The adapter on the harness's core; pushed updates are handed to ``process_update`` in order
    (``start=True`` starts it for real instead: webhook mode)."""
    feature = ProbeFeature()
    bot = TestBot(feature, qa=qa)
    db = make_db(tmp_path)
    adapter = TelegramAdapter(make_settings(fake, tmp_path, **overrides), bot.core, db,
                              request=FakeTelegramRequest(fake))
    if start:
        await adapter.start()
    else:
        await adapter.initialize()
    app = adapter.application

    async def feed() -> None:
        while True:
            for update in fake.take_updates():
                await app.process_update(Update.de_json(update, app.bot))
            await asyncio.sleep(0.005)

    feeder = asyncio.create_task(feed())
    try:
        yield Running(adapter, bot.core, bot.qa, feature, db)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        await adapter.stop()


@pytest.fixture(scope="module")
def fake_server() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
def fake(fake_server: FakeTelegram) -> FakeTelegram:
    fake_server.reset()
    return fake_server


@pytest.fixture
async def bot(fake: FakeTelegram, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_bot(fake, tmp_path) as running:
        yield running


async def only_reply_after(fake: FakeTelegram, chat_id: int, mark: int, chat_type: str) -> list:
    """Push an answered sentinel (/help) in the same chat; return what was sent since ``mark``.

    The adapter handles one chat's updates in order, so once the sentinel is answered every
    earlier update of that chat has been fully handled: no sleeping needed."""
    fake.push_text(chat_id, USER, "/help", chat_type=chat_type)
    await fake.wait_for_messages(lambda new: any(texts.HELP_HEADER in (m.text or "") for m in new), since=mark)
    return fake.sent[mark:]


# ---------------------------------------------------------------------- private chats
async def test_private_question_gets_cited_answer_as_first_message(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(PRIVATE, USER, "党组会议多久召开一次？")
    [reply] = await fake.wait_for_messages(1)
    assert reply.chat_id == PRIVATE
    assert "每月" in reply.text and "第十八条" in reply.text and ARTICLE_TEXT in reply.text
    assert reply.parse_mode is None and reply.reply_markup is None
    assert bot.qa.questions == ["党组会议多久召开一次？"]
    assert (PRIVATE, "typing") in fake.chat_actions
    # typing, then the answer itself as the first message (no placeholder edited later)
    methods = [m for m, _ in fake.requests if m not in {"getMe", "setMyCommands"}]
    assert methods == ["sendChatAction", "sendMessage"]


async def test_start_registers_menu_and_reads_username(fake: FakeTelegram, bot: Running) -> None:
    commands = [c["command"] for c in fake.my_commands]
    assert commands[:2] == ["start", "help"]
    assert {"tbtn", "tadmin", "tfile"} <= set(commands)
    assert bot.adapter.username == fake.username
    assert fake.calls("getMe") and fake.calls("setMyCommands")


async def test_polling_asks_only_for_messages_and_button_presses(fake: FakeTelegram, tmp_path: Path) -> None:
    async with running_bot(fake, tmp_path, start=True):
        await fake.wait_for(lambda: fake.calls("getUpdates"))
    assert fake.calls("deleteWebhook") and fake.allowed_updates == ["message", "callback_query"]


async def test_help_lists_commands(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(PRIVATE, USER, "/help")
    [reply] = await fake.wait_for_messages(1)
    assert texts.HELP_HEADER in reply.text
    for command in ("/start", "/help", "/ask", "/tbtn", "/tadmin"):
        assert command in reply.text


async def test_unknown_command_gets_help(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(PRIVATE, USER, "/nosuch")
    [reply] = await fake.wait_for_messages(1)
    assert "/nosuch" in reply.text and texts.HELP_HEADER in reply.text
    assert bot.qa.questions == []


async def test_long_answer_is_split_under_limit(fake: FakeTelegram, tmp_path: Path) -> None:
    long_answer = "\n".join(f"第{i}点：党组会议每月召开，会议议题由党组书记确定，重要事项须集体讨论决定。" * 3 for i in range(120))
    assert len(long_answer) > 2 * 4096
    async with running_bot(fake, tmp_path, qa=StubAnswerer(long_answer)):
        fake.push_text(PRIVATE, USER, "请详细说明党组会议的程序")
        replies = await fake.wait_for_messages(lambda new: any("第十八条" in (m.text or "") for m in new))
    assert len(replies) >= 3
    assert all(len(m.text) <= 4096 for m in replies)
    joined = "\n".join(m.text for m in replies)
    assert "第0点" in joined and "第119点" in joined and "第十八条" in joined


async def test_failing_answerer_apologises_and_bot_keeps_answering(fake: FakeTelegram, tmp_path: Path) -> None:
    qa = StubAnswerer(fail=True)
    async with running_bot(fake, tmp_path, qa=qa):
        fake.push_text(PRIVATE, USER, "第一个问题")
        [first] = await fake.wait_for_messages(1)
        assert first.text == texts.INTERNAL_ERROR
        qa.fail = False
        fake.push_text(PRIVATE, USER, "第二个问题")
        [second] = await fake.wait_for_messages(1, since=1)
        assert "第十八条" in second.text


async def test_very_long_incoming_message_is_handled(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(PRIVATE, USER, "党组会议" * 5000)  # 20 000 characters
    [reply] = await fake.wait_for_messages(1)
    assert "第十八条" in reply.text
    assert len(bot.qa.questions[0]) <= bot.core.max_question_chars


async def test_edited_message_and_channel_post_are_ignored(fake: FakeTelegram, bot: Running) -> None:
    fake.push_edited(PRIVATE, USER, "党组会议多久召开一次？（已编辑）")
    fake.push_channel_post(-1009999, "频道消息 @" + fake.username)
    sent = await only_reply_after(fake, PRIVATE, 0, "private")
    assert len(sent) == 1
    assert bot.qa.questions == []


async def test_sticker_and_photo_in_private_get_text_hint(fake: FakeTelegram, bot: Running) -> None:
    fake.push_sticker(PRIVATE, USER)
    fake.push_photo(PRIVATE, USER)
    replies = await fake.wait_for_messages(2)
    assert [m.text for m in replies] == [texts.NOT_TEXT] * 2
    assert bot.qa.questions == []


async def test_photo_with_caption_is_a_question(fake: FakeTelegram, bot: Running) -> None:
    fake.push_photo(PRIVATE, USER, caption="这张通知里的会议多久开一次？")
    [reply] = await fake.wait_for_messages(1)
    assert "第十八条" in reply.text
    assert bot.qa.questions == ["这张通知里的会议多久开一次？"]


# ---------------------------------------------------------------------- groups
async def test_group_chatter_without_mention_gets_no_reply(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(GROUP, USER, "大家好，今天下午开会吗？", chat_type="supergroup")
    fake.push_text(GROUP, OTHER_USER, "党组会议多久召开一次？", chat_type="group")
    fake.push_sticker(GROUP, USER, chat_type="supergroup")
    fake.push_photo(GROUP, USER, chat_type="supergroup")
    sent = await only_reply_after(fake, GROUP, 0, "supergroup")
    assert len(sent) == 1
    assert bot.qa.questions == []


async def test_group_mention_gets_reply_without_the_mention(fake: FakeTelegram, bot: Running) -> None:
    update_text = f"@{fake.username} 党组会议多久召开一次？"
    fake.push_text(GROUP, USER, update_text, chat_type="supergroup")
    [reply] = await fake.wait_for_messages(1)
    assert reply.chat_id == GROUP and "第十八条" in reply.text
    assert bot.qa.questions == ["党组会议多久召开一次？"]
    assert reply.reply_to_message_id is not None  # quotes the question in the group


async def test_group_mention_inside_chinese_text_with_emoji(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(GROUP, USER, f"👋请问@{fake.username}，党组会议多久召开一次？", chat_type="group")
    [reply] = await fake.wait_for_messages(1)
    assert "第十八条" in reply.text
    assert bot.qa.questions == ["👋请问党组会议多久召开一次？"]


async def test_text_mention_of_the_bot_addresses_it(fake: FakeTelegram, bot: Running) -> None:
    text = "党建助手 请问党组会议多久召开一次？"
    entity = {"type": "text_mention", "offset": 0, "length": 4,
              "user": {"id": fake.bot_id, "is_bot": True, "first_name": "党建助手"}}
    fake.push_text(GROUP, USER, text, chat_type="supergroup", entities=[entity])
    [reply] = await fake.wait_for_messages(1)
    assert "第十八条" in reply.text
    assert bot.qa.questions == ["请问党组会议多久召开一次？"]


async def test_mention_of_someone_else_is_not_addressed(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(GROUP, USER, "@someone_else 党组会议多久召开一次？", chat_type="supergroup")
    sent = await only_reply_after(fake, GROUP, 0, "supergroup")
    assert len(sent) == 1 and bot.qa.questions == []


async def test_group_commands_for_this_bot_and_others(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(GROUP, USER, f"/help@{fake.username}", chat_type="supergroup")
    [reply] = await fake.wait_for_messages(1)
    assert texts.HELP_HEADER in reply.text
    mark = fake.mark()
    fake.push_text(GROUP, USER, "/help@otherbot", chat_type="supergroup")
    fake.push_text(GROUP, USER, "/ask@otherbot 党组会议多久召开一次？", chat_type="supergroup")
    sent = await only_reply_after(fake, GROUP, mark, "supergroup")
    assert len(sent) == 1 and bot.qa.questions == []


async def test_plain_command_and_ask_in_group(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(GROUP, USER, "/ask 党组会议多久召开一次？", chat_type="group")
    [reply] = await fake.wait_for_messages(1)
    assert "第十八条" in reply.text
    assert bot.qa.questions == ["党组会议多久召开一次？"]


async def test_reply_to_bot_in_group_gets_reply(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(GROUP, USER, "/help", chat_type="supergroup")
    await fake.wait_for_messages(1)
    fake.push_text(GROUP, USER, "那党组会议多久召开一次？", chat_type="supergroup", reply_to_bot=True)
    [reply] = await fake.wait_for_messages(1, since=1)
    assert "第十八条" in reply.text
    assert bot.qa.questions == ["那党组会议多久召开一次？"]


async def test_reply_to_another_user_is_not_addressed(fake: FakeTelegram, bot: Running) -> None:
    first = fake.text_message(GROUP, OTHER_USER, "今天开会", chat_type="supergroup")
    fake.push_update({"message": first})
    fake.push_text(GROUP, USER, "收到", chat_type="supergroup", reply_to_message_id=first["message_id"])
    sent = await only_reply_after(fake, GROUP, 0, "supergroup")
    assert len(sent) == 1 and bot.qa.questions == []


async def test_chat_admin_is_checked_only_for_feature_commands(fake: FakeTelegram, bot: Running) -> None:
    fake.add_admin(GROUP, USER)
    fake.push_text(GROUP, USER, f"@{fake.username} 党组会议多久召开一次？", chat_type="supergroup")
    fake.push_text(GROUP, USER, "/help", chat_type="supergroup")
    await fake.wait_for_messages(2)
    assert fake.calls("getChatMember") == []

    fake.push_text(GROUP, USER, "/tadmin", chat_type="supergroup")
    fake.push_text(GROUP, OTHER_USER, f"/tadmin@{fake.username}", chat_type="supergroup")
    replies = await fake.wait_for_messages(2, since=2)
    assert [m.text for m in replies] == ["群管理员：True", "群管理员：False"]
    assert len(fake.calls("getChatMember")) == 2

    fake.add_admin(GROUP, OTHER_USER, creator=True)
    fake.push_text(GROUP, OTHER_USER, "/tadmin", chat_type="supergroup")
    [reply] = await fake.wait_for_messages(1, since=4)
    assert reply.text == "群管理员：True"

    fake.push_text(PRIVATE, USER, "/tadmin")  # private chats never ask
    [reply] = await fake.wait_for_messages(1, since=5)
    assert reply.text == "群管理员：False" and len(fake.calls("getChatMember")) == 3


# ---------------------------------------------------------------------- buttons and files
async def test_buttons_and_callback_press(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(PRIVATE, USER, "/tbtn")
    [menu] = await fake.wait_for_messages(1)
    assert menu.buttons == [[("下一步", "t:next")], [("结束", "t:end")]]

    actions_before = len(fake.chat_actions)
    update_id = fake.push_callback(PRIVATE, USER, "t:next", message_id=menu.message_id)
    [reply] = await fake.wait_for_messages(1, since=1)
    assert reply.text == "已进入下一步。"
    assert fake.callback_answers == [{"callback_query_id": str(update_id), "text": "已记录", "show_alert": False}]
    assert len(fake.chat_actions) == actions_before  # no typing for button presses
    ctx = bot.feature.contexts[-1]
    assert ctx.msg.callback_data == "t:next" and ctx.msg.text == "" and ctx.msg.user_id == str(USER)

    fake.push_callback(PRIVATE, USER, "t:end")  # toast only: answered, nothing sent
    fake.push_callback(PRIVATE, USER, "zz:gone")  # nobody owns it: stale-button toast
    await fake.wait_for(lambda: len(fake.callback_answers) == 3)
    assert [a["text"] for a in fake.callback_answers[1:]] == ["已结束", texts.STALE_BUTTON]
    sent = await only_reply_after(fake, PRIVATE, 2, "private")
    assert len(sent) == 1


async def test_long_text_with_buttons_puts_keyboard_on_last_chunk(fake: FakeTelegram, bot: Running) -> None:
    long_text = "\n".join(f"第{i}项：按要求准备会议材料并报送上级党组织审核。" for i in range(400))
    message = OutgoingMessage(text=long_text, buttons=[[Button(label="下一步", data="t:next")]])
    await bot.adapter.send(ChatRef(platform="telegram", chat_id=str(PRIVATE), user_id=str(USER)), [message])
    sent = fake.sent
    assert len(sent) >= 2 and all(len(m.text) <= 4096 for m in sent)
    assert [bool(m.reply_markup) for m in sent] == [False] * (len(sent) - 1) + [True]


async def test_file_is_sent_as_document_with_caption(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(PRIVATE, USER, "/tfile")
    [doc] = await fake.wait_for_messages(1)
    assert doc.method == "sendDocument"
    assert doc.document is not None and doc.document.filename == "meeting.ics"
    assert doc.document.content.startswith(b"BEGIN:VCALENDAR")
    assert doc.text == "会议日程文件" and doc.buttons == [[("好", "t:ok")]]


async def test_file_with_long_text_sends_text_first(fake: FakeTelegram, bot: Running) -> None:
    fake.push_text(PRIVATE, USER, "/tfile " + "会议说明" * 400)  # 1600 chars > caption limit
    sent = await fake.wait_for_messages(2)
    assert [m.method for m in sent] == ["sendMessage", "sendDocument"]
    assert sent[0].text.startswith("会议说明") and sent[1].text is None


async def test_private_document_is_downloaded_and_passed_on(fake: FakeTelegram, bot: Running) -> None:
    content = "第一条 为了规范党组工作……".encode() * 10
    fake.push_document(PRIVATE, USER, "条例.txt", content, caption="请更新文件库")
    [reply] = await fake.wait_for_messages(1)
    assert reply.text == f"收到文件 条例.txt（{len(content)} 字节）"
    [received] = bot.feature.files
    assert received.content == content and received.filename == "条例.txt"
    assert fake.downloads


async def test_too_big_document_is_refused_without_download(fake: FakeTelegram, bot: Running) -> None:
    fake.push_document(PRIVATE, USER, "big.pdf", b"%PDF small", declared_size=6 * 1024 * 1024)
    [reply] = await fake.wait_for_messages(1)
    assert reply.text == texts.FILE_TOO_BIG
    assert bot.feature.files == [] and fake.downloads == []


# ---------------------------------------------------------------------- pushes, errors, run()
async def test_outbound_send_and_failure_raises(fake: FakeTelegram, bot: Running) -> None:
    ref = ChatRef(platform="telegram", chat_id=str(GROUP), user_id=str(USER))
    await bot.adapter.send(ref, [OutgoingMessage(text="提醒：明天上午9点召开支部委员会。")])
    assert fake.sent[-1].chat_id == GROUP and fake.sent[-1].text.startswith("提醒")
    assert bot.adapter.capabilities == CAPABILITIES
    fake.fail_next("sendMessage", 400, "Bad Request: chat not found")
    with pytest.raises(BadRequest):
        await bot.adapter.send(ref, [OutgoingMessage(text="再次提醒")])


async def test_send_error_is_logged_and_bot_keeps_running(
    fake: FakeTelegram, bot: Running, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next("sendMessage", 502, "Bad Gateway")
    fake.push_text(PRIVATE, USER, "第一个问题")
    await fake.wait_for(lambda: len(fake.calls("sendMessage")) == 1)
    fake.push_text(PRIVATE, USER, "第二个问题")
    [reply] = await fake.wait_for_messages(1)
    assert "第十八条" in reply.text
    assert bot.qa.questions == ["第一个问题", "第二个问题"]
    assert "failed" in caplog.text


async def test_flood_control_is_retried(fake: FakeTelegram, bot: Running) -> None:
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    fake.push_text(PRIVATE, USER, "党组会议多久召开一次？")
    [reply] = await fake.wait_for_messages(1, timeout=5)
    assert "第十八条" in reply.text


async def test_token_and_webhook_secret_never_logged(fake: FakeTelegram, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_bot(fake, tmp_path, telegram_webhook_secret="s3cret_Value-2"):
        fake.push_text(PRIVATE, USER, "党组会议多久召开一次？")
        await fake.wait_for_messages(1)
        # what httpx logs for every request to the real Bot API: the token is in the URL
        logging.getLogger("httpx").info('HTTP Request: POST %s "HTTP/1.1 200 OK"', f"{fake.base_url}{fake.token}/getMe")
        logging.getLogger("telegram.ext.ExtBot").debug("Calling Bot API endpoint `setWebhook` with parameters `%s`",
                                                       {"secret_token": "s3cret_Value-2"})
    assert "HTTP Request" in caplog.text and "setWebhook" in caplog.text
    assert fake.token not in caplog.text and fake.token.split(":", 1)[1] not in caplog.text
    assert "s3cret_Value-2" not in caplog.text


async def test_run_requires_token(tmp_path: Path) -> None:
    settings = harness_settings(telegram_token=None, data_dir=tmp_path)
    with pytest.raises(ValueError):
        await tg_adapter.run(settings, TestBot().core, make_db(tmp_path))


async def test_wrong_token_fails_start_without_leaking_it(fake: FakeTelegram, tmp_path: Path) -> None:
    settings = make_settings(fake, tmp_path, telegram_token="999:wrong-secret-token")
    adapter = TelegramAdapter(settings, TestBot().core, make_db(tmp_path), request=FakeTelegramRequest(fake))
    with pytest.raises(RuntimeError) as info:
        await adapter.start()
    assert "wrong-secret-token" not in str(info.value)


async def test_updates_of_one_chat_are_processed_in_order_and_chats_concurrently() -> None:
    processor = PerChatUpdateProcessor()
    events: list[str] = []
    gate = asyncio.Event()

    def update(update_id: int, chat_id: int) -> Update:
        chat = {"id": chat_id, "type": "private", "first_name": "x"}
        return Update.de_json({"update_id": update_id, "message": {"message_id": update_id, "date": 0, "chat": chat,
                                                                   "text": "x"}}, None)

    async def work(name: str, wait: bool = False) -> None:
        events.append(f"{name} start")
        if wait:
            await gate.wait()
        events.append(f"{name} end")

    first = asyncio.create_task(processor.do_process_update(update(1, 1), work("a1", wait=True)))
    second = asyncio.create_task(processor.do_process_update(update(2, 1), work("a2")))
    other = asyncio.create_task(processor.do_process_update(update(3, 2), work("b1")))
    await other  # another chat is not held up by chat 1
    assert events == ["a1 start", "b1 start", "b1 end"]
    gate.set()
    await asyncio.gather(first, second)
    assert events[3:] == ["a1 end", "a2 start", "a2 end"]


def test_base_file_url_is_derived() -> None:
    assert derive_base_file_url("http://127.0.0.1:8081/bot") == "http://127.0.0.1:8081/file/bot"
    assert derive_base_file_url("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"


# ---------------------------------------------------------------------- webhook mode
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_webhook_mode_checks_secret_and_dedupes(
    fake: FakeTelegram, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    async with running_bot(
        fake, tmp_path, start=True, telegram_webhook_url=url, telegram_webhook_listen="127.0.0.1",
        telegram_webhook_port=port, telegram_webhook_secret="s3cret_Value-1",
    ) as running:
        assert fake.webhook is not None
        assert fake.webhook["url"] == url and fake.webhook["secret_token"] == "s3cret_Value-1"
        update = {"update_id": 777, "message": fake.text_message(PRIVATE, USER, "党组会议多久召开一次？")}

        wrong = await fake.post_webhook(update, secret_token="wrong")
        assert wrong.status_code == 403
        missing = await fake.post_webhook(update, secret_token="")
        assert missing.status_code == 403

        ok = await fake.post_webhook(update)
        assert ok.status_code == 200
        [reply] = await fake.wait_for_messages(1)
        assert "第十八条" in reply.text

        again = await fake.post_webhook(update)  # a redelivery (or another replica's copy)
        assert again.status_code == 200
        await fake.post_webhook({"message": fake.text_message(PRIVATE, USER, "/help")})
        await fake.wait_for_messages(lambda new: any(texts.HELP_HEADER in (m.text or "") for m in new), since=1)
        assert len(fake.sent) == 2
        assert running.qa.questions == ["党组会议多久召开一次？"]
        assert running.db.claim_message("telegram", "777") is False
    assert "setWebhook" in caplog.text and "s3cret_Value-1" not in caplog.text


async def test_anonymous_group_admin_counts_as_admin(fake: FakeTelegram, bot: Running) -> None:
    message = fake.text_message(GROUP, 1087968824, "/tadmin", chat_type="supergroup", first_name="Group")
    message["sender_chat"] = message["chat"]
    fake.push_update({"message": message})
    [reply] = await fake.wait_for_messages(1)
    assert reply.text == "群管理员：True" and fake.calls("getChatMember") == []


# ---------------------------------------------------------------------- the fake server itself
async def test_fake_api_is_strict_like_telegram() -> None:
    async with FakeTelegram() as server:
        api = f"{server.base_url}{server.token}"
        async with httpx.AsyncClient(timeout=5) as client:
            too_long = await client.post(f"{api}/sendMessage", data={"chat_id": "1", "text": "字" * 4097})
            assert too_long.status_code == 400 and "too long" in too_long.json()["description"]
            empty = await client.post(f"{api}/sendMessage", data={"chat_id": "1", "text": " "})
            assert empty.status_code == 400
            markdown = await client.post(f"{api}/sendMessage",
                                         data={"chat_id": "1", "text": "第1.2条", "parse_mode": "MarkdownV2"})
            assert markdown.status_code == 400 and "can't parse entities" in markdown.json()["description"]
            big_data = json.dumps({"inline_keyboard": [[{"text": "下一步", "callback_data": "步" * 30}]]})
            button = await client.post(f"{api}/sendMessage",
                                       data={"chat_id": "1", "text": "好", "reply_markup": big_data})
            assert button.status_code == 400
            ok = await client.post(f"{api}/sendMessage", data={"chat_id": "-100", "text": "字" * 4096})
            assert ok.json()["ok"] is True and ok.json()["result"]["chat"]["id"] == -100
            wrong = await client.post(f"{server.base_url}1:nope/getMe")
            assert wrong.status_code == 401
            unknown = await client.post(f"{api}/editMessageText")  # the adapter never edits: not served
            assert unknown.status_code == 404
        assert [m.chat_id for m in server.sent] == [-100] and server.texts == ["字" * 4096]


async def test_fake_get_updates_offset_and_long_poll() -> None:
    server = FakeTelegram()
    await server.start()
    try:
        api = f"{server.base_url}{server.token}"
        async with httpx.AsyncClient(timeout=10) as client:
            first = server.push_text(PRIVATE, USER, "一")
            second = server.push_text(PRIVATE, USER, "二")
            got = (await client.post(f"{api}/getUpdates", data={"offset": "0", "timeout": "0"})).json()["result"]
            assert [u["update_id"] for u in got] == [first, second]
            got = (await client.post(f"{api}/getUpdates", data={"offset": str(second), "timeout": "0"})).json()
            assert [u["update_id"] for u in got["result"]] == [second]  # offset confirmed the first
            assert server.pending_updates == 1

            started = time.monotonic()
            poll = asyncio.create_task(
                client.post(f"{api}/getUpdates", data={"offset": str(second + 1), "timeout": "5"}))
            await asyncio.sleep(0.1)  # let the poll start waiting (the result does not depend on it)
            third = server.push_text(PRIVATE, USER, "三")
            got = (await poll).json()["result"]
            assert [u["update_id"] for u in got] == [third]
            assert time.monotonic() - started < 3  # woken by the push, not by the timeout

            started = time.monotonic()
            got = (await client.post(f"{api}/getUpdates", data={"offset": str(third + 1), "timeout": "0.2"})).json()
            assert got["result"] == [] and time.monotonic() - started >= 0.2
    finally:
        await server.stop()
    with pytest.raises(TimeoutError):
        server.wait_for_messages_sync(1, timeout=0.05)
