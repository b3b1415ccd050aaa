"""The conversation core: turns one incoming message into the replies to send.

Adapters call :meth:`Core.handle`; it owns commands, help, questions, rate limiting and error
handling, and routes feature commands (meetings, checklists, admin) to their plug-ins. Nothing
blocking runs on the event loop: questions and plain-``def`` feature handlers (which talk to the
database synchronously) run in worker threads, so one slow chat never delays another.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from bot.core import texts
from bot.core.conversation import Conversation, Resolved
from bot.core.errors import StorageUnavailable
from bot.core.feature import Answered, AnswerHook, Context, Feature
from bot.core.fit import fit
from bot.core.format import format_answer
from bot.core.models import Capabilities, IncomingMessage, OutgoingMessage, Problem
from bot.core.outbound import OutboundRegistry
from retrieval.models import Answer

log = logging.getLogger(__name__)


class QuestionAnswerer(Protocol):
    def ask(self, question: str) -> Answer: ...


WINDOW_SECONDS = 60.0
#: How long an answer waits for the answer hook (the question log) before it goes out unchanged.
ANSWER_HOOK_SECONDS = 2.0


class RateLimiter:
    """At most ``per_minute`` messages per (platform, user) in any 60 s window.

    Users idle for a whole window are forgotten (swept at most once a window), so the table holds
    only the users of the last minute or two, however many have ever written.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._events: dict[tuple[str, str], deque[float]] = {}
        self._swept_at = clock()

    def __len__(self) -> int:
        """How many users are being tracked."""
        return len(self._events)

    def allow(self, platform: str, user_id: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = self._clock()
        if now - self._swept_at > WINDOW_SECONDS:
            self._sweep(now)
        q = self._events.setdefault((platform, user_id), deque())
        while q and now - q[0] > WINDOW_SECONDS:
            q.popleft()
        if len(q) >= self.per_minute:
            return False
        q.append(now)
        return True

    def _sweep(self, now: float) -> None:
        self._events = {k: q for k, q in self._events.items() if q and now - q[-1] <= WINDOW_SECONDS}
        self._swept_at = now


_COMMAND = re.compile(r"/(\w+)(?:@\w*)?(?:\s+(.*))?", re.S)


def parse_command(text: str) -> tuple[str, str] | None:
    """``/meeting@dangjian_bot add …`` → ("meeting", "add …"); None when not a command.
    Any whitespace ends the command word (newline, full-width space from Chinese keyboards)."""
    m = _COMMAND.fullmatch(text.strip())
    if m is None:
        return None
    return m.group(1).lower(), (m.group(2) or "").strip()


class Core:
    """Platform-neutral conversation logic. One instance per process."""

    def __init__(
        self,
        qa: QuestionAnswerer,
        *,
        admins: frozenset[str] = frozenset(),
        max_question_chars: int = 500,
        rate_limit_per_minute: int = 20,
        outbound: OutboundRegistry | None = None,
        features: list[Feature] | None = None,
        conversation: Conversation | None = None,
        on_answer: AnswerHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.qa = qa
        self.conversation = conversation
        self.on_answer = on_answer
        self.answer_hook_seconds = ANSWER_HOOK_SECONDS
        self.admins = admins
        self.max_question_chars = max_question_chars
        self.rate = RateLimiter(rate_limit_per_minute, clock)
        self.outbound = outbound or OutboundRegistry()
        self.features: list[Feature] = []
        self._by_command: dict[str, Feature] = {}
        for feature in features or []:
            self.add_feature(feature)

    def add_feature(self, feature: Feature) -> None:
        self.features.append(feature)
        for word in feature.commands:
            self._by_command[word] = feature

    def is_admin(self, platform: str, user_id: str) -> bool:
        return f"{platform}:{user_id}" in self.admins

    # ------------------------------------------------------------------
    async def handle(self, msg: IncomingMessage, caps: Capabilities) -> list[OutgoingMessage]:
        """Replies for one message, shaped to ``caps``; never raises (errors become an apology)."""
        try:
            replies = await self._handle(msg, caps)
        except StorageUnavailable:
            log.exception("database unavailable while handling %s:%s", msg.platform, msg.chat_id)
            replies = [OutgoingMessage(text=texts.SERVICE_UNAVAILABLE)]
        except Exception:
            log.exception("handler failed for %s:%s", msg.platform, msg.chat_id)
            replies = [OutgoingMessage(text=texts.INTERNAL_ERROR)]
        return fit(replies, caps)

    async def _handle(self, msg: IncomingMessage, caps: Capabilities) -> list[OutgoingMessage]:
        ctx = Context(msg=msg, caps=caps, is_admin=self.is_admin(msg.platform, msg.user_id))
        if msg.callback_data is not None:
            return await self._callback(ctx, msg.callback_data)
        if not msg.addressed:
            return []
        if not self.rate.allow(msg.platform, msg.user_id):
            return [OutgoingMessage(text=texts.RATE_LIMITED)]
        if msg.problem is not None:
            return [OutgoingMessage(text=_PROBLEM_TEXTS[msg.problem])]
        text = msg.text.strip()
        command = parse_command(text)
        if command is not None:
            return await self._command(ctx, *command)
        if text in texts.RESTART_WORDS:
            return [await self._restart(ctx)]
        for feature in self.features:
            consumed = await _run(feature.on_text, ctx)
            if consumed is not None:
                return consumed
        if msg.file is not None:
            return [OutgoingMessage(text=texts.FILE_NOT_EXPECTED)]
        if not _has_words(text):
            return [OutgoingMessage(text=texts.EMPTY_QUESTION)]
        return [await self.answer(text, ctx)]

    async def answer(self, question: str, ctx: Context | None = None) -> OutgoingMessage:
        """Answer a question: read as a follow-up of the user's previous one where it leans on
        it, with pointers to the features that help further."""
        question = question[: self.max_question_chars]
        started = time.perf_counter()
        resolved = await self._resolve(ctx, question)
        answer = await asyncio.to_thread(self.qa.ask, resolved.question)
        await self._remember(ctx, resolved, answer)
        text = format_answer(answer)
        if resolved.understood:
            text = texts.FOLLOW_UP.format(understood=resolved.understood) + "\n" + text
        if not answer.refused:
            notes = [note for f in self.features if (note := _answer_note(f, resolved.question))]
            if notes:
                text += "\n\n" + "\n".join(dict.fromkeys(notes))
        answered = Answered(question, answer, (time.perf_counter() - started) * 1000)
        return await self._after_answer(ctx, answered, OutgoingMessage(text=text))

    async def _after_answer(self, ctx: Context | None, answered: Answered, reply: OutgoingMessage) -> OutgoingMessage:
        """The reply as the answer hook returns it; unchanged if the hook fails or is slow (its
        work then finishes in the background)."""
        if self.on_answer is None or ctx is None:
            return reply
        task = asyncio.ensure_future(_run(self.on_answer.on_answer, ctx, answered, reply))
        task.add_done_callback(_log_hook_failure)
        try:
            async with asyncio.timeout(self.answer_hook_seconds):  # (wait_for can lose a cancellation on 3.11)
                return await asyncio.shield(task)
        except TimeoutError:
            log.warning("answer hook still busy after %.1f s; the answer goes out without it", self.answer_hook_seconds)
        except Exception:
            pass  # logged by _log_hook_failure
        return reply

    async def _resolve(self, ctx: Context | None, question: str) -> Resolved:
        if self.conversation is None or ctx is None:
            return Resolved(question)
        try:
            return await asyncio.to_thread(self.conversation.resolve, ctx.ref, question)
        except Exception:  # the memory is a help, never a reason not to answer
            log.warning("could not read the conversation context; answering on its own", exc_info=True)
            return Resolved(question)

    async def _remember(self, ctx: Context | None, resolved: Resolved, answer: Answer) -> None:
        if self.conversation is None or ctx is None:
            return
        try:
            await asyncio.to_thread(self.conversation.remember, ctx.ref, resolved, answer)
        except Exception:
            log.warning("could not store the conversation context", exc_info=True)

    async def _restart(self, ctx: Context) -> OutgoingMessage:
        """/new or 重新开始: forget the previous question (acknowledged either way)."""
        if self.conversation is not None:
            await asyncio.to_thread(self.conversation.forget, ctx.ref)
        return OutgoingMessage(text=texts.CONTEXT_CLEARED)

    async def _command(self, ctx: Context, word: str, args: str) -> list[OutgoingMessage]:
        if word == "start":
            return [OutgoingMessage(text=texts.START + "\n\n" + self.help_text())]
        if word == "help":
            return [OutgoingMessage(text=self.help_text())]
        if word == "ask":
            if not _has_words(args):
                return [OutgoingMessage(text=texts.EMPTY_QUESTION)]
            return [await self.answer(args, ctx)]
        if word == "new":
            return [await self._restart(ctx)]
        feature = self._by_command.get(word)
        if feature is None:
            return [OutgoingMessage(text=texts.UNKNOWN_COMMAND.format(word=word) + "\n\n" + self.help_text())]
        return await _run(feature.on_command, ctx, word, args)

    async def _callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        prefix = data.split(":", 1)[0]
        for feature in self.features:
            if feature.callback_prefix and feature.callback_prefix == prefix:
                return await _run(feature.on_callback, ctx, data)
        return [OutgoingMessage(text="", toast=texts.STALE_BUTTON)]

    def help_text(self) -> str:
        lines = [texts.HELP_HEADER]
        rows: list[tuple[str, str]] = list(texts.BASE_HELP)
        for feature in self.features:
            rows.extend(feature.help_lines)
        for usage, description in rows:
            lines.append(f"{usage}\n    {description}")
        return "\n".join(lines)

    def feature_commands(self) -> set[str]:
        """The command words features own (the ones that may need group-admin rights)."""
        return set(self._by_command)

    # ------------------------------------------------------------------
    def commands_for_menu(self) -> list[tuple[str, str]]:
        """(command, short description) pairs for a platform's command menu (setMyCommands)."""
        menu = [("start", "开始使用"), ("help", "查看全部命令和示例"), ("new", "重新开始对话（不再接着上一问）")]
        for feature in self.features:
            for usage, description in feature.help_lines:
                word = usage.split()[0].lstrip("/")
                if word not in {w for w, _ in menu}:
                    menu.append((word, description[:60]))
        return menu


_PROBLEM_TEXTS = {
    Problem.NOT_TEXT: texts.NOT_TEXT,
    Problem.FILE_TOO_BIG: texts.FILE_TOO_BIG,
    Problem.FILE_UNREADABLE: texts.FILE_UNREADABLE,
}


async def _run(handler: Callable[..., Any], *args: Any) -> Any:
    """Await an ``async def`` handler; run a plain ``def`` one (database work) in a thread."""
    if inspect.iscoroutinefunction(handler):
        return await handler(*args)
    result = await asyncio.to_thread(handler, *args)
    return await result if inspect.isawaitable(result) else result  # an async callable object


def _answer_note(feature: Feature, question: str) -> str | None:
    """A feature's one-line pointer for an answered question (``answer_note`` is optional)."""
    note = getattr(feature, "answer_note", None)
    return note(question) if note is not None else None


def _log_hook_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("answer hook failed; the answer went out without it", exc_info=task.exception())


def _has_words(text: str) -> bool:
    """True when the text has at least one letter or CJK character (not only emoji/punctuation)."""
    return any(ch.isalnum() for ch in text)
