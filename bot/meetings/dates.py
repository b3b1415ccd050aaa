"""Dates and times as secretaries type them (pure: the clock and the timezone are arguments).

Accepted dates (the users' timezone decides what "today" is)::

    今天 明天 后天 大后天                    relative days (今日, 明日 too)
    周五 星期五 礼拜五 本周五 这周五          the next such day whose time is still ahead
                                            (today when the time is still ahead)
    下周三 下下周一 (下个周三, 下星期三 …)     that day of next week / the week after; weeks
                                            start on Monday
    12月8日 12月8号 12.8 12-08 12/8          the next occurrence: this year's while it is ahead,
                                            else next year's (the confirmation shows the year);
                                            today's date with a time already past is refused
    2026年12月8日 2026-12-08 2026/12/8       as written

Accepted times: ``15:00`` (a full-width colon is fine), ``15点``, ``15点半``, ``15点30分``,
``15时`` and the same after ``上午``/``早上``/``中午``/``下午``/``晚上`` (``下午3点半``,
``晚上7点``). Numbers may be Chinese numerals (``十二月八日 下午三点``). Without such a word:

* 1 to 6 are refused as ambiguous (``3点`` could be 03:00 or 15:00), unless written as a
  zero-padded 24-hour clock (``03:00``);
* 0 and 7 to 12 are read as written (``9点`` is 09:00, ``12点`` noon), 13 to 23 as a 24-hour
  clock.

With a word: 上午/早上 0–12 as written; 中午 11, 12 as written and 1, 2 as 13:00, 14:00;
下午 1–11 plus 12 hours (12 and 13–23 as written); 晚上 5–11 plus 12 hours (17–23 as written).
Anything else (上午15点, 晚上2点) is refused as contradictory.

Every error is a :class:`WhenError` whose message is Chinese and says what is wrong; the caller
adds the accepted forms (:func:`forms_lines`) and an example.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta, weekdays

WEEKDAY_NAMES = ("一", "二", "三", "四", "五", "六", "日")
#: A weekday character after 周/星期/礼拜 → Monday = 0.
WEEKDAY_BY_CHAR = {c: i for i, c in enumerate(WEEKDAY_NAMES)} | {"天": 6, "七": 6}

_CN = "零〇一二两三四五六七八九十"
_NUM = rf"(?:\d{{1,2}}|[{_CN}]{{1,3}})"
_YEAR = r"(?:\d{4}|[零〇一二三四五六七八九]{4})"
_RELATIVE = {"今天": 0, "今日": 0, "明天": 1, "明日": 1, "后天": 2, "大后天": 3}
#: Dates that end in a word character: the time may follow without a space.
_DATE_WORD_RE = re.compile(
    r"(?P<rel>大后天|后天|明天|明日|今天|今日)"
    r"|(?P<wk>本|这个?|下下个?|下个?)?(?:周|星期|礼拜)(?P<wd>[一二三四五六日天七])"
    rf"|(?:(?P<y>{_YEAR})年)?(?P<mo>{_NUM})月(?P<d>{_NUM})[日号]"
)
#: Dates that end in a digit: a space must separate them from the time.
_DATE_NUM_RE = re.compile(
    r"(?P<y>\d{4})[-/.](?P<mo>\d{1,2})[-/.](?P<d>\d{1,2})"
    r"|(?P<mo2>\d{1,2})[-/.](?P<d2>\d{1,2})"
    rf"|(?:(?P<y3>{_YEAR})年)?(?P<mo3>{_NUM})月(?P<d3>{_NUM})"
)
_PERIOD = {"上午": "am", "早上": "am", "早晨": "am", "中午": "noon", "下午": "pm", "晚上": "evening"}
_TIME_RE = re.compile(
    r"(?P<ap>上午|早上|早晨|中午|下午|晚上)?\s*"
    r"(?:(?P<h>\d{1,2}):(?P<m>\d{2})"
    rf"|(?P<h2>{_NUM})[点时](?:(?P<half>半)|(?P<m2>\d{{2}}|[{_CN}]{{1,3}})分?|(?P<m3>\d)分|整)?)"
)
_SMALL_CN_RE = re.compile(r"(?P<t>[二三四五])?十(?P<u>[一二三四五六七八九])?|[零〇]?(?P<d>[零〇一二两三四五六七八九])")
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


class WhenError(ValueError):
    """A date or time that cannot be used; ``str(err)`` is the Chinese reason for the user."""


def normalize(text: str) -> str:
    """Full-width digits and colons to ASCII, whitespace runs to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def small_int(text: str) -> int | None:
    """``8``, ``08``, ``八``, ``十二``, ``二十三``, ``零五`` → int (0..59); None otherwise.

    Stricter than :func:`retrieval.numerals.parse_int`: ``一一`` or ``十十`` are not numbers."""
    if re.fullmatch(r"\d{1,2}", text):
        return int(text)
    m = _SMALL_CN_RE.fullmatch(text)
    if not m:
        return None
    if m.group("d") is not None:
        return _CN_DIGITS[m.group("d")]
    return _CN_DIGITS[m.group("t") or "一"] * 10 + (_CN_DIGITS[m.group("u")] if m.group("u") else 0)


