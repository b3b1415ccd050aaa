"""Admin commands: /reindex (background, no downtime), /reindex rollback, /corpus, and
documents sent to the bot in a private chat (saved into the corpus folder).

The handlers are ``async`` (a reindex is a background task); the audit row, the saved upload,
the ingest and the after-switch hook run in worker threads, never on the event loop."""
from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from bot.core.feature import Context
from bot.core.models import Button, OutgoingMessage
from bot.core.outbound import OutboundRegistry
from bot.reports import format_corpus, format_ingest_report
from bot.store.db import Database
from retrieval.index import IngestError
from retrieval.read import SUPPORTED
from retrieval.service import NoIndex, RetrievalService

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
NOT_ADMIN = "抱歉，只有管理员可以执行此操作。如需更新文件库，请联系管理员。"
BUSY = "正在更新，请稍候。当前索引仍在正常提供服务。"

#: Called after a new index version serves; returns messages about citations that no longer resolve.
AfterSwitch = Callable[[], list[str]]


def safe_upload_name(name: str) -> str | None:
    """A file name safe to create inside the corpus folder, or None if it must be rejected."""
    name = unicodedata.normalize("NFC", name or "").strip()
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith(".") or ".." in name:
        return None
    if Path(name).suffix.lower() not in SUPPORTED:
        return None
    if len(name.encode("utf-8")) > 200 or re.search(r"[<>:\"|?*\x00-\x1f]", name):
        return None
    return name


class AdminFeature:
    commands = ("reindex", "corpus")
    callback_prefix = "adm"
    help_lines = [
        ("/corpus", "查看已收录的文件、条文数和索引时间"),
        ("/reindex", "（管理员）重新读取文件目录并更新索引；/reindex rollback 回退到上一版本"),
    ]

    def __init__(self, service: RetrievalService, db: Database, corpus_dir: Path,
                 outbound: OutboundRegistry, after_switch: AfterSwitch | None = None) -> None:
        self.service = service
        self.db = db
        self.corpus_dir = corpus_dir
        self.outbound = outbound
        self.after_switch = after_switch or (lambda: [])
        self._tasks: set[asyncio.Task] = set()
        self._starting = asyncio.Lock()

    # ------------------------------------------------------------------
    async def _allowed(self, ctx: Context, action: str) -> bool:
        await asyncio.to_thread(self.db.audit, ctx.msg.platform, ctx.msg.user_id, action, ctx.is_admin)
        if not ctx.is_admin:
            log.warning("refused %s for %s:%s", action, ctx.msg.platform, ctx.msg.user_id)
        return ctx.is_admin

    async def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        if command == "corpus":
            try:
                return [OutgoingMessage(text=await asyncio.to_thread(lambda: format_corpus(self.service.index)))]
            except NoIndex as exc:
                return [OutgoingMessage(text=str(exc))]
        if not await self._allowed(ctx, f"/reindex {args}".strip()):
            return [OutgoingMessage(text=NOT_ADMIN)]
        if args.strip() == "rollback":
            return [await self._rollback()]
        if args.strip():
            return [OutgoingMessage(text="用法：/reindex 更新索引；/reindex rollback 回退到上一版本。")]
        return [await self.start_reindex(ctx)]

    async def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        if data != "adm:reindex":
            return [OutgoingMessage(text="", toast="这个按钮已失效。")]
        if not await self._allowed(ctx, "/reindex (button)"):
            return [OutgoingMessage(text="", toast=NOT_ADMIN)]
        return [await self.start_reindex(ctx)]

    async def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        if ctx.msg.file is None:
            return None
        if ctx.in_group:
            return [OutgoingMessage(text="请在私聊中把文件发给我。")]
        if not await self._allowed(ctx, f"upload {ctx.msg.file.filename}"):
            return [OutgoingMessage(text=NOT_ADMIN)]
        return [await asyncio.to_thread(self._save_upload, ctx)]

    # ------------------------------------------------------------------
    async def start_reindex(self, ctx: Context) -> OutgoingMessage:
        async with self._starting:
            if self.service.builder.busy or any(not t.done() for t in self._tasks):
                return OutgoingMessage(text=BUSY)
            task = asyncio.create_task(self._reindex(ctx))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return OutgoingMessage(text="已开始更新索引，完成后会把结果发给您。更新期间仍可正常提问。")

    async def _reindex(self, ctx: Context) -> None:
        try:
            report = await asyncio.to_thread(self.service.ingest, [self.corpus_dir])
            unresolved = await asyncio.to_thread(self.after_switch)
            text = format_ingest_report(report, unresolved)
        except IngestError as exc:
            text = f"索引更新失败，当前索引保持不变，继续提供服务。\n原因：{exc}"
        except Exception as exc:  # never let a background failure go unreported
            log.exception("reindex failed")
            text = f"索引更新失败，当前索引保持不变，继续提供服务。\n原因：{type(exc).__name__}"
        try:
            await self.outbound.send(ctx.ref, [OutgoingMessage(text=text)])
        except Exception:
            log.exception("could not deliver the reindex report")

    async def _rollback(self) -> OutgoingMessage:
        if self.service.builder.busy:
            return OutgoingMessage(text=BUSY)
        version = await asyncio.to_thread(self.service.rollback)
        if version is None:
            return OutgoingMessage(text="没有可以回退的上一版本索引。")
        unresolved = await asyncio.to_thread(self.after_switch)
        extra = ("\n以下引用找不到对应条文：\n" + "\n".join(unresolved)) if unresolved else ""
        return OutgoingMessage(text=f"已回退到上一版本索引 {version}。{extra}")

    def _save_upload(self, ctx: Context) -> OutgoingMessage:
        upload = ctx.msg.file
        assert upload is not None
        name = safe_upload_name(upload.filename)
        if name is None:
            kinds = "、".join(sorted(SUPPORTED))
            return OutgoingMessage(text=f"文件名不符合要求：{upload.filename[:80]}（只接受 {kinds}，且不能包含路径）。")
        if len(upload.content) > MAX_UPLOAD_BYTES:
            return OutgoingMessage(text=f"文件 {name} 太大（上限 {MAX_UPLOAD_BYTES // (1024 * 1024)} MB）。")
        if not upload.content.strip():
            return OutgoingMessage(text=f"文件 {name} 是空的，未保存。")
        target = (self.corpus_dir / name).resolve()
        if target.parent != self.corpus_dir.resolve():
            return OutgoingMessage(text="文件名不符合要求。")
        existed = target.exists()
        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.part")
        tmp.write_bytes(upload.content)
        tmp.replace(target)
        verb = "已替换" if existed else "已保存"
        return OutgoingMessage(
            text=f"{verb}文件 {name}。发送 /reindex 或点击下方按钮更新索引后即可引用。",
            buttons=[[Button(label="立即更新索引", data="adm:reindex")]] if ctx.caps.buttons else [],
        )
