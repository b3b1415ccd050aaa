"""Parse ``/meeting add`` arguments into a :class:`MeetingDraft` (pure: no database, no clock).

Syntax (tokens separated by spaces; the topic may contain spaces)::

    <类型> <日期> <时间> <地点> <议题>            one meeting
    <类型> <重复规则> <时间> <地点> <议题>        a recurring meeting

``<日期>`` and ``<时间>`` are written as people type them (明天, 下周三, 12月8日, 2026-12-08;
15:00, 15点半, 下午3点; see :mod:`bot.meetings.dates` for every form and the rules for ambiguous
ones). The time may follow the date without a space (``明天下午3点``) and ``下午 3点`` may be two
tokens. ``<重复规则>`` is one of::

    每周五                      every week on that weekday (周一…周日, 星期一…星期日)
    每月第2个周三               the n-th weekday of every month (n = 1..4)
    每月最后一个周五             the last such weekday of every month
    每月15日                    a day of every month (1..28, so that every month has it)
    每季度首月第1个周一          in the first (首月), second (第2个月) or last (末月) month of
                                every quarter, followed by a monthly day rule as above
    每年12月第2个周五 / 每年7月1日   once a year, in the given month

Every error is a :class:`ParseError` whose message is Chinese, says what is wrong and shows a
correct example; it never contains ``#<digits>`` (so it cannot be mistaken for a confirmation).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr
from icalendar import vRecur
from pydantic import BaseModel, Field

from bot.meetings.dates import (
    WEEKDAY_BY_CHAR,
    WEEKDAY_NAMES,
    WhenError,
    forms_lines,
    format_local,  # re-exported: the one formatter of meeting times (scheduler, feature)
    is_date,
    is_time,
    match_date,
    normalize,
    parse_clock,
    resolve,
    split_when,
)
from retrieval.numerals import parse_int

#: Canonical meeting types; a type not listed (and not an alias) is accepted as written.
KNOWN_TYPES: tuple[str, ...] = (
    "支部党员大会",
    "支委会",
    "党小组会",
    "党课",
    "主题党日",
    "组织生活会",
    "民主生活会",
    "党组会议",
    "党员大会",
    "民主评议",
    "党委会",
    "中心组学习",
)

#: Common ways of writing a known type → its canonical name.
TYPE_ALIASES: dict[str, str] = {
    "党支部党员大会": "支部党员大会",
    "支部大会": "支部党员大会",
    "支部委员会会议": "支委会",
    "党支部委员会会议": "支委会",
    "支部委员会": "支委会",
    "支委会会议": "支委会",
    "支委会议": "支委会",
    "支委扩大会": "支委会",
    "党小组会议": "党小组会",
    "党小组": "党小组会",
    "小组会": "党小组会",
    "上党课": "党课",
    "专题党课": "党课",
    "主题党日活动": "主题党日",
    "党日活动": "主题党日",
    "党日": "主题党日",
    "专题组织生活会": "组织生活会",
    "年度组织生活会": "组织生活会",
    "专题民主生活会": "民主生活会",
    "年度民主生活会": "民主生活会",
    "党组会": "党组会议",
    "党组扩大会议": "党组会议",
    "民主评议党员": "民主评议",
    "党委会议": "党委会",
    "党委委员会会议": "党委会",
    "理论学习中心组学习": "中心组学习",
    "中心组学习会": "中心组学习",
}

MAX_TYPE_CHARS = 20
MAX_PLACE_CHARS = 100
MAX_TOPIC_CHARS = 300

_WEEKDAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

_LOOKS_LIKE_TIME_RE = re.compile(r"^\d{1,2}[:点时]")
_WD = r"(?:周|星期|礼拜)(?P<wd>[一二三四五六日天七])"
_DAY_RULE = (
    rf"(?:第(?P<nth>\d|[一二三四五六七八九十])个{_WD}"
    rf"|(?P<last>最后一个|最后1个|末个){_WD.replace('wd', 'wd2')}"
    r"|(?P<day>\d{1,2}|[一二三四五六七八九十]{1,3})[日号])"
)
_RECUR_RE = re.compile(
    rf"^每(?:(?:周|星期|礼拜)(?P<wwd>[一二三四五六日天七])"
    rf"|(?P<month>月){_DAY_RULE}"
    rf"|(?P<quarter>季度?)(?P<qm>首月|第[1-3一二三]个月|末月|最后一个月)?{_DAY_RULE.replace('?P<', '?P<q')}"
    rf"|年(?P<ym>\d{{1,2}}|[一二三四五六七八九十]{{1,3}})月{_DAY_RULE.replace('?P<', '?P<y')})$"
)
#: The same rule at the start of a text (the time may follow without a space).
_RECUR_PREFIX_RE = re.compile(_RECUR_RE.pattern.removeprefix("^").removesuffix("$"))

Frequency = Literal["week", "month", "quarter", "year"]


class ParseError(ValueError):
    """Bad ``/meeting add`` input; ``str(err)`` is the Chinese message for the user."""


class Recurrence(BaseModel):
    """A simple calendar rule plus the local time of day; computed in the meeting's timezone.

    ``month`` is 1..12 for yearly rules and the month within the quarter (1..3) for quarterly
    ones. Exactly one of ``weekday`` (with ``nth`` 1..4 or -1 for the last) or ``day`` (1..28)
    describes the day, except for weekly rules which only use ``weekday``.
    """

    freq: Frequency
    hour: int = Field(ge=0, le=23)
    minute: int = Field(ge=0, le=59)
    weekday: int | None = Field(default=None, ge=0, le=6)  # Monday = 0
    nth: int | None = None  # 1..4, or -1 = last
    day: int | None = Field(default=None, ge=1, le=28)
    month: int | None = Field(default=None, ge=1, le=12)

    # ------------------------------------------------------------------ display
    def day_label(self) -> str:
        if self.day is not None:
            return f"{self.day}日"
        wd = f"周{WEEKDAY_NAMES[self.weekday or 0]}"
        return f"最后一个{wd}" if self.nth == -1 else f"第{self.nth}个{wd}"

    def label(self) -> str:
        """Chinese description including the time, e.g. ``每月第2个周三 15:00``."""
        hm = f"{self.hour:02d}:{self.minute:02d}"
        if self.freq == "week":
            return f"每周{WEEKDAY_NAMES[self.weekday or 0]} {hm}"
        if self.freq == "month":
            return f"每月{self.day_label()} {hm}"
        if self.freq == "quarter":
            qm = {1: "首月", 2: "第2个月", 3: "末月"}[self.month or 1]
            return f"每季度{qm}{self.day_label()} {hm}"
        return f"每年{self.month}月{self.day_label()} {hm}"

    # ------------------------------------------------------------------ calendar
    def rrule(self) -> dict[str, object]:
        """The iCalendar RRULE: the one definition of the dates, used by reminders and ``.ics``.

        Quarterly rules are yearly ones in the three-monthly months, so no DTSTART alignment is
        needed; the time of day comes from DTSTART."""
        byday = None if self.weekday is None else _WEEKDAY_CODES[self.weekday]
        if self.freq == "week":
            return {"FREQ": "WEEKLY", "BYDAY": byday}
        rule: dict[str, object] = {"FREQ": "MONTHLY" if self.freq == "month" else "YEARLY"}
        if self.freq == "quarter":
            rule["BYMONTH"] = [(self.month or 1) + 3 * q for q in range(4)]
        elif self.freq == "year":
            rule["BYMONTH"] = self.month
        if byday:
            rule["BYDAY"] = f"{self.nth}{byday}"
        else:
            rule["BYMONTHDAY"] = self.day
        return rule

    def occurrences(self, tz: ZoneInfo, after: datetime, until: datetime | None = None) -> Iterator[datetime]:
        """Occurrences (UTC) strictly after ``after`` and, if given, not after ``until``.

        The RRULE is expanded by ``dateutil`` on wall-clock times in ``tz``."""
        local_after = after.astimezone(tz)
        dtstart = datetime.combine(local_after.date() - timedelta(days=1), time(self.hour, self.minute))
        text = vRecur(self.rrule()).to_ical().decode("ascii")
        for local in rrulestr(text, dtstart=dtstart):
            at = local.replace(tzinfo=tz).astimezone(timezone.utc)
            if at <= after:
                continue
            if until is not None and at > until:
                return
            yield at

    def next_after(self, tz: ZoneInfo, after: datetime) -> datetime:
        """The first occurrence (UTC) strictly after ``after``."""
        return next(self.occurrences(tz, after))


class MeetingDraft(BaseModel):
    """A validated ``/meeting add``: ``starts_at`` is the (first) occurrence in UTC."""

    meeting_type: str
    known_type: bool
    starts_at: datetime
    recurrence: Recurrence | None = None
    place: str
    topic: str


# ---------------------------------------------------------------------- helpers
def canonical_type(word: str) -> tuple[str, bool]:
    """(canonical name, known?) for a typed meeting type."""
    word = word.strip()
    if word in KNOWN_TYPES:
        return word, True
    if word in TYPE_ALIASES:
        return TYPE_ALIASES[word], True
    return word, False


def example_date(now: datetime, tz: ZoneInfo) -> str:
    """A date a week from ``now`` (local), so that examples in messages are valid as typed."""
    return (now.astimezone(tz).date() + timedelta(days=7)).isoformat()


def example_add(now: datetime, tz: ZoneInfo) -> str:
    return f"/meeting add 支委会 {example_date(now, tz)} 15:00 三楼会议室 研究发展党员工作"


EXAMPLE_RECURRING = "/meeting add 支委会 每月第2个周三 15:00 三楼会议室 研究发展党员工作"


def _fail(problem: str, now: datetime, tz: ZoneInfo, recurring: bool = False, forms: bool = False) -> ParseError:
    """The error for the user: the problem, for date and time problems the accepted forms (only
    the times for a recurring meeting), the syntax and an example that is valid as typed."""
    lines = [problem]
    if forms:
        date_forms, time_forms = forms_lines(now, tz)
        lines += [time_forms] if recurring else [date_forms, time_forms]
    lines += ["正确格式：/meeting add 类型 日期 时间 地点 议题", f"例如：{example_add(now, tz)}"]
    if recurring:
        lines.append(f"定期会议例如：{EXAMPLE_RECURRING}")
    lines.append("发送 /meeting help 查看全部写法。")
    return ParseError(no_hash_digits("\n".join(lines)))


def no_hash_digits(text: str) -> str:
    """Errors must never look like a confirmation: ``#12`` becomes ``＃ 12``."""
    return re.sub(r"[#＃]\s*(?=\d)", "＃ ", text)


