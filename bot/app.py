"""Composition root: opens the database, builds the retrieval service, the features and the core,
then runs one adapter beside the background jobs.

`dangjian run --adapter X` ends up in :func:`run_bot`: the adapter module's optional
``preflight(settings)`` first (a platform refusing the credentials fails before the index loads),
then the services, then the module's ``run``. The CLI's other commands use
:func:`make_retrieval`. Everything is created here and passed down explicitly; nothing is global.
This is the only place that knows every feature (their tables are registered by importing them).
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from bot.admin import AdminFeature
from bot.conversation import ConversationMemory
from bot.core.engine import Core
from bot.core.outbound import OutboundRegistry
from bot.feedback import FeedbackFeature, QuestionStore
from bot.settings import Settings
from bot.store.db import Database, DatabaseUnavailable, SchemaTooNew, utcnow
from retrieval.service import RetrievalService

log = logging.getLogger(__name__)
T = TypeVar("T")

ADAPTERS = {
    "telegram": "bot.adapters.telegram",
    "console": "bot.adapters.console",
    "wecom": "bot.adapters.wecom",
    "dingtalk": "bot.adapters.dingtalk",
}
POINTER_POLL_SECONDS = 3.0
HOUSEKEEPING_SECONDS = 3600.0
#: Message ids are kept this long for deduplication: far beyond WeCom's and DingTalk's retries
#: (seconds to minutes) and Telegram's redelivery of unconfirmed webhook updates (hours).
MESSAGE_RETENTION = timedelta(days=1)

#: Re-resolves every citation the features hold after the index changed; returns the problems.
AfterSwitch = Callable[[], list[str]]


def with_backoff(
    action: Callable[[], T],
    what: str,
    *,
    attempts: int = 6,
    first_delay: float = 1.0,
    retry_if: Callable[[Exception], bool] = lambda exc: True,
) -> T:
    """Run ``action``; on a failure ``retry_if`` accepts, wait 1, 2, 4, … s (at most 15) and
    retry; re-raise after ``attempts``. The one start-up backoff (database, index, Chroma)."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts or not retry_if(exc):
                raise
            log.warning("%s unavailable (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__, exc,
                        attempt, attempts - 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15)
    raise AssertionError("unreachable")


def open_database(settings: Settings) -> Database:
    """The engine with every table created (retried with backoff, then DatabaseUnavailable)."""
    import bot.checklists  # noqa: F401 - registers the feature tables on Base
    import bot.conversation.tables  # noqa: F401
    import bot.feedback  # noqa: F401
    import bot.meetings  # noqa: F401
    import bot.store.index_pointer  # noqa: F401

    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    with_backoff(db.create_schema, "database", attempts=5, first_delay=0.5,
                 retry_if=lambda exc: isinstance(exc, DatabaseUnavailable) and not isinstance(exc, SchemaTooNew))
    return db


def make_retrieval(settings: Settings, db: Database | None = None) -> RetrievalService:
    """The retrieval service; with a Chroma server the version pointer lives in the database."""
    if settings.chroma_url:
        from bot.store.index_pointer import DatabasePointerStore

        return RetrievalService(settings.retrieval_config(), pointer=DatabasePointerStore(db or open_database(settings)))
    return RetrievalService(settings.retrieval_config())


@dataclass
class BotServices:
    settings: Settings
    db: Database
    retrieval: RetrievalService
    core: Core
    background: list = field(default_factory=list)  # coroutine factories run beside the adapter


