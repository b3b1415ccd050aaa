"""Composition root: builds the services, features and core, then runs one adapter.

`dangjian run --adapter X` ends up in :func:`run_bot`. Everything the bot needs is created here
and passed down explicitly; nothing is global.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from dataclasses import dataclass, field

from bot.admin import AdminFeature
from bot.core.engine import Core
from bot.core.outbound import OutboundRegistry
from bot.settings import Settings
from bot.store.db import Database, DatabaseUnavailable
from bot.store.schema import make_retrieval, open_database, with_backoff
from retrieval.service import RetrievalService

log = logging.getLogger(__name__)

ADAPTERS = {
    "telegram": "bot.adapters.telegram",
    "console": "bot.adapters.console",
    "wecom": "bot.adapters.wecom",
    "dingtalk": "bot.adapters.dingtalk",
}
POINTER_POLL_SECONDS = 3.0


@dataclass
class BotServices:
    settings: Settings
    db: Database
    retrieval: RetrievalService
    core: Core
    background: list = field(default_factory=list)  # coroutine factories run beside the adapter


def build_services(settings: Settings) -> BotServices:
    """Open the database, load (or build) the index, and assemble the core with its features."""
    from bot.checklists import ChecklistFeature, load_checklists
    from bot.meetings import MeetingRules, MeetingsFeature, ReminderScheduler

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings)
    retrieval = make_retrieval(settings, db)
    if not with_backoff(lambda: retrieval.has_index, "index pointer"):
        log.info("no index yet: building it from %s", settings.corpus_dir)
        report = retrieval.ingest([settings.corpus_dir])
        log.info("indexed %d documents, %d articles", len(report.documents), report.articles)
    with_backoff(retrieval.warm_up, "Chroma" if settings.chroma_url else "index")

    outbound = OutboundRegistry()
    rules = MeetingRules.load(settings.prompts_dir / "meeting_rules.yaml", retrieval.lookup)
    checklists = ChecklistFeature(db, load_checklists(settings.prompts_dir / "checklists", retrieval.lookup))
    meetings = MeetingsFeature(db, settings, rules)

    def after_switch() -> list[str]:
        """Re-resolve every citation the features hold against the new index."""
        problems: list[str] = []
        rules.reload(retrieval.lookup)
        problems.extend(rules.unresolved)
        try:
            checklists.replace_checklists(load_checklists(settings.prompts_dir / "checklists", retrieval.lookup))
        except Exception as exc:  # ChecklistError lists every unresolved step
            problems.append(str(exc))
        return problems

    admin = AdminFeature(retrieval, db, settings.corpus_dir, outbound, after_switch)
    core = Core(
        retrieval, admins=settings.admins, max_question_chars=settings.max_question_chars,
        rate_limit_per_minute=settings.rate_limit_per_minute, outbound=outbound,
        features=[meetings, checklists, admin],
    )
    scheduler = ReminderScheduler(db, settings, outbound, rules)

    async def follow_pointer() -> None:
        """Replicas switch to a version another process published, without restart."""
        while True:
            await asyncio.sleep(POINTER_POLL_SECONDS)
            try:
                if await asyncio.to_thread(retrieval.reload):
                    after_switch()
            except Exception:
                log.exception("could not reload the index pointer")

    return BotServices(settings, db, retrieval, core, background=[scheduler.run_forever, follow_pointer])


async def _run(settings: Settings, adapter_name: str) -> None:
    services = await asyncio.to_thread(build_services, settings)
    module = importlib.import_module(ADAPTERS[adapter_name])
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
