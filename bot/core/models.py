"""The platform-neutral message contract between adapters and the core.

Adapters translate platform payloads into :class:`IncomingMessage`, call the core, and translate
the returned :class:`OutgoingMessage` list back. Pushes that answer no message (reminders, the
report of a background reindex) go through an :class:`Outbound` the adapter registers.
Nothing here imports a messaging SDK.
"""
from __future__ import annotations

from enum import Enum
from typing import Protocol

from pydantic import BaseModel, Field


class ChatType(str, Enum):
    PRIVATE = "private"
    GROUP = "group"
    CHANNEL = "channel"


class Capabilities(BaseModel):
    """What a platform can show; the core shapes its replies to fit."""

    buttons: bool = False  # inline buttons with callback data
    files: bool = False  # can send a document (e.g. .ics)
    max_chars: int | None = None  # per-message limit in characters (Telegram 4096)
    max_bytes: int | None = None  # per-message limit in UTF-8 bytes (WeCom 2048)


class Problem(str, Enum):
    """Why an incoming message carries nothing the bot can read; the core words the reply."""

    NOT_TEXT = "not_text"  # a picture, voice message, sticker…
    FILE_TOO_BIG = "file_too_big"  # a document over the upload limit
    FILE_UNREADABLE = "file_unreadable"  # a document that could not be downloaded


class IncomingFile(BaseModel):
    filename: str
    content: bytes


class IncomingMessage(BaseModel):
    """One thing a user did: a text, a command, a button press or a document."""

    platform: str  # "telegram", "wecom", "dingtalk", "console"
    chat_id: str
    chat_type: ChatType = ChatType.PRIVATE
    user_id: str
    user_name: str | None = None
    text: str = ""  # mention of the bot already stripped by the adapter
    message_id: str | None = None
    addressed: bool = True  # private chat, @mention, reply to the bot, or a command
    callback_data: str | None = None  # set when a button was pressed
    sender_is_chat_admin: bool = False  # adapter's answer to "is this user a group admin?"
    file: IncomingFile | None = None
    problem: Problem | None = None  # set instead of text when the content cannot be read


class Button(BaseModel):
    label: str
    data: str = Field(max_length=64)  # callback data, ASCII, ≤ 64 bytes (Telegram)


class OutgoingFile(BaseModel):
    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"


class OutgoingMessage(BaseModel):
    """One logical message. Adapters split text that exceeds their limit (see bot.core.split)."""

    text: str
    buttons: list[list[Button]] = Field(default_factory=list)
    file: OutgoingFile | None = None
    # For a button press: the short toast the platform shows (Telegram answerCallbackQuery).
    toast: str | None = None


class ChatRef(BaseModel):
    """Where to push later: stored with meetings so reminders reach the right chat."""

    platform: str
    chat_id: str
    chat_type: ChatType = ChatType.PRIVATE
    user_id: str


class Outbound(Protocol):
    """An adapter's way to send without a message to answer (reminders, reports)."""

    capabilities: Capabilities

    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None: ...
