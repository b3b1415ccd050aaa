"""Unit tests of the /meeting add parser: valid input, recurrence rules, every error path."""
from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bot.meetings.dates import small_int
from bot.meetings.parse import (
    ParseError,
    Recurrence,
    canonical_type,
    format_local,
    format_offset,
    parse_add,
    parse_meeting_number,
)

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=TZ).astimezone(timezone.utc)  # Monday morning
HASH_NUMBER = re.compile(r"#\s*\d")


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TZ).astimezone(timezone.utc)


def upcoming(draft, n: int = 4) -> list[datetime]:
    assert draft.recurrence is not None
    return list(itertools.islice(draft.recurrence.occurrences(TZ, draft.starts_at - timedelta(seconds=1)), n))


# ---------------------------------------------------------------------- one-off meetings
def test_one_off_meeting() -> None:
    d = parse_add("支委会 2025-03-12 15:00 三楼会议室 研究发展党员工作", NOW, TZ)
    assert (d.meeting_type, d.known_type, d.place, d.topic) == ("支委会", True, "三楼会议室", "研究发展党员工作")
    assert d.starts_at == at(2025, 3, 12, 15) and d.starts_at.tzinfo == timezone.utc
    assert d.starts_at == datetime(2025, 3, 12, 7, 0, tzinfo=timezone.utc)  # Shanghai is UTC+8
    assert d.recurrence is None


def test_topic_keeps_its_spaces_and_aliases_are_recognised() -> None:
    d = parse_add("支部委员会会议  2025-03-12  15:00 三楼会议室  研究 发展党员 工作", NOW, TZ)
    assert d.meeting_type == "支委会" and d.known_type
    assert d.topic == "研究 发展党员 工作"
    assert canonical_type("党支部党员大会") == ("支部党员大会", True)
    assert canonical_type("党日活动") == ("主题党日", True)
    assert canonical_type("民主评议党员") == ("民主评议", True)
    assert canonical_type("党员大会") == ("党员大会", True)


def test_unknown_type_is_accepted_as_written() -> None:
    d = parse_add("读书分享会 2025-03-12 15:00 图书室 读《共产党宣言》", NOW, TZ)
    assert (d.meeting_type, d.known_type) == ("读书分享会", False)


@pytest.mark.parametrize(
    "when",
    ["2025-03-12 15:00", "2025/3/12 15:00", "2025年3月12日 15:00", "2025-03-12 15：00", "２０２５-０３-１２ １５:００"],
)
def test_date_and_time_spellings(when: str) -> None:
    assert parse_add(f"支委会 {when} 三楼 议题", NOW, TZ).starts_at == at(2025, 3, 12, 15)


def test_time_just_after_now_is_accepted() -> None:
    assert parse_add("支委会 2025-03-03 10:01 三楼 议题", NOW, TZ).starts_at == at(2025, 3, 3, 10, 1)


# ---------------------------------------------------------------------- recurring meetings
def test_weekly() -> None:
    d = parse_add("主题党日 每周五 09:00 党员活动室 集中学习", NOW, TZ)
    assert d.recurrence == Recurrence(freq="week", hour=9, minute=0, weekday=4)
    assert upcoming(d) == [at(2025, 3, 7, 9), at(2025, 3, 14, 9), at(2025, 3, 21, 9), at(2025, 3, 28, 9)]
    assert d.recurrence.label() == "每周五 09:00"
    assert parse_add("主题党日 每星期日 09:00 活动室 学习", NOW, TZ).recurrence.weekday == 6


def test_weekly_today_later_and_earlier() -> None:
    assert parse_add("支委会 每周一 11:00 三楼 议题", NOW, TZ).starts_at == at(2025, 3, 3, 11)
    assert parse_add("支委会 每周一 09:00 三楼 议题", NOW, TZ).starts_at == at(2025, 3, 10, 9)


