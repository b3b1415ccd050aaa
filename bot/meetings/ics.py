"""iCalendar (.ics) export of a meeting, built with the ``icalendar`` package.

One VEVENT: DTSTART in the meeting's timezone (with its VTIMEZONE), a default length of one hour,
SUMMARY = meeting type, LOCATION = place, DESCRIPTION = topic, a UID that stays the same for the
same meeting (so re-importing updates rather than duplicates), an RRULE for recurring meetings and
one VALARM per reminder offset.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from icalendar import Alarm, Calendar, Event, vRecur

from bot.meetings.repo import MeetingInfo

DEFAULT_DURATION = timedelta(hours=1)
PRODID = "-//dangjian-bot//meetings//ZH"


def meeting_uid(meeting_id: int) -> str:
    return f"meeting-{meeting_id}@dangjian-bot"


def ics_filename(meeting_id: int) -> str:
    return f"meeting-{meeting_id}.ics"


def build_ics(meeting: MeetingInfo, *, offsets: list[timedelta], now: datetime) -> bytes:
    """The calendar file for ``meeting`` (UTF-8 bytes, CRLF line endings as RFC 5545 wants)."""
    tz = meeting.tz
    start = meeting.starts_at.astimezone(tz)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    event = Event()
    event.add("uid", meeting_uid(meeting.id))
    event.add("dtstamp", now)
    event.add("dtstart", start)
    event.add("dtend", start + DEFAULT_DURATION)
    event.add("summary", meeting.meeting_type)
    event.add("location", meeting.place)
    event.add("description", meeting.topic)
    if meeting.recurrence is not None:
        event.add("rrule", vRecur(meeting.recurrence.rrule()))
    for offset in offsets:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", f"{meeting.meeting_type}：{meeting.topic}")
        alarm.add("trigger", -offset)
        event.add_component(alarm)
    cal.add_component(event)
    cal.add_missing_timezones()
    return cal.to_ical()
