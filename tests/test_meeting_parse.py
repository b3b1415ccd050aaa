"""Unit tests of the /meeting add parser: valid input, recurrence rules, every error path."""
from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

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
    ("支委会 2025-03-12 下午三点 三楼会议室 研究发展党员工作", "无法识别时间"),
    ("支委会 2025-03-01 15:00 三楼会议室 研究发展党员工作", "已经过去"),
    ("支委会 2025-03-03 10:00 三楼会议室 研究发展党员工作", "已经过去"),
    ("支委会 明天 15:00 三楼会议室 研究发展党员工作", "无法识别日期"),
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
