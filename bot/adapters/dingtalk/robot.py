"""What both DingTalk modes share: the robot message DingTalk sends (the same JSON whether it is
POSTed to our callback in HTTP mode or pushed over the Stream connection), and
:class:`DingTalkRobot`, which handles it once received: the :class:`~bot.adapters.delivery.Inbox`
(per-sender order, ``msgId`` claimed in the database when handled), the core, the reply through
the message's ``sessionWebhook`` (the robot OpenAPI when it has expired or fails) and pushes
(reminders, reports) through ``oToMessages/batchSend``.

The two receiving sides are :mod:`bot.adapters.dingtalk.adapter` (HTTP callbacks) and
:mod:`bot.adapters.dingtalk.stream_adapter` (Stream mode).
"""
from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.adapters.delivery import InboxOptions, SeenMessages
from bot.adapters.dingtalk.client import HTTP_TIMEOUT, DingTalkApi, DingTalkError, describe
from bot.adapters.http_server import InboxLifecycle
from bot.core.engine import Core
from bot.core.models import Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingMessage, Problem
from bot.core.split import split_text
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "dingtalk"
#: Per-message limit we cut to. DingTalk documents 15 000 bytes for a group msgParam and nothing
#: for sessionWebhook texts; 5 000 UTF-8 bytes keeps every message comfortably readable and safe.
MAX_BYTES = 5000
CAPABILITIES = Capabilities(buttons=False, files=False, max_bytes=MAX_BYTES)
#: The settings every DingTalk mode needs (the robot code defaults to the AppKey).
REQUIRED_SETTINGS = ("DANGJIAN_DINGTALK_APP_KEY", "DANGJIAN_DINGTALK_APP_SECRET")


def check_required_settings(settings: Settings) -> None:
    """ValueError naming each required DingTalk setting that is missing."""
    values = {"DANGJIAN_DINGTALK_APP_KEY": settings.dingtalk_app_key,
              "DANGJIAN_DINGTALK_APP_SECRET": settings.dingtalk_app_secret}
    missing = [name for name in REQUIRED_SETTINGS if not values[name]]
    if missing:
        raise ValueError("DingTalk adapter needs these settings: " + ", ".join(missing))


class _TextBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str = ""


