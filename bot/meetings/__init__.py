"""Meetings and reminders for branch secretaries: ``/meeting``, ``/meetings`` and delivery.

Integration (the app imports :mod:`bot.meetings.tables` before ``Database.create_schema()``)::

    rules = MeetingRules.load(Path("prompts/meeting_rules.yaml"), retriever.lookup)
    core.add_feature(MeetingsFeature(db, settings, rules))
    scheduler = ReminderScheduler(db, settings, core.outbound, rules)
    asyncio.create_task(scheduler.run_forever())
    # after a reindex: rules.reload(retriever.lookup); show rules.unresolved to the admins
"""
from __future__ import annotations

from bot.meetings import tables  # noqa: F401 - registers the tables on bot.store.db.Base
from bot.meetings.feature import MeetingsFeature
from bot.meetings.parse import MeetingDraft, ParseError, Recurrence, parse_add
from bot.meetings.rules import MeetingRule, MeetingRules, ResolvedRule
from bot.meetings.scheduler import ReminderScheduler

__all__ = [
    "MeetingDraft",
    "MeetingRule",
    "MeetingRules",
    "MeetingsFeature",
    "ParseError",
    "Recurrence",
    "ReminderScheduler",
    "ResolvedRule",
    "parse_add",
]