def build_core(settings: Settings, db: Database, retrieval: RetrievalService):
    """The core with its features, the reminder scheduler, and the after-reindex hook."""
    from bot.checklists import ChecklistFeature, load_checklists
    from bot.meetings import MeetingRules, MeetingsFeature, ReminderScheduler

    outbound = OutboundRegistry()
    checklist_dir = settings.prompts_dir / "checklists"
    rules = MeetingRules.load(settings.prompts_dir / "meeting_rules.yaml", retrieval.lookup)
    checklists = ChecklistFeature(db, load_checklists(checklist_dir, retrieval.lookup), timezone=settings.timezone)
    meetings = MeetingsFeature(db, settings, rules)

    def after_switch() -> list[str]:
        """Re-resolve every citation the features hold against the new index (blocking)."""
        problems: list[str] = []
        rules.reload(retrieval.lookup)
        problems.extend(rules.unresolved)
        try:
            checklists.replace_checklists(load_checklists(checklist_dir, retrieval.lookup))
        except Exception as exc:  # ChecklistError lists every unresolved step
            problems.append(str(exc))
        return problems

    admin = AdminFeature(retrieval, db, settings.corpus_dir, outbound, after_switch)
    memory = ConversationMemory(db, settings.context_window, retrieval.subjects,
                                retrieval.rewrite_follow_up if settings.llm_enabled else None, retrieval.known_share)
    feedback = FeedbackFeature(QuestionStore(db, settings.question_log_days), timezone=settings.timezone)
    core = Core(
        retrieval, admins=settings.admins, max_question_chars=settings.max_question_chars,
        rate_limit_per_minute=settings.rate_limit_per_minute, outbound=outbound,
        features=[meetings, checklists, admin, feedback], conversation=memory, on_answer=feedback,
    )
    return core, ReminderScheduler(db, settings, outbound, rules), after_switch, memory


def build_services(settings: Settings) -> BotServices:
    """Open the database, load (or build) the index, and assemble the core with its features."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings)
    retrieval = make_retrieval(settings, db)
    if not with_backoff(lambda: retrieval.has_index, "index pointer"):
        log.info("no index yet: building it from %s", settings.corpus_dir)
        report = retrieval.ingest([settings.corpus_dir])
        log.info("indexed %d documents, %d articles", len(report.documents), report.articles)
    with_backoff(retrieval.warm_up, "Chroma" if settings.chroma_url else "index")
    core, scheduler, after_switch, memory = build_core(settings, db, retrieval)

    async def follow_pointer() -> None:
        """Replicas switch to a version another process published, without restart."""
        while True:
            await asyncio.sleep(POINTER_POLL_SECONDS)
            try:
                if await asyncio.to_thread(retrieval.reload):
                    await asyncio.to_thread(after_switch)
            except Exception:
                log.exception("could not reload the index pointer")

    jobs: list[tuple[str, Callable[[], int]]] = [
        ("processed message ids", lambda: db.forget_messages(utcnow() - MESSAGE_RETENTION)),
        ("expired conversation contexts", memory.prune),
        ("questions past DANGJIAN_QUESTION_LOG_DAYS", QuestionStore(db, settings.question_log_days).prune),
    ]
    return BotServices(settings, db, retrieval, core,
                       background=[scheduler.run_forever, follow_pointer, lambda: housekeeping(jobs)])


async def housekeeping(jobs: list[tuple[str, Callable[[], int]]], interval: float = HOUSEKEEPING_SECONDS) -> None:
    """Run each pruning job (what it forgets, a blocking callable returning the rows removed)
    now and every ``interval``; a failing job is logged and tried again next time."""
    while True:
        for what, job in jobs:
            try:
                removed = await asyncio.to_thread(job)
                if removed:
                    log.info("forgot %d %s", removed, what)
            except Exception:
                log.exception("could not prune %s", what)
        await asyncio.sleep(interval)


async def _run(settings: Settings, adapter_name: str) -> None:
    module = importlib.import_module(ADAPTERS[adapter_name])
    preflight = getattr(module, "preflight", None)
    if preflight is not None:  # settings the platform refuses fail in seconds, before the index loads
        await preflight(settings)
    services = await asyncio.to_thread(build_services, settings)
    tasks = [asyncio.create_task(factory()) for factory in services.background]
    main = asyncio.create_task(module.run(settings, services.core, services.db))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_bot(settings: Settings, adapter_name: str) -> int:
    """Run until stopped; returns the process exit code."""
    if adapter_name not in ADAPTERS:
        print(f"未知的适配器 {adapter_name}，可选：{', '.join(ADAPTERS)}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(settings, adapter_name))
    except DatabaseUnavailable as exc:
        print(f"启动失败：{exc}", file=sys.stderr)
        return 3
    except ValueError as exc:  # missing adapter settings, explained by the adapter
        print(f"启动失败：{exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. the Chroma server still down after the retries
        log.exception("start-up failed")
        print(f"启动失败：{type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        pass
    return 0