def _norm_token(token: str) -> str:
    return unicodedata.normalize("NFKC", token).strip()


def looks_like_date(token: str) -> bool:
    return bool(re.match(r"^\d{4}[-/.年]", _norm_token(token)))


def looks_like_when(token: str) -> bool:
    """True for something that is a date, a time or a recurrence rather than a meeting type."""
    t = _norm_token(token)
    return (
        looks_like_date(t) or bool(_LOOKS_LIKE_TIME_RE.match(t)) or (t.startswith("每") and len(t) > 1)
        or is_date(t) or is_time(t) or split_when(t) is not None
    )


# ---------------------------------------------------------------------- parsing
def _split_recurring(text: str) -> tuple[str, str] | None:
    """``每月第2个周三 15:00`` or ``每月第2个周三下午3点`` → (rule, time); None otherwise."""
    m = _RECUR_PREFIX_RE.match(text)
    rest = text[m.end():].strip() if m else ""
    return (m.group(0), rest) if m and rest and is_time(rest) else None


def _split_when(tokens: list[str], recurring: bool) -> tuple[int, str, str] | None:
    """The date (or rule) and the time after the type: (tokens they take, date, time).

    Up to three tokens (``明天 下午 3点``), the most that read as a date and a time."""
    for k in (3, 2, 1):
        if len(tokens) > k:
            text = normalize(" ".join(tokens[1:1 + k]))
            found = _split_recurring(text) if recurring else split_when(text)
            if found is not None:
                return k, found[0], found[1]
    return None


