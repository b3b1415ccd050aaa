"""钉钉 (DingTalk) enterprise-internal app robot: ``sign`` (callback signature), ``client``
(session webhooks and the robot OpenAPI with its cached token) and ``adapter`` (HTTP callbacks ↔
the core). Stream mode lives beside this package."""
from bot.adapters.dingtalk.adapter import CALLBACK_PATH, CAPABILITIES, PLATFORM, DingTalkAdapter, RobotMessage, run
from bot.adapters.dingtalk.client import DingTalkApi, DingTalkError

__all__ = ["CALLBACK_PATH", "CAPABILITIES", "PLATFORM", "DingTalkAdapter", "DingTalkApi", "DingTalkError",
           "RobotMessage", "run"]