class RobotMessage(BaseModel):
    """The robot message JSON DingTalk sends (only the fields the bot uses)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    msg_id: str = Field(alias="msgId", min_length=1, max_length=128)
    msgtype: str = "text"
    conversation_type: str = Field(default="1", alias="conversationType")
    conversation_id: str = Field(alias="conversationId", min_length=1, max_length=256)
    sender_staff_id: str | None = Field(default=None, alias="senderStaffId")
    sender_id: str | None = Field(default=None, alias="senderId")
    sender_nick: str | None = Field(default=None, alias="senderNick")
    text: _TextBody | None = None
    content: Any = None  # richText / picture / audio carry a ``content`` object instead of text
    is_in_at_list: bool = Field(default=False, alias="isInAtList")
    session_webhook: str | None = Field(default=None, alias="sessionWebhook")
    session_webhook_expired_time: int | None = Field(default=None, alias="sessionWebhookExpiredTime")
    robot_code: str | None = Field(default=None, alias="robotCode")

    @field_validator("conversation_type", mode="before")
    @classmethod
    def _type_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _has_sender(self) -> RobotMessage:
        if not (self.sender_staff_id or self.sender_id):
            raise ValueError("message has neither senderStaffId nor senderId")
        return self

    @property
    def chat_type(self) -> ChatType:
        return ChatType.PRIVATE if self.conversation_type == "1" else ChatType.GROUP

    @property
    def user_id(self) -> str:
        return self.sender_staff_id or self.sender_id or ""

    def plain_text(self) -> str | None:
        """The user's text (mention already removed by DingTalk, spaces stripped); None = not text."""
        if self.msgtype == "text":
            return (self.text.content if self.text else "").strip()
        if self.msgtype == "richText" and isinstance(self.content, dict):
            parts = self.content.get("richText")
            if isinstance(parts, list):
                words = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
                if words:
                    return "".join(words).strip()
        return None

    def to_incoming(self) -> IncomingMessage:
        """The core's view; pictures, voice… become a message it cannot read."""
        text = self.plain_text()
        return IncomingMessage(
            platform=PLATFORM, chat_id=self.conversation_id, chat_type=self.chat_type, user_id=self.user_id,
            user_name=self.sender_nick, text=text or "", message_id=self.msg_id,
            addressed=self.chat_type == ChatType.PRIVATE or self.is_in_at_list,
            problem=Problem.NOT_TEXT if text is None else None,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _texts(messages: list[OutgoingMessage]) -> list[str]:
    return [chunk for m in messages for chunk in split_text(m.text, max_bytes=MAX_BYTES)]


class DingTalkRobot(InboxLifecycle):
    """Handles received robot messages (queued in ``self.inbox`` by a receiving side), answers
    through sessionWebhook, pushes through the OpenAPI."""

    capabilities: Capabilities = CAPABILITIES

    def __init__(self, settings: Settings, core: Core, seen: SeenMessages, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, options: InboxOptions = InboxOptions()) -> None:
        """``clock`` (seconds since the epoch) judges sign timestamps, webhook and token expiry."""
        self.core = core
        self._clock = clock
        self._open_inbox(PLATFORM, self._process, seen, options, http, HTTP_TIMEOUT)
        self.api = DingTalkApi(self._http, settings, clock)
        self._api_host = (urlsplit(self.api.api_base).hostname or "").lower()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _process(self, message: RobotMessage) -> None:
        chunks = _texts(await self.core.handle(message.to_incoming(), CAPABILITIES))
        if chunks:
            await self._reply(message, chunks)

    async def _reply(self, message: RobotMessage, chunks: list[str]) -> None:
        """Post to the message's sessionWebhook; when it is unusable, push through the OpenAPI."""
        remaining = list(chunks)
        if message.session_webhook and self._webhook_usable(message):
            while remaining:
                try:
                    await self.api.reply(message.session_webhook, remaining[0])
                except (httpx.HTTPError, DingTalkError) as exc:
                    log.warning("dingtalk: sessionWebhook reply failed (%s); using the OpenAPI", describe(exc))
                    break
                remaining.pop(0)
        try:
            for text in remaining:
                if message.chat_type == ChatType.GROUP:
                    await self.api.send_to_group(message.conversation_id, text)
                else:
                    await self.api.send_to_user(message.user_id, text)
        except (httpx.HTTPError, DingTalkError) as exc:
            log.error("dingtalk: could not deliver the answer to %s: %s", message.msg_id, describe(exc))

    def _webhook_usable(self, message: RobotMessage) -> bool:
        expires = message.session_webhook_expired_time
        if expires is not None and expires <= self._now_ms():
            log.info("dingtalk: sessionWebhook of %s expired", message.msg_id)
            return False
        parts = urlsplit(message.session_webhook or "")
        host = (parts.hostname or "").lower()
        allowed = (
            host == "dingtalk.com"
            or host.endswith(".dingtalk.com")
            or (host and host == self._api_host)
            or (_is_loopback(host) and _is_loopback(self._api_host))
        )
        if parts.scheme not in {"http", "https"} or not allowed:
            # Never post to a host a message merely names (in HTTP mode the sign covers only the
            # timestamp, so a replayed sign could carry any body).
            log.warning("dingtalk: sessionWebhook host %r not allowed", host)
            return False
        return True

    # -- pushing ---------------------------------------------------------------------------------
    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        """Push to ``ref.user_id`` through ``oToMessages/batchSend``; raise when DingTalk refuses.

        This is the :class:`bot.core.models.Outbound` entry point: reminders go to the user who
        registered the meeting, privately, whatever chat the meeting was registered in.
        """
        for text in _texts(messages):
            await self.api.send_to_user(ref.user_id, text)
