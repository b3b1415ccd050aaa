"""The DingTalk Stream client (bot/adapters/dingtalk/stream.py) against the loopback fake gateway
(tests/fakes/dingtalk_stream_gateway.py): real HTTP and a real WebSocket on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot.adapters.dingtalk.stream import StreamAuthError, StreamClient, StreamConnectError, _with_ticket
from bot.adapters.dingtalk.stream_frames import FrameError, ack_for, parse_frame
from tests.fakes.dingtalk_stream_gateway import (
    ROBOT_TOPIC,
    FakeStreamGateway,
    GatewayConnection,
    OpenRequest,
    frame,
    robot_frame,
)

SETTINGS = ("DANGJIAN_DINGTALK_APP_KEY", "DANGJIAN_DINGTALK_APP_SECRET")


def text_message(text: str, msg_id: str) -> dict[str, Any]:
    """A (shortened) robot message as DingTalk sends it in both modes."""
    return {"msgtype": "text", "text": {"content": text}, "msgId": msg_id, "conversationType": "1",
            "senderStaffId": "user123", "sessionWebhook": "http://127.0.0.1:9/robot/sendBySession?session=s1"}


class Inbox:
    """The robot-message handler: records what it gets; ``gate`` (when set) makes it wait;
    ``fail_on`` message ids make it raise (RuntimeError, or CancelledError for ids in ``cancel_on``)."""

    def __init__(self, gate: asyncio.Event | None = None, fail_on: set[str] | None = None,
                 cancel_on: set[str] | None = None) -> None:
        self.gate = gate
        self.fail_on = fail_on or set()
        self.cancel_on = cancel_on or set()
        self.started: list[str] = []
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.started.append(message.get("msgId", "?"))
        if self.gate is not None:
            await self.gate.wait()
        if message.get("msgId") in self.cancel_on:
            raise asyncio.CancelledError  # e.g. something it awaited was cancelled
        if message.get("msgId") in self.fail_on:
            raise RuntimeError("handler blew up")
        self.messages.append(message)

    @property
    def ids(self) -> list[str]:
        return [m.get("msgId", "?") for m in self.messages]


@pytest.fixture
def gateway() -> Iterator[FakeStreamGateway]:
    with FakeStreamGateway() as gw:
        yield gw


def make_client(gw: FakeStreamGateway, inbox: Inbox, **options: Any) -> StreamClient:
    options.setdefault("backoff_first", 0.1)
    options.setdefault("backoff_max", 0.4)
    return StreamClient(gw.base_url, gw.client_id, gw.client_secret, inbox, **options)


@contextlib.asynccontextmanager
async def running(client: StreamClient) -> AsyncIterator[asyncio.Task[None]]:
    """``client.run_forever()`` as a task, cancelled (and awaited) at the end."""
    task = asyncio.create_task(client.run_forever())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


def assert_ack(ack: dict[str, Any] | None, message_id: str) -> None:
    assert ack is not None, f"no ack for {message_id}"
    assert ack["code"] == 200 and ack["message"] == "OK"
    assert ack["headers"] == {"messageId": message_id, "contentType": "application/json"}
    assert isinstance(ack["data"], str)
    json.loads(ack["data"])  # a JSON string, as DingTalk expects


def assert_secret_not_logged(caplog: pytest.LogCaptureFixture, secret: str) -> None:
    assert caplog.records, "nothing was logged: the check would prove nothing"
    assert not [r for r in caplog.records if secret in r.getMessage()]
    assert secret not in caplog.text


# ----------------------------------------------------------------------------------------------
# Frames (pure)
@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe", "not json", "[1, 2]", '"text"', '{"type": "CALLBACK"}',
     '{"type": "CALLBACK", "headers": {"topic": "t"}}', '{"headers": {"messageId": "m"}}'],
)
def test_unusable_frames_raise_frame_error(raw: str | bytes) -> None:
    with pytest.raises(FrameError):
        parse_frame(raw)


def test_ack_shapes_per_frame_type() -> None:
    ping = parse_frame(json.dumps(frame("SYSTEM", "ping", '{"opaque":"x1"}', message_id="p1")))
    assert json.loads(ack_for(ping) or "") == {
        "code": 200, "headers": {"messageId": "p1", "contentType": "application/json"},
        "message": "OK", "data": '{"opaque":"x1"}'}
    callback = parse_frame(json.dumps(robot_frame(text_message("问", "m1"), message_id="c1")))
    assert json.loads(json.loads(ack_for(callback) or "")["data"]) == {"response": None}
    assert callback.data_object()["msgId"] == "m1"
    event = parse_frame(json.dumps(frame("EVENT", "chat_update_title", "{}", message_id="e1")))
    assert json.loads(json.loads(ack_for(event) or "")["data"]) == {"status": "SUCCESS", "message": "success"}
    unknown = json.loads(ack_for(parse_frame(json.dumps(frame("WHATEVER", "t", "{}", message_id="w1")))))
    assert unknown["code"] == 200 and unknown["headers"]["messageId"] == "w1"  # acked, then ignored


def test_ticket_is_url_encoded() -> None:
    assert _with_ticket("wss://gw/connect", "a+b/c=") == "wss://gw/connect?ticket=a%2Bb%2Fc%3D"
    assert _with_ticket("wss://gw/connect?x=1", "t") == "wss://gw/connect?x=1&ticket=t"


# ----------------------------------------------------------------------------------------------
# Connecting, acking, handing over
async def test_opens_a_connection_subscribed_to_robot_messages(gateway: FakeStreamGateway) -> None:
    client = make_client(gateway, Inbox())
    async with running(client):
        conn = await gateway.wait_connections(1)
        await gateway.wait_for(lambda: client.connected)
    [request] = gateway.open_requests
    assert request.secret_ok and request.status == 200
    assert request.body["clientId"] == gateway.client_id
    assert request.body["subscriptions"] == [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]
    assert isinstance(request.body["ua"], str) and request.body["ua"]
    assert request.body["localIp"] == "127.0.0.1"
    assert conn.ticket == request.ticket and gateway.rejected_tickets == []
    assert not client.connected


async def test_robot_message_is_acked_and_handed_over(gateway: FakeStreamGateway) -> None:
    inbox = Inbox()
    client = make_client(gateway, inbox)
    message = text_message("党组会议一般多久召开一次？", "msgA")
    async with running(client):
        await gateway.wait_connections(1)
        message_id = await gateway.push_robot_message(message)
        assert_ack(await gateway.wait_for(lambda: gateway.ack_for(message_id)), message_id)
        await gateway.wait_for(lambda: inbox.messages)
    assert inbox.messages == [message]
    assert len(gateway.acks_for(message_id)) == 1


async def test_acks_come_before_the_handler_finishes_and_order_is_kept(gateway: FakeStreamGateway) -> None:
    gate = asyncio.Event()
    inbox = Inbox(gate)
    client = make_client(gateway, inbox)
    ids = [f"msg{i:02d}" for i in range(20)]
    async with running(client):
        await gateway.wait_connections(1)
        frame_ids = [await gateway.push_robot_message(text_message(f"问题{i}", i)) for i in ids]
        ping = await gateway.ping()
        # every frame acked (and the ping answered) while the handler still sits on the first one
        await gateway.wait_for(lambda: all(gateway.ack_for(f) for f in frame_ids))
        await gateway.wait_for(lambda: gateway.ack_for(ping["headers"]["messageId"]))
        await gateway.wait_for(lambda: inbox.started)
        assert inbox.started == ["msg00"] and inbox.messages == []
        gate.set()
        await gateway.wait_for(lambda: len(inbox.messages) == len(ids))
    assert inbox.ids == ids
    assert [a["headers"]["messageId"] for a in gateway.acks if a["headers"]["messageId"] in frame_ids] == frame_ids


async def test_ping_is_answered_with_its_data(gateway: FakeStreamGateway) -> None:
    client = make_client(gateway, Inbox())
    async with running(client):
        await gateway.wait_connections(1)
        ping = await gateway.ping("opaque-token-42")
        message_id = ping["headers"]["messageId"]
        ack = await gateway.wait_for(lambda: gateway.ack_for(message_id))
        assert_ack(ack, message_id)
        assert ack is not None and ack["data"] == ping["data"]
        await asyncio.sleep(0.3)
        assert len(gateway.connections) == 1 and client.connected  # a ping is not a reason to reconnect


async def test_handler_error_does_not_stop_delivery(gateway: FakeStreamGateway,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox(fail_on={"bad"}, cancel_on={"cancelled"})
    client = make_client(gateway, inbox)
    async with running(client):
        await gateway.wait_connections(1)
        await gateway.push_robot_message(text_message("一", "bad"))
        await gateway.push_robot_message(text_message("二", "cancelled"))
        await gateway.push_robot_message(text_message("三", "good"))
        await gateway.wait_for(lambda: inbox.messages)
        assert client.connected and len(gateway.connections) == 1
    assert inbox.started == ["bad", "cancelled", "good"] and inbox.ids == ["good"]
    assert any("handler failed for bad" in r.getMessage() for r in caplog.records)
    assert any("cancelled for cancelled" in r.getMessage() for r in caplog.records)


async def test_bad_and_unknown_frames_are_ignored(gateway: FakeStreamGateway) -> None:
    inbox = Inbox()
    client = make_client(gateway, inbox)
    async with running(client):
        await gateway.wait_connections(1)
        garbage: list[str | bytes] = ["not json {", "[1, 2, 3]", b"\x00\xff binary", '{"type": "CALLBACK", "headers": {}}']
        for raw in garbage:
            await gateway.send(raw)
        other_topic = frame("CALLBACK", "/v1.0/card/instances/callback", "{}")
        robot_not_json = frame("CALLBACK", ROBOT_TOPIC, "<xml/>")
        robot_not_object = frame("CALLBACK", ROBOT_TOPIC, "[1]")
        event = frame("EVENT", "org_dept_create", '{"deptId": [1]}')
        system_other = frame("SYSTEM", "KEEPALIVE", "{}")
        unknown_type = frame("NOTIFY", ROBOT_TOPIC, json.dumps(text_message("不该送达", "ghost")))
        for sent in [other_topic, robot_not_json, robot_not_object, event, system_other, unknown_type]:
            await gateway.send(sent)
        good = await gateway.push_robot_message(text_message("有效问题", "real"))
        await gateway.wait_for(lambda: inbox.messages)
        await gateway.wait_for(lambda: gateway.ack_for(good))
        for acked in [other_topic, robot_not_json, robot_not_object, event, system_other, unknown_type]:
            assert_ack(gateway.ack_for(acked["headers"]["messageId"]), acked["headers"]["messageId"])
        assert client.connected and len(gateway.connections) == 1 and len(gateway.open_requests) == 1
    assert inbox.ids == ["real"]


# ----------------------------------------------------------------------------------------------
# Reconnecting
async def test_disconnect_frame_opens_a_new_connection_with_a_new_ticket(gateway: FakeStreamGateway) -> None:
    inbox = Inbox()
    client = make_client(gateway, inbox)
    async with running(client):
        first = await gateway.wait_connections(1)
        await gateway.push_robot_message(text_message("断开前", "before"))
        disconnect_id = await gateway.request_disconnect()
        second = await gateway.wait_connections(2)
        await gateway.wait_for(lambda: first.closed)  # the client closed the old one itself
        message_id = await gateway.push_robot_message(text_message("断开后", "after"), conn=second)
        await gateway.wait_for(lambda: gateway.ack_for(message_id))
        await gateway.wait_for(lambda: len(inbox.messages) == 2)
    assert_ack(gateway.ack_for(disconnect_id), disconnect_id)
    tickets = [r.ticket for r in gateway.open_requests[:2]]
    assert [first.ticket, second.ticket] == tickets and tickets[0] != tickets[1]
    assert gateway.rejected_tickets == []
    assert inbox.ids == ["before", "after"]


async def _drop_with_close_1000(gw: FakeStreamGateway, conn: GatewayConnection) -> None:
    await gw.close(1000, conn)


async def _drop_with_close_1011(gw: FakeStreamGateway, conn: GatewayConnection) -> None:
    await gw.close(1011, conn)


async def _drop_tcp(gw: FakeStreamGateway, conn: GatewayConnection) -> None:
    await gw.drop(conn)


@pytest.mark.parametrize("lose", [_drop_tcp, _drop_with_close_1000, _drop_with_close_1011],
                         ids=["tcp-cut", "close-1000", "close-1011"])
async def test_lost_connection_is_replaced_within_seconds_by_default(gateway: FakeStreamGateway, lose: Any) -> None:
    inbox = Inbox()
    client = StreamClient(gateway.base_url, gateway.client_id, gateway.client_secret, inbox)  # default backoff
    async with running(client):
        first = await gateway.wait_connections(1)
        lost_at = time.monotonic()
        await lose(gateway, first)
        second = await gateway.wait_connections(2, timeout=15)
        elapsed = second.at - lost_at
        message_id = await gateway.push_robot_message(text_message("重连后", "again"), conn=second)
        await gateway.wait_for(lambda: inbox.messages)
        assert_ack(await gateway.wait_for(lambda: gateway.ack_for(message_id)), message_id)
    assert elapsed < 5.0, f"reconnected only after {elapsed:.1f} s"
    assert second.ticket != first.ticket and gateway.rejected_tickets == []


async def test_unanswered_keepalive_replaces_a_half_open_connection(gateway: FakeStreamGateway) -> None:
    inbox = Inbox()
    client = make_client(gateway, inbox, ping_interval=0.3)
    async with running(client):
        first = await gateway.wait_connections(1)
        await gateway.freeze(first)  # the gateway stops reading: no pongs, but the socket stays up
        second = await gateway.wait_connections(2, timeout=15)
        message_id = await gateway.push_robot_message(text_message("半开连接之后", "after-freeze"), conn=second)
        await gateway.wait_for(lambda: inbox.messages)
        assert_ack(await gateway.wait_for(lambda: gateway.ack_for(message_id)), message_id)


# ----------------------------------------------------------------------------------------------
# Credentials
@pytest.mark.parametrize("status", [400, 401, 403])
async def test_wrong_secret_at_start_names_the_settings(gateway: FakeStreamGateway, status: int,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.refusal_status = status
    wrong = "wrongSecretThatMustNotBeLogged0123456789"
    client = StreamClient(gateway.base_url, gateway.client_id, wrong, Inbox())
    with pytest.raises(StreamAuthError) as caught:
        await client.check_credentials()
    error = caught.value
    assert error.status == status and error.message == "clientId或clientSecret无效"
    assert error.code == "InvalidAuthentication"
    assert all(name in str(error) for name in SETTINGS) and "clientId或clientSecret无效" in str(error)
    assert wrong not in str(error) and wrong not in repr(client)
    assert_secret_not_logged(caplog, wrong)
    assert not gateway.connections and [r.secret_ok for r in gateway.open_requests] == [False]


async def test_right_secret_passes_the_start_check(gateway: FakeStreamGateway) -> None:
    client = make_client(gateway, Inbox())
    await client.check_credentials()
    endpoint, ticket = await client.open_connection()
    assert endpoint == gateway.ws_url and ticket in gateway.tickets_issued


async def test_gateway_trouble_is_not_a_credentials_error(gateway: FakeStreamGateway) -> None:
    gateway.fail_open_with = (503, {"code": "ServiceUnavailable", "message": "系统繁忙"})
    inbox = Inbox()
    client = make_client(gateway, inbox)
    with pytest.raises(StreamConnectError):
        await client.check_credentials()
    gateway.fail_open_with = (200, {"message": "no endpoint here"})
    with pytest.raises(StreamConnectError):
        await client.check_credentials()
    async with running(client) as task:
        await gateway.wait_for(lambda: len(gateway.open_requests) >= 4)
        assert not task.done() and not gateway.connections
        gateway.fail_open_with = None
        await gateway.wait_connections(1)
        await gateway.push_robot_message(text_message("恢复了", "back"))
        await gateway.wait_for(lambda: inbox.messages)


async def test_revoked_credentials_are_retried_with_backoff(gateway: FakeStreamGateway,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = gateway.client_secret
    inbox = Inbox()
    client = make_client(gateway, inbox, backoff_first=0.1, backoff_max=0.4)
    async with running(client) as task:
        first = await gateway.wait_connections(1)
        gateway.client_secret = "rotatedByTheAdmin"  # the app secret was reset in the developer console
        await gateway.drop(first)

        def refused() -> list[OpenRequest]:
            return [r for r in gateway.open_requests if r.status != 200]

        await gateway.wait_for(lambda: len(refused()) >= 6, timeout=30)
        assert not task.done(), "run_forever ended"
        gateway.client_secret = secret
        second = await gateway.wait_connections(2, timeout=15)
        await gateway.push_robot_message(text_message("密钥恢复后", "restored"), conn=second)
        await gateway.wait_for(lambda: inbox.messages)
    # the waits it announced: 0.1 after the drop, then doubling to the 0.4 cap (x 0.75-1 jitter)
    waits = [float(m) for r in caplog.records if r.name == "bot.adapters.dingtalk.stream"
             for m in re.findall(r"(?:retrying|reconnecting) in ([0-9.]+) s", r.getMessage())][:6]
    nominal = [0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    assert len(waits) == 6 and all(0.75 * n - 0.001 <= w <= n + 0.001 for w, n in zip(waits, nominal)), waits
    # … and it did wait: no hot loop against DingTalk
    attempts = refused()[:6]
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert all(g >= 0.14 for g in gaps) and all(g >= 0.29 for g in gaps[1:]), gaps
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) >= 6 and all(all(name in e for name in SETTINGS) for e in errors)
    assert_secret_not_logged(caplog, secret)
    assert_secret_not_logged(caplog, "rotatedByTheAdmin")


# ----------------------------------------------------------------------------------------------
# Shutting down
async def test_cancel_closes_the_connection_and_leaves_no_task(gateway: FakeStreamGateway) -> None:
    gate = asyncio.Event()  # never set: the handler is stuck when we cancel
    inbox = Inbox(gate)
    client = make_client(gateway, inbox, drain_timeout=0.3)
    before = asyncio.all_tasks()
    task = asyncio.create_task(client.run_forever())
    conn = await gateway.wait_connections(1)
    await gateway.push_robot_message(text_message("卡住的问题", "stuck"))
    await gateway.push_robot_message(text_message("排队的问题", "queued"))
    await gateway.wait_for(lambda: inbox.started)
    await gateway.wait_for(lambda: len(gateway.acks) == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert asyncio.all_tasks() - before == set()
    await gateway.wait_for(lambda: conn.closed, timeout=5)
    assert not client.connected


async def test_stop_hands_over_acked_messages_and_returns(gateway: FakeStreamGateway) -> None:
    gate = asyncio.Event()
    inbox = Inbox(gate)
    client = StreamClient(gateway.base_url, gateway.client_id, gateway.client_secret, inbox)
    before = asyncio.all_tasks()
    task = asyncio.create_task(client.run_forever())
    await gateway.wait_connections(1)
    frame_ids = [await gateway.push_robot_message(text_message(f"问{i}", f"m{i}")) for i in range(10)]
    await gateway.wait_for(lambda: all(gateway.ack_for(f) for f in frame_ids))
    assert inbox.messages == []  # the handler is still busy with the first one when we stop
    client.stop()
    asyncio.get_running_loop().call_later(0.2, gate.set)  # it finishes during the shutdown drain
    await asyncio.wait_for(task, 10)  # returns (no CancelledError) after stop()
    assert inbox.ids == [f"m{i}" for i in range(10)]  # every acked message was handed over
    assert asyncio.all_tasks() - before == set()
    await gateway.wait_for(lambda: gateway.connections[0].closed, timeout=5)


async def test_second_run_forever_is_refused(gateway: FakeStreamGateway) -> None:
    client = make_client(gateway, Inbox())
    async with running(client):
        await gateway.wait_for(lambda: client.connected)
        with pytest.raises(RuntimeError):
            await client.run_forever()
        assert client.connected
