"""DingTalk Stream mode wire format: parse gateway frames, build our acks (pure, no I/O).

A frame from the gateway is a JSON object sent as one WebSocket text message::

    {"specVersion": "1.0", "type": "CALLBACK",
     "headers": {"topic": "/v1.0/im/bot/messages/get", "messageId": "…",
                 "contentType": "application/json", "time": "1690000000000", "appId": "…"},
     "data": "{\\"msgtype\\":\\"text\\", …}"}          # data is a JSON *string*

``type`` is ``SYSTEM`` (topics ``ping`` and ``disconnect``), ``EVENT`` or ``CALLBACK``. We answer
each frame we understand with an ack carrying its ``messageId``::

    {"code": 200, "headers": {"messageId": "…", "contentType": "application/json"},
     "message": "OK", "data": "…"}                     # data again a JSON string

For SYSTEM frames ``data`` echoes the frame's data (a ping's ``{"opaque": …}`` must come back),
as the official SDK's ``SystemHandler`` does; CALLBACK acks carry ``{"response": null}`` (the SDK's
``CallbackHandler`` shape) and EVENT acks ``{"status": "SUCCESS", "message": "success"}``.
Shapes read from ``dingtalk-stream`` 0.24.3 (``frames.py``, ``handlers.py``, ``stream.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TYPE_SYSTEM = "SYSTEM"
TYPE_EVENT = "EVENT"
TYPE_CALLBACK = "CALLBACK"
TOPIC_PING = "ping"
TOPIC_DISCONNECT = "disconnect"
#: the robot message topic (the same JSON DingTalk POSTs in HTTP mode)
ROBOT_TOPIC = "/v1.0/im/bot/messages/get"
CONTENT_TYPE_JSON = "application/json"
OPEN_PATH = "/v1.0/gateway/connections/open"

_CALLBACK_ACK_DATA = json.dumps({"response": None})
_EVENT_ACK_DATA = json.dumps({"status": "SUCCESS", "message": "success"})


class FrameError(ValueError):
    """A gateway message we cannot use (not JSON, not an object, no type or messageId)."""


@dataclass(frozen=True)
class Frame:
    """One parsed gateway frame. ``data`` is the raw JSON string as sent ("" when absent)."""

    type: str
    topic: str
    message_id: str
    data: str
    headers: dict[str, Any] = field(default_factory=dict)

    def data_object(self) -> dict[str, Any]:
        """``data`` decoded; FrameError unless it is a JSON object."""
        try:
            value = json.loads(self.data)
        except ValueError as exc:
            raise FrameError(f"{self.type} {self.topic}: data is not JSON") from exc
        if not isinstance(value, dict):
            raise FrameError(f"{self.type} {self.topic}: data is not a JSON object")
        return value


def parse_frame(raw: str | bytes) -> Frame:
    """Parse one WebSocket message from the gateway; FrameError when it is unusable."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise FrameError("frame is not JSON") from exc
    if not isinstance(obj, dict):
        raise FrameError("frame is not a JSON object")
    headers = obj.get("headers")
    if not isinstance(headers, dict):
        raise FrameError("frame has no headers object")
    frame_type, topic, message_id = obj.get("type"), headers.get("topic", ""), headers.get("messageId")
    if not isinstance(frame_type, str) or not frame_type:
        raise FrameError("frame has no type")
    if not isinstance(message_id, str) or not message_id:
        raise FrameError(f"{frame_type} frame has no messageId")
    data = obj.get("data", "")
    if data is None:
        data = ""
    elif not isinstance(data, str):  # not what DingTalk sends, but harmless to accept
        data = json.dumps(data, ensure_ascii=False)
    return Frame(type=frame_type, topic=topic if isinstance(topic, str) else "", message_id=message_id,
                 data=data, headers=headers)


def ack(message_id: str, data: str, *, code: int = 200, message: str = "OK") -> str:
    """The JSON text of an ack for ``message_id``."""
    return json.dumps(
        {"code": code, "headers": {"messageId": message_id, "contentType": CONTENT_TYPE_JSON},
         "message": message, "data": data},
        ensure_ascii=False,
    )


def ack_for(frame: Frame) -> str:
    """Our ack for ``frame``; a type we do not know is acked too (and then ignored), so DingTalk
    does not deliver it again."""
    if frame.type == TYPE_SYSTEM:
        return ack(frame.message_id, frame.data)
    if frame.type == TYPE_EVENT:
        return ack(frame.message_id, _EVENT_ACK_DATA)
    return ack(frame.message_id, _CALLBACK_ACK_DATA)


def open_request_body(client_id: str, client_secret: str, *, ua: str, local_ip: str) -> dict[str, Any]:
    """The body of ``POST /v1.0/gateway/connections/open`` subscribing to robot messages only."""
    return {
        "clientId": client_id,
        "clientSecret": client_secret,
        "subscriptions": [{"type": TYPE_CALLBACK, "topic": ROBOT_TOPIC}],
        "ua": ua,
        "localIp": local_ip,
    }
