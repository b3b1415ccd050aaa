"""Guided checklists (民主生活会会前准备, 组织生活会, 民主评议党员), every step cited.

Integration::

    from bot.checklists import ChecklistFeature, load_checklists
    checklists = load_checklists(Path("prompts/checklists"), retriever.lookup)  # ChecklistError if broken
    feature = ChecklistFeature(db, checklists, timezone=settings.timezone)
    core.add_feature(feature)
    ...after a reindex: feature.replace_checklists(load_checklists(...))

Importing this package registers the checklist tables on ``bot.store.db.Base``.
"""
from __future__ import annotations

from bot.checklists import tables as tables  # noqa: F401  (registers the tables on Base)
from bot.checklists.feature import ChecklistFeature
from bot.checklists.loader import load_checklists
from bot.checklists.model import Checklist, ChecklistError, Step

__all__ = ["Checklist", "ChecklistError", "ChecklistFeature", "Step", "load_checklists"]
