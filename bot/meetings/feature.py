"""``/meeting`` and ``/meetings``: register, list, cancel and export meetings; show the plan.

Platform-neutral: replies are :class:`OutgoingMessage` objects; the core routes the commands
here. Who may change things: in a group, the group's administrators and the bot's administrators;
in a private chat, the user (the chat is theirs). Everyone in a chat may list its meetings, get
an .ics file or look at the plan.

Reminders are sent ``settings.offsets`` before each occurrence (default 1 day and 2 hours).
Offsets whose time has already passed when a meeting is added are not scheduled, even if that
leaves a meeting in the near future with no reminder at all; the confirmation says so.
Cancelling a recurring meeting cancels the whole series (all future occurrences).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.core.feature import Context
from bot.core.models import OutgoingFile, OutgoingMessage
from bot.meetings.dates import forms_lines
from bot.meetings.ics import build_ics, ics_filename
from bot.meetings.parse import (
    EXAMPLE_RECURRING,
    KNOWN_TYPES,
    ParseError,
    example_add,
    format_local,
    format_offset,
    no_hash_digits,
    parse_add,
    parse_meeting_number,
)
from bot.meetings.repo import MeetingInfo, MeetingRepo, as_utc
from bot.meetings.rules import FREQUENCY_LABELS, PERIOD_LABELS, MeetingRules, ResolvedRule
from bot.settings import Settings
from bot.store.db import Database, utcnow

log = logging.getLogger(__name__)

_SUB_ADD = {"add", "new", "添加", "登记", "新增"}
_SUB_CANCEL = {"cancel", "del", "delete", "remove", "取消", "删除"}
_SUB_LIST = {"list", "ls", "列表", "查看"}
_SUB_PLAN = {"plan", "计划", "规定"}
_SUB_ICS = {"ics", "ical", "calendar", "日历"}
_SUB_HELP = {"", "help", "帮助", "?", "？"}

REFUSED = (
    "只有群管理员或机器人管理员可以在群里登记或取消会议。"
    "如需登记自己的会议，请私聊我发送 /meeting add。"
)


def horizon_for(offsets: list[timedelta]) -> timedelta:
    """How far ahead reminders of recurring meetings are created: the longest offset plus a day."""
    return max(offsets, default=timedelta(0)) + timedelta(days=1)


def offsets_text(offsets: list[timedelta]) -> str:
    return "、".join(format_offset(o) for o in offsets)


PLAN_POINTER = "可发送 /meeting plan 查看本支部应定期召开的会议及本期是否已安排，每项注明依据"


class MeetingsFeature:
    """The meetings plug-in (implements :class:`bot.core.feature.Feature`)."""

    commands: tuple[str, ...] = ("meeting", "meetings")
    callback_prefix: str | None = None

    def __init__(
        self,
        db: Database,
        settings: Settings,
        rules: MeetingRules,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``clock`` returns an aware UTC ``datetime`` (injected in tests)."""
        self.repo = MeetingRepo(db)
        self.db = db
        self.settings = settings
        self.rules = rules
        self.clock = clock
        self.tz = ZoneInfo(settings.timezone)
        self.offsets = settings.offsets

    def _now(self) -> datetime:
        now = as_utc(self.clock())
        assert now is not None
        return now

    # ------------------------------------------------------------------ Feature protocol
    @property
    def help_lines(self) -> list[tuple[str, str]]:
        """Rows for /help (the example date is always a week ahead, so it works as typed)."""
        return [
            (example_add(self._now(), self.tz), "登记会议，会前自动提醒（/meeting 查看全部写法）"),
            (EXAMPLE_RECURRING, "登记定期会议，每次会前提醒"),
            ("/meetings", "查看本群即将召开的会议及编号"),
            ("/meeting plan", "按文件规定查看应定期召开的会议及本期安排"),
        ]

    def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        """Route ``/meetings`` and ``/meeting <sub> …`` (in a worker thread: it uses the database)."""
        if command == "meetings":
            return [self._list(ctx)]
        sub, _, rest = args.strip().partition(" ")
        sub_l = sub.lower()
        rest = rest.strip()
        if sub_l in _SUB_HELP:
            return [OutgoingMessage(text=self.help_text())]
        if sub_l in _SUB_ADD:
            return [self._add(ctx, rest)]
        if sub_l in _SUB_CANCEL:
            return [self._cancel(ctx, rest)]
        if sub_l in _SUB_LIST:
            return [self._list(ctx)]
        if sub_l in _SUB_PLAN:
            return [self._plan(ctx)]
        if sub_l in _SUB_ICS:
            return [self._ics(ctx, rest)]
        return [OutgoingMessage(text=no_hash_digits(f"没有“{sub}”这个会议操作。\n\n" + self.help_text()))]

    def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        """This feature sends no buttons."""
        return [OutgoingMessage(text="", toast="这个按钮已失效，请重新发送命令。")]

    def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        """Plain texts are never the meetings feature's."""
        return None

    def answer_note(self, question: str) -> str | None:
        """After an answer about how often branch meetings are held: point to /meeting plan."""
        return PLAN_POINTER if self.rules.asks_about_plan(question) else None

    # ------------------------------------------------------------------ help
    def help_text(self) -> str:
        now = self._now()
        reminders = f"会前{offsets_text(self.offsets)}各提醒一次" if self.offsets else "不发送提醒"
        return "\n".join(
            [
                "会议登记与提醒（群聊中只有群管理员和机器人管理员可以登记、取消）：",
                "",
                "/meeting add 类型 日期 时间 地点 议题",
                f"  例：{example_add(now, self.tz)}",
                "  例：/meeting add 支委会 明天 15:00 三楼会议室 研究发展党员工作",
                "  例：/meeting add 党小组会 下周三 下午3点半 二楼会议室 集中学习",
                *(f"  {line}" for line in forms_lines(now, self.tz)),
                "  地点中不要有空格，议题可以有空格。登记后的回复会写明具体日期和星期，请核对。",
                "",
                "/meeting add 类型 重复规则 时间 地点 议题  —— 定期会议，每次会前都提醒",
                f"  例：{EXAMPLE_RECURRING}",
                "  重复规则可写：每周五｜每月第2个周三｜每月最后一个周五｜每月15日（1至28日）｜"
                "每季度首月第1个周一（首月、第2个月或末月）｜每年12月第2个周五｜每年7月1日",
                "",
                "/meetings  —— 查看本群即将召开的会议及编号",
                "/meeting cancel 编号  —— 取消会议（定期会议将整体取消），例：/meeting cancel 12",
                "/meeting ics 编号  —— 获取日历文件(.ics)，可导入手机或电脑日历",
                "/meeting plan  —— 按文件规定查看应定期召开的会议，以及本期是否已经安排",
                "",
                "常用类型：" + "、".join(KNOWN_TYPES) + "；其他类型按原样登记。",
                f"提醒：{reminders}（时间按 {self.settings.timezone}）。",
            ]
        )

    # ------------------------------------------------------------------ add
    def _add(self, ctx: Context, args: str) -> OutgoingMessage:
        if not ctx.can_manage_group:
            self.db.audit(ctx.msg.platform, ctx.msg.user_id, f"meeting add in {ctx.msg.chat_id}", False)
            return OutgoingMessage(text=REFUSED)
        now = self._now()
        try:
            draft = parse_add(args, now, self.tz)
        except ParseError as exc:
            return OutgoingMessage(text=no_hash_digits(str(exc)))
        meeting, reminders = self.repo.add(
            ctx.ref, draft, timezone_name=self.settings.timezone, offsets=self.offsets,
            now=now, horizon=horizon_for(self.offsets),
        )
        if ctx.in_group:
            self.db.audit(ctx.msg.platform, ctx.msg.user_id, f"meeting add #{meeting.id} in {ctx.msg.chat_id}", True)
        log.info("meeting %s added in %s:%s", meeting.id, meeting.ref.platform, meeting.ref.chat_id)
        first = [r for r in reminders if r.occurs_at == meeting.starts_at]
        lines = [f"已登记{'定期' if meeting.recurrence else ''}会议 #{meeting.id}"]
        lines.append(f"类型：{meeting.meeting_type}")
        if meeting.recurrence is not None:
            lines.append(f"重复：{meeting.recurrence.label()}")
            lines.append(f"首次：{format_local(meeting.starts_at, self.tz)}")
        else:
            lines.append(f"时间：{format_local(meeting.starts_at, self.tz)}")
        lines.append(f"地点：{meeting.place}")
        lines.append(f"议题：{meeting.topic}")
        if not self.offsets:
            lines.append("提醒：未设置提醒时间，不发送提醒。")
        elif first:
            when = "、".join(format_local(r.remind_at, self.tz) for r in first)
            prefix = f"每次会议前{offsets_text(self.offsets)}各提醒一次；首次会议将于" if meeting.recurrence else "将于"
            lines.append(f"提醒：{prefix} {when} 发送提醒。")
        else:
            lines.append(f"提醒：距会议开始已不足设定的提前量（{offsets_text(self.offsets)}），本次会议不发送提醒。")
            if meeting.recurrence is not None:
                lines.append(f"      以后每次会议前{offsets_text(self.offsets)}各提醒一次。")
        if not draft.known_type:
            lines.append(f"（“{meeting.meeting_type}”不是常见会议类型，已按原样登记。）")
        rule = self.rules.for_type(meeting.meeting_type)
        if rule is not None:
            lines.append(f"规定：{rule.rule.summary}（{rule.citation}）")
        lines.append(f"取消请发送 /meeting cancel {meeting.id}；导入日历请发送 /meeting ics {meeting.id}")
        return OutgoingMessage(text="\n".join(lines))

    # ------------------------------------------------------------------ list
    def _list(self, ctx: Context) -> OutgoingMessage:
        now = self._now()
        meetings = self.repo.upcoming(ctx.msg.platform, ctx.msg.chat_id, now)
        where = "本群" if ctx.in_group else "您"
        if not meetings:
            return OutgoingMessage(
                text=f"{where}暂无即将召开的会议。\n登记示例：{example_add(now, self.tz)}"
            )
        lines = [f"{where}即将召开的会议（共 {len(meetings)} 个）："]
        for m in meetings:
            lines.append(self._line(m, now))
        lines.append("取消：/meeting cancel 编号；日历文件：/meeting ics 编号")
        return OutgoingMessage(text="\n".join(lines))

    def _line(self, m: MeetingInfo, now: datetime) -> str:
        nxt = m.next_occurrence(now)
        assert nxt is not None
        when = format_local(nxt, self.tz)
        if m.recurrence is not None:
            when = f"{m.recurrence.label()}，下次 {when}"
        return f"#{m.id} {m.meeting_type}｜{when}｜{m.place}｜{m.topic}"

    # ------------------------------------------------------------------ cancel
    def _cancel(self, ctx: Context, args: str) -> OutgoingMessage:
        if not ctx.can_manage_group:
            self.db.audit(ctx.msg.platform, ctx.msg.user_id, f"meeting cancel {args[:40]} in {ctx.msg.chat_id}", False)
            return OutgoingMessage(text=REFUSED)
        number = parse_meeting_number(args) if args else None
        if number is None:
            return OutgoingMessage(
                text=no_hash_digits("请写明要取消的会议编号，例如：/meeting cancel 12（编号可用 /meetings 查看）。")
            )
        result, meeting = self.repo.cancel(number, ctx.msg.platform, ctx.msg.chat_id, ctx.msg.user_id, self._now())
        if result == "not_found" or meeting is None:
            return OutgoingMessage(
                text=no_hash_digits(f"没有找到编号为 {number} 的会议。只能取消本群登记的会议，请用 /meetings 查看编号。")
            )
        if result == "already":
            return OutgoingMessage(text=no_hash_digits(f"编号为 {number} 的会议已经取消过了。"))
        if ctx.in_group:
            self.db.audit(ctx.msg.platform, ctx.msg.user_id, f"meeting cancel #{number} in {ctx.msg.chat_id}", True)
        when = meeting.recurrence.label() if meeting.recurrence else format_local(meeting.starts_at, self.tz)
        return OutgoingMessage(
            text=f"已取消会议 #{meeting.id}：{meeting.meeting_type} {when} {meeting.place}。不会再发送它的提醒。"
        )

    # ------------------------------------------------------------------ ics
    def _ics(self, ctx: Context, args: str) -> OutgoingMessage:
        number = parse_meeting_number(args) if args else None
        if number is None:
            return OutgoingMessage(text=no_hash_digits("请写明会议编号，例如：/meeting ics 12（编号可用 /meetings 查看）。"))
        meeting = self.repo.get_in_chat(number, ctx.msg.platform, ctx.msg.chat_id)
        if meeting is None:
            return OutgoingMessage(
                text=no_hash_digits(f"没有找到编号为 {number} 的会议。只能导出本群登记的会议，请用 /meetings 查看编号。")
            )
        if not meeting.live:
            return OutgoingMessage(text=no_hash_digits(f"编号为 {number} 的会议已取消，不再提供日历文件。"))
        content = build_ics(meeting, offsets=self.offsets, now=self._now())
        filename = ics_filename(meeting.id)
        caption = f"会议 #{meeting.id} {meeting.meeting_type} 的日历文件，打开即可导入日历。"
        if ctx.caps.files:
            return OutgoingMessage(
                text=caption,
                file=OutgoingFile(filename=filename, content=content, mime_type="text/calendar"),
            )
        return OutgoingMessage(
            text=(
                f"当前平台不能发送文件。请把下面的内容复制保存为 {filename}（纯文本），再用日历程序导入：\n\n"
                + content.decode("utf-8")
            )
        )

    # ------------------------------------------------------------------ plan
    def _plan(self, ctx: Context) -> OutgoingMessage:
        now = self._now()
        plan = self.rules.plan_rules()
        missing = self.rules.missing_plan_types()
        if not plan:
            text = "当前文件库中没有找到规定党支部会议频次的条款，暂时无法给出会议计划。"
            if missing:
                text += f"\n（未找到出处的规定：{'、'.join(missing)}。请管理员检查文件库。）"
            return OutgoingMessage(text=text)
        local = now.astimezone(self.tz)
        year_start = _local_start(local.year, 1, self.tz)
        meetings = self.repo.live_since(ctx.msg.platform, ctx.msg.chat_id, year_start)
        where = "本群" if ctx.in_group else "您"
        lines = [f"按已收录文件的规定，党支部应定期召开的会议（统计{where}已登记、未取消的会议）："]
        for rule in plan:
            lines.append("")
            lines.extend(self._plan_entry(rule, meetings, local))
        if missing:
            lines.append("")
            lines.append(f"注：以下会议的规定出处不在当前文件库中，暂未列出：{'、'.join(missing)}。")
        lines.append("")
        lines.append(f"登记会议：{EXAMPLE_RECURRING}")
        return OutgoingMessage(text="\n".join(lines))

    def _plan_entry(self, rule: ResolvedRule, meetings: list[MeetingInfo], local: datetime) -> list[str]:
        freq = rule.rule.frequency or "year"
        start, end, period_name = _period(freq, local, self.tz)
        held: list[tuple[datetime, MeetingInfo]] = []
        for m in meetings:
            if m.meeting_type in rule.counted_types:
                for at in m.occurrences_between(start, end):
                    held.append((at, m))
        held.sort(key=lambda p: (p[0], p[1].id))
        head = f"{rule.type}：{FREQUENCY_LABELS[freq]}"
        period = f"{PERIOD_LABELS[freq]}（{period_name}）"
        if held:
            shown = "、".join(f"#{m.id} {format_local(at, self.tz)}" for at, m in held[:3])
            more = f" 等 {len(held)} 次" if len(held) > 3 else ""
            status = f"【已安排】{head}；{period}：{shown}{more}"
        else:
            status = f"【未安排】{head}；{period}尚未登记"
        return [status, f"  规定：{rule.rule.summary}", f"  依据：{rule.citation}"]


def _local_start(year: int, month: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=tz)


def _period(freq: str, local: datetime, tz: ZoneInfo) -> tuple[datetime, datetime, str]:
    """[start, end) of the current month/quarter/year in ``tz``, and its Chinese name."""
    y, m = local.year, local.month
    if freq == "month":
        start = _local_start(y, m, tz)
        end = _local_start(y + (m == 12), 1 if m == 12 else m + 1, tz)
        return start, end, f"{y}年{m}月"
    if freq == "quarter":
        q = (m - 1) // 3
        start = _local_start(y, 3 * q + 1, tz)
        end = _local_start(y + (q == 3), 1 if q == 3 else 3 * q + 4, tz)
        return start, end, f"{y}年第{q + 1}季度"
    return _local_start(y, 1, tz), _local_start(y + 1, 1, tz), f"{y}年"