def test_monthly_nth_weekday() -> None:
    d = parse_add("支委会 每月第2个周三 15:00 三楼会议室 研究发展党员工作", NOW, TZ)
    assert d.recurrence.label() == "每月第2个周三 15:00"
    assert upcoming(d) == [at(2025, 3, 12, 15), at(2025, 4, 9, 15), at(2025, 5, 14, 15), at(2025, 6, 11, 15)]
    assert d.recurrence.rrule() == {"FREQ": "MONTHLY", "BYDAY": "2WE"}
    assert parse_add("支委会 每月第二个星期三 15:00 三楼 议题", NOW, TZ).recurrence == d.recurrence


def test_monthly_last_weekday_and_day_of_month() -> None:
    last = parse_add("党小组会 每月最后一个周五 16:00 二楼 学习", NOW, TZ)
    assert upcoming(last, 3) == [at(2025, 3, 28, 16), at(2025, 4, 25, 16), at(2025, 5, 30, 16)]
    assert last.recurrence.rrule()["BYDAY"] == "-1FR"
    day = parse_add("党小组会 每月15日 16:00 二楼 学习", NOW, TZ)
    assert upcoming(day, 2) == [at(2025, 3, 15, 16), at(2025, 4, 15, 16)]
    assert day.recurrence.rrule() == {"FREQ": "MONTHLY", "BYMONTHDAY": 15}
    assert parse_add("党小组会 每月二十八号 16:00 二楼 学习", NOW, TZ).recurrence.day == 28


def test_quarterly() -> None:
    d = parse_add("支部党员大会 每季度首月第1个周一 09:00 大会议室 听取工作报告", NOW, TZ)
    assert upcoming(d) == [at(2025, 4, 7, 9), at(2025, 7, 7, 9), at(2025, 10, 6, 9), at(2026, 1, 5, 9)]
    assert d.recurrence.label() == "每季度首月第1个周一 09:00"
    assert d.recurrence.rrule() == {"FREQ": "YEARLY", "BYMONTH": [1, 4, 7, 10], "BYDAY": "1MO"}
    end = parse_add("支部党员大会 每季度末月最后一个周五 15:00 大会议室 学习", NOW, TZ)
    assert upcoming(end, 2) == [at(2025, 3, 28, 15), at(2025, 6, 27, 15)]
    middle = parse_add("支部党员大会 每季度第2个月10日 15:00 大会议室 学习", NOW, TZ)
    assert upcoming(middle, 2) == [at(2025, 5, 10, 15), at(2025, 8, 10, 15)]


def test_yearly() -> None:
    d = parse_add("组织生活会 每年12月第2个周五 14:30 大会议室 年度组织生活会", NOW, TZ)
    assert upcoming(d, 2) == [at(2025, 12, 12, 14, 30), at(2026, 12, 11, 14, 30)]
    assert d.recurrence.rrule() == {"FREQ": "YEARLY", "BYMONTH": 12, "BYDAY": "2FR"}
    july = parse_add("党课 每年七月一日 09:00 报告厅 七一党课", NOW, TZ)
    assert upcoming(july, 2) == [at(2025, 7, 1, 9), at(2026, 7, 1, 9)]


def test_recurrence_round_trips_through_json() -> None:
    d = parse_add("支委会 每月第2个周三 15:00 三楼 议题", NOW, TZ)
    assert Recurrence.model_validate_json(d.recurrence.model_dump_json()) == d.recurrence


