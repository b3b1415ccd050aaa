"""钉钉 (DingTalk) enterprise-internal app robot: ``sign`` (callback signature), ``client``
(session webhooks and the robot OpenAPI with its cached token), ``robot`` (the robot message
and its handling, shared by both modes), ``adapter`` (HTTP callbacks, and the entry points
``preflight``/``run`` for both modes), ``stream_frames``/``stream`` (the Stream protocol and its
client) and ``stream_adapter`` (Stream mode: messages over an outbound WebSocket)."""
from bot.adapters.dingtalk.adapter import CALLBACK_PATH, DingTalkAdapter, preflight, run
from bot.adapters.dingtalk.client import DingTalkApi, DingTalkError
from bot.adapters.dingtalk.robot import CAPABILITIES, PLATFORM, RobotMessage
from bot.adapters.dingtalk.stream_adapter import DingTalkStreamAdapter

__all__ = ["CALLBACK_PATH", "CAPABILITIES", "PLATFORM", "DingTalkAdapter", "DingTalkApi", "DingTalkError",
           "DingTalkStreamAdapter", "RobotMessage", "preflight", "run"]
