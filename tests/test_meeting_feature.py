"""The meetings feature through a real :class:`bot.core.engine.Core`, and the meeting rules file.

Also home of the fake article lookup (texts copied from the real documents in the corpus) that
the scheduler tests import.
"""
from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
from dateutil.rrule import rrulestr

from bot.core.models import Capabilities, ChatType, OutgoingMessage
from bot.meetings import MeetingRules, MeetingsFeature
from bot.meetings import tables as meeting_tables
from bot.meetings.repo import MeetingRepo
from bot.meetings.rules import quote_occurs
from bot.settings import Settings
from bot.store.db import Database
from retrieval.models import Article
from tests import harness
from tests.harness import TestBot

RULES_PATH = Path(__file__).resolve().parent.parent / "prompts" / "meeting_rules.yaml"
TZ = ZoneInfo("Asia/Shanghai")
HASH_NUMBER = re.compile(r"#\s*\d")

TITLES = {
    "zhibu-gongzuo-tiaoli-2018": "中国共产党支部工作条例（试行）",
    "dangyuan-jiaoyu-guanli-tiaoli-2019": "中国共产党党员教育管理工作条例",
    "liaoning-jgswglj-dangzu-xize-2019": "中共辽宁省机关事务管理局党组工作细则(试行)",
}