# ---------------------------------------------------------------------- errors
ERRORS = [
    ("支委会 2025-13-45 25:99 三楼会议室 研究发展党员工作", "不存在"),
    ("支委会 2025-02-30 15:00 三楼会议室 研究发展党员工作", "不存在"),
    ("支委会 2025-03-12 25:99 三楼会议室 研究发展党员工作", "无效"),
    ("支委会 2025-03-12 15:7 三楼会议室 研究发展党员工作", "无法识别时间"),
    ("支委会 2025-03-12 下午茶 三楼会议室 研究发展党员工作", "无法识别时间"),
    ("支委会 2025-03-01 15:00 三楼会议室 研究发展党员工作", "已经过去"),
    ("支委会 2025-03-03 10:00 三楼会议室 研究发展党员工作", "已经过去"),
    ("支委会 明儿 15:00 三楼会议室 研究发展党员工作", "无法识别日期"),
    ("支委会 #12 15:00 三楼会议室 研究发展党员工作", "无法识别日期"),
    ("支委会 2025-03-12 15:00", "缺少地点"),
    ("支委会 2025-03-12 15:00 三楼会议室", "缺少议题"),
    ("支委会 2025-03-12", "缺少时间"),
    ("支委会", "缺少日期"),
    ("", "请写明"),
    ("2025-03-12 15:00 三楼会议室 研究发展党员工作", "缺少会议类型"),
    ("15:00 三楼会议室 研究发展党员工作", "缺少会议类型"),
    ("每月第2个周三 15:00 三楼会议室 研究发展党员工作", "缺少会议类型"),
    ("这是一个非常非常非常非常非常非常长的会议类型名称 2025-03-12 15:00 三楼 议题", "太长"),
    ("支委会 每月第5个周三 15:00 三楼会议室 研究发展党员工作", "第1至第4个"),
    ("支委会 每月31日 15:00 三楼会议室 研究发展党员工作", "1至28日"),
    ("支委会 每年13月1日 15:00 三楼会议室 研究发展党员工作", "1至12"),
    ("支委会 每两周 15:00 三楼会议室 研究发展党员工作", "无法识别重复规则"),
    ("支委会 每月第2个周三 25:00 三楼会议室 研究发展党员工作", "无效"),
    ("支委会 每月第2个周三 15:00 三楼会议室", "缺少议题"),
    ("支委会 每月第2个周三 15:00", "缺少地点"),
    ("支委会 每月第2个周三", "缺少时间"),
]


