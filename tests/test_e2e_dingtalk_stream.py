"""End to end: `dangjian run --adapter dingtalk` in Stream mode as a process, against the loopback
fake Stream gateway mounted on the fake DingTalk API (one API base serves both)."""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from tests.e2e import BotProcess, ReminderClock, wait_until
from tests.fakes.dingtalk_api import FakeDingTalk, robot_message
from tests.fakes.dingtalk_stream_gateway import FakeStreamGateway
from tests.servers import free_port

T = TypeVar("T")
#: Seconds from process start until the first reminder may fall due: start-up, then the meeting.
REMINDER_DELAY = 20
SETTINGS = ("DANGJIAN_DINGTALK_APP_KEY", "DANGJIAN_DINGTALK_APP_SECRET")


def do(action: Coroutine[Any, Any, T]) -> T:
    """Run one of the gateway's async actions from this (synchronous) test."""
    return asyncio.run(action)


def test_dingtalk_stream_process(data_copy, tmp_path):
    gw = FakeStreamGateway().start()
    fake = FakeDingTalk()
    fake.app.include_router(gw.router())
    fake.start()
    clock = ReminderClock.start(REMINDER_DELAY)
    port = free_port()
    env = {
        "DANGJIAN_DATA_DIR": str(data_copy), "DANGJIAN_DINGTALK_MODE": "stream",
        "DANGJIAN_DINGTALK_APP_KEY": fake.app_key, "DANGJIAN_DINGTALK_APP_SECRET": fake.app_secret,
        "DANGJIAN_DINGTALK_ROBOT_CODE": fake.robot_code, "DANGJIAN_DINGTALK_API_BASE": fake.base_url,
        # Only /healthz listens (the in-process tests run with no port at all).
        "DANGJIAN_HTTP_HOST": "127.0.0.1", "DANGJIAN_HTTP_PORT": str(port), **clock.env,
    }
    bot = BotProcess("dingtalk", env, tmp_path / "dingtalk-stream.log").start()

    def push(text: str, session: str, **kw: Any) -> str:
        return do(gw.push_robot_message(robot_message(text, session_webhook=fake.webhook_url(session), **kw)))

    def texts(session: str) -> list[str]:
        return [r.text for r in fake.replies_to(session)]

    try:
        wait_until(lambda: gw.connections, 120, "the Stream connection", bot)
        [opened] = [r for r in gw.open_requests if r.ticket == gw.connections[0].ticket]
        assert opened.body["subscriptions"] == [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["dingtalk_stream"] == "connected"
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_until(healthy, 10, "/healthz reporting the connection", bot)

        # A meeting first (its reminder comes while the rest is tried), confirmed with its number.
        at = clock.meeting()
        push(clock.command(at), "meet", staff_id="secretary1")
        wait_until(lambda: texts("meet"), 20, "the confirmation", bot)
        assert re.search(r"#\d+", texts("meet")[0])

        # A question: acked with its messageId, answered through its session webhook with the citation.
        question = robot_message("党组会议一般多久召开一次？", session_webhook=fake.webhook_url("s1"), msg_id="m1",
                                 staff_id="staff1", conversation_id="cidStaff1")
        frame_id = do(gw.push_robot_message(question))
        wait_until(lambda: gw.ack_for(frame_id), 10, "the ack", bot)
        ack = gw.ack_for(frame_id)
        assert ack["code"] == 200 and ack["headers"] == {"messageId": frame_id, "contentType": "application/json"}
        wait_until(lambda: texts("s1"), 20, "the answer", bot)
        assert "第十八条" in texts("s1")[0] and "每月" in texts("s1")[0]
        redelivery = do(gw.push_robot_message(question))  # DingTalk sends it again: acked, not answered
        push("有用", "rate", staff_id="staff1", conversation_id="cidStaff1")  # a typed rating of that answer
        wait_until(lambda: texts("rate"), 20, "the rating receipt", bot)
        assert texts("rate")[0].startswith("已记录：有用")

        # A group @-mention.
        push("党组会议纪要由谁签发？", "g1", group=True, staff_id="staff2")
        wait_until(lambda: texts("g1"), 20, "the group answer", bot)
        assert "第二十五条" in texts("g1")[0]

        # A ping is acked with its data.
        ping = do(gw.ping())
        wait_until(lambda: gw.ack_for(ping["headers"]["messageId"]), 10, "the ping ack", bot)
        assert gw.ack_for(ping["headers"]["messageId"])["data"] == ping["data"]

        # The gateway closes the connection: a new one (new ticket), and answers again.
        do(gw.close(1000))
        wait_until(lambda: len(gw.live_connections) == 1 and len(gw.connections) == 2, 15, "the reconnection", bot)
        assert gw.connections[0].ticket != gw.connections[1].ticket
        push("/checklist 民主生活会", "c1", staff_id="staff3", conversation_id="cidStaff3")
        wait_until(lambda: texts("c1"), 20, "checklist step 1", bot)
        assert "《" in texts("c1")[0] and "完成" in texts("c1")[0]
        push("完成", "c2", staff_id="staff3", conversation_id="cidStaff3")  # a typed reply
        wait_until(lambda: texts("c2"), 20, "checklist step 2", bot)
        assert "《" in texts("c2")[0] and texts("c2")[0] != texts("c1")[0]
        push("/reindex", "admin", staff_id="staff3")  # not an admin
        wait_until(lambda: texts("admin"), 20, "the refusal", bot)
        assert "管理员" in texts("admin")[0]

        def reminders() -> list:
            return [b for b in fake.batch_sends if "提醒】" in b.text]

        wait_until(reminders, 90, "the reminder", bot)
        time.sleep(3)  # a duplicate would follow within a couple of polls
        [reminder] = reminders()
        assert reminder.user_ids == ["secretary1"] and reminder.robot_code == fake.robot_code
        assert "三楼会议室" in reminder.text and f"{at:%H:%M}" in reminder.text
        assert gw.ack_for(redelivery) and len(texts("s1")) == 1  # the redelivery was not answered
        assert bot.alive
        assert bot.stop() == 0  # SIGTERM: the connection closed, queued work drained, a clean exit
        assert not gw.live_connections
    finally:
        bot.stop()
        fake.stop()
        gw.stop()


def test_dingtalk_stream_wrong_secret_exits_at_start_naming_the_settings(tmp_path):
    gw = FakeStreamGateway().start()
    data = tmp_path / "data"  # empty: the credentials are checked before any index is loaded or built
    env = {
        "DANGJIAN_DATA_DIR": str(data), "DANGJIAN_DINGTALK_MODE": "stream",
        "DANGJIAN_DINGTALK_APP_KEY": gw.client_id, "DANGJIAN_DINGTALK_APP_SECRET": "notTheSecret0123456789",
        "DANGJIAN_DINGTALK_API_BASE": gw.base_url, "DANGJIAN_HTTP_PORT": "0",
    }
    bot = BotProcess("dingtalk", env, tmp_path / "wrong-secret.log").start()
    try:
        started = time.monotonic()
        assert bot.proc is not None
        code = bot.proc.wait(60)
        elapsed = time.monotonic() - started
        logs = bot.logs()
        assert code != 0, logs
        assert elapsed < 60
        assert all(name in logs for name in SETTINGS) and "clientId或clientSecret无效" in logs
        assert "notTheSecret0123456789" not in logs
        assert not (data / "index").exists() and not gw.connections
    finally:
        bot.stop()
        gw.stop()
