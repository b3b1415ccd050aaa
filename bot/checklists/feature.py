"""The /checklist feature: walk a user through a cited checklist, one step at a time.

``/checklist`` lists the checklists, ``/checklist 民主生活会`` starts or resumes one, ``/checklist
status`` shows progress and ``/checklist reset <name>`` starts over. Each step shows what to do, by
when, who does it, and the rule it rests on (``《title》label`` and the quote). On platforms with
buttons the step carries 完成 / 跳过 / 上一步 / 全部步骤 (and 加入会议提醒 for meeting steps) with
callback data ``chk:<id>:<step>:<action>:<owner>``; elsewhere the user types 完成 / 跳过 / 上一步 /
全部 / 提醒, which :meth:`ChecklistFeature.on_text` consumes while a checklist is active.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.checklists.model import Checklist, Step, name_key
from bot.checklists.progress import Move, Progress, ProgressKey, ProgressStore
from bot.checklists.tables import DONE, SKIPPED
from bot.core.feature import Context
from bot.core.models import Button, OutgoingMessage
from bot.store.db import Database, utcnow

PREFIX = "chk"
MAX_QUOTE_CHARS = 400

# Callback actions; done/skip/back change progress, the others only show something.
A_DONE, A_SKIP, A_BACK, A_ALL, A_REMIND, A_SHOW = "done", "skip", "back", "all", "remind", "show"
_MOVES = {A_DONE: Move.DONE, A_SKIP: Move.SKIP, A_BACK: Move.BACK}
_ACTIONS = frozenset({A_DONE, A_SKIP, A_BACK, A_ALL, A_REMIND, A_SHOW})

# Typed replies (platforms without buttons) → action.
_TYPED = {
    "完成": A_DONE, "已完成": A_DONE, "完成了": A_DONE,
    "跳过": A_SKIP,
    "上一步": A_BACK, "返回上一步": A_BACK,
    "全部": A_ALL, "全部步骤": A_ALL,
    "提醒": A_REMIND, "加入会议提醒": A_REMIND,
    "继续": A_SHOW, "当前步骤": A_SHOW,
}
_TRAILING = " \t\r\n。.!！~～"

# Sub-command words after /checklist.
_STATUS_WORDS = frozenset({"status", "状态", "进度"})
_RESET_WORDS = frozenset({"reset", "重置", "重新开始"})
_LIST_WORDS = frozenset({"list", "help", "列表", "帮助"})

# User-facing texts ------------------------------------------------------------------------
T_LIST_HEADER = "可用的清单（发送 /checklist 名称 开始或继续）："
T_LIST_FOOTER = "查看进度：/checklist status\n重新开始：/checklist reset 名称"
T_NO_CHECKLISTS = "暂时没有可用的清单。"
T_UNKNOWN = "没有找到名为“{name}”的清单。"
T_RESET_USAGE = "请写明要重新开始的清单，例如：/checklist reset 民主生活会"
T_RESTARTED = "（已清除原有进度，从第一步重新开始）"
T_NO_PROGRESS = "您在这里还没有开始任何清单。"
T_STATUS_HEADER = "您在这里的清单进度："
T_STATUS_FOOTER = "继续：/checklist 名称　重新开始：/checklist reset 名称"
T_TYPED_HINT = "回复“完成”进入下一步，“跳过”跳过本步，“上一步”返回上一步，“全部”查看全部步骤。"
T_TYPED_REMIND = "需要登记这次会议并接收会前提醒，请回复“提醒”。"
T_TYPED_SHOW = "回复“继续”回到当前步骤。"
T_REMIND = (
    "登记“{kind}”并接收会前提醒：复制下面这一行，把日期、时间、地点和议题改成实际内容后发送。\n"
    "/meeting add {kind} YYYY-MM-DD HH:MM 地点 议题"
)
T_ALREADY_FINISHED_TYPED = "这份清单已经全部完成。"
T_STALE_TYPED = "这一步已经处理过了，请发送 /checklist {id} 查看当前步骤。"
# Toasts for button presses (short).
TOAST_STALE = "这一步已经处理过了，或按钮已过期。"
TOAST_FOREIGN = "这是其他人的清单，请发送 /checklist 开始您自己的。"
TOAST_INVALID = "按钮无效，请重新发送 /checklist。"
TOAST_NOT_STARTED = "您还没有开始这份清单，请发送 /checklist {id}。"
TOAST_FIRST = "已经是第一步了。"
TOAST_NO_MEETING = "这一步没有需要登记的会议。"
TOAST_DONE = "已完成第 {n} 步"
TOAST_SKIPPED = "已跳过第 {n} 步"
TOAST_BACK = "已返回第 {n} 步"
TOAST_FINISHED = "全部步骤已完成"


def owner_tag(platform: str, user_id: str) -> str:
    """Short, stable tag of a user put into callback data so others' presses can be refused."""
    return hashlib.sha256(f"{platform}\x00{user_id}".encode()).hexdigest()[:8]