def _when_error(tokens: list[str], recurring: bool, now: datetime, tz: ZoneInfo) -> ParseError:
    """Why the tokens after the type are not a date (or rule) followed by a time."""
    first = normalize(tokens[1])
    if recurring:
        m = _RECUR_PREFIX_RE.match(first)
        if m is None:
            parse_recurrence(first, 0, 0, now, tz)  # raises: not a rule
        rest = first[m.end():].strip() if m else ""
    else:
        found = match_date(first)
        if found is None:
            if is_time(first) or _LOOKS_LIKE_TIME_RE.match(first):
                return _fail("缺少日期：请在时间前写明日期。", now, tz, forms=True)
            return _fail(f"无法识别日期“{tokens[1]}”。", now, tz, forms=True)
        rest = found[1]
    if not rest and len(tokens) < 3:
        return _fail("缺少时间（时:分，如 15:00）。", now, tz, recurring, forms=True)
    try:
        parse_clock(rest or tokens[2])
    except WhenError as exc:
        return _fail(str(exc), now, tz, recurring, forms=True)
    return _fail(f"无法识别时间“{rest or tokens[2]}”。", now, tz, recurring, forms=True)


def _day_rule(groups: dict[str, str | None], prefix: str, token: str, now: datetime, tz: ZoneInfo) -> dict:
    g = {k[len(prefix):]: v for k, v in groups.items() if k.startswith(prefix) and v is not None}
    if g.get("nth") is not None:
        nth = parse_int(g["nth"])
        if nth is None or not 1 <= nth <= 4:
            raise _fail(f"重复规则“{token}”无效：只能写第1至第4个星期几，或“最后一个周X”。", now, tz, True)
        return {"nth": nth, "weekday": WEEKDAY_BY_CHAR[g["wd"]]}
    if g.get("last") is not None:
        return {"nth": -1, "weekday": WEEKDAY_BY_CHAR[g["wd2"]]}
    day = parse_int(g.get("day") or "")
    if day is None or not 1 <= day <= 28:
        raise _fail(
            f"重复规则“{token}”无效：每月的日期只能是 1至28日（不是每个月都有29至31日），"
            "月底的会议可写“每月最后一个周五”。",
            now, tz, True,
        )
    return {"day": day}


