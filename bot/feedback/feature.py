"""Ratings of answers, the question log and ``/stats``.

The core hands every answered or refused question to :meth:`FeedbackFeature.on_answer` (its
answer hook), which records it in the question log; an answer (not a refusal) then carries
👍 有用 / 👎 没用 buttons with callback data ``fb:<answer id>:up|down`` where the platform has
buttons, and elsewhere the first answer in a chat ends with a line saying that 有用 / 没用 typed
within 10 minutes rates it (:meth:`on_text`). A rating is accepted only from the member who asked,
in the chat where the answer was given, while the row is kept; the last one wins. ``/stats
[天数]`` shows the admins the report. All handlers are plain functions (database work, run in
worker threads by the core).
"""
from __future__ import annotations

import logging
import re
import unicodedata
from datetime import timedelta

from bot.core.feature import Answered, Context
from bot.core.models import Button, OutgoingMessage
from bot.feedback import texts
from bot.feedback.report import build_report, format_report
from bot.feedback.store import Asked, QuestionStore, Rated
from bot.feedback.tables import DOWN, UP

log = logging.getLogger(__name__)

PREFIX = "fb"
TYPED_WINDOW = timedelta(minutes=10)
DEFAULT_DAYS = 30
MAX_DAYS = 3650
_TYPED = {"有用": UP, "👍": UP, "没用": DOWN, "👎": DOWN}
_TRAILING = " \t\r\n。.!！~～"
_DAYS = re.compile(r"(\d{1,5})\s*(?:天|日|d)?", re.I)
_CALLBACK = re.compile(rf"{PREFIX}:(\d{{1,18}}):({UP}|{DOWN})")

_OUTCOME = {
    (Rated.NEW, UP): texts.RATED_UP, (Rated.NEW, DOWN): texts.RATED_DOWN,
    (Rated.CHANGED, UP): texts.CHANGED_UP, (Rated.CHANGED, DOWN): texts.CHANGED_DOWN,
    (Rated.SAME, UP): texts.SAME_UP, (Rated.SAME, DOWN): texts.SAME_DOWN,
}
_REFUSED = {Rated.FOREIGN: texts.FOREIGN, Rated.GONE: texts.GONE, Rated.INVALID: texts.INVALID}


def rating_buttons(answer_id: int) -> list[Button]:
    return [Button(label=texts.BUTTON_UP, data=f"{PREFIX}:{answer_id}:{UP}"),
            Button(label=texts.BUTTON_DOWN, data=f"{PREFIX}:{answer_id}:{DOWN}")]


def parse_days(args: str) -> int | None:
    """``""`` → 30, ``"7"``/``"7天"``/``"７"`` → 7; None unless a whole number of days 1–3650."""
    text = unicodedata.normalize("NFKC", args).strip()
    if not text:
        return DEFAULT_DAYS
    m = _DAYS.fullmatch(text)
    if m is None or not 1 <= int(m.group(1)) <= MAX_DAYS:
        return None
    return int(m.group(1))


class FeedbackFeature:
    commands = ("stats",)
    callback_prefix = PREFIX
    help_lines = [("/stats 30", "（管理员）最近 30 天的提问统计：未能回答的问题、被评为“没用”的回答、引用最多的文件")]

    def __init__(self, store: QuestionStore, timezone: str = "Asia/Shanghai") -> None:
        self.store = store
        self.timezone = timezone

    # ------------------------------------------------------------------ the answer hook
    def on_answer(self, ctx: Context, answered: Answered, reply: OutgoingMessage) -> OutgoingMessage:
        """Record the question; an answer gets its rating buttons (or, once per chat, the typed hint).
        A database error is logged and the reply goes out as it was."""
        a, m = answered.answer, ctx.msg
        top = a.citations[0] if a.citations and not a.refused else None
        try:
            recorded = self.store.record(Asked(
                platform=m.platform, chat_id=m.chat_id, chat_type=m.chat_type.value, user_id=m.user_id,
                question=answered.question, refused=a.refused, citation=top.citation if top else None,
                document=top.doc_title if top else None, mode=a.mode, latency_ms=answered.latency_ms))
        except Exception:
            log.exception("could not log a question from %s:%s; answering without rating", m.platform, m.chat_id)
            return reply
        if recorded is None or a.refused:
            return reply
        answer_id, first_in_chat = recorded
        if ctx.caps.buttons:
            return reply.model_copy(update={"buttons": [*reply.buttons, rating_buttons(answer_id)]})
        if first_in_chat:
            return reply.model_copy(update={"text": f"{reply.text.rstrip()}\n\n{texts.TYPED_HINT}"})
        return reply

    # ------------------------------------------------------------------ ratings
    def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        m = _CALLBACK.fullmatch(data)
        if m is None:
            return [OutgoingMessage(text="", toast=texts.INVALID)]
        return [OutgoingMessage(text="", toast=self._rate(ctx, int(m.group(1)), m.group(2)))]

    def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        """有用 / 没用 / 👍 / 👎 typed alone rates this member's latest answer in this chat."""
        rating = _TYPED.get(ctx.msg.text.strip().rstrip(_TRAILING))
        if rating is None or ctx.msg.file is not None or not self.store.enabled:
            return None
        m = ctx.msg
        latest = self.store.latest(m.platform, m.chat_id, m.user_id, TYPED_WINDOW)
        if latest is None:
            return [OutgoingMessage(text=texts.NOTHING_TO_RATE)]
        if latest.refused:
            return [OutgoingMessage(text=texts.REFUSAL_NOT_RATED)]
        return [OutgoingMessage(text=self._rate(ctx, latest.id, rating))]

    def _rate(self, ctx: Context, answer_id: int, rating: str) -> str:
        m = ctx.msg
        outcome = self.store.rate(answer_id, m.platform, m.chat_id, m.user_id, rating)
        if outcome in _REFUSED:
            log.info("rating of answer %s by %s:%s refused: %s", answer_id, m.platform, m.user_id, outcome.value)
            return _REFUSED[outcome]
        return _OUTCOME[outcome, rating]

    # ------------------------------------------------------------------ /stats
    def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        self.store.db.audit(ctx.msg.platform, ctx.msg.user_id, f"/stats {args}".strip(), ctx.is_admin)
        if not ctx.is_admin:
            log.warning("refused /stats for %s:%s", ctx.msg.platform, ctx.msg.user_id)
            return [OutgoingMessage(text=texts.NOT_ADMIN)]
        days = parse_days(args)
        if days is None:
            return [OutgoingMessage(text=texts.STATS_USAGE)]
        return [OutgoingMessage(text=format_report(build_report(self.store, days), self.timezone))]
