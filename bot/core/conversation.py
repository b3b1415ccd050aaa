"""Follow-up questions: the contract between the core and the conversation memory.

The core asks a :class:`Conversation` (wired by the composition root; it keeps the last answered
question per platform, chat and user in the database) what a message means before searching,
and tells it what was answered afterwards. :func:`resolve_follow_up` is the pure rule both use:
a message that leans on the previous question (it starts with 那/那么/还有/另外/如果, ends in 呢,
points back with 它/这个, or names no subject the documents know) is searched with the previous
subject merged in; a message that stands on its own starts fresh.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.core.models import ChatRef
from retrieval.models import Answer


@dataclass(frozen=True)
class Turn:
    """The last answered question of one user in one chat."""

    question: str  # as searched (a follow-up already merged)
    subject: str  # what it was about (党组会议), for merging and for the "（接上一问：…）" line
    citation: str  # the article it cited, 《…》第十八条


@dataclass(frozen=True)
class Resolved:
    """What a message is searched as."""

    question: str
    understood: str | None = None  # shown as "（接上一问：…）" when the message leaned on the previous one


class Conversation(Protocol):
    """Conversation memory (blocking: the core calls it in a worker thread)."""

    def resolve(self, ref: ChatRef, text: str) -> Resolved: ...

    def remember(self, ref: ChatRef, resolved: Resolved, answer: Answer) -> None: ...

    def forget(self, ref: ChatRef) -> bool: ...


_LEAD = re.compile(r"^(那么|那如果|那|还有|另外|此外|如果|要是|假如)[，,、\s]*")
_TAIL = re.compile(r"呢[？?。！!\s]*$")
_POINTER = re.compile(r"它们?|这个会|这个|这种会|这种|这些|这项|这次|该会|他们|她们")
_FILLER = re.compile(r"[的吗呢啊吧呀么？?。！!，,、\s]|怎么样|如何|怎样|怎么办|又|也|那")


#: A message without a subject or a follow-up marker leans on the previous question only when
#: at least this (idf-weighted) share of its words occurs in the documents: "要提前几天通知？" does,
#: "帮我写一首关于春天的诗" does not and is answered on its own.
MIN_KNOWN_SHARE = 0.2


def resolve_follow_up(text: str, previous: Turn | None, subjects: Callable[[str], list[str]],
                      rewrite: Callable[[Turn, str], str | None] | None = None,
                      known: Callable[[str], float] | None = None) -> Resolved:
    """How to search ``text`` given the previous turn (see the module docstring)."""
    if previous is None:
        return Resolved(text)
    own = subjects(text)
    lead, tail, pointer = bool(_LEAD.search(text)), bool(_TAIL.search(text)), bool(_POINTER.search(text))
    explicit = lead or tail or pointer
    if own and not explicit:
        return Resolved(text)  # names its own subject: a new question
    if not explicit and known is not None and known(text) < MIN_KNOWN_SHARE:
        return Resolved(text)  # about something else altogether
    core = _TAIL.sub("", _LEAD.sub("", text.strip())).strip()
    if own:
        rest = core
        for s in own:
            rest = rest.replace(s, "")
        if _FILLER.sub("", rest):  # "那支委会要多少人到会？": complete with its own subject
            return Resolved(core)
        # "那党组民主生活会呢？": the new subject, asked what the previous question asked
        subject = "、".join(own)
        asked = previous.question.replace(previous.subject, "", 1) if previous.subject in previous.question else previous.question
        merged = subject + asked
        understood = merged  # the previous question about the new subject: show it whole
    else:
        subject = previous.subject or previous.question
        merged = _POINTER.sub(subject, core) if pointer else f"{subject} {core}"
        understood = subject
    if rewrite is not None:
        merged = rewrite(previous, text) or merged
    return Resolved(merged, understood=understood)
