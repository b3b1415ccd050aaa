"""The DingTalk adapter end to end on loopback: the adapter's app served by uvicorn on
127.0.0.1, callbacks posted to it over HTTP, and its replies and pushes landing on the fake
DingTalk server (tests/fakes/dingtalk_api.py), also on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from bot.adapters import dingtalk
from bot.adapters.dingtalk import CAPABILITIES, PLATFORM, DingTalkAdapter, DingTalkError, render_texts
from bot.adapters.http_server import build_http_app
from bot.core.engine import Core
from bot.core.models import Button, Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingFile, OutgoingMessage
from bot.settings import Settings
from bot.store.db import Database
from retrieval.models import Answer, Citation
from tests.fakes.dingtalk_api import FakeDingTalk, robot_message, signed_callback

NOW = 1_735_689_600.0  # 2025-01-01 00:00 UTC, seconds
NOW_MS = int(NOW * 1000)
QUESTION = "党组会议一般多久召开一次？"
QUOTE = "党组会议一般每月召开1次，遇有重要情况可以随时召开。"


class StubQA:
    """Answers every question with 第十八条 of the 党组工作条例 (thread-safe enough for tests)."""

    def __init__(self, answer: str = "党组会议一般每月召开一次。") -> None:
        self.answer = answer
        self.questions: list[str] = []

    def ask(self, question: str) -> Answer:
        self.questions.append(question)
        citation = Citation(
            citation="《中国共产党党组工作条例》第十八条", doc_title="中国共产党党组工作条例",
            label="第十八条", source="dangzu_gongzuo_tiaoli.txt", text=QUOTE, score=0.93,
        )
        return Answer(question=question, answer=self.answer, refused=False, citations=[citation], quote=QUOTE)


class SpyCore(Core):
    """The real core, recording what the adapter handed it."""

    def __init__(self, qa: StubQA) -> None:
        super().__init__(qa)
        self.seen: list[IncomingMessage] = []

    async def handle(self, msg: IncomingMessage, caps: Capabilities) -> list[OutgoingMessage]:
        self.seen.append(msg)
        return await super().handle(msg, caps)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    fake: FakeDingTalk
    adapter: DingTalkAdapter
    core: SpyCore
    qa: StubQA
    clock: Clock
    client: httpx.AsyncClient  # talks to the adapter's HTTP server
    url: str  # the adapter's callback URL

    async def post(self, cb) -> httpx.Response:  # cb: SignedCallback
        return await self.client.post(self.url, content=cb.body, headers=cb.headers)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _settings(fake: FakeDingTalk, **extra: object) -> Settings:
    values: dict[str, object] = dict(
        dingtalk_app_key=fake.app_key, dingtalk_app_secret=fake.app_secret,
        dingtalk_robot_code=fake.robot_code, dingtalk_api_base=fake.base_url,
    )
    values.update(extra)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeDingTalk]:
    with FakeDingTalk() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeDingTalk) -> FakeDingTalk:
    fake_server.reset()
    return fake_server


@pytest.fixture
async def env(fake: FakeDingTalk, db: Database) -> AsyncIterator[Env]:
    qa = StubQA()
    core = SpyCore(qa)
    clock = Clock()
    api_http = httpx.AsyncClient(trust_env=False, timeout=5)
    adapter = DingTalkAdapter(_settings(fake), core, db, http=api_http, clock=clock)
    await adapter.start()
    sock = _free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(build_http_app([adapter.router()]), log_level="warning", access_log=False, lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "adapter server failed to start"
        await asyncio.sleep(0.005)
    client = httpx.AsyncClient(trust_env=False, timeout=5)
    try:
        yield Env(fake, adapter, core, qa, clock, client, f"http://127.0.0.1:{port}/dingtalk/callback")
    finally:
        await client.aclose()
        server.should_exit = True
        await task
        sock.close()
        await adapter.aclose()
        await api_http.aclose()


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

    (seen,) = env.core.seen
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
    assert env.core.seen == [] and env.qa.questions == []
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
    assert env.core.seen == [] and env.fake.replies == []


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
    assert env.core.seen == [] and env.fake.replies == []


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
    assert len(env.core.seen) == 1 and env.qa.questions == [QUESTION]


async def test_duplicate_across_adapter_instances_sharing_the_database(
    env: Env, fake: FakeDingTalk, db: Database
) -> None:
    """A second replica (same database) does not answer a redelivery either."""
    cb = env.fake.callback(QUESTION, session="replica", timestamp_ms=NOW_MS)
    assert (await env.post(cb)).status_code == 200
    other_core = SpyCore(StubQA())
    other = DingTalkAdapter(_settings(fake), other_core, db, clock=Clock())
    await other.start()
    transport = httpx.ASGITransport(app=build_http_app([other.router()]))
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
        response = await client.post("/dingtalk/callback", content=cb.body, headers=cb.headers)
    assert response.status_code == 200
    await other.join()
    await env.adapter.join()
    await other.aclose()
    assert other_core.seen == []
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
    (seen,) = env.core.seen
    assert seen.text == QUESTION  # exactly what DingTalk sent, minus the space left by the @mention
    assert seen.chat_type == ChatType.GROUP and seen.chat_id == "cidBranch1"
    assert seen.user_id == "wang" and seen.addressed
    assert env.fake.group_sends == [] and env.fake.batch_sends == []


async def test_group_message_not_addressed_gets_no_answer(env: Env) -> None:
    cb = env.fake.callback(QUESTION, group=True, at_bot=False, session="group-2", timestamp_ms=NOW_MS)
    assert (await env.post(cb)).status_code == 200
    await env.fake.wait_for(lambda: env.core.seen)
    await env.adapter.join()
    assert env.core.seen[0].addressed is False
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
    assert "文字" in replies[0].text
    assert env.core.seen == []


async def test_rich_text_is_read_as_text(env: Env) -> None:
    payload = robot_message("", session_webhook=env.fake.webhook_url("rich"), created_ms=NOW_MS)
    payload.pop("text")
    payload.update(msgtype="richText", content={"richText": [{"text": "党组会议"}, {"downloadCode": "x"},
                                                             {"text": "一般多久召开一次？"}]})
    assert (await env.post(signed_callback(env.fake.app_secret, payload, timestamp_ms=NOW_MS))).status_code == 200
    await env.fake.wait_for(lambda: env.fake.replies_to("rich"))
    assert env.core.seen[0].text == QUESTION


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
    wrong_code = DingTalkAdapter(_settings(fake, dingtalk_robot_code=fake.app_key), env.core, db, clock=Clock())
    with pytest.raises(DingTalkError) as excinfo:
        await wrong_code.send(ChatRef(platform="dingtalk", chat_id="c", user_id="u"), [OutgoingMessage(text="x")])
    assert excinfo.value.status == 400
    bad_secret = DingTalkAdapter(_settings(fake, dingtalk_app_secret="wrong"), env.core, db, clock=Clock())
    with pytest.raises(DingTalkError, match="accessToken") as excinfo:
        await bad_secret.send(ChatRef(platform="dingtalk", chat_id="c", user_id="u"), [OutgoingMessage(text="x")])
    assert "wrong" not in str(excinfo.value)
    await wrong_code.aclose()
    await bad_secret.aclose()


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
def test_render_texts_buttons_become_typed_replies_and_files_are_dropped() -> None:
    msg = OutgoingMessage(
        text="第1步：召开支委会",
        buttons=[[Button(label="完成", data="chk:done"), Button(label="跳过", data="chk:skip")]],
        file=OutgoingFile(filename="meeting.ics", content=b"BEGIN:VCALENDAR"),
    )
    (text,) = render_texts([msg])
    assert text.startswith("第1步：召开支委会") and "完成" in text and "跳过" in text and "chk:" not in text
    assert render_texts([OutgoingMessage(text="", toast="已完成")]) == ["已完成"]
    assert render_texts([OutgoingMessage(text="")]) == []


def test_public_constants() -> None:
    assert PLATFORM == "dingtalk"
    assert CAPABILITIES.buttons is False and CAPABILITIES.files is False and CAPABILITIES.markdown is True
    assert CAPABILITIES.max_bytes == 5000
    assert DingTalkAdapter.capabilities == CAPABILITIES


async def test_run_refuses_stream_mode_and_missing_settings(db: Database) -> None:
    core = Core(StubQA())
    with pytest.raises(ValueError, match="dingtalk-stream"):
        await dingtalk.run(Settings(_env_file=None, dingtalk_mode="stream"), core, db)
    with pytest.raises(ValueError) as excinfo:
        await dingtalk.run(Settings(_env_file=None, dingtalk_app_key="k"), core, db)
    message = str(excinfo.value)
    assert "DANGJIAN_DINGTALK_APP_SECRET" in message
    assert "DANGJIAN_DINGTALK_APP_KEY" not in message
    assert "DANGJIAN_DINGTALK_ROBOT_CODE" not in message  # defaults to the AppKey
    assert core.outbound.platforms() == []


async def test_run_serves_callbacks_and_registers_outbound(fake: FakeDingTalk, db: Database) -> None:
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()  # run() binds the port itself
    qa = StubQA()
    core = Core(qa)
    task = asyncio.create_task(dingtalk.run(_settings(fake, http_host="127.0.0.1", http_port=port), core, db))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        for _ in range(500):
            assert not task.done(), task.exception() if task.done() else None
            try:
                if (await client.get(base + "/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.01)
        assert core.outbound.serves(PLATFORM)
        cb = fake.callback(QUESTION, session="run")  # real clock in run()
        assert (await client.post(base + "/dingtalk/callback", content=cb.body, headers=cb.headers)).status_code == 200
        forged = fake.callback(QUESTION, session="forged", sign_with="x")
        assert (await client.post(base + "/dingtalk/callback", content=forged.body, headers=forged.headers)).status_code == 403
        replies = await fake.wait_for(lambda: fake.replies_to("run"))
        assert "第十八条" in replies[0].text
        await core.outbound.send(ChatRef(platform="dingtalk", chat_id="c", user_id="u9"), [OutgoingMessage(text="提醒")])
        assert fake.batch_sends[-1].user_ids == ["u9"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.replies_to("forged") == []