# Article texts copied verbatim from /work/shared/corpus (extra/zhibu_gongzuo_tiaoli_2018.txt,
# extra/dangyuan_jiaoyu_guanli_gongzuo_tiaoli_2019.txt, seeds/001_078edf609a334926.txt).
_TEXTS: dict[tuple[str, str], str] = {
    ('zhibu-gongzuo-tiaoli-2018', '第十一条'): (
        "党支部党员大会是党支部的议事决策机构，由全体党员参加，一般每季度召开1次。\n"
        "党支部党员大会的职权是：听取和审查党支部委员会的工作报告；按照规定开展党支部选举工作，推荐出席上级党代表大会的代表候选人，选举出席上级党代表大会的代表；讨论和表决接收预备党员和预备党员转正、延长预备期或者取消预备党员资格；讨论决定对党员的表彰表扬、组织处置和纪律处分；决定其他重要事项。\n"
        "村、社区重要事项以及与群众利益密切相关的事项，必须经过党支部党员大会讨论。\n"
        "党支部党员大会议题提交表决前，应当经过充分讨论。表决必须有半数以上有表决权的党员到会方可进行，赞成人数超过应到会有表决权的党员的半数为通过。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十二条'): (
        "党支部委员会是党支部日常工作的领导机构。\n"
        "党支部委员会会议一般每月召开1次，根据需要可以随时召开，对党支部重要工作进行讨论、作出决定等。党支部委员会会议须有半数以上委员到会方可进行。重要事项提交党员大会决定前，一般应当经党支部委员会会议讨论。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十三条'): (
        "党员人数较多或者党员工作地、居住地比较分散的党支部，按照便于组织开展活动原则，应当划分若干党小组，并设立党小组组长。党小组组长由党支部指定，也可以由所在党小组党员推荐产生。\n"
        "党小组主要落实党支部工作要求，完成党支部安排的任务。\n"
        "党小组会一般每月召开1次，组织党员参加政治学习、谈心谈话、开展批评和自我批评等。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十六条'): (
        "党支部应当组织党员按期参加党员大会、党小组会和上党课，定期召开党支部委员会会议。\n"
        "“三会一课”应当突出政治学习和教育，突出党性锻炼，以“两学一做”为主要内容，结合党员思想和工作实际，确定主题和具体方式，做到形式多样、氛围庄重。\n"
        "党课应当针对党员思想和工作实际，回应普遍关心的问题，注重身边人讲身边事，增强吸引力感染力。党员领导干部应当定期为基层党员讲党课，党委（党组）书记每年至少讲1次党课。\n"
        "党支部每月相对固定1天开展主题党日，组织党员集中学习、过组织生活、进行民主议事和志愿服务等。主题党日开展前，党支部应当认真研究确定主题和内容；开展后，应当抓好议定事项的组织落实。\n"
        "对经党组织同意可以不转接组织关系的党员，所在单位党组织可以将其纳入一个党支部或者党小组，参加组织生活。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十七条'): (
        "党支部每年至少召开1次组织生活会，一般安排在第四季度，也可以根据工作需要随时召开。组织生活会一般以党支部党员大会、党支部委员会会议或者党小组会形式召开。\n"
        "组织生活会应当确定主题，会前认真学习，谈心谈话，听取意见；会上查摆问题，开展批评和自我批评，明确整改方向；会后制定整改措施，逐一整改落实。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十八条'): (
        "党支部一般每年开展1次民主评议党员，组织党员对照合格党员标准、对照入党誓词，联系个人实际进行党性分析。\n"
        "党支部召开党员大会，按照个人自评、党员互评、民主测评的程序，组织党员进行评议。党员人数较多的党支部，个人自评和党员互评可以在党小组范围内进行。党支部委员会会议或者党员大会根据评议情况和党员日常表现情况，提出评定意见。\n"
        "民主评议党员可以结合组织生活会一并进行。"
    ),
    ('dangyuan-jiaoyu-guanli-tiaoli-2019', '第十六条'): (
        "党支部应当运用“三会一课”制度，对党员进行经常性的教育管理。党员应当按期参加党员大会、党小组会和上党课，进行学习交流，汇报思想、工作等情况。党员领导干部应当参加双重组织生活。\n"
        "党支部应当每月开展1次主题党日，贴近党员思想和工作实际，组织党员集中学习、过组织生活、进行民主议事和开展志愿服务等。\n"
        "党员应当按期交纳党费。党组织应当做好党费收缴、使用和管理工作。"
    ),
    ('dangyuan-jiaoyu-guanli-tiaoli-2019', '第十七条'): (
        "党支部每年至少召开1次组织生活会，也可以根据工作需要随时召开，一般以党员大会、党支部委员会会议或者党小组会形式进行。"
    ),
    ('dangyuan-jiaoyu-guanli-tiaoli-2019', '第十八条'): (
        "党支部一般每年开展1次民主评议党员。党支部召开党员大会，按照个人自评、党员互评、民主测评的程序，组织党员进行评议。党支部委员会会议或者党员大会根据评议情况和党员日常表现情况，提出评定意见。\n"
        "民主评议党员可以结合组织生活会一并进行。"
    ),
    ('liaoning-jgswglj-dangzu-xize-2019', '第十八条'): (
        "党组议事决策一般采用党组会议形式。党组会议一般每月召开1次,遇有重要情况可以随时召开。\n"
        "党组会议议题由党组书记提出,或者由其他党组成员提出建议、党组书记综合考虑后确定。会议召开的时间、议题,一般应于会议召开前两天通知党组成员,会议有关材料一般应同时送达。"
    ),
}


def make_articles(exclude_docs: frozenset[str] = frozenset()) -> dict[tuple[str, str], Article]:
    out: dict[tuple[str, str], Article] = {}
    for order, ((doc_id, label), text) in enumerate(_TEXTS.items()):
        if doc_id in exclude_docs:
            continue
        out[(doc_id, label)] = Article(
            doc_id=doc_id, doc_title=TITLES[doc_id], label=label, text=text, source=f"{doc_id}.txt", order=order,
        )
    return out


def fake_lookup(articles: dict[tuple[str, str], Article]):
    """An ArticleLookup over a dict, like the retriever's over the serving index."""

    def lookup(doc_id: str, label: str) -> Article | None:
        return articles.get((doc_id, label))

    return lookup


