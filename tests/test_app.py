"""The composition root (bot/app.py): what it builds from the settings, and its background jobs."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from bot.app import build_services, housekeeping, open_database, with_backoff
from bot.store.db import DatabaseUnavailable, ProcessedMessage, SchemaTooNew, utcnow
from tests.conftest import CORPUS
from tests.harness import TestBot, make_settings


@pytest.fixture
def services(data_copy, tmp_path):
    """Everything `dangjian run` builds, on a copy of the built index, in New York time."""
    settings = make_settings(data_dir=data_copy, corpus_dir=CORPUS, timezone="America/New_York")
    built = build_services(settings)
    yield built
    built.db.engine.dispose()


async def test_checklist_status_shows_times_in_the_configured_timezone(services) -> None:
    """Defect 3: the checklist feature was built without DANGJIAN_TIMEZONE (always Shanghai)."""
    bot = TestBot(core=services.core)
    before = datetime.now(ZoneInfo("America/New_York"))
    assert "第 1/10 步" in (await bot.say("/checklist 组织生活会")).text
    status = (await bot.say("/checklist status")).text
    after = datetime.now(ZoneInfo("America/New_York"))
    shown = {f"最近更新 {moment:%Y-%m-%d %H:%M}" for moment in (before, after)}
    assert any(text in status for text in shown), status


async def test_message_ids_past_the_retry_window_are_forgotten(services) -> None:
    """Defect 4: the processed-messages table grew by one row per message forever."""
    db = services.db
    assert db.claim_message("wecom", "two-days-old") and db.claim_message("wecom", "just-now")
    with db.session() as s:
        s.execute(update(ProcessedMessage).where(ProcessedMessage.message_id == "two-days-old")
                  .values(seen_at=utcnow() - timedelta(days=2)))
    jobs = [asyncio.create_task(factory()) for factory in services.background]  # as `dangjian run` does
    try:
        deadline = time.monotonic() + 10
        while not db.claim_message("wecom", "two-days-old"):  # claimable again once forgotten
            assert time.monotonic() < deadline, "the old message id was never forgotten"
            await asyncio.sleep(0.05)
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    assert db.claim_message("wecom", "just-now") is False  # inside the window: still a redelivery


async def test_housekeeping_keeps_running_through_database_errors(tmp_path, caplog) -> None:
    db = open_database(make_settings(data_dir=tmp_path))
    calls = []

    def flaky(cutoff):
        calls.append(cutoff)
        raise DatabaseUnavailable("down")

    db.forget_messages = flaky  # type: ignore[method-assign]
    job = asyncio.create_task(housekeeping([("message ids", lambda: db.forget_messages(utcnow() - timedelta(days=1)))],
                                           interval=0.01))
    while len(calls) < 3:
        await asyncio.sleep(0.01)
    job.cancel()
    assert all(utcnow() - cutoff >= timedelta(days=1) for cutoff in calls)
    assert "could not prune" in caplog.text


async def test_questions_past_the_log_retention_are_deleted_in_the_background(services) -> None:
    from bot.feedback import QuestionStore
    from bot.feedback.store import Asked

    now = utcnow()
    store = QuestionStore(services.db, 180, clock=lambda: now - timedelta(days=181))
    store.record(Asked("wecom", "c", "private", "u", "半年前的问题", True, None, None, "extractive", 1))
    store.clock = lambda: now
    store.record(Asked("wecom", "c", "private", "u", "今天的问题", True, None, None, "extractive", 1))
    jobs = [asyncio.create_task(factory()) for factory in services.background]  # as `dangjian run` does
    try:
        deadline = time.monotonic() + 10
        while len(store.rows(now - timedelta(days=365))) > 1:
            assert time.monotonic() < deadline, "the old question was never deleted"
            await asyncio.sleep(0.05)
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    assert [r.question for r in store.rows(now - timedelta(days=365))] == ["今天的问题"]


def test_one_backoff_retries_what_may_heal_and_gives_up_on_what_cannot(monkeypatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise DatabaseUnavailable("connection refused")
        return "open"

    assert with_backoff(flaky, "database") == "open" and len(attempts) == 3
    too_new = []

    def newer_schema():
        too_new.append(1)
        raise SchemaTooNew("数据库结构版本 2 比本程序支持的 1 新")

    with pytest.raises(SchemaTooNew):
        with_backoff(newer_schema, "database", retry_if=lambda exc: not isinstance(exc, SchemaTooNew))
    assert len(too_new) == 1
