"""企业微信 (WeCom) self-built app: ``crypto`` (callback signature and AES envelope), ``client``
(the server API with its cached token) and ``adapter`` (callbacks ↔ the core)."""
from bot.adapters.wecom.adapter import CALLBACK_PATH, CAPABILITIES, PLATFORM, WeComAdapter, check_settings, run
from bot.adapters.wecom.client import WeComApi, WeComApiError

__all__ = ["CALLBACK_PATH", "CAPABILITIES", "PLATFORM", "WeComAdapter", "WeComApi", "WeComApiError",
           "check_settings", "run"]
