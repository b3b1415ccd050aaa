"""Conversation memory in the database: the last answered question per platform, chat and user,
kept for ``DANGJIAN_CONTEXT_TTL`` (default 30 minutes). It lives in the shared database, so a
follow-up is understood after a restart and on whichever replica receives it."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from bot.conversation.tables import ConversationTurn
from bot.core.conversation import Resolved, Turn, resolve_follow_up
from bot.core.models import ChatRef
from bot.store.db import Database, utcnow
from retrieval.models import Answer

MAX_QUESTION_CHARS = 500


class ConversationMemory:
    """Implements :class:`bot.core.conversation.Conversation` (blocking; call from a thread)."""

    def __init__(self, db: Database, ttl: timedelta, subjects: Callable[[str], list[str]],
                 rewrite: Callable[[str, str, str], str | None] | None = None,
                 known: Callable[[str], float] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.ttl = ttl
        self.subjects = subjects
        self.rewrite = rewrite  # (previous question, cited label, follow-up) → standalone question
        self.known = known  # share of a message's words the documents know
        self.clock = clock

    def last(self, ref: ChatRef) -> Turn | None:
        """The last answered question, unless it is older than the TTL."""
        with self.db.session() as s:
            row = s.get(ConversationTurn, (ref.platform, ref.chat_id, ref.user_id))
            if row is None or row.at < self.clock() - self.ttl:
                return None
            return Turn(question=row.question, subject=row.subject, citation=row.citation)

    def resolve(self, ref: ChatRef, text: str) -> Resolved:
        rewrite = None
        if self.rewrite is not None:
            rewrite = lambda turn, follow_up: self.rewrite(turn.question, turn.citation, follow_up)  # noqa: E731
        return resolve_follow_up(text, self.last(ref), self.subjects, rewrite, self.known)

    def remember(self, ref: ChatRef, resolved: Resolved, answer: Answer) -> None:
        """Keep an answered question (refusals are not remembered)."""
        if answer.refused or not answer.citations:
            return
        top = answer.citations[0]
        found = self.subjects(resolved.question) or self.subjects(top.text)[:1]
        values = dict(question=resolved.question[:MAX_QUESTION_CHARS], subject="、".join(found)[:200],
                      citation=top.citation[:300], at=self.clock())
        for attempt in (1, 2):  # two replicas may insert the same key at once
            try:
                with self.db.session() as s:
                    row = s.get(ConversationTurn, (ref.platform, ref.chat_id, ref.user_id))
                    if row is None:
                        s.add(ConversationTurn(platform=ref.platform, chat_id=ref.chat_id, user_id=ref.user_id, **values))
                    else:
                        for key, value in values.items():
                            setattr(row, key, value)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def forget(self, ref: ChatRef) -> bool:
        """Clear the user's context in this chat; True if there was one."""
        with self.db.session() as s:
            return bool(s.execute(delete(ConversationTurn).where(
                ConversationTurn.platform == ref.platform, ConversationTurn.chat_id == ref.chat_id,
                ConversationTurn.user_id == ref.user_id)).rowcount)

    def prune(self) -> int:
        """Delete turns past the TTL."""
        with self.db.session() as s:
            return s.execute(delete(ConversationTurn).where(ConversationTurn.at < self.clock() - self.ttl)).rowcount
