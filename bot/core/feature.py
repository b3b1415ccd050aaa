"""The plug-in contract for chat features (meetings, checklists, admin commands).

The core parses the command word and routes to the feature that declared it; features return
outgoing messages and never talk to a platform directly (pushes go through
:class:`bot.core.outbound.OutboundRegistry`).

A handler may be a plain ``def`` or an ``async def``. Plain ones are run in a worker thread
(``asyncio.to_thread``): that is the place for synchronous database work, which must never run on
the event loop. ``async def`` handlers are awaited on the loop and must not block it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.core.models import Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingMessage
from retrieval.models import Answer


@dataclass(frozen=True)
class Context:
    """What a feature knows about the message it is handling."""

    msg: IncomingMessage
    caps: Capabilities
    is_admin: bool  # listed in DANGJIAN_ADMIN_IDS

    @property
    def ref(self) -> ChatRef:
        m = self.msg
        return ChatRef(platform=m.platform, chat_id=m.chat_id, chat_type=m.chat_type, user_id=m.user_id)

    @property
    def in_group(self) -> bool:
        return self.msg.chat_type != ChatType.PRIVATE

    @property
    def can_manage_group(self) -> bool:
        """Group admins and bot admins may manage a group's shared things."""
        return self.is_admin or self.msg.sender_is_chat_admin or not self.in_group


class Feature(Protocol):
    """Each handler may also be declared ``async def`` (see the module docstring)."""

    #: command words without the slash, e.g. ("meeting", "meetings")
    commands: tuple[str, ...]
    #: callback data prefix this feature owns, e.g. "chk"; None if it has no buttons
    callback_prefix: str | None
    #: lines for /help: (usage with an example, one-line description)
    help_lines: list[tuple[str, str]]

    def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]: ...

    def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]: ...

    def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        """A plain text the feature may consume (e.g. 完成 in a checklist); None = not mine."""
        ...


@dataclass(frozen=True)
class Answered:
    """A question the core answered or refused, as handed to the :class:`AnswerHook`."""

    question: str  # the member's words, cut to DANGJIAN_MAX_QUESTION_CHARS (not merged with a previous one)
    answer: Answer
    latency_ms: float


class AnswerHook(Protocol):
    """Sees every answered or refused question once its answer is made (not command replies) and
    returns the reply to send, e.g. with rating buttons added. A plain ``def`` runs in a worker
    thread. The core waits for it only briefly and sends the unchanged reply when it fails or is
    slow, so a hook (the question log) can never delay or break an answer."""

    def on_answer(self, ctx: Context, answered: Answered, reply: OutgoingMessage) -> OutgoingMessage: ...