def callback_data(checklist_id: str, step_index: int, action: str, tag: str) -> str:
    """``chk:<id>:<step_index>:<action>:<owner>`` (ASCII, well under 64 bytes)."""
    return f"{PREFIX}:{checklist_id}:{step_index}:{action}:{tag}"


@dataclass(frozen=True)
class _Press:
    checklist_id: str
    step_index: int
    action: str
    tag: str | None


def parse_callback(data: str) -> _Press | None:
    """Parse callback data; None for anything malformed. The owner tag is optional."""
    parts = data.split(":")
    if len(parts) not in (4, 5) or parts[0] != PREFIX:
        return None
    _, checklist_id, index, action, *rest = parts
    if not (index.isascii() and index.isdigit()) or len(index) > 3 or action not in _ACTIONS:
        return None
    return _Press(checklist_id, int(index), action, rest[0] if rest else None)


@dataclass(frozen=True)
class _Catalog:
    """The loaded checklists and their names; replaced as a whole after a reindex."""

    items: tuple[Checklist, ...] = ()
    by_id: dict[str, Checklist] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)  # name_key → id

    @classmethod
    def of(cls, checklists: list[Checklist]) -> _Catalog:
        by_name: dict[str, str] = {}
        for c in checklists:
            for name in (c.id, c.title, *c.aliases):
                by_name.setdefault(name_key(name), c.id)
        return cls(tuple(checklists), {c.id: c for c in checklists}, by_name)

    def resolve(self, query: str) -> Checklist | None:
        """Id, title or alias; else a number from the list; else a unique partial match."""
        key = name_key(query)
        if not key:
            return None
        if key in self.by_name:
            return self.by_id[self.by_name[key]]
        if key.isdigit() and 1 <= int(key) <= len(self.items):
            return self.items[int(key) - 1]
        if len(key) < 2:
            return None
        found = {cid for name, cid in self.by_name.items() if key in name or (len(name) >= 2 and name in key)}
        return self.by_id[found.pop()] if len(found) == 1 else None