def load_rules(exclude_docs: frozenset[str] = frozenset()) -> MeetingRules:
    return MeetingRules.load(RULES_PATH, fake_lookup(make_articles(exclude_docs)))


class Clock:
    """An injected clock: returns ``now`` (aware UTC) until moved."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    """A Shanghai wall-clock time as an aware UTC datetime."""
    return datetime(y, mo, d, h, mi, tzinfo=TZ).astimezone(timezone.utc)


def make_settings(**overrides) -> Settings:
    values = dict(timezone="Asia/Shanghai", reminder_offsets="1d,2h", reminder_grace="6h", reminder_poll_seconds=5.0)
    values.update(overrides)
    return harness.make_settings(**values)


def make_db(tmp_path: Path, name: str = "meetings.db") -> Database:
    assert meeting_tables.MeetingRow.__tablename__ == "meetings"  # tables registered on Base
    db = Database(f"sqlite:///{tmp_path / name}")
    db.create_schema()
    return db


# ---------------------------------------------------------------------- harness
ADMIN = "telegram:900"
NO_FILES = Capabilities(files=False, max_bytes=2048)


class Harness(TestBot):
    """The harness with the meetings feature on its own SQLite file and an injected clock.

    Messages default to the group "-100", from user 42, a group admin."""

    def __init__(self, tmp_path: Path, now: datetime, rules: MeetingRules | None = None, **settings) -> None:
        self.clock = Clock(now)
        self.db = make_db(tmp_path)
        self.rules = rules or load_rules()
        self.feature = MeetingsFeature(self.db, make_settings(**settings), self.rules, clock=self.clock)
        super().__init__(self.feature, admins={ADMIN})
        self.repo = MeetingRepo(self.db)

    async def send(self, text: str, *, chat_id: str = "-100", chat_type: ChatType = ChatType.GROUP,
                   user_id: str = "42", admin: bool = True, **kw) -> list[OutgoingMessage]:
        return await self.push(text, chat=chat_id, chat_type=chat_type, user=user_id, chat_admin=admin, **kw)

    async def text(self, text: str, **kw) -> str:
        replies = await self.send(text, **kw)
        assert len(replies) == 1, replies
        assert self.qa.questions == []  # the meetings feature never asks questions
        return replies[0].text


NOW = local(2025, 3, 3, 10, 0)  # Monday 2025-03-03 10:00 in Shanghai
ADD = "/meeting add 支部委员会会议 2025-03-12 15:00 三楼会议室 研究 发展党员工作"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path, NOW)


def meeting_number(text: str) -> int:
    m = re.search(r"#(\d+)", text)
    assert m, text
    return int(m.group(1))


# ---------------------------------------------------------------------- add / list / cancel
async def test_add_confirms_with_number_and_summary(h: Harness) -> None:
    text = await h.text(ADD)
    number = meeting_number(text)
    assert text.startswith(f"已登记会议 #{number}")
    for part in ("支委会", "2025-03-12", "星期三", "15:00", "三楼会议室", "研究 发展党员工作"):
        assert part in text
    # reminders one day and two hours before, in Shanghai time
    assert "2025-03-11（星期二）15:00" in text and "2025-03-12（星期三）13:00" in text
    # the rule for 支委会 with its citation
    assert "《中国共产党支部工作条例（试行）》第十二条" in text
    stored = h.repo.get(number)
    assert stored is not None and stored.meeting_type == "支委会"
    assert stored.starts_at == local(2025, 3, 12, 15, 0)
    assert stored.ref.chat_id == "-100" and stored.ref.user_id == "42"
    reminders = h.repo.reminders_for(number)
    assert [r.remind_at for r in reminders] == [local(2025, 3, 11, 15, 0), local(2025, 3, 12, 13, 0)]


async def test_list_shows_only_live_upcoming_meetings_of_this_chat(h: Harness) -> None:
    first = meeting_number(await h.text(ADD))
    second = meeting_number(await h.text("/meeting add 主题党日 2025-03-07 09:00 党员活动室 学习二十届三中全会精神"))
    other = meeting_number(await h.text(ADD, chat_id="-200"))
    listing = await h.text("/meetings")
    assert f"#{first} 支委会" in listing and f"#{second} 主题党日" in listing
    assert f"#{other} " not in listing
    assert listing.index(f"#{second}") < listing.index(f"#{first}")  # soonest first

    reply = await h.text(f"/meeting cancel {first}")
    assert reply.startswith(f"已取消会议 #{first}")
    listing = await h.text("/meetings")
    assert f"#{first} " not in listing and f"#{second} 主题党日" in listing
    assert all(r.status == "cancelled" for r in h.repo.reminders_for(first))

    # a meeting whose time has passed is no longer listed
    h.clock.now = local(2025, 3, 8, 0, 0)
    assert f"#{second} " not in await h.text("/meetings")


async def test_cancel_accepts_hash_and_rejects_other_chats(h: Harness) -> None:
    number = meeting_number(await h.text(ADD))
    theirs = await h.text(f"/meeting cancel {number}", chat_id="-999")
    assert "没有找到" in theirs and not HASH_NUMBER.search(theirs)
    assert h.repo.get(number).status == "live"
    unknown = await h.text("/meeting cancel 4711")
    assert "没有找到" in unknown and not HASH_NUMBER.search(unknown)
    ok = await h.text(f"/meeting cancel #{number}")
    assert ok.startswith(f"已取消会议 #{number}")
    again = await h.text(f"/meeting cancel {number}")
    assert "已经取消" in again and not HASH_NUMBER.search(again)


async def test_group_non_admin_is_refused_and_nothing_is_stored(h: Harness) -> None:
    reply = await h.text(ADD, admin=False, user_id="7")
    assert "管理员" in reply and not HASH_NUMBER.search(reply)
    assert h.repo.upcoming("telegram", "-100", NOW) == []
    number = meeting_number(await h.text(ADD))
    refused = await h.text(f"/meeting cancel {number}", admin=False, user_id="7")
    assert "管理员" in refused and not HASH_NUMBER.search(refused)
    assert h.repo.get(number).status == "live"
    # but everyone may read the list
    assert f"#{number}" in await h.text("/meetings", admin=False, user_id="7")


async def test_bot_admin_and_private_chat_may_manage(h: Harness) -> None:
    as_bot_admin = await h.text(ADD, admin=False, user_id="900")
    assert as_bot_admin.startswith("已登记会议 #")
    private = await h.text(ADD, chat_id="42", chat_type=ChatType.PRIVATE, admin=False)
    number = meeting_number(private)
    assert "您即将召开的会议" in await h.text("/meetings", chat_id="42", chat_type=ChatType.PRIVATE, admin=False)
    cancelled = await h.text(f"/meeting cancel {number}", chat_id="42", chat_type=ChatType.PRIVATE, admin=False)
    assert cancelled.startswith(f"已取消会议 #{number}")


@pytest.mark.parametrize(
    "command",
    [
        "/meeting add 支委会 2025-13-45 25:99 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 2025-03-12 25:99 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 2025-03-01 15:00 三楼会议室 研究发展党员工作",  # past
        "/meeting add 支委会 2025-03-12 15:00",  # no place
        "/meeting add 支委会 2025-03-12 15:00 三楼会议室",  # no topic
        "/meeting add 2025-03-12 15:00 三楼会议室 研究发展党员工作",  # no type
        "/meeting add",
        "/meeting add 支委会 #12 15:00 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 每月第5个周三 15:00 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 每月31日 15:00 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 今天 09:00 三楼会议室 研究发展党员工作",  # today, time past
        "/meeting add 支委会 3月3日 09:00 三楼会议室 研究发展党员工作",  # today, an hour ago
        "/meeting add 支委会 2月30日 15:00 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 13月1日 15:00 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 明天 3点 三楼会议室 研究发展党员工作",  # ambiguous
        "/meeting add 支委会 明儿 15:00 三楼会议室 研究发展党员工作",
        "/meeting add 支委会 明天 下午茶 三楼会议室 研究发展党员工作",
        "/meeting cancel",
        "/meeting cancel abc",
        "/meeting cancel 99",
        "/meeting ics",
        "/meeting ics 99",
        "/meeting frobnicate #5",
    ],
)
async def test_errors_explain_show_an_example_and_store_nothing(h: Harness, command: str) -> None:
    reply = await h.text(command)
    assert not HASH_NUMBER.search(reply), reply
    assert not reply.startswith("已登记")
    if command.startswith("/meeting add"):
        example = re.search(r"例如：(/meeting add .+)", reply)
        assert example, reply
        # the example in the error is itself valid
        ok = await h.text(example.group(1), chat_id="-example")
        assert ok.startswith("已登记会议 #")
    assert h.repo.upcoming("telegram", "-100", NOW) == []


@pytest.mark.parametrize(
    ("when", "shown", "stored"),
    [
        ("明天 15:00", "2025-03-04（星期二）15:00", local(2025, 3, 4, 15, 0)),
        ("下周三 下午3点半", "2025-03-12（星期三）15:30", local(2025, 3, 12, 15, 30)),
        ("周五 晚上7点", "2025-03-07（星期五）19:00", local(2025, 3, 7, 19, 0)),
        ("12月8日 上午9点", "2025-12-08（星期一）09:00", local(2025, 12, 8, 9, 0)),
    ],
)
async def test_add_as_people_type_it_confirms_the_absolute_date_and_weekday(
    h: Harness, when: str, shown: str, stored: datetime
) -> None:
    text = await h.text(f"/meeting add 支委会 {when} 三楼会议室 研究工作")
    number = meeting_number(text)
    assert text.startswith(f"已登记会议 #{number}\n") and f"时间：{shown}\n" in text
    assert "地点：三楼会议室" in text and "议题：研究工作" in text
    assert h.repo.get(number).starts_at == stored


async def test_date_refusal_says_why_and_lists_the_forms(h: Harness) -> None:
    reply = await h.text("/meeting add 支委会 明天 3点 三楼会议室 研究工作")
    assert "不明确" in reply and "下午3点" in reply
    assert "日期可写：今天、明天" in reply and "时间可写：15:00" in reply
    assert h.repo.upcoming("telegram", "-100", NOW) == []


async def test_meeting_in_less_than_every_offset_gets_no_reminder(h: Harness) -> None:
    text = await h.text("/meeting add 支委会 2025-03-03 11:00 三楼会议室 临时研究工作")
    number = meeting_number(text)
    assert "不发送提醒" in text
    assert h.repo.reminders_for(number) == []
    # with only the 1-day offset in the past, the 2-hour one is still scheduled
    text = await h.text("/meeting add 支委会 2025-03-03 20:00 三楼会议室 研究工作")
    reminders = h.repo.reminders_for(meeting_number(text))
    assert [r.offset_seconds for r in reminders] == [7200]


async def test_recurring_meeting_confirmation_and_list(h: Harness) -> None:
    text = await h.text("/meeting add 支委会 每月第2个周三 15:00 三楼会议室 研究发展党员工作")
    number = meeting_number(text)
    assert text.startswith(f"已登记定期会议 #{number}")
    assert "每月第2个周三 15:00" in text and "2025-03-12（星期三）15:00" in text
    listing = await h.text("/meetings")
    assert f"#{number} 支委会｜每月第2个周三 15:00，下次 2025-03-12（星期三）15:00" in listing
    h.clock.now = local(2025, 3, 13, 9, 0)
    assert "下次 2025-04-09（星期三）15:00" in await h.text("/meetings")


async def test_help(h: Harness) -> None:
    for command in ("/meeting", "/meeting help"):
        text = await h.text(command)
        assert "/meeting add" in text and "每月第2个周三" in text and "/meeting cancel" in text
        assert "/meeting ics" in text and "/meeting plan" in text and "1天、2小时" in text
        assert "/meeting add 支委会 明天 15:00" in text and "下周三 下午3点半" in text
        assert "日期可写：今天、明天、后天、大后天；周五、本周五、下周三、下下周一；" in text
        for example in re.findall(r"例：(/meeting add .+)", text):  # every example works as typed
            assert (await h.text(example, chat_id="-example")).startswith("已登记")
    assert "/meetings" in await h.text("/help")


# ---------------------------------------------------------------------- ics
async def test_ics_file_is_valid_icalendar(h: Harness) -> None:
    number = meeting_number(await h.text(ADD))
    replies = await h.send(f"/meeting ics {number}")
    assert len(replies) == 1 and replies[0].file is not None
    f = replies[0].file
    assert f.filename == f"meeting-{number}.ics" and f.mime_type == "text/calendar"
    cal = icalendar.Calendar.from_ical(f.content)
    events = [c for c in cal.walk("VEVENT")]
    assert len(events) == 1
    ev = events[0]
    start = ev.decoded("dtstart")
    assert start == datetime(2025, 3, 12, 15, 0, tzinfo=TZ)
    assert str(start.tzinfo) == "Asia/Shanghai" or getattr(start.tzinfo, "key", None) == "Asia/Shanghai"
    assert str(ev["summary"]) == "支委会"
    assert str(ev["location"]) == "三楼会议室"
    assert str(ev["description"]) == "研究 发展党员工作"
    assert str(ev["uid"]) == f"meeting-{number}@dangjian-bot"
    assert len(list(cal.walk("VTIMEZONE"))) == 1
    assert len(list(ev.walk("VALARM"))) == 2
    # stable UID: the same file again (later) has the same UID
    h.clock.advance(timedelta(hours=3))
    again = (await h.send(f"/meeting ics #{number}"))[0].file
    assert str(icalendar.Calendar.from_ical(again.content).walk("VEVENT")[0]["uid"]) == str(ev["uid"])


async def test_ics_without_file_support_is_text(h: Harness) -> None:
    number = meeting_number(await h.text(ADD))
    replies = await h.send(f"/meeting ics {number}", caps=NO_FILES)
    assert replies[0].file is None
    assert f"meeting-{number}.ics" in replies[0].text and "BEGIN:VCALENDAR" in replies[0].text
    body = replies[0].text[replies[0].text.index("BEGIN:VCALENDAR"):]
    assert icalendar.Calendar.from_ical(body).walk("VEVENT")[0]["summary"] == "支委会"


async def test_ics_recurring_has_rrule(h: Harness) -> None:
    number = meeting_number(await h.text("/meeting add 党课 每季度首月第1个周一 09:00 报告厅 学习党章"))
    cal = icalendar.Calendar.from_ical((await h.send(f"/meeting ics {number}"))[0].file.content)
    ev = cal.walk("VEVENT")[0]
    assert ev.decoded("dtstart") == datetime(2025, 4, 7, 9, 0, tzinfo=TZ)
    rrule = ev["rrule"]
    assert rrule["FREQ"] == ["YEARLY"] and rrule["BYMONTH"] == [1, 4, 7, 10] and rrule["BYDAY"] == ["1MO"]
    # A calendar expanding the file's rule meets on the days the reminders are sent for.
    calendar = rrulestr(rrule.to_ical().decode(), dtstart=ev.decoded("dtstart"))
    expanded = [at.astimezone(timezone.utc) for at in itertools.islice(calendar, 8)]
    meeting = h.repo.get(number)
    assert expanded == list(itertools.islice(meeting.recurrence.occurrences(TZ, NOW), 8))
    assert expanded[1] == local(2025, 7, 7, 9, 0) and expanded[4] == local(2026, 4, 6, 9, 0)


async def test_ics_of_cancelled_or_foreign_meeting_is_refused(h: Harness) -> None:
    number = meeting_number(await h.text(ADD))
    foreign = await h.send(f"/meeting ics {number}", chat_id="-999")
    assert foreign[0].file is None and not HASH_NUMBER.search(foreign[0].text)
    await h.text(f"/meeting cancel {number}")
    cancelled = await h.send(f"/meeting ics {number}")
    assert cancelled[0].file is None and "已取消" in cancelled[0].text
    assert not HASH_NUMBER.search(cancelled[0].text)


# ---------------------------------------------------------------------- plan and rules
async def test_plan_lists_rules_with_citations_and_this_periods_meetings(h: Harness) -> None:
    number = meeting_number(await h.text(ADD))  # a 支委会 in March 2025
    text = await h.text("/meeting plan")
    for meeting_type, cite in [
        ("支部党员大会", "《中国共产党支部工作条例（试行）》第十一条"),
        ("支委会", "《中国共产党支部工作条例（试行）》第十二条"),
        ("党小组会", "《中国共产党支部工作条例（试行）》第十三条"),
        ("主题党日", "《中国共产党支部工作条例（试行）》第十六条"),
        ("组织生活会", "《中国共产党支部工作条例（试行）》第十七条"),
        ("民主评议", "《中国共产党支部工作条例（试行）》第十八条"),
    ]:
        assert meeting_type in text and cite in text
    assert f"【已安排】支委会：每月；本月（2025年3月）：#{number} 2025-03-12" in text
    assert "【未安排】支部党员大会：每季度；本季度（2025年第1季度）尚未登记" in text
    assert "【未安排】组织生活会：每年；本年度（2025年）尚未登记" in text
    assert "党组会议" not in text  # not a branch meeting
    assert text.count("【") == 6  # six entries, one per type
    assert "《中国共产党党员教育管理工作条例》" not in text  # fallback citations are not used


async def test_plan_counts_recurring_meetings_and_aliases(h: Harness) -> None:
    await h.text("/meeting add 党员大会 每季度末月最后一个周五 15:00 大会议室 学习")
    await h.text("/meeting add 组织生活会 每年12月第2个周五 15:00 大会议室 年度组织生活会")
    text = await h.text("/meeting plan")
    assert "【已安排】支部党员大会：每季度；本季度（2025年第1季度）：" in text
    assert "2025-03-28" in text
    assert "【已安排】组织生活会：每年；本年度（2025年）：" in text and "2025-12-12" in text
    # next month nothing of this is scheduled for April
    h.clock.now = local(2025, 4, 1, 9, 0)
    text = await h.text("/meeting plan")
    assert "【已安排】支部党员大会：每季度；本季度（2025年第2季度）：" in text and "2025-06-27" in text


async def test_plan_omits_rules_whose_document_is_not_indexed(tmp_path: Path) -> None:
    rules = load_rules(exclude_docs=frozenset({"zhibu-gongzuo-tiaoli-2018"}))
    h = Harness(tmp_path, NOW, rules=rules)
    text = await h.text("/meeting plan")
    # the fallback citations of the other regulation are used where they exist
    assert "主题党日" in text and "《中国共产党党员教育管理工作条例》第十六条" in text
    assert "《中国共产党党员教育管理工作条例》第十七条" in text
    assert "第十二条" not in text and "【未安排】支委会" not in text
    assert "注：" in text and "支部党员大会" in text and "支委会" in text and "党小组会" in text
    assert any("zhibu-gongzuo-tiaoli-2018 第十二条" in m for m in rules.unresolved)


async def test_plan_with_nothing_indexed_does_not_crash(tmp_path: Path) -> None:
    rules = MeetingRules.load(RULES_PATH, fake_lookup({}))
    h = Harness(tmp_path, NOW, rules=rules)
    text = await h.text("/meeting plan")
    assert "无法给出会议计划" in text
    assert len(rules.unresolved) == len(rules.rules)


def test_rules_file_resolves_against_the_real_article_texts() -> None:
    articles = make_articles()
    rules = MeetingRules.load(RULES_PATH, fake_lookup(articles))
    assert rules.unresolved == []
    assert len(rules.resolved) == len(rules.rules) >= 8
    for r in rules.resolved:
        assert quote_occurs(r.rule.quote, articles[(r.rule.doc_id, r.rule.label)].text)
        assert r.citation == f"《{TITLES[r.rule.doc_id]}》{r.rule.label}"
    plan_types = [r.type for r in rules.plan_rules()]
    assert plan_types == ["支部党员大会", "支委会", "党小组会", "主题党日", "组织生活会", "民主评议"]
    assert {r.rule.frequency for r in rules.plan_rules()} == {"month", "quarter", "year"}
    party_group = rules.for_type("党组会议")
    assert party_group is not None and "前两天通知党组成员" in party_group.rule.summary
    assert party_group.citation == "《中共辽宁省机关事务管理局党组工作细则(试行)》第十八条"


def test_rules_report_wrong_quotes_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - {type: 支委会, frequency: month, summary: s, doc_id: zhibu-gongzuo-tiaoli-2018,"
        " label: 第十二条, quote: 每周召开1次}\n",
        encoding="utf-8",
    )
    articles = make_articles()
    rules = MeetingRules.load(path, fake_lookup(articles))
    assert rules.for_type("支委会") is None
    assert len(rules.unresolved) == 1 and "每周召开1次" in rules.unresolved[0]
    path.write_text(path.read_text(encoding="utf-8").replace("每周召开1次", "一般每月召开1次"), encoding="utf-8")
    rules.reload(fake_lookup(articles))
    assert rules.unresolved == [] and rules.for_type("支委会") is not None
    # after a reindex without the document the rule is unresolved again, and a broken file
    # keeps the previous rules instead of failing the reindex
    path.write_text("rules: [", encoding="utf-8")
    rules.reload(fake_lookup({}))
    assert rules.for_type("支委会") is None
    assert len(rules.unresolved) == 2 and "无法读取" in rules.unresolved[0]


def test_rules_load_rejects_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {type: 支委会, frequency: weekly}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid"):
        MeetingRules.load(path, fake_lookup({}))


def test_quote_matching_ignores_width_and_whitespace() -> None:
    liaoning = make_articles()[("liaoning-jgswglj-dangzu-xize-2019", "第十八条")].text
    assert "议题,一般应于" in liaoning  # half-width comma in the source
    assert quote_occurs("会议召开的时间、议题，一般应于会议召开前两天通知党组成员", liaoning)
    assert not quote_occurs("会议召开前三天通知", liaoning)


def test_rules_file_resolves_against_the_parsed_default_corpus() -> None:
    """The same check against the repository's corpus/ as the ingest pipeline parses it."""
    from retrieval.documents import iter_corpus_files, load_metadata, parse_file

    corpus = RULES_PATH.parent.parent / "corpus"
    metadata = load_metadata(corpus)
    articles: dict[tuple[str, str], Article] = {}
    for path in iter_corpus_files([corpus]):
        for article in parse_file(path, metadata.get(path.name)).articles:
            articles[(article.doc_id, article.label)] = article
    rules = MeetingRules.load(RULES_PATH, fake_lookup(articles))
    assert rules.unresolved == []
    assert [r.type for r in rules.plan_rules()] == ["支部党员大会", "支委会", "党小组会", "主题党日", "组织生活会", "民主评议"]
    assert rules.for_type("党组会议").citation == "《中共辽宁省机关事务管理局党组工作细则(试行)》第十八条"