def parse_recurrence(token: str, hour: int, minute: int, now: datetime, tz: ZoneInfo) -> Recurrence:
    """``每月第2个周三`` etc. plus the time → :class:`Recurrence`; ParseError otherwise."""
    t = _norm_token(token)
    m = _RECUR_RE.match(t)
    if not m:
        raise _fail(
            f"无法识别重复规则“{token}”。可用写法：每周五、每月第2个周三、每月最后一个周五、"
            "每月15日、每季度首月第1个周一、每年12月第2个周五。",
            now, tz, True,
        )
    g = m.groupdict()
    if g["wwd"] is not None:
        return Recurrence(freq="week", hour=hour, minute=minute, weekday=WEEKDAY_BY_CHAR[g["wwd"]])
    if g["month"] is not None:
        return Recurrence(freq="month", hour=hour, minute=minute, **_day_rule(g, "", t, now, tz))
    if g["quarter"] is not None:
        qm_text = g["qm"] or "首月"
        qm = 1 if qm_text == "首月" else 3 if qm_text in ("末月", "最后一个月") else parse_int(qm_text[1])
        return Recurrence(freq="quarter", hour=hour, minute=minute, month=qm, **_day_rule(g, "q", t, now, tz))
    month = parse_int(g["ym"] or "")
    if month is None or not 1 <= month <= 12:
        raise _fail(f"重复规则“{token}”无效：月份应为 1至12。", now, tz, True)
    return Recurrence(freq="year", hour=hour, minute=minute, month=month, **_day_rule(g, "y", t, now, tz))