class ChecklistFeature:
    """Guided, cited checklists (Feature plug-in: ``/checklist``, callback prefix ``chk``)."""

    commands: tuple[str, ...] = ("checklist",)
    callback_prefix: str | None = PREFIX

    def __init__(
        self,
        db: Database,
        checklists: list[Checklist],
        *,
        timezone: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``db`` must have the checklist tables (import bot.checklists before create_schema).

        ``timezone`` is ``Settings.timezone``: dates in /checklist status are shown in it.
        """
        self.store = ProgressStore(db, clock)
        self._tz = ZoneInfo(timezone)
        self._catalog = _Catalog.of(checklists)
        self.help_lines: list[tuple[str, str]] = [
            ("/checklist 民主生活会", "按清单一步步准备民主生活会、组织生活会等，每步注明依据"),
            ("/checklist status", "查看清单进度；/checklist reset 名称 重新开始"),
        ]

    def replace_checklists(self, checklists: list[Checklist]) -> None:
        """Swap in freshly loaded checklists (after a reindex); progress is kept by checklist id."""
        self._catalog = _Catalog.of(checklists)

    @property
    def checklists(self) -> tuple[Checklist, ...]:
        return self._catalog.items

    def answer_note(self, question: str) -> str | None:
        """After an answer about preparing or holding a meeting with a checklist: point to it."""
        for checklist in self.checklists:
            if checklist.pointed_to_by(question):
                return f"可发送 /checklist {checklist.title} 逐步准备，每步注明依据"
        return None

    # Feature protocol (plain functions: the core runs them in a worker thread) ---------------
    def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        """``/checklist [status | reset <name> | <name>]``."""
        args = args.strip()
        head, _, rest = args.partition(" ")
        head_key, rest = head.lower(), rest.strip()
        catalog = self._catalog
        if not args or (head_key in _LIST_WORDS and not rest):
            return [self._list_message(catalog)]
        if head_key in _STATUS_WORDS and not rest:
            return [self._status_message(ctx, catalog)]
        if head_key in _RESET_WORDS:
            if not rest:
                return [OutgoingMessage(text=T_RESET_USAGE + "\n\n" + self._list_message(catalog).text)]
            checklist = catalog.resolve(rest)
            if checklist is None:
                return [self._unknown_message(catalog, rest)]
            progress = self.store.restart(self._key(ctx, checklist))
            return [self._step_message(ctx, checklist, progress, prefix=T_RESTARTED)]
        checklist = catalog.resolve(args)
        if checklist is None:
            return [self._unknown_message(catalog, args)]
        progress = self.store.start(self._key(ctx, checklist), checklist.size)
        if progress.finished:
            return [self._summary_message(checklist, progress)]
        return [self._step_message(ctx, checklist, progress)]

    def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        """A button press; applied only if it is the presser's and matches their current step."""
        press = parse_callback(data)
        if press is None:
            return [_toast(TOAST_INVALID)]
        if press.tag is not None and press.tag != owner_tag(ctx.msg.platform, ctx.msg.user_id):
            return [_toast(TOAST_FOREIGN)]
        checklist = self._catalog.by_id.get(press.checklist_id)
        if checklist is None or press.step_index >= checklist.size:
            return [_toast(TOAST_INVALID)]
        key = self._key(ctx, checklist)
        progress = self.store.get(key)
        if progress is None:
            return [_toast(TOAST_NOT_STARTED.format(id=checklist.id))]
        if press.action in _MOVES:
            return self._move(ctx, checklist, progress, press.step_index, press.action, typed=False)
        if press.action == A_ALL:
            return [self._all_message(ctx, checklist, progress)]
        if press.action == A_REMIND:
            return [self._remind_message(checklist.steps[press.step_index], typed=False)]
        # A_SHOW
        if progress.finished:
            return [self._summary_message(checklist, progress)]
        return [self._step_message(ctx, checklist, progress)]

    def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        """Consume 完成 / 跳过 / 上一步 / 全部 / 提醒 / 继续 while a checklist is active here."""
        if ctx.msg.file is not None:
            return None
        action = _TYPED.get(ctx.msg.text.strip().rstrip(_TRAILING))
        if action is None:
            return None
        active = self._active(ctx)
        if active is None:
            return None
        checklist, progress = active
        if action in _MOVES:
            return self._move(ctx, checklist, progress, progress.current_step, action, typed=True)
        if action == A_ALL:
            return [self._all_message(ctx, checklist, progress)]
        if action == A_REMIND:
            return [self._remind_message(checklist.steps[progress.current_step], typed=True)]
        return [self._step_message(ctx, checklist, progress)]

    # Actions -------------------------------------------------------------------------------
    def _move(
        self, ctx: Context, checklist: Checklist, progress: Progress, step_index: int, action: str, *, typed: bool
    ) -> list[OutgoingMessage]:
        move = _MOVES[action]
        if progress.finished:
            return [OutgoingMessage(text=T_ALREADY_FINISHED_TYPED)] if typed else [_toast(TOAST_STALE)]
        if step_index != progress.current_step:
            return [_toast(TOAST_STALE)]
        if move is Move.BACK and step_index == 0:
            return [OutgoingMessage(text=TOAST_FIRST)] if typed else [_toast(TOAST_FIRST)]
        updated = self.store.apply(self._key(ctx, checklist), step_index, move, checklist.size)
        if updated is None:  # someone (a duplicate press) got there first
            if typed:
                return [OutgoingMessage(text=T_STALE_TYPED.format(id=checklist.id))]
            return [_toast(TOAST_STALE)]
        if updated.finished:
            message = self._summary_message(checklist, updated)
            return [message.model_copy(update={"toast": None if typed else TOAST_FINISHED})]
        toast = {
            Move.DONE: TOAST_DONE.format(n=step_index + 1),
            Move.SKIP: TOAST_SKIPPED.format(n=step_index + 1),
            Move.BACK: TOAST_BACK.format(n=step_index),
        }[move]
        message = self._step_message(ctx, checklist, updated)
        return [message.model_copy(update={"toast": None if typed else toast})]

    def _active(self, ctx: Context) -> tuple[Checklist, Progress] | None:
        """The user's most recently touched unfinished checklist in this chat."""
        m = ctx.msg
        for progress in self.store.for_user(m.platform, m.chat_id, m.user_id):
            checklist = self._catalog.by_id.get(progress.checklist_id)
            if checklist is None or progress.finished:
                continue
            progress = self.store.start(self._key(ctx, checklist), checklist.size)  # clamps a shrunk list
            if not progress.finished:
                return checklist, progress
        return None

    def _key(self, ctx: Context, checklist: Checklist) -> ProgressKey:
        m = ctx.msg
        return ProgressKey(platform=m.platform, chat_id=m.chat_id, user_id=m.user_id, checklist_id=checklist.id)

    # Rendering -----------------------------------------------------------------------------
    def _list_message(self, catalog: _Catalog) -> OutgoingMessage:
        if not catalog.items:
            return OutgoingMessage(text=T_NO_CHECKLISTS)
        blocks = [T_LIST_HEADER]
        for number, c in enumerate(catalog.items, start=1):
            blocks.append(f"{number}. {c.title}（共 {c.size} 步，/checklist {c.id}）\n{c.description}")
        blocks.append(T_LIST_FOOTER)
        return OutgoingMessage(text="\n\n".join(blocks))

    def _unknown_message(self, catalog: _Catalog, name: str) -> OutgoingMessage:
        listing = self._list_message(catalog).text
        return OutgoingMessage(text=T_UNKNOWN.format(name=name[:40]) + "\n\n" + listing)

    def _step_message(
        self, ctx: Context, checklist: Checklist, progress: Progress, *, prefix: str | None = None
    ) -> OutgoingMessage:
        index = min(progress.current_step, checklist.size - 1)
        step = checklist.steps[index]
        lines = [f"【{checklist.title}】第 {index + 1}/{checklist.size} 步：{step.title}"]
        lines.append(f"做什么：{step.text}")
        lines.append(f"谁来做：{step.who}")
        if step.deadline:
            lines.append(f"时间：{step.deadline}")
        blocks = [prefix] if prefix else []
        blocks += ["\n".join(lines), _citation_block(step)]
        buttons: list[list[Button]] = []
        if ctx.caps.buttons:
            tag = owner_tag(ctx.msg.platform, ctx.msg.user_id)

            def button(label: str, action: str) -> Button:
                return Button(label=label, data=callback_data(checklist.id, index, action, tag))

            buttons = [
                [button("完成", A_DONE), button("跳过", A_SKIP)],
                [button("上一步", A_BACK), button("全部步骤", A_ALL)],
            ]
            if step.meeting_type:
                buttons.append([button("加入会议提醒", A_REMIND)])
        else:
            hint = T_TYPED_HINT + (T_TYPED_REMIND if step.meeting_type else "")
            blocks.append(hint)
        return OutgoingMessage(text="\n\n".join(blocks), buttons=buttons)

    def _all_message(self, ctx: Context, checklist: Checklist, progress: Progress) -> OutgoingMessage:
        done, skipped = progress.indices(DONE), progress.indices(SKIPPED)
        lines = [
            f"【{checklist.title}】全部步骤（已完成 {len(done)}，已跳过 {len(skipped)}，共 {checklist.size} 步）"
        ]
        for i, step in enumerate(checklist.steps):
            status = progress.marks.get(i)
            if not progress.finished and i == progress.current_step:
                marker, note = "👉", "（当前）"
            elif status == DONE:
                marker, note = "✅", ""
            elif status == SKIPPED:
                marker, note = "⏭", "（已跳过）"
            else:
                marker, note = "⬜", ""
            lines.append(f"{marker} {i + 1}. {step.title}{note}")
        text = "\n".join(lines)
        buttons: list[list[Button]] = []
        if not progress.finished:
            if ctx.caps.buttons:
                tag = owner_tag(ctx.msg.platform, ctx.msg.user_id)
                data = callback_data(checklist.id, progress.current_step, A_SHOW, tag)
                buttons = [[Button(label="回到当前步骤", data=data)]]
            else:
                text += "\n\n" + T_TYPED_SHOW
        return OutgoingMessage(text=text, buttons=buttons)

    def _summary_message(self, checklist: Checklist, progress: Progress) -> OutgoingMessage:
        done, skipped = progress.indices(DONE), progress.indices(SKIPPED)
        blocks = [f"【{checklist.title}】全部步骤已走完。"]

        def listing(header: str, marker: str, indices: list[int]) -> str:
            rows = [f"{marker} {i + 1}. {checklist.steps[i].title}" for i in indices if i < checklist.size]
            return "\n".join([header, *rows])

        blocks.append(listing(f"已完成 {len(done)} 步：", "✅", done) if done else "已完成 0 步。")
        if skipped:
            blocks.append(listing(f"已跳过 {len(skipped)} 步（如需补做请留意）：", "⏭", skipped))
        unmarked = [i for i in range(checklist.size) if i not in progress.marks]
        if unmarked:
            blocks.append(listing(f"未处理 {len(unmarked)} 步（清单在您开始后有更新）：", "⬜", unmarked))
        blocks.append(f"重新开始：/checklist reset {checklist.id}")
        return OutgoingMessage(text="\n\n".join(blocks))

    def _status_message(self, ctx: Context, catalog: _Catalog) -> OutgoingMessage:
        m = ctx.msg
        rows = []
        for progress in self.store.for_user(m.platform, m.chat_id, m.user_id):
            checklist = catalog.by_id.get(progress.checklist_id)
            if checklist is None:
                continue  # no longer offered
            counts = f"已完成 {len(progress.indices(DONE))}，已跳过 {len(progress.indices(SKIPPED))}"
            if progress.finished and progress.finished_at is not None:
                when = self._date(progress.finished_at)
                rows.append(f"• {checklist.title}：全部走完（{counts}），{when} 完成")
            else:
                index = min(progress.current_step, checklist.size - 1)
                rows.append(
                    f"• {checklist.title}：第 {index + 1}/{checklist.size} 步 {checklist.steps[index].title}"
                    f"（{counts}），最近更新 {self._date(progress.updated_at)}"
                )
        if not rows:
            return OutgoingMessage(text=T_NO_PROGRESS + "\n\n" + self._list_message(catalog).text)
        return OutgoingMessage(text="\n\n".join([T_STATUS_HEADER, "\n".join(rows), T_STATUS_FOOTER]))

    def _remind_message(self, step: Step, *, typed: bool) -> OutgoingMessage:
        if not step.meeting_type:
            return OutgoingMessage(text=TOAST_NO_MEETING) if typed else _toast(TOAST_NO_MEETING)
        return OutgoingMessage(text=T_REMIND.format(kind=step.meeting_type))

    def _date(self, moment: datetime) -> str:
        return moment.astimezone(self._tz).strftime("%Y-%m-%d %H:%M")


def _citation_block(step: Step) -> str:
    quote = step.quote if len(step.quote) <= MAX_QUOTE_CHARS else step.quote[:MAX_QUOTE_CHARS] + "……"
    return f"依据：{step.citation}\n“{quote}”"


def _toast(text: str) -> OutgoingMessage:
    return OutgoingMessage(text="", toast=text)
