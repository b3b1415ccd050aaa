"""The DingTalk adapter in-process: its callback app called through httpx's ASGI transport, a
real :class:`Core` (the harness), and its replies and pushes answered in-process by the fake
DingTalk (tests/fakes/dingtalk_api.py)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from bot.adapters import dingtalk
from bot.adapters.delivery import InboxOptions
from bot.adapters.dingtalk import CAPABILITIES, PLATFORM, DingTalkAdapter, DingTalkError
from bot.adapters.http_server import build_http_app
from bot.core import texts
from bot.core.models import Button, Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingFile, OutgoingMessage, Problem
from bot.store.db import Database
from tests.fakes.dingtalk_api import FakeDingTalk, robot_message, signed_callback
from tests.harness import StubAnswerer, TestBot, make_settings

NOW = 1_735_689_600.0  # 2025-01-01 00:00 UTC, seconds
NOW_MS = int(NOW * 1000)
QUESTION = "党组会议一般多久召开一次？"
ANSWER = "党组会议一般每月召开一次。"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    fake: FakeDingTalk
    adapter: DingTalkAdapter
    bot: TestBot
    qa: StubAnswerer
    clock: Clock
    client: httpx.AsyncClient  # talks to the adapter's callback app in-process
    url: str  # the adapter's callback URL
    seen: list[IncomingMessage] = field(default_factory=list)  # what the adapter handed the core

    async def post(self, cb) -> httpx.Response:  # cb: SignedCallback
        return await self.client.post(self.url, content=cb.body, headers=cb.headers)


@pytest.fixture(scope="module")
def fake_server() -> FakeDingTalk:
    return FakeDingTalk()


@pytest.fixture
def fake(fake_server: FakeDingTalk) -> FakeDingTalk:
    fake_server.reset()
    fake_server.invalid_user_ids.clear()
    fake_server.broken_sessions.clear()
    return fake_server


def _adapter(fake: FakeDingTalk, db: Database, bot: TestBot, clock: Clock, **settings) -> DingTalkAdapter:
    return DingTalkAdapter(fake.settings(**settings), bot.core, db, http=fake.client(), clock=clock)


async def _env(fake: FakeDingTalk, db: Database, qa: StubAnswerer, **options) -> AsyncIterator[Env]:
    bot = TestBot(qa=qa)
    clock = Clock()
    adapter = DingTalkAdapter(fake.settings(), bot.core, db, http=fake.client(), clock=clock,
                              options=InboxOptions(**options))
    env = Env(fake, adapter, bot, qa, clock, httpx.AsyncClient(), "http://bot/dingtalk/callback")
    real_handle = bot.core.handle

    async def spy(msg: IncomingMessage, caps: Capabilities) -> list[OutgoingMessage]:
        env.seen.append(msg)
        return await real_handle(msg, caps)

    bot.core.handle = spy  # type: ignore[method-assign]
    await adapter.start()
    transport = httpx.ASGITransport(app=build_http_app([adapter.router()]))
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        env.client = client
        try:
            yield env
        finally:
            qa.release.set()
            await adapter.aclose()
            await adapter._http.aclose()


@pytest.fixture
async def env(fake: FakeDingTalk, db: Database) -> AsyncIterator[Env]:
    async for e in _env(fake, db, StubAnswerer(ANSWER)):
        yield e


# ------------------------------------------------------------------------------------------------
async def test_private_question_answered_through_session_webhook(env: Env) -> None:
    cb = env.fake.callback(QUESTION, session="private-1", timestamp_ms=NOW_MS, staff_id="liming", nick="李明")
    response = await env.post(cb)
    assert response.status_code == 200

    replies = await env.fake.wait_for(lambda: env.fake.replies_to("private-1"))
    await env.adapter.join()
    assert len(replies) == 1
    reply = replies[0]
    assert reply.msgtype == "text"
    assert "第十八条" in reply.text and "每月" in reply.text and "党组会议一般每月召开一次" in reply.text
    assert [r.session for r in env.fake.replies] == ["private-1"]
    assert env.fake.batch_sends == [] and env.fake.token_calls == 0  # replies need no token

    (seen,) = env.seen
    assert seen.platform == "dingtalk" and seen.chat_type == ChatType.PRIVATE
    assert seen.chat_id == cb.payload["conversationId"]
    assert (seen.user_id, seen.user_name, seen.text) == ("liming", "李明", QUESTION)
    assert seen.message_id == cb.msg_id and seen.addressed
    assert env.qa.questions == [QUESTION]


async def test_reply_goes_to_each_messages_own_webhook(env: Env) -> None:
    await env.post(env.fake.callback(QUESTION, session="alpha", timestamp_ms=NOW_MS))
    await env.post(env.fake.callback("/help", session="beta", timestamp_ms=NOW_MS))
    await env.fake.wait_for(lambda: env.fake.replies_to("alpha") and env.fake.replies_to("beta"))
    await env.adapter.join()
    assert "第十八条" in env.fake.replies_to("alpha")[0].text
    assert "/help" in env.fake.replies_to("beta")[0].text and "第十八条" not in env.fake.replies_to("beta")[0].text


@pytest.mark.parametrize("forgery", ["wrong-secret", "no-sign", "no-timestamp", "garbage-sign"])
async def test_bad_sign_is_403_and_nothing_processed(env: Env, forgery: str) -> None:
    if forgery == "wrong-secret":
        cb = env.fake.callback(QUESTION, timestamp_ms=NOW_MS, sign_with="not-the-app-secret")
        headers = cb.headers
    else:
        cb = env.fake.callback(QUESTION, timestamp_ms=NOW_MS)
        headers = dict(cb.headers)
        if forgery == "no-sign":
            del headers["sign"]
        elif forgery == "no-timestamp":
            del headers["timestamp"]
        else:
            headers["sign"] = "AAAA" + headers["sign"][4:]
    response = await env.client.post(env.url, content=cb.body, headers=headers)
    assert response.status_code == 403
    await env.adapter.join()
    assert env.seen == [] and env.qa.questions == []
    assert env.fake.replies == [] and env.fake.batch_sends == [] and env.fake.token_calls == 0
    # the message id was not claimed: the genuine delivery of it is still answered
    genuine = signed_callback(env.fake.app_secret, cb.payload, timestamp_ms=NOW_MS)
    assert (await env.post(genuine)).status_code == 200
    await env.fake.wait_for(lambda: env.fake.replies)


@pytest.mark.parametrize("skew_ms", [3600 * 1000 + 1, -(3600 * 1000 + 1), 86400 * 1000])
async def test_stale_or_future_timestamp_is_403(env: Env, skew_ms: int) -> None:
    cb = env.fake.callback(QUESTION, timestamp_ms=NOW_MS - skew_ms)  # correctly signed, wrong time
    assert (await env.post(cb)).status_code == 403
    await env.adapter.join()
    assert env.seen == [] and env.fake.replies == []


async def test_timestamp_within_the_hour_is_accepted(env: Env) -> None:
    cb = env.fake.callback(QUESTION, timestamp_ms=NOW_MS - 59 * 60 * 1000)
    assert (await env.post(cb)).status_code == 200
    await env.fake.wait_for(lambda: env.fake.replies)


async def test_clock_is_what_decides_staleness(env: Env) -> None:
    cb = env.fake.callback(QUESTION, timestamp_ms=NOW_MS)
    env.clock.now = NOW + 3601  # the same request arriving an hour and a second later
    assert (await env.post(cb)).status_code == 403


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2, 3]", b'"text"', b"\xff\xfe\x00garbage",
     json.dumps({"msgtype": "text", "text": {"content": "hi"}}).encode(),  # no msgId/conversationId
     json.dumps({"msgId": "m1", "conversationId": "c1", "text": {"content": "no sender"}}).encode(),
     json.dumps({"msgId": "x" * 200, "conversationId": "c1", "senderStaffId": "u"}).encode()],
)
async def test_malformed_body_is_400(env: Env, body: bytes) -> None:
    cb = signed_callback(env.fake.app_secret, body, timestamp_ms=NOW_MS)
    response = await env.post(cb)
    assert response.status_code == 400
    await env.adapter.join()
    assert env.seen == [] and env.fake.replies == []


async def test_malformed_and_unsigned_is_403_first(env: Env) -> None:
    response = await env.client.post(env.url, content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 403


async def test_duplicate_msg_id_answered_once(env: Env) -> None:
    cb = env.fake.callback(QUESTION, session="dup", timestamp_ms=NOW_MS)
    first, second = await asyncio.gather(env.post(cb), env.post(cb))  # redelivery at once
    third = await env.post(cb)  # and later
    assert {first.status_code, second.status_code, third.status_code} == {200}
    await env.fake.wait_for(lambda: env.fake.replies_to("dup"))
    await env.adapter.join()
    assert len(env.fake.replies_to("dup")) == 1
    assert len(env.seen) == 1 and env.qa.questions == [QUESTION]


async def test_duplicate_across_adapter_instances_sharing_the_database(
    env: Env, fake: FakeDingTalk, db: Database
) -> None:
    """A second replica (same database) does not answer a redelivery either."""
    cb = env.fake.callback(QUESTION, session="replica", timestamp_ms=NOW_MS)
    assert (await env.post(cb)).status_code == 200
    await env.adapter.join()  # answered (its id claimed) before DingTalk's retry reaches the other one
    other_bot = TestBot()
    other = _adapter(fake, db, other_bot, Clock())
    await other.start()
    transport = httpx.ASGITransport(app=build_http_app([other.router()]))
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
        response = await client.post("/dingtalk/callback", content=cb.body, headers=cb.headers)
    assert response.status_code == 200
    await other.join()
    await env.adapter.join()
    await other.aclose()
    assert other_bot.qa.questions == []
    assert len(env.fake.replies_to("replica")) == 1


async def test_group_message_at_bot_answered_with_leading_space_stripped(env: Env) -> None:
    cb = env.fake.callback(
        QUESTION, group=True, session="group-1", timestamp_ms=NOW_MS, conversation_id="cidBranch1", staff_id="wang"
    )
    assert cb.payload["text"]["content"] == " " + QUESTION and cb.payload["isInAtList"] is True
    assert (await env.post(cb)).status_code == 200
    replies = await env.fake.wait_for(lambda: env.fake.replies_to("group-1"))
    await env.adapter.join()
    assert "第十八条" in replies[0].text
    (seen,) = env.seen
    assert seen.text == QUESTION  # exactly what DingTalk sent, minus the space left by the @mention
    assert seen.chat_type == ChatType.GROUP and seen.chat_id == "cidBranch1"
    assert seen.user_id == "wang" and seen.addressed
    assert env.fake.group_sends == [] and env.fake.batch_sends == []


async def test_group_message_not_addressed_gets_no_answer(env: Env) -> None:
    cb = env.fake.callback(QUESTION, group=True, at_bot=False, session="group-2", timestamp_ms=NOW_MS)
    assert (await env.post(cb)).status_code == 200
    await env.fake.wait_for(lambda: env.seen)
    await env.adapter.join()
    assert env.seen[0].addressed is False
    assert env.fake.replies == [] and env.qa.questions == []


async def test_long_answer_is_split_within_the_byte_limit(env: Env) -> None:
    env.qa.answer = "\n".join(f"第{i}点：党组会议应当严格按照规定程序召开，会议议题应当提前确定。" for i in range(200))
    await env.post(env.fake.callback(QUESTION, session="long", timestamp_ms=NOW_MS))
    await env.fake.wait_for(lambda: env.fake.replies_to("long"))
    await env.adapter.join()
    replies = env.fake.replies_to("long")
    assert len(replies) > 1
    assert all(len(r.text.encode()) <= CAPABILITIES.max_bytes for r in replies)
    joined = "\n".join(r.text for r in replies)
    assert "第0点" in joined and "第199点" in joined and "第十八条" in replies[-1].text


async def test_picture_message_gets_a_polite_text_reply(env: Env) -> None:
    payload = robot_message("", session_webhook=env.fake.webhook_url("pic"), created_ms=NOW_MS)
    payload.pop("text")
    payload.update(msgtype="picture", content={"downloadCode": "abc", "pictureDownloadCode": "abc"})
    assert (await env.post(signed_callback(env.fake.app_secret, payload, timestamp_ms=NOW_MS))).status_code == 200
    replies = await env.fake.wait_for(lambda: env.fake.replies_to("pic"))
    assert replies[0].text == texts.NOT_TEXT and "文字" in replies[0].text
    assert [m.problem for m in env.seen] == [Problem.NOT_TEXT] and env.qa.questions == []


async def test_rich_text_is_read_as_text(env: Env) -> None:
    payload = robot_message("", session_webhook=env.fake.webhook_url("rich"), created_ms=NOW_MS)
    payload.pop("text")
    payload.update(msgtype="richText", content={"richText": [{"text": "党组会议"}, {"downloadCode": "x"},
                                                             {"text": "一般多久召开一次？"}]})
    assert (await env.post(signed_callback(env.fake.app_secret, payload, timestamp_ms=NOW_MS))).status_code == 200
    await env.fake.wait_for(lambda: env.fake.replies_to("rich"))
    assert env.seen[0].text == QUESTION


async def test_expired_session_webhook_falls_back_to_batch_send(env: Env) -> None:
    cb = env.fake.callback(QUESTION, session="old", timestamp_ms=NOW_MS, staff_id="zhao", expires_ms=NOW_MS - 1)
    assert (await env.post(cb)).status_code == 200
    sends = await env.fake.wait_for(lambda: env.fake.batch_sends)
    await env.adapter.join()
    assert env.fake.replies == []
    assert sends[0].user_ids == ["zhao"] and "第十八条" in sends[0].text


async def test_failing_group_session_webhook_falls_back_to_group_send(env: Env) -> None:
    env.fake.broken_sessions.add("gone")
    cb = env.fake.callback(QUESTION, group=True, session="gone", timestamp_ms=NOW_MS, conversation_id="cidG")
    assert (await env.post(cb)).status_code == 200
    sends = await env.fake.wait_for(lambda: env.fake.group_sends)
    assert sends[0].open_conversation_id == "cidG" and "第十八条" in sends[0].text
    assert sends[0].robot_code == env.fake.robot_code


async def test_session_webhook_on_a_foreign_host_is_never_called(env: Env, fake: FakeDingTalk, db: Database) -> None:
    """The sign covers only the timestamp: a replayed sign must not make the bot post anywhere."""
    payload = robot_message(QUESTION, session_webhook="http://169.254.169.254/latest/meta-data", created_ms=NOW_MS)
    assert (await env.post(signed_callback(env.fake.app_secret, payload, timestamp_ms=NOW_MS))).status_code == 200
    await env.fake.wait_for(lambda: env.fake.batch_sends)  # answered privately through the OpenAPI
    await env.adapter.join()
    assert env.fake.replies == []


# ------------------------------------------------------------------------------------------------
async def test_push_goes_through_batch_send_with_cached_token(env: Env) -> None:
    group_ref = ChatRef(platform="dingtalk", chat_id="cidBranch1", chat_type=ChatType.GROUP, user_id="secretary1")
    private_ref = ChatRef(platform="dingtalk", chat_id="cidP", chat_type=ChatType.PRIVATE, user_id="member2")
    await env.adapter.send(group_ref, [OutgoingMessage(text="【会议提醒】支委会 明天 09:00")])
    await env.adapter.send(private_ref, [OutgoingMessage(text="第二条"), OutgoingMessage(text="第三条")])
    sends = env.fake.batch_sends
    assert len(sends) == 3 and env.fake.rejected == []
    assert env.fake.token_calls == 1  # one token for all the sends
    assert {s.token for s in sends} == {"fake-token-1"}
    first = sends[0]
    assert first.robot_code == env.fake.robot_code != env.fake.app_key
    assert first.user_ids == ["secretary1"]  # the registering user, even for a group meeting
    assert first.msg_key == "sampleText"
    assert isinstance(first.msg_param_raw, str) and json.loads(first.msg_param_raw) == {
        "content": "【会议提醒】支委会 明天 09:00"
    }
    assert [s.text for s in sends[1:]] == ["第二条", "第三条"] and sends[1].user_ids == ["member2"]
    assert env.fake.group_sends == []


async def test_token_refreshed_before_expiry_and_on_auth_error(env: Env) -> None:
    ref = ChatRef(platform="dingtalk", chat_id="c", user_id="u1")
    await env.adapter.send(ref, [OutgoingMessage(text="一")])
    env.clock.now += 7200 - 301  # still inside the cache window
    await env.adapter.send(ref, [OutgoingMessage(text="二")])
    assert env.fake.token_calls == 1
    env.clock.now += 2  # within five minutes of expireIn: refreshed
    await env.adapter.send(ref, [OutgoingMessage(text="三")])
    assert env.fake.token_calls == 2
    env.fake.expire_tokens()  # revoked early: 401, one refetch, same call retried
    await env.adapter.send(ref, [OutgoingMessage(text="四")])
    assert env.fake.token_calls == 3
    assert [s.text for s in env.fake.batch_sends] == ["一", "二", "三", "四"]
    assert [s.token for s in env.fake.batch_sends] == ["fake-token-1", "fake-token-1", "fake-token-2", "fake-token-3"]


async def test_concurrent_pushes_fetch_one_token(env: Env) -> None:
    refs = [ChatRef(platform="dingtalk", chat_id="c", user_id=f"u{i}") for i in range(8)]
    await asyncio.gather(*(env.adapter.send(r, [OutgoingMessage(text="提醒")]) for r in refs))
    assert env.fake.token_calls == 1 and len(env.fake.batch_sends) == 8


async def test_push_errors_raise(env: Env, fake: FakeDingTalk, db: Database) -> None:
    fake.invalid_user_ids.add("ghost")
    with pytest.raises(DingTalkError, match="invalidStaffIdList"):
        await env.adapter.send(ChatRef(platform="dingtalk", chat_id="c", user_id="ghost"), [OutgoingMessage(text="x")])
    wrong_code = _adapter(fake, db, env.bot, Clock(), dingtalk_robot_code=fake.app_key)
    with pytest.raises(DingTalkError) as excinfo:
        await wrong_code.send(ChatRef(platform="dingtalk", chat_id="c", user_id="u"), [OutgoingMessage(text="x")])
    assert excinfo.value.status == 400
    bad_secret = _adapter(fake, db, env.bot, Clock(), dingtalk_app_secret="wrong")
    with pytest.raises(DingTalkError, match="accessToken") as excinfo:
        await bad_secret.send(ChatRef(platform="dingtalk", chat_id="c", user_id="u"), [OutgoingMessage(text="x")])
    assert "wrong" not in str(excinfo.value)
    for adapter in (wrong_code, bad_secret):
        await adapter.aclose()
        await adapter._http.aclose()


async def test_secrets_never_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    await env.post(env.fake.callback(QUESTION, timestamp_ms=NOW_MS, sign_with="forged"))
    env.fake.expire_tokens()
    await env.adapter.send(ChatRef(platform="dingtalk", chat_id="c", user_id="u"), [OutgoingMessage(text="x")])
    env.fake.expire_tokens()
    await env.adapter.send(ChatRef(platform="dingtalk", chat_id="c", user_id="u"), [OutgoingMessage(text="x")])
    text = caplog.text
    assert env.fake.app_secret not in text and "fake-token-" not in text


# ------------------------------------------------------------------------------------------------
async def test_pushed_buttons_become_typed_replies_and_files_a_note(env: Env) -> None:
    env.bot.core.outbound.register(PLATFORM, env.adapter)
    await env.bot.core.outbound.send(ChatRef(platform=PLATFORM, chat_id="c", user_id="u1"), [
        OutgoingMessage(text="第1步：召开支委会",
                        buttons=[[Button(label="完成", data="chk:done"), Button(label="跳过", data="chk:skip")]],
                        file=OutgoingFile(filename="meeting.ics", content=b"BEGIN:VCALENDAR")),
        OutgoingMessage(text="", toast="已完成"),
        OutgoingMessage(text=""),
    ])
    first, toast = [s.text for s in env.fake.batch_sends]
    assert first.startswith("第1步：召开支委会") and "完成" in first and "跳过" in first and "chk:" not in first
    assert "meeting.ics" in first and "BEGIN:VCALENDAR" not in first
    assert toast == "已完成"


def test_public_constants() -> None:
    assert PLATFORM == "dingtalk"
    assert CAPABILITIES.buttons is False and CAPABILITIES.files is False
    assert CAPABILITIES.max_bytes == 5000
    assert DingTalkAdapter.capabilities == CAPABILITIES


@pytest.mark.parametrize("mode", ["http", "stream"])
async def test_missing_settings_are_named_in_either_mode(db: Database, mode: str) -> None:
    core = TestBot().core
    for entry in (dingtalk.preflight, lambda settings: dingtalk.run(settings, core, db)):
        with pytest.raises(ValueError) as excinfo:
            await entry(make_settings(dingtalk_app_key="k", dingtalk_mode=mode))
        message = str(excinfo.value)
        assert "DANGJIAN_DINGTALK_APP_SECRET" in message
        assert "DANGJIAN_DINGTALK_APP_KEY" not in message
        assert "DANGJIAN_DINGTALK_ROBOT_CODE" not in message  # defaults to the AppKey
    assert core.outbound.platforms() == ["telegram"]  # the harness's recorder only: dingtalk not registered


# Delivery defects ---------------------------------------------------------------------------------
async def test_one_senders_messages_are_answered_in_order(fake: FakeDingTalk, db: Database) -> None:
    """Defect 1: four workers handled one sender's messages at once, answering out of order."""
    qa = StubAnswerer(ANSWER, gated=True)
    async for e in _env(fake, db, qa):
        await e.post(fake.callback("/ask 第一个问题", session="first", timestamp_ms=NOW_MS, staff_id="wang"))
        assert await asyncio.to_thread(qa.started.wait, 5)
        await e.post(fake.callback("/help", session="second", timestamp_ms=NOW_MS, staff_id="wang"))
        await asyncio.sleep(0.3)  # /help needs no answerer: it would overtake if it could
        assert fake.replies == []
        qa.release.set()
        await e.adapter.join()
        assert [r.session for r in fake.replies] == ["first", "second"]
        assert "第十八条" in fake.replies[0].text and texts.HELP_HEADER in fake.replies[1].text


async def test_a_full_inbox_asks_for_a_retry_and_the_retry_is_answered(fake: FakeDingTalk, db: Database) -> None:
    """Defect 2: the message id was claimed before queueing; a message dropped for a full queue
    was answered 200 and its retry discarded as a duplicate."""
    qa = StubAnswerer(ANSWER, gated=True)
    async for e in _env(fake, db, qa, capacity=3, workers=1):
        calls = [fake.callback(QUESTION, session=f"s{i}", timestamp_ms=NOW_MS, staff_id=f"user{i}") for i in range(8)]
        first = await asyncio.gather(*(e.post(cb) for cb in calls))
        statuses = [r.status_code for r in first]
        assert statuses.count(200) == 3 and statuses.count(503) == 5
        qa.release.set()
        await e.adapter.join()
        accepted = {f"s{i}" for i, status in enumerate(statuses) if status == 200}
        assert {r.session for r in fake.replies} == accepted  # every 200 answered
        retries = [cb for cb, status in zip(calls, statuses) if status == 503]
        for cb in retries:  # DingTalk retries later, when there is room again
            assert (await e.post(cb)).status_code == 200
            await e.adapter.join()
        assert sorted(r.session for r in fake.replies) == sorted(f"s{i}" for i in range(8))  # each once