def parse_add(args: str, now: datetime, tz: ZoneInfo) -> MeetingDraft:
    """Parse the text after ``/meeting add``; ``now`` is aware (UTC), ``tz`` the users' zone."""
    tokens = args.split()
    if not tokens:
        raise _fail("请写明会议类型、日期、时间、地点和议题。", now, tz, True)
    if looks_like_when(tokens[0]):
        raise _fail("缺少会议类型：请先写会议类型（如 支委会、支部党员大会、主题党日），再写日期和时间。", now, tz)
    meeting_type, known = canonical_type(tokens[0])
    if len(meeting_type) > MAX_TYPE_CHARS:
        raise _fail(f"会议类型太长（最多 {MAX_TYPE_CHARS} 个字）。", now, tz)
    if len(tokens) < 2:
        raise _fail("缺少日期和时间。", now, tz, True)
    recurring = _norm_token(tokens[1]).startswith("每")
    when = _split_when(tokens, recurring)
    if when is None:
        raise _when_error(tokens, recurring, now, tz)
    used, date_text, time_text = when
    recurrence: Recurrence | None = None
    try:
        if recurring:
            hour, minute = parse_clock(time_text)
            recurrence = parse_recurrence(date_text, hour, minute, now, tz)
            starts_at = recurrence.next_after(tz, now)
        else:
            starts_at = resolve(date_text, time_text, now, tz)
    except WhenError as exc:
        raise _fail(str(exc), now, tz, recurring, forms=True) from None
    rest = tokens[1 + used:]  # place, topic…
    if not rest:
        raise _fail("缺少地点和议题：请在时间后依次写明地点和议题（地点中不要有空格）。", now, tz, recurring)
    if len(rest) < 2:
        raise _fail(
            f"缺少议题或地点：“{rest[0]}”之后还需要写议题；请在时间后依次写明地点和议题（地点中不要有空格）。",
            now, tz, recurring,
        )
    place = rest[0].strip()
    topic = " ".join(rest[1:]).strip()
    if len(place) > MAX_PLACE_CHARS:
        raise _fail(f"地点太长（最多 {MAX_PLACE_CHARS} 个字）。", now, tz, recurring)
    if len(topic) > MAX_TOPIC_CHARS:
        raise _fail(f"议题太长（最多 {MAX_TOPIC_CHARS} 个字）。", now, tz, recurring)
    return MeetingDraft(
        meeting_type=meeting_type, known_type=known, starts_at=starts_at,
        recurrence=recurrence, place=place, topic=topic,
    )


def parse_meeting_number(text: str) -> int | None:
    """``12`` or ``#12`` (also full-width) → 12; None when it is not a meeting number."""
    t = _norm_token(text).lstrip("#").strip()
    if not t.isdigit() or len(t) > 12:
        return None
    return int(t)


# ---------------------------------------------------------------------- display
def format_offset(offset: timedelta) -> str:
    """``1天``, ``2小时``, ``1小时30分钟``, ``60秒``."""
    seconds = int(offset.total_seconds())
    if seconds <= 0:
        return "开始时"
    parts: list[str] = []
    for unit, name in ((86400, "天"), (3600, "小时"), (60, "分钟"), (1, "秒")):
        if seconds >= unit:
            parts.append(f"{seconds // unit}{name}")
            seconds %= unit
    return "".join(parts)
