"""DingTalk Stream mode wired to the core (bot/adapters/dingtalk/stream_adapter.py): ``run_stream``
against the fake gateway (tests/fakes/dingtalk_stream_gateway.py) mounted on the fake DingTalk
API (tests/fakes/dingtalk_api.py), both on 127.0.0.1, with a real :class:`Core` (the harness)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bot.adapters import dingtalk
from bot.adapters.dingtalk.stream_adapter import run_stream
from bot.core import texts
from bot.core.models import ChatRef, ChatType, OutgoingMessage
from bot.settings import Settings
from bot.store.db import Database
from tests.fakes.dingtalk_api import FakeDingTalk, robot_message
from tests.fakes.dingtalk_stream_gateway import FakeStreamGateway
from tests.harness import StubAnswerer, TestBot
from tests.servers import free_port

QUESTION = "党组会议一般多久召开一次？"
SETTINGS = ("DANGJIAN_DINGTALK_APP_KEY", "DANGJIAN_DINGTALK_APP_SECRET")


@pytest.fixture
def gateway() -> Iterator[FakeStreamGateway]:
    with FakeStreamGateway() as gw:
        yield gw


@pytest.fixture
def fake(gateway: FakeStreamGateway) -> Iterator[FakeDingTalk]:
    """The DingTalk API fake; its base URL also serves the gateway's connections/open."""
    api = FakeDingTalk()
    api.app.include_router(gateway.router())
    with api:
        yield api


def stream_settings(fake: FakeDingTalk, **values: Any) -> Settings:
    values.setdefault("http_port", 0)  # no health endpoint unless a test wants one
    return fake.settings(dingtalk_mode="stream", **values)


@contextlib.asynccontextmanager
async def streaming(fake: FakeDingTalk, core: Any, db: Database, **values: Any) -> AsyncIterator[asyncio.Task[None]]:
    """``run_stream`` as a task with short backoffs, cancelled (like SIGTERM) at the end."""
    task = asyncio.create_task(run_stream(stream_settings(fake, **values), core, db,
                                          backoff_first=0.1, backoff_max=0.4))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


def message(fake: FakeDingTalk, text: str, session: str, **kw: Any) -> dict[str, Any]:
    """A robot message whose sessionWebhook is the fake's ``session``."""
    return robot_message(text, session_webhook=fake.webhook_url(session), **kw)


async def answered(fake: FakeDingTalk, session: str, timeout: float = 10.0) -> str:
    replies = await fake.wait_for(lambda: fake.replies_to(session), timeout)
    return replies[0].text


# ------------------------------------------------------------------------------------------------
async def test_question_is_acked_first_then_answered_through_its_session_webhook(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database) -> None:
    qa = StubAnswerer(gated=True)
    bot = TestBot(qa=qa)
    async with streaming(fake, bot.core, db):
        await gateway.wait_connections(1)
        frame_id = await gateway.push_robot_message(message(fake, QUESTION, "s1", staff_id="liming"))
        ack = await gateway.wait_for(lambda: gateway.ack_for(frame_id))
        assert ack["code"] == 200 and ack["headers"]["messageId"] == frame_id
        assert await asyncio.to_thread(qa.started.wait, 5)
        assert fake.replies == []  # acked while the answer is still being computed
        qa.release.set()
        reply = await answered(fake, "s1")
    assert "第十八条" in reply and "每月" in reply
    assert qa.questions == [QUESTION] and fake.batch_sends == [] and fake.token_calls == 0
    [request] = [r for r in gateway.open_requests if r.status == 200][:1]
    assert request.body["clientId"] == fake.app_key


async def test_a_redelivery_is_answered_once_also_by_another_replica(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database) -> None:
    one, two = TestBot(), TestBot()
    async with streaming(fake, one.core, db), streaming(fake, two.core, db):
        await gateway.wait_connections(2)
        first, second = gateway.connections[:2]
        question = message(fake, QUESTION, "dup", msg_id="msgDup1", staff_id="wang")
        await gateway.push_robot_message(question, conn=first)
        await answered(fake, "dup")
        redelivered = [await gateway.push_robot_message(question, conn=conn) for conn in (second, first, second)]
        # the same sender's next message is handled after the redelivery on each replica
        for n, conn in enumerate((first, second)):
            await gateway.push_robot_message(message(fake, "/help", f"after{n}", staff_id="wang"), conn=conn)
            await answered(fake, f"after{n}")
        assert all(gateway.ack_for(f) for f in redelivered)
    assert len(fake.replies_to("dup")) == 1
    assert len(one.qa.questions) + len(two.qa.questions) == 1


