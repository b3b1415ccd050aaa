"""Ratings of answers (👍 有用 / 👎 没用), the question log and the usage report (/stats).

Integration (the composition root)::

    store = QuestionStore(db, settings.question_log_days)
    feedback = FeedbackFeature(store, settings.timezone)
    core = Core(..., features=[..., feedback], on_answer=feedback)
    # hourly: store.prune()

Importing this package registers the ``question_log`` table on ``bot.store.db.Base``.
"""
from __future__ import annotations

from bot.feedback import tables as tables  # noqa: F401  (registers the table on Base)
from bot.feedback.feature import FeedbackFeature
from bot.feedback.report import Report, build_report, format_report, write_csv
from bot.feedback.store import QuestionStore

__all__ = ["FeedbackFeature", "QuestionStore", "Report", "build_report", "format_report", "write_csv"]