def _year(text: str) -> int:
    return int(text) if text.isdigit() else int("".join(str(_CN_DIGITS[c]) for c in text))


def format_local(at: datetime, tz: ZoneInfo) -> str:
    """``2025-03-12（星期三）15:00`` in ``tz``."""
    local = at.astimezone(tz)
    return f"{local.date().isoformat()}（星期{WEEKDAY_NAMES[local.weekday()]}）{local:%H:%M}"


def forms_lines(now: datetime, tz: ZoneInfo) -> list[str]:
    """The accepted date and time forms, for error messages; the dates shown are valid as typed."""
    e = now.astimezone(tz).date() + timedelta(days=7)
    return [
        "日期可写：今天、明天、后天、大后天；周五、本周五、下周三、下下周一；"
        f"{e.month}月{e.day}日、{e.month}.{e.day}、{e.month:02d}-{e.day:02d}；"
        f"{e.year}年{e.month}月{e.day}日、{e.isoformat()}。",
        "时间可写：15:00、15点、15点半、下午3点、下午3点半、上午9点、晚上7点"
        "（1至6点请写明上午或下午；未写明时，7至12点指上午，13至23点按24小时制）。",
    ]


# ---------------------------------------------------------------------- splitting
def match_date(text: str) -> tuple[re.Match[str], str] | None:
    """The date at the start of ``text`` (normalized) and the rest (stripped); None if none.

    A date ending in a digit (``12.8``, ``2026-12-08``) must be followed by a space or the end."""
    m = _DATE_WORD_RE.match(text)
    if m:
        return m, text[m.end():].strip()
    m = _DATE_NUM_RE.match(text)
    if m and (m.end() == len(text) or text[m.end()] == " "):
        return m, text[m.end():].strip()
    return None


def is_date(text: str) -> bool:
    found = match_date(normalize(text))
    return found is not None and found[1] == ""


def is_time(text: str) -> bool:
    return _TIME_RE.fullmatch(normalize(text)) is not None


def split_when(text: str) -> tuple[str, str] | None:
    """``明天 下午3点`` or ``明天下午3点`` → (``明天``, ``下午3点``); None unless both are there."""
    text = normalize(text)
    found = match_date(text)
    if found is None or not found[1] or _TIME_RE.fullmatch(found[1]) is None:
        return None
    return found[0].group(0), found[1]


# ---------------------------------------------------------------------- times
def parse_clock(token: str) -> tuple[int, int]:
    """A time of day → (hour, minute) on a 24-hour clock; :class:`WhenError` if unusable."""
    t = normalize(token)
    m = _TIME_RE.fullmatch(t)
    if not m:
        raise WhenError(f"无法识别时间“{token}”。")
    if m.group("h") is not None:
        hour, minute = int(m.group("h")), int(m.group("m"))
        padded = len(m.group("h")) == 2
    else:
        hour_n = small_int(m.group("h2"))
        minute_text = m.group("m2") or m.group("m3")
        minute_n = 30 if m.group("half") else small_int(minute_text) if minute_text else 0
        if hour_n is None or minute_n is None:
            raise WhenError(f"无法识别时间“{token}”。")
        hour, minute, padded = hour_n, minute_n, False
    if hour > 23 or minute > 59:
        raise WhenError(f"时间“{token}”无效：小时应为 0至23，分钟应为 00至59。")
    word = m.group("ap")
    if word is None:
        if 1 <= hour <= 6 and not padded:
            raise WhenError(
                f"时间“{token}”不明确：没有写明上午还是下午。请写 下午{t}（即 {hour + 12}:{minute:02d}）"
                f"或 上午{t}（即 {hour:02d}:{minute:02d}）。"
            )
        return hour, minute
    period = _PERIOD[word]
    if period == "am" and hour <= 12:
        return hour, minute
    if period == "noon" and hour in (11, 12, 13, 14):
        return hour, minute
    if period == "noon" and hour in (1, 2):
        return hour + 12, minute
    if period == "pm" and 1 <= hour <= 11:
        return hour + 12, minute
    if period == "pm" and hour >= 12:
        return hour, minute
    if period == "evening" and 5 <= hour <= 11:
        return hour + 12, minute
    if period == "evening" and hour >= 17:
        return hour, minute
    raise WhenError(f"时间“{token}”前后矛盾：“{word}”和{hour}点对不上，请写 24 小时制时间（如 15:00）。")


