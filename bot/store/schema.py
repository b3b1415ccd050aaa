"""Open the database with every feature's tables registered, and the retrieval service wired to
the right pointer store (file in the data dir, or the database when replicas share Chroma)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from bot.settings import Settings
from bot.store.db import Database

log = logging.getLogger(__name__)
T = TypeVar("T")


def open_database(settings: Settings) -> Database:
    """Create the engine and any missing tables (retries with backoff, then DatabaseUnavailable)."""
    import bot.checklists.tables  # noqa: F401 - table registration
    import bot.meetings.tables  # noqa: F401
    import bot.store.index_pointer  # noqa: F401

    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url, connect_retries=4, retry_delay=0.5)
    db.create_schema()
    return db


def make_retrieval(settings: Settings, db: Database | None = None):
    """The retrieval service; with a Chroma server the version pointer lives in the database."""
    from retrieval.service import RetrievalService

    if settings.chroma_url:
        from bot.store.index_pointer import DatabasePointerStore

        return RetrievalService(settings.retrieval_config(), pointer=DatabasePointerStore(db or open_database(settings)))
    return RetrievalService(settings.retrieval_config())


def with_backoff(action: Callable[[], T], what: str, attempts: int = 6, first_delay: float = 1.0) -> T:
    """Run ``action``; on failure wait 1, 2, 4, … s and retry; re-raise after ``attempts``."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("%s unavailable (%s: %s); retry %d/%d in %.0fs", what, type(exc).__name__, exc,
                        attempt, attempts - 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15)
    raise AssertionError("unreachable")