async def test_groups_are_answered_only_when_the_bot_is_mentioned(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database) -> None:
    bot = TestBot()
    async with streaming(fake, bot.core, db):
        await gateway.wait_connections(1)
        await gateway.push_robot_message(message(fake, QUESTION, "g-quiet", group=True, at_bot=False, staff_id="w"))
        await gateway.push_robot_message(message(fake, QUESTION, "g-at", group=True, conversation_id="cidG", staff_id="w"))
        assert "第十八条" in await answered(fake, "g-at")
    assert fake.replies_to("g-quiet") == [] and bot.qa.questions == [QUESTION]


async def test_other_robots_malformed_and_textless_messages_are_ignored_pictures_get_the_hint(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bot = TestBot()

    def kind(msgtype: str, session: str, content: Any) -> dict[str, Any]:
        sent = message(fake, "", session, staff_id="u")
        sent.pop("text")
        sent.update(msgtype=msgtype, content=content)
        return sent

    sent = [
        message(fake, QUESTION, "other-robot", robot_code="dingsomeotherrobot", staff_id="u"),
        {"msgtype": "text", "text": {"content": "没有 msgId"}, "conversationId": "c"},
        message(fake, "   ", "empty", staff_id="u"),
        kind("audio", "voice", {"duration": 3, "downloadCode": "x"}),
        kind("richText", "only-pictures", {"richText": [{"downloadCode": "x", "type": "picture"}]}),
        kind("picture", "picture", {"downloadCode": "x"}),
        kind("file", "file", {"downloadCode": "x", "fileName": "a.pdf"}),
        kind("richText", "rich", {"richText": [{"text": "党组会议"}, {"text": "一般多久召开一次？"}]}),
    ]
    async with streaming(fake, bot.core, db):
        await gateway.wait_connections(1)
        frame_ids = [await gateway.push_robot_message(m) for m in sent]
        await answered(fake, "rich")  # the last one, from the same sender: the others were handled
        assert all(gateway.ack_for(f) for f in frame_ids)
    assert [r.session for r in fake.replies] == ["picture", "file", "rich"]
    assert fake.replies_to("picture")[0].text == texts.NOT_TEXT == fake.replies_to("file")[0].text
    assert bot.qa.questions == [QUESTION]
    assert "robotCode 'dingsomeotherrobot'" in caplog.text and "DANGJIAN_DINGTALK_ROBOT_CODE" in caplog.text


async def test_expired_session_webhooks_fall_back_to_the_openapi_and_reminders_use_batch_send(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database) -> None:
    bot = TestBot()
    past = int(time.time() * 1000) - 1
    async with streaming(fake, bot.core, db):
        await gateway.wait_connections(1)
        await gateway.push_robot_message(message(fake, QUESTION, "old", staff_id="zhao", expires_ms=past))
        await gateway.push_robot_message(message(fake, QUESTION, "old-group", group=True, conversation_id="cidOld",
                                                 staff_id="qian", expires_ms=past))
        [private] = await fake.wait_for(lambda: fake.batch_sends)
        [group] = await fake.wait_for(lambda: fake.group_sends)
        # a reminder: the core's outbound reaches the Stream adapter, which pushes by batchSend
        ref = ChatRef(platform="dingtalk", chat_id="cidBranch", chat_type=ChatType.GROUP, user_id="secretary1")
        await bot.core.outbound.send(ref, [OutgoingMessage(text="【会议提醒】支委会 15:00 三楼会议室")])
    assert private.user_ids == ["zhao"] and "第十八条" in private.text
    assert group.open_conversation_id == "cidOld" and "第十八条" in group.text
    assert fake.batch_sends[-1].user_ids == ["secretary1"] and "会议提醒" in fake.batch_sends[-1].text
    assert fake.replies == []


async def test_shutdown_stops_the_client_first_then_answers_every_acked_message(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database) -> None:
    qa = StubAnswerer(gated=True)
    bot = TestBot(qa=qa)
    task = asyncio.create_task(run_stream(stream_settings(fake), bot.core, db))
    conn = await gateway.wait_connections(1)
    frame_ids = [await gateway.push_robot_message(message(fake, QUESTION, f"q{i}", staff_id="li")) for i in range(3)]
    await gateway.wait_for(lambda: all(gateway.ack_for(f) for f in frame_ids))
    assert await asyncio.to_thread(qa.started.wait, 5)
    task.cancel()  # SIGTERM while the first answer is still being computed
    await gateway.wait_for(lambda: conn.closed)  # the connection goes first: nothing new is acked …
    asyncio.get_running_loop().call_later(0.2, qa.release.set)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert [r.session for r in fake.replies] == ["q0", "q1", "q2"]  # … and what was acked is answered
    assert len(gateway.connections) == 1


# ------------------------------------------------------------------------------------------------
async def test_wrong_credentials_fail_the_preflight_with_dingtalks_message_and_the_settings(
        fake: FakeDingTalk, gateway: FakeStreamGateway, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wrongSecretThatMustNotBeLogged0123456789"
    with pytest.raises(ValueError) as caught:
        await dingtalk.preflight(stream_settings(fake, dingtalk_app_secret=wrong))
    assert all(name in str(caught.value) for name in SETTINGS) and "clientId或clientSecret无效" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in caplog.text
    await dingtalk.preflight(stream_settings(fake))  # the right ones pass
    await dingtalk.preflight(fake.settings(dingtalk_app_secret=wrong))  # HTTP mode asks DingTalk nothing
    assert [r.secret_ok for r in gateway.open_requests] == [False, True] and not gateway.connections


async def test_dingtalk_unreachable_at_start_is_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    await dingtalk.preflight(FakeDingTalk().settings(dingtalk_mode="stream", dingtalk_api_base=closed))
    assert "not reachable at start" in caplog.text


async def test_credentials_revoked_while_running_are_logged_and_retried(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database, caplog: pytest.LogCaptureFixture) -> None:
    bot = TestBot()
    async with streaming(fake, bot.core, db) as task:
        first = await gateway.wait_connections(1)
        gateway.client_secret = "rotatedInTheDeveloperConsole"
        await gateway.drop(first)
        await gateway.wait_for(lambda: len([r for r in gateway.open_requests if r.status != 200]) >= 3)
        assert not task.done()
        gateway.client_secret = fake.app_secret
        second = await gateway.wait_connections(2)
        await gateway.push_robot_message(message(fake, QUESTION, "back"), conn=second)
        await answered(fake, "back")
    refusals = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "refused" in r.getMessage()]
    assert len(refusals) >= 3 and all(all(name in line for name in SETTINGS) for line in refusals)


# ------------------------------------------------------------------------------------------------
async def _healthz(port: int) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


async def test_health_endpoint_reports_the_connection_and_is_optional(
        fake: FakeDingTalk, gateway: FakeStreamGateway, db: Database, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    async with streaming(fake, TestBot().core, db, http_host="127.0.0.1", http_port=port):
        await gateway.wait_connections(1)
        deadline = time.monotonic() + 10
        while (health := await _healthz(port)) is None or health.get("dingtalk_stream") != "connected":
            assert time.monotonic() < deadline, health
            await asyncio.sleep(0.05)
        assert health == {"status": "ok", "dingtalk_queue": 0, "dingtalk_stream": "connected"}
        async with httpx.AsyncClient() as client:  # nothing but health: DingTalk never calls us
            assert (await client.post(f"http://127.0.0.1:{port}/dingtalk/callback")).status_code == 404
    assert await _healthz(port) is None  # stopped with the adapter

    with socket.create_server(("127.0.0.1", 0)) as taken:  # the port is busy: logged, the bot runs on
        busy = taken.getsockname()[1]
        async with streaming(fake, TestBot().core, db, http_host="127.0.0.1", http_port=busy):
            await gateway.wait_connections(2)
            await gateway.push_robot_message(message(fake, QUESTION, "busy-port"))
            await answered(fake, "busy-port")
    assert f"health endpoint not served: cannot listen on 127.0.0.1:{busy}" in caplog.text