# ---------------------------------------------------------------------- dates
def _impossible(token: str, year: int | None, month: int, day: int) -> WhenError | None:
    """Why ``month``/``day`` (in ``year``, or in any year) does not exist; None if it does."""
    if not 1 <= month <= 12:
        return WhenError(f"日期“{token}”不存在：月份应为 1至12。")
    try:
        date(2000 if year is None else year, month, day)  # 2000 is a leap year
    except ValueError:
        where = f"{year}年{month}月" if year is not None else f"{month}月"
        return WhenError(f"日期“{token}”不存在：{where}没有{day}日。")
    return None


def resolve(date_token: str, time_token: str, now: datetime, tz: ZoneInfo) -> datetime:
    """A typed date and time → the meeting's start (aware UTC), strictly after ``now``.

    The date is checked first (an impossible date is reported even with a bad time), then the
    time, then whether the moment is still ahead."""
    d = normalize(date_token)
    found = match_date(d)
    if found is None or found[1]:
        raise WhenError(f"无法识别日期“{date_token}”。")
    g = {k: v for k, v in found[0].groupdict().items() if v is not None}
    month_text = g.get("mo") or g.get("mo2") or g.get("mo3")
    year_text = g.get("y") or g.get("y3")
    month = day = year = None
    if month_text is not None:
        month, day = small_int(month_text), small_int(g.get("d") or g.get("d2") or g.get("d3") or "")
        if month is None or day is None:
            raise WhenError(f"无法识别日期“{date_token}”。")
        year = _year(year_text) if year_text else None
        problem = _impossible(date_token, year, month, day)
        if problem:
            raise problem
    hour, minute = parse_clock(time_token)
    today = now.astimezone(tz).date()

    def at(day_: date) -> datetime:
        return datetime.combine(day_, time(hour, minute), tzinfo=tz).astimezone(timezone.utc)

    hint = ""
    if "rel" in g:
        start = at(today + relativedelta(days=_RELATIVE[g["rel"]]))
    elif "wd" in g:
        wd = weekdays[WEEKDAY_BY_CHAR[g["wd"]]]
        ahead = g.get("wk", "").count("下")
        if ahead:
            monday = today + relativedelta(weekday=weekdays[0](-1))
            start = at(monday + relativedelta(weeks=ahead, weekday=wd(+1)))
        else:  # 周五, 本周五, 这周五: the next such day whose time is still ahead
            start = at(today + relativedelta(weekday=wd(+1)))
            if start <= now:
                start = at(today + relativedelta(days=1, weekday=wd(+1)))
    elif year is not None:
        start = at(date(year, month, day))
    else:
        start, hint = _nearest(date_token, month, day, today, at, now)
    if start <= now:
        raise WhenError(
            f"会议时间“{date_token} {time_token}”是 {format_local(start, tz)}，已经过去{hint}。请填写将来的时间。"
        )
    return start


def _nearest(
    token: str, month: int, day: int, today: date, at: Callable[[date], datetime], now: datetime
) -> tuple[datetime, str]:
    """A month and day without a year: its next occurrence — this year's while it is ahead,
    else next year's (1月5日 typed in December is next January; the confirmation shows the
    year, so a slip is seen at once). Today's date keeps today (a time already past is then
    refused). Also, for a refusal, the date to write for next year's."""
    this, next_ = (_maybe(at, year, month, day) for year in (today.year, today.year + 1))
    if this is None and next_ is None:
        raise WhenError(f"日期“{token}”不存在：{today.year}年和{today.year + 1}年的{month}月都没有{day}日。")
    if this is not None and (this > now or this.date() == today or next_ is None):
        hint = f"；如指{next_.year}年，请写 {next_.year}年{month}月{day}日" if next_ is not None else ""
        return this, hint
    assert next_ is not None
    return next_, ""


def _maybe(at: Callable[[date], datetime], year: int, month: int, day: int) -> datetime | None:
    try:
        return at(date(year, month, day))
    except ValueError:
        return None  # 2月29日 outside leap years
