"""The one in-process harness, in the style of errbot's ``testbot``: a real :class:`Core`, a
recording outbound (what pushes would send) and one stub answerer standing in for retrieval.
Push a message, get the replies::

    bot = TestBot(MeetingsFeature(...), admins={"telegram:900"})
    reply = await bot.say("/meeting add 支委会 2025-03-12 15:00 三楼会议室 研究工作")
    assert reply.text.startswith("已登记会议 #")
    assert bot.qa.questions == []               # nothing reached retrieval
    assert bot.outbound.texts == []             # nothing was pushed

Settings for tests come from :func:`make_settings`, which never reads a ``.env`` file.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from bot.core.engine import Core
from bot.core.models import (
    Capabilities,
    ChatRef,
    ChatType,
    IncomingFile,
    IncomingMessage,
    OutgoingMessage,
    Problem,
)
from bot.core.outbound import OutboundRegistry
from bot.settings import Settings
from retrieval.models import Answer, Citation

TITLE = "中国共产党党组工作条例"
LABEL = "第十八条"
CITATION = f"《{TITLE}》{LABEL}"
ARTICLE = "党组会议一般每月召开1次，遇有重要情况可以随时召开。"
ANSWER = f"根据{CITATION}：党组会议一般每月召开一次，遇有重要情况可以随时召开。"
#: Telegram-like: buttons, files, 4096 characters.
RICH = Capabilities(buttons=True, files=True, max_chars=4096)
#: WeCom-like: plain text, 2048 bytes.
PLAIN = Capabilities(buttons=False, files=False, max_bytes=2048)


def make_settings(**values: Any) -> Settings:
    """Settings for a test: defaults plus ``values``; never a developer's ``.env``."""
    return Settings(_env_file=None, **values)


def cite(label: str = LABEL, text: str = ARTICLE, score: float = 0.9, title: str = TITLE) -> Citation:
    return Citation(citation=f"《{title}》{label}", doc_title=title, label=label, source="dangzu.txt",
                    text=text, score=score)


class StubAnswerer:
    """Stands in for retrieval: answers every question citing 第十八条 (or with ``reply(q)``).

    Records the questions (thread-safe: the core asks from worker threads). ``fail`` (an
    exception, or True for a RuntimeError) makes it raise while set; ``gated=True`` makes each
    question wait for ``release`` (like a slow model) after setting ``started``.
    """

    def __init__(self, answer: str = ANSWER, *, reply: Callable[[str], Answer] | None = None,
                 fail: BaseException | bool = False, gated: bool = False) -> None:
        self.answer = answer
        self.reply = reply
        self.fail = fail
        self.questions: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not gated:
            self.release.set()
        self._lock = threading.Lock()

    def ask(self, question: str) -> Answer:
        with self._lock:
            self.questions.append(question)
        self.started.set()
        assert self.release.wait(10), "the test never released the answerer"
        if self.fail:
            raise self.fail if isinstance(self.fail, BaseException) else RuntimeError("retrieval exploded")
        if self.reply is not None:
            return self.reply(question)
        return Answer(question=question, answer=self.answer, refused=False, citations=[cite()], quote=ARTICLE)


class RecordingOutbound:
    """An adapter's push side that records what it was asked to send.

    The first ``fail_first`` sends raise ConnectionError (a platform that is down)."""

    def __init__(self, capabilities: Capabilities = RICH, *, fail_first: int = 0) -> None:
        self.capabilities = capabilities
        self.sent: list[tuple[ChatRef, list[OutgoingMessage]]] = []
        self.fail_first = fail_first
        self.calls = 0

    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        self.calls += 1
        await asyncio.sleep(0)  # let concurrent senders interleave
        if self.calls <= self.fail_first:
            raise ConnectionError("platform unavailable")
        self.sent.append((ref, messages))

    @property
    def texts(self) -> list[str]:
        return [m.text for _, messages in self.sent for m in messages]

    async def wait(self, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The texts pushed so far, once at least ``count`` sends succeeded."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            assert time.monotonic() < deadline, f"{len(self.sent)} of {count} pushes within {timeout} s"
            await asyncio.sleep(0.01)
        return self.texts


class TestBot:
    """A core with ``features``, the stub answerer (or ``qa``) and a recording outbound."""

    __test__ = False  # not a test class

    def __init__(self, *features: Any, qa: Any = None, admins: Iterable[str] = (), caps: Capabilities = RICH,
                 platform: str = "telegram", rate_limit: int = 0, max_question_chars: int = 500,
                 registry: OutboundRegistry | None = None, core: Core | None = None,
                 conversation: Any = None, on_answer: Any = None) -> None:
        """``registry``: the one the features were given, if they push (the recording outbound
        is registered on it for ``platform``). ``on_answer``: the core's answer hook (the
        question log). ``core``: drive a core built elsewhere (e.g. by the composition root)
        instead."""
        self.qa = qa if qa is not None else StubAnswerer()
        self.caps = caps
        self.platform = platform
        self.outbound = RecordingOutbound(caps)
        if core is None:
            core = Core(self.qa, admins=frozenset(admins), rate_limit_per_minute=rate_limit,
                        outbound=registry or OutboundRegistry(), features=list(features),
                        max_question_chars=max_question_chars, conversation=conversation,
                        on_answer=on_answer)
        self.core = core
        core.outbound.register(platform, self.outbound)

    def message(self, text: str = "", *, user: str = "u1", chat: str | None = None,
                chat_type: ChatType = ChatType.PRIVATE, addressed: bool = True, callback: str | None = None,
                file: IncomingFile | None = None, chat_admin: bool = False, platform: str | None = None,
                problem: Problem | None = None) -> IncomingMessage:
        if chat is None:
            chat = user if chat_type == ChatType.PRIVATE else "-100"
        return IncomingMessage(platform=platform or self.platform, chat_id=chat, chat_type=chat_type, user_id=user,
                               text=text, addressed=addressed, callback_data=callback, file=file,
                               sender_is_chat_admin=chat_admin, problem=problem)

    async def push(self, text: str = "", *, caps: Capabilities | None = None, **kw: Any) -> list[OutgoingMessage]:
        """Every reply to one message (see :meth:`message` for the keywords)."""
        return await self.core.handle(self.message(text, **kw), caps or self.caps)

    async def say(self, text: str = "", **kw: Any) -> OutgoingMessage:
        """The one reply to a message (fails unless there is exactly one)."""
        replies = await self.push(text, **kw)
        assert len(replies) == 1, replies
        return replies[0]

    async def press(self, data: str, **kw: Any) -> OutgoingMessage:
        """The one reply to a button press."""
        return await self.say(callback=data, **kw)