@pytest.mark.parametrize(("args", "expected"), ERRORS)
def test_errors_explain_and_show_a_valid_example(args: str, expected: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_add(args, NOW, TZ)
    message = str(info.value)
    assert expected in message, message
    assert not HASH_NUMBER.search(message), message
    assert "正确格式：/meeting add 类型 日期 时间 地点 议题" in message
    examples = re.findall(r"例如：/meeting add (.+)", message)
    assert examples, message
    # every example shown is itself accepted (its date is a week ahead of "now")
    for example in examples:
        parse_add(example, NOW, TZ)


def test_example_follows_the_clock() -> None:
    later = NOW + timedelta(days=400)
    with pytest.raises(ParseError) as info:
        parse_add("支委会 2025-03-12 15:00 三楼 议题", later, TZ)
    example = re.search(r"例如：/meeting add (.+)", str(info.value)).group(1)
    assert parse_add(example, later, TZ).starts_at > later


# ---------------------------------------------------------------------- numbers and display
def test_meeting_numbers() -> None:
    assert parse_meeting_number("12") == 12
    assert parse_meeting_number("#12") == 12
    assert parse_meeting_number("＃１２") == 12
    assert parse_meeting_number(" 7 ") == 7
    for bad in ("", "abc", "#", "12a", "-3", "1 2"):
        assert parse_meeting_number(bad) is None


def test_display_helpers() -> None:
    assert format_local(at(2025, 3, 12, 15), TZ) == "2025-03-12（星期三）15:00"
    assert format_local(at(2025, 3, 16, 9, 5), TZ) == "2025-03-16（星期日）09:05"
    assert format_offset(timedelta(days=1)) == "1天"
    assert format_offset(timedelta(hours=2)) == "2小时"
    assert format_offset(timedelta(minutes=90)) == "1小时30分钟"
    assert format_offset(timedelta(seconds=45)) == "45秒"


def test_last_weekday_covers_every_month_length() -> None:
    rec = Recurrence(freq="month", hour=9, minute=0, weekday=6, nth=-1)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    dates = [t.astimezone(TZ).date() for t in itertools.islice(rec.occurrences(TZ, start), 24)]
    assert len({(d.year, d.month) for d in dates}) == 24
    for d in dates:
        assert d.weekday() == 6 and (d + timedelta(days=7)).month != d.month


# ---------------------------------------------------------------------- dates as people type them
MONDAY = NOW  # 2025-03-03 10:00, a Monday
SUNDAY = at(2026, 12, 6, 10)  # a Sunday: weeks start on Monday, so 下周 begins tomorrow
YEAR_END = at(2026, 12, 30, 16)  # a Wednesday afternoon, two days before New Year
LEAP_AHEAD = at(2027, 12, 1, 10)  # 2月29日 exists next year only


def starts(when: str, now: datetime = MONDAY) -> datetime:
    return parse_add(f"支委会 {when} 三楼会议室 研究工作", now, TZ).starts_at


DATE_FORMS = [
    # relative days
    (MONDAY, "今天 15:00", at(2025, 3, 3, 15)),
    (MONDAY, "今日 11:00", at(2025, 3, 3, 11)),
    (MONDAY, "明天 15:00", at(2025, 3, 4, 15)),
    (MONDAY, "明日 15:00", at(2025, 3, 4, 15)),
    (MONDAY, "后天 15:00", at(2025, 3, 5, 15)),
    (MONDAY, "大后天 15:00", at(2025, 3, 6, 15)),
    # a weekday: the next such day whose time is still ahead (today included)
    (MONDAY, "周一 15:00", at(2025, 3, 3, 15)),
    (MONDAY, "周一 09:00", at(2025, 3, 10, 9)),
    (MONDAY, "周五 15:00", at(2025, 3, 7, 15)),
    (MONDAY, "星期五 15:00", at(2025, 3, 7, 15)),
    (MONDAY, "礼拜五 15:00", at(2025, 3, 7, 15)),
    (MONDAY, "本周五 15:00", at(2025, 3, 7, 15)),
    (MONDAY, "这周五 15:00", at(2025, 3, 7, 15)),
    (MONDAY, "这个星期五 15:00", at(2025, 3, 7, 15)),
    (MONDAY, "周日 15:00", at(2025, 3, 9, 15)),
    (MONDAY, "星期天 15:00", at(2025, 3, 9, 15)),
    (MONDAY, "礼拜天 15:00", at(2025, 3, 9, 15)),
    # next week / the week after (weeks start on Monday)
    (MONDAY, "下周一 15:00", at(2025, 3, 10, 15)),
    (MONDAY, "下周三 15:00", at(2025, 3, 12, 15)),
    (MONDAY, "下个星期三 15:00", at(2025, 3, 12, 15)),
    (MONDAY, "下礼拜三 15:00", at(2025, 3, 12, 15)),
    (MONDAY, "下周日 15:00", at(2025, 3, 16, 15)),
    (MONDAY, "下下周一 15:00", at(2025, 3, 17, 15)),
    (MONDAY, "下下周三 15:00", at(2025, 3, 19, 15)),
    # on a Sunday
    (SUNDAY, "今天 15:00", at(2026, 12, 6, 15)),
    (SUNDAY, "周日 15:00", at(2026, 12, 6, 15)),
    (SUNDAY, "周日 09:00", at(2026, 12, 13, 9)),
    (SUNDAY, "本周日 09:00", at(2026, 12, 13, 9)),
    (SUNDAY, "周一 15:00", at(2026, 12, 7, 15)),
    (SUNDAY, "本周五 15:00", at(2026, 12, 11, 15)),
    (SUNDAY, "下周一 15:00", at(2026, 12, 7, 15)),
    (SUNDAY, "下周三 15:00", at(2026, 12, 9, 15)),
    (SUNDAY, "下周日 15:00", at(2026, 12, 13, 15)),
    (SUNDAY, "下下周一 15:00", at(2026, 12, 14, 15)),
    (SUNDAY, "下下周日 15:00", at(2026, 12, 20, 15)),
    # month and day: this year's while ahead
    (MONDAY, "12月8日 15:00", at(2025, 12, 8, 15)),
    (MONDAY, "12月8号 15:00", at(2025, 12, 8, 15)),
    (MONDAY, "12.8 15:00", at(2025, 12, 8, 15)),
    (MONDAY, "12-08 15:00", at(2025, 12, 8, 15)),
    (MONDAY, "12/8 15:00", at(2025, 12, 8, 15)),
    (MONDAY, "12月8 15:00", at(2025, 12, 8, 15)),
    (MONDAY, "3月3日 15:00", at(2025, 3, 3, 15)),
    (MONDAY, "十二月八日 下午三点", at(2025, 12, 8, 15)),
    # full dates
    (MONDAY, "2026年12月8日 15:00", at(2026, 12, 8, 15)),
    (MONDAY, "2026-12-08 15:00", at(2026, 12, 8, 15)),
    (MONDAY, "2026/12/8 15:00", at(2026, 12, 8, 15)),
    (MONDAY, "2026.12.8 15:00", at(2026, 12, 8, 15)),
    (MONDAY, "二〇二六年十二月八日 15:00", at(2026, 12, 8, 15)),
    # the year rolls over
    (YEAR_END, "明天 15:00", at(2026, 12, 31, 15)),
    (YEAR_END, "后天 15:00", at(2027, 1, 1, 15)),
    (YEAR_END, "大后天 15:00", at(2027, 1, 2, 15)),
    (YEAR_END, "周三 17:00", at(2026, 12, 30, 17)),
    (YEAR_END, "周三 15:00", at(2027, 1, 6, 15)),
    (YEAR_END, "周五 15:00", at(2027, 1, 1, 15)),
    (YEAR_END, "下周一 15:00", at(2027, 1, 4, 15)),
    (YEAR_END, "下下周一 15:00", at(2027, 1, 11, 15)),
    (YEAR_END, "12月31日 15:00", at(2026, 12, 31, 15)),
    (YEAR_END, "1月5日 15:00", at(2027, 1, 5, 15)),
    (YEAR_END, "1.5 15:00", at(2027, 1, 5, 15)),
    (YEAR_END, "01-05 15:00", at(2027, 1, 5, 15)),
    (YEAR_END, "1/5 15:00", at(2027, 1, 5, 15)),
    (YEAR_END, "6月1日 15:00", at(2027, 6, 1, 15)),
    (YEAR_END, "2027年1月5日 15:00", at(2027, 1, 5, 15)),
    (LEAP_AHEAD, "2月29日 15:00", at(2028, 2, 29, 15)),
    # a month and day already past this year: its next occurrence, next year
    (MONDAY, "3月1日 15:00", at(2026, 3, 1, 15)),
    (YEAR_END, "12月1日 15:00", at(2027, 12, 1, 15)),
    (YEAR_END, "12.29 09:00", at(2027, 12, 29, 9)),
]


@pytest.mark.parametrize(("now", "when", "expected"), DATE_FORMS, ids=[f"{n:%a}-{w}" for n, w, _ in DATE_FORMS])
def test_dates_as_people_type_them(now: datetime, when: str, expected: datetime) -> None:
    assert starts(when, now) == expected


TIME_FORMS = [
    ("15:00", 15, 0), ("15：00", 15, 0), ("１５:３０", 15, 30), ("15:30", 15, 30), ("23:59", 23, 59),
    ("15点", 15, 0), ("15点半", 15, 30), ("15点30分", 15, 30), ("15点30", 15, 30), ("15点05分", 15, 5),
    ("15点5分", 15, 5), ("15点整", 15, 0), ("15时", 15, 0), ("15时30分", 15, 30),
    ("下午3点", 15, 0), ("下午3点半", 15, 30), ("下午3:30", 15, 30), ("下午 3点", 15, 0), ("下午15点", 15, 0),
    ("下午12点", 12, 0), ("上午9点", 9, 0), ("上午9点半", 9, 30), ("上午09:30", 9, 30), ("早上8点", 8, 0),
    ("中午12点", 12, 0), ("中午12点半", 12, 30), ("中午1点", 13, 0), ("晚上7点", 19, 0), ("晚上7点半", 19, 30),
    ("晚上19:00", 19, 0), ("下午三点", 15, 0), ("十五点", 15, 0), ("十五点三十分", 15, 30), ("下午两点", 14, 0),
    # without 上午/下午: 7–12 as written, 13–23 a 24-hour clock, a zero-padded hour as written
    ("7点", 7, 0), ("9点", 9, 0), ("9:00", 9, 0), ("12点", 12, 0), ("0点", 0, 0), ("03:00", 3, 0), ("06:30", 6, 30),
]


@pytest.mark.parametrize(("typed", "hour", "minute"), TIME_FORMS)
def test_times_as_people_type_them(typed: str, hour: int, minute: int) -> None:
    assert starts(f"明天 {typed}") == at(2025, 3, 4, hour, minute)


@pytest.mark.parametrize(
    ("glued", "expected"),
    [
        ("明天下午3点", at(2025, 3, 4, 15)),
        ("明天15:00", at(2025, 3, 4, 15)),
        ("周五下午3点半", at(2025, 3, 7, 15, 30)),
        ("12月8日15:00", at(2025, 12, 8, 15)),
        ("下周三上午9点", at(2025, 3, 12, 9)),
        ("2026年12月8日下午3点", at(2026, 12, 8, 15)),
    ],
)
def test_time_may_follow_the_date_without_a_space(glued: str, expected: datetime) -> None:
    d = parse_add(f"支委会 {glued} 三楼会议室 研究 工作", MONDAY, TZ)
    assert (d.starts_at, d.place, d.topic) == (expected, "三楼会议室", "研究 工作")


def test_recurring_rules_take_the_new_time_forms() -> None:
    assert parse_add("主题党日 每周五 下午3点 活动室 学习", MONDAY, TZ).recurrence == Recurrence(
        freq="week", hour=15, minute=0, weekday=4
    )
    glued = parse_add("支委会 每月第2个周三下午3点半 三楼 议题", MONDAY, TZ)
    assert glued.recurrence == Recurrence(freq="month", hour=15, minute=30, weekday=2, nth=2)
    assert glued.starts_at == at(2025, 3, 12, 15, 30) and glued.place == "三楼"
    with pytest.raises(ParseError, match="不明确") as info:
        parse_add("主题党日 每周五 3点 活动室 学习", MONDAY, TZ)
    assert "时间可写：" in str(info.value) and "日期可写：" not in str(info.value)  # no dates in a rule


def test_a_type_that_starts_like_a_weekday_is_still_a_type() -> None:
    d = parse_add("周五学习会 明天 15:00 三楼 议题", MONDAY, TZ)
    assert d.meeting_type == "周五学习会" and d.starts_at == at(2025, 3, 4, 15)


DATE_REFUSALS = [
    # in the past
    (MONDAY, "今天 09:00", ["已经过去", "2025-03-03（星期一）09:00"]),
    (MONDAY, "今天 10:00", ["已经过去"]),
    (MONDAY, "今天 上午9点", ["已经过去"]),
    (MONDAY, "3月3日 09:30", ["已经过去"]),
    (MONDAY, "2025-03-01 15:00", ["已经过去"]),
    (YEAR_END, "12.30 15:00", ["已经过去"]),
    # impossible
    (MONDAY, "2月30日 15:00", ["不存在", "2月没有30日"]),
    (MONDAY, "13月1日 15:00", ["不存在", "1至12"]),
    (MONDAY, "十三月一日 15:00", ["不存在", "1至12"]),
    (MONDAY, "4月31日 15:00", ["不存在", "4月没有31日"]),
    (MONDAY, "2025-02-29 15:00", ["不存在", "2025年2月没有29日"]),
    (MONDAY, "2月29日 15:00", ["不存在", "2025年和2026年的2月都没有29日"]),
    (MONDAY, "2.30 15:00", ["不存在"]),
    # ambiguous: 1 to 6 without 上午/下午
    (MONDAY, "明天 3点", ["不明确", "下午3点（即 15:00）", "上午3点（即 03:00）"]),
    (MONDAY, "明天 3点半", ["不明确", "15:30"]),
    (MONDAY, "明天 3:30", ["不明确", "15:30"]),
    (MONDAY, "明天 1点", ["不明确"]),
    (MONDAY, "明天 6点", ["不明确"]),
    (MONDAY, "明天 三点", ["不明确"]),
    (MONDAY, "下周三 3点", ["不明确"]),
    # contradictory or out of range
    (MONDAY, "明天 上午15点", ["前后矛盾"]),
    (MONDAY, "明天 晚上2点", ["前后矛盾"]),
    (MONDAY, "明天 24:00", ["无效"]),
    (MONDAY, "明天 15:60", ["无效"]),
    (MONDAY, "明天 25点", ["无效"]),
    # garbage
    (MONDAY, "明儿 15:00", ["无法识别日期“明儿”"]),
    (MONDAY, "某天 15:00", ["无法识别日期"]),
    (MONDAY, "周八 15:00", ["无法识别日期"]),
    (MONDAY, "12月一一日 15:00", ["无法识别日期"]),
    (MONDAY, "12..8 15:00", ["无法识别日期"]),
    (MONDAY, "12.815:00", ["无法识别日期"]),  # a date ending in a digit needs a space before the time
    (MONDAY, "明天 下午茶", ["无法识别时间“下午茶”"]),
    (MONDAY, "明天下班后", ["无法识别时间“下班后”"]),
    (MONDAY, "明天 15点5", ["无法识别时间"]),
    (MONDAY, "明天 一一点", ["无法识别时间"]),
    (MONDAY, "15:00", ["缺少日期"]),
    (MONDAY, "下午3点", ["缺少日期"]),
]


@pytest.mark.parametrize(("now", "when", "expected"), DATE_REFUSALS, ids=[w for _, w, _ in DATE_REFUSALS])
def test_date_refusals_give_the_reason_and_the_accepted_forms(now: datetime, when: str, expected: list[str]) -> None:
    with pytest.raises(ParseError) as info:
        starts(when, now)
    message = str(info.value)
    for part in expected:
        assert part in message, message
    assert "日期可写：今天、明天、后天、大后天；周五、本周五、下周三、下下周一；" in message
    assert "时间可写：15:00、15点、15点半、下午3点" in message and "1至6点请写明上午或下午" in message
    assert not HASH_NUMBER.search(message), message
    # every date form listed is itself accepted, and so is the example
    listed = re.search(r"日期可写：(.+)。", message).group(1)
    for form in re.split(r"[、；]", listed):
        assert starts(f"{form} 23:59", now) > now, form
    for example in re.findall(r"例如：/meeting add (.+)", message):
        parse_add(example, now, TZ)


def test_strict_small_numbers() -> None:
    assert [small_int(t) for t in ("8", "08", "八", "十", "十二", "二十三", "三十一", "零五", "两")] == [
        8, 8, 8, 10, 12, 23, 31, 5, 2
    ]
    assert [small_int(t) for t in ("一一", "十十", "123", "", "廿")] == [None] * 5
