"""Issue #15: the question log, ratings of answers (有用/没用), /stats and `dangjian report`,
through the harness (a real core with the feedback feature as its answer hook) and a fixed clock."""
from __future__ import annotations

import csv
import io
import logging
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from bot.adapters.http_server import build_http_app
from bot.adapters.wecom import PLATFORM as WECOM, WeComAdapter
from bot.core.models import ChatType, OutgoingMessage
from bot.feedback import FeedbackFeature, QuestionStore, build_report, format_report, write_csv  # + the table
from bot.feedback import texts
from bot.feedback.feature import parse_days
from bot.feedback.report import CSV_HEADER, group_questions, question_key
from bot.feedback.store import Asked
from bot.feedback.tables import QuestionLogRow
from bot.store.db import AuditEntry, Database
from retrieval.answer import REFUSAL
from retrieval.models import Answer
from tests.fakes.wecom_api import FakeWeCom
from tests.harness import CITATION, PLAIN, TITLE, StubAnswerer, TestBot

START = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # 09:00 in Shanghai
UNCOVERED = "帮我写一首关于春天的诗"
ADMIN = "9001"


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def refusing(question: str) -> Answer:
    return Answer(question=question, answer=REFUSAL, refused=True)


def covered_or_not(question: str) -> Answer:
    """Questions about poems or shares are refused, everything else answered citing 第十八条."""
    if "诗" in question or "炒股" in question:
        return refusing(question)
    return StubAnswerer().ask(question)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db: Database, clock: Clock) -> QuestionStore:
    return QuestionStore(db, 180, clock=clock)


def make_bot(store: QuestionStore, **kw) -> TestBot:
    feature = FeedbackFeature(store, timezone="Asia/Shanghai")
    kw.setdefault("qa", StubAnswerer(reply=covered_or_not))
    return TestBot(feature, on_answer=feature, admins={f"telegram:{ADMIN}", f"wecom:{ADMIN}"}, **kw)


def rows(db: Database) -> list[QuestionLogRow]:
    with db.session() as s:
        return list(s.scalars(select(QuestionLogRow).order_by(QuestionLogRow.id)))


def buttons(reply: OutgoingMessage) -> list[tuple[str, str]]:
    return [(b.label, b.data) for row in reply.buttons for b in row]


# The question log ------------------------------------------------------------------------
async def test_answers_and_refusals_are_logged_with_what_the_admins_need(store, db) -> None:
    bot = make_bot(store)
    answer = await bot.say("党组会议一般多久召开一次？", user="u1")
    refusal = await bot.say(UNCOVERED, user="u2", chat="-100", chat_type=ChatType.GROUP)
    assert (await bot.say("/help")).buttons == []  # command replies are neither logged nor rated
    first, second = rows(db)
    assert (first.at, first.platform, first.chat_type, first.user_id, first.chat_id) == (START, "telegram", "private", "u1", "u1")
    assert (first.question, first.refused, first.citation, first.document) == ("党组会议一般多久召开一次？", False, CITATION, TITLE)
    assert first.mode == "extractive" and first.latency_ms >= 0 and first.rating is None
    assert (second.chat_type, second.user_id, second.refused, second.citation, second.document) == ("group", "u2", True, None, None)
    assert buttons(answer) == [("👍 有用", f"fb:{first.id}:up"), ("👎 没用", f"fb:{first.id}:down")]
    assert refusal.buttons == [] and refusal.text == REFUSAL


async def test_a_20000_character_question_is_stored_cut_to_500(store, db) -> None:
    bot = make_bot(store, max_question_chars=30000)  # even when retrieval is allowed more
    question = "党组会议" + "应当如何召开" * 3333
    assert len(question) > 20000
    await bot.say(question)
    assert rows(db)[0].question == question[:500]


async def test_a_database_error_while_logging_is_logged_and_the_answer_still_goes_out(caplog) -> None:
    broken = QuestionStore(Database("sqlite:////nonexistent/folder/x.db"), 180)
    bot = make_bot(broken)
    with caplog.at_level(logging.ERROR):
        reply = await bot.say("党组会议一般多久召开一次？")
    assert "依据" in reply.text and reply.buttons == []
    assert "could not log a question" in caplog.text


async def test_logging_off_records_nothing_offers_no_rating_and_prune_empties_the_log(db, clock) -> None:
    on = QuestionStore(db, 180, clock=clock)
    on.record(Asked("telegram", "u1", "private", "u1", "旧问题", False, CITATION, TITLE, "extractive", 5))
    off = QuestionStore(db, 0, clock=clock)
    bot = make_bot(off, caps=PLAIN, platform="wecom")
    reply = await bot.say("党组会议一般多久召开一次？")
    assert texts.TYPED_HINT not in reply.text and len(rows(db)) == 1
    await bot.say("没用")
    assert bot.qa.questions[-1] == "没用"  # not a rating: the feature is off
    assert off.prune() == 1 and rows(db) == []
    assert format_report(build_report(off, 30), "Asia/Shanghai") == texts.LOG_OFF


async def test_retention_pruning_with_a_fixed_clock(store, db, clock) -> None:
    for age_days in (200, 181, 179, 1):
        clock.now = START - timedelta(days=age_days)
        store.record(Asked("wecom", "c", "private", "u", f"{age_days} 天前的问题", True, None, None, "extractive", 1))
    clock.now = START
    assert store.prune() == 2
    assert [r.question for r in rows(db)] == ["179 天前的问题", "1 天前的问题"]
    clock.advance(days=1)
    assert store.prune() == 0  # exactly 180 days old: still kept
    clock.advance(seconds=1)
    assert store.prune() == 1 and [r.question for r in rows(db)] == ["1 天前的问题"]


# Ratings -----------------------------------------------------------------------------------
async def test_a_second_press_changes_the_rating_last_one_wins(store, db) -> None:
    bot = make_bot(store)
    up, down = [data for _, data in buttons(await bot.say("党组会议一般多久召开一次？"))]
    pressed = [(await bot.press(data)).toast for data in (up, down, down, up)]
    assert pressed == [texts.RATED_UP, texts.CHANGED_DOWN, texts.SAME_DOWN, texts.CHANGED_UP]
    assert rows(db)[0].rating == "up"


async def test_presses_on_another_members_answer_stale_or_forged_buttons_change_nothing(store, db, clock) -> None:
    bot = make_bot(store)
    reply = await bot.say("党组会议一般多久召开一次？", user="u1", chat="-100", chat_type=ChatType.GROUP)
    down = buttons(reply)[1][1]
    answer_id = rows(db)[0].id
    assert (await bot.press(down, user="u2", chat="-100", chat_type=ChatType.GROUP)).toast == texts.FOREIGN
    await bot.say(UNCOVERED, user="u1", chat="-100", chat_type=ChatType.GROUP)
    refusal_id = rows(db)[1].id
    for forged in ("fb:abc:up", f"fb:{answer_id}:meh", f"fb:{answer_id}", f"fb:{answer_id}:down:x",
                   f"fb:{refusal_id}:down", f"fb:{'9' * 30}:up"):
        assert (await bot.press(forged, user="u1", chat="-100", chat_type=ChatType.GROUP)).toast == texts.INVALID
    assert (await bot.press(down, user="u1", chat="other")).toast == texts.INVALID  # another chat's answer
    assert (await bot.press("fb:424242:up", user="u1")).toast == texts.GONE
    assert all(r.rating is None for r in rows(db))
    clock.advance(days=181)  # older than the retention, not pruned yet
    assert (await bot.press(down, user="u1", chat="-100", chat_type=ChatType.GROUP)).toast == texts.GONE
    store.prune()
    assert (await bot.press(down, user="u1", chat="-100", chat_type=ChatType.GROUP)).toast == texts.GONE
    assert (await bot.press(down, user="u1", chat="-100", chat_type=ChatType.GROUP, caps=PLAIN)).text == texts.GONE


async def test_typed_rating_within_ten_minutes_and_the_hint_once_per_chat(store, db, clock) -> None:
    bot = make_bot(store, caps=PLAIN, platform="wecom")
    first = await bot.say("党组会议一般多久召开一次？")
    assert first.text.endswith("\n\n" + texts.TYPED_HINT) and first.buttons == []
    second = await bot.say("党组会议纪要由谁签发？")
    assert texts.TYPED_HINT not in second.text
    assert texts.TYPED_HINT in (await bot.say("党组会议一般多久召开一次？", user="u2")).text  # another chat
    assert (await bot.say("没用")).text == texts.RATED_DOWN
    assert (await bot.say(" 👍！")).text == texts.CHANGED_UP
    assert [r.rating for r in rows(db)] == [None, "up", None]  # the latest answer in the chat
    assert len(bot.qa.questions) == 3  # ratings never reached retrieval
    clock.advance(minutes=10, seconds=1)
    assert (await bot.say("没用")).text == texts.NOTHING_TO_RATE
    await bot.say(UNCOVERED)
    assert (await bot.say("有用")).text == texts.REFUSAL_NOT_RATED
    assert (await bot.say("没用", user="stranger")).text == texts.NOTHING_TO_RATE
    assert [r.rating for r in rows(db)] == [None, "up", None, None]


async def test_typed_rating_in_a_group_rates_only_the_typists_own_answer(store, db) -> None:
    bot = make_bot(store, caps=PLAIN, platform="dingtalk")
    group = dict(chat="cid-1", chat_type=ChatType.GROUP)
    await bot.say("党组会议一般多久召开一次？", user="a", **group)
    assert (await bot.say("没用", user="b", **group)).text == texts.NOTHING_TO_RATE
    assert (await bot.say("没用", user="a", **group)).text == texts.RATED_DOWN
    assert [r.rating for r in rows(db)] == ["down"]


async def test_typed_words_inside_a_question_are_a_question(store, db) -> None:
    bot = make_bot(store, caps=PLAIN, platform="wecom")
    await bot.say("党组会议一般多久召开一次？")
    assert "依据" in (await bot.say("这条规定没用了吗？")).text
    assert rows(db)[0].rating is None and len(rows(db)) == 2


# The report --------------------------------------------------------------------------------
def test_unanswered_questions_are_grouped_after_normalisation() -> None:
    asked = ["党员可以炒股吗？", "请问 党员可以炒股？", "黨員可以炒股嗎", "党员可以炒股吗？", "ＡＢＣ是什么", "abc 是什么?"]
    assert question_key("请问，党员可以炒股吗？") == question_key("黨員可以炒股") == "党员可以炒股"
    assert group_questions(asked) == [("党员可以炒股吗？", 4), ("ＡＢＣ是什么", 2)]


async def test_stats_for_admins_only_and_without_user_ids(store, db) -> None:
    bot = make_bot(store)
    await bot.say("党组会议一般多久召开一次？", user="zhang")
    down = buttons(await bot.say("党组会议纪要由谁签发？", user="li"))[1][1]
    await bot.press(down, user="li")
    for user, text in (("zhang", UNCOVERED + "。"), ("li", "请问 " + UNCOVERED), ("li", "党员可以炒股吗")):
        await bot.say(text, user=user)
    await bot.say("党组会议一般多久召开一次？", user="wang", platform="wecom", caps=PLAIN)

    refused = await bot.say("/stats", user="zhang")
    assert refused.text == texts.NOT_ADMIN and UNCOVERED not in refused.text
    report = (await bot.say("/stats", user=ADMIN)).text
    assert report.startswith("最近 30 天的提问统计（2026-01-31 至 2026-03-02）")
    assert "提问 6 次：已回答 3 次（50%），文件中未找到依据 3 次（50%）" in report
    assert "有用 0 次，没用 1 次" in report and "Telegram 5 次，企业微信 1 次" in report
    unanswered = report.split(texts.REPORT_UNANSWERED)[1].split("\n\n")[0]
    assert f"1. {UNCOVERED}。（2 次）" in unanswered and "2. 党员可以炒股吗（1 次）" in unanswered
    assert f"· 党组会议纪要由谁签发？ → {CITATION}" in report.split(texts.REPORT_RATED_DOWN)[1]
    assert f"· 《{TITLE}》 3 次" in report.split(texts.REPORT_DOCUMENTS)[1]
    assert not any(user in report for user in ("zhang", "li", "wang", ADMIN))
    with db.session() as s:
        audit = [(a.user_id, a.action, a.allowed) for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert audit == [("zhang", "/stats", False), (ADMIN, "/stats", True)]


@pytest.mark.parametrize("args", ["abc", "-5", "0", "3651", "7 30", "1.5"])
async def test_stats_explains_a_bad_argument(store, args: str) -> None:
    assert (await make_bot(store).say(f"/stats {args}", user=ADMIN)).text == texts.STATS_USAGE


def test_stats_argument_forms() -> None:
    assert [parse_days(a) for a in ("", "7", "7天", "７", " 90 日 ", "3650")] == [30, 7, 7, 7, 90, 3650]


async def test_an_empty_period_and_a_period_beyond_the_retention_say_so(store, clock) -> None:
    store.record(Asked("telegram", "u", "private", "u", "很久以前的问题", True, None, None, "extractive", 1))
    clock.advance(days=8)
    bot = make_bot(store)
    empty = (await bot.say("/stats 7", user=ADMIN)).text
    assert empty.endswith(texts.REPORT_EMPTY.format(days=7)) and "很久以前" not in empty
    long = (await bot.say("/stats 365", user=ADMIN)).text
    assert texts.REPORT_RETENTION.format(retention=180) in long and "提问 1 次" in long


# The CSV and `dangjian report` ------------------------------------------------------------------
def test_csv_rows_in_local_time_with_ratings_and_no_formulas(store, clock) -> None:
    store.record(Asked("telegram", "1", "private", "1", "=HYPERLINK(\"http://x\")", True, None, None, "extractive", 7))
    clock.advance(minutes=1)
    answer_id, _ = store.record(Asked("wecom", "g", "group", "zhang", "党组会议多久开一次，\n换行", False, CITATION,
                                      TITLE, "llm", 12.6))
    store.rate(answer_id, "wecom", "g", "zhang", "down")
    out = io.StringIO()
    write_csv(store.rows(START - timedelta(days=1)), out, "Asia/Shanghai")
    parsed = list(csv.reader(io.StringIO(out.getvalue())))
    assert parsed == [
        CSV_HEADER,
        ["2026-03-02 09:00:00", "telegram", "private", "1", "'=HYPERLINK(\"http://x\")", "未找到依据", "", "extractive",
         "7", ""],
        ["2026-03-02 09:01:00", "wecom", "group", "zhang", "党组会议多久开一次，\n换行", "已回答", CITATION, "llm", "13",
         "没用"],
    ]


def test_dangjian_report_prints_the_report_and_writes_a_csv_excel_opens(tmp_path, monkeypatch) -> None:
    from bot.app import open_database
    from bot.cli import app
    from tests.harness import make_settings

    monkeypatch.chdir(tmp_path)  # no developer .env
    for name in [k for k in __import__("os").environ if k.startswith("DANGJIAN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DANGJIAN_DATA_DIR", str(tmp_path / "data"))
    db = open_database(make_settings(data_dir=tmp_path / "data"))
    store = QuestionStore(db, 180)
    for _ in range(2):
        store.record(Asked("dingtalk", "c", "group", "u", UNCOVERED, True, None, None, "extractive", 3))
    store.record(Asked("dingtalk", "c", "group", "u", "党组会议多久开一次", False, CITATION, TITLE, "extractive", 3))
    with db.session() as s:  # a row from before the period
        s.execute(update(QuestionLogRow).where(QuestionLogRow.id == 3).values(at=datetime.now(timezone.utc) - timedelta(days=9)))
    db.engine.dispose()
    # The CLI sets the levels of the root and of noisy libraries' loggers (httpx…) for its own
    # run; left so, later tests in this worker would miss the log lines they check.
    def loggers() -> list[logging.Logger]:
        return [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger))]

    levels = {logger: logger.level for logger in loggers()}
    try:
        result = CliRunner().invoke(app, ["report", "--days", "7", "--csv", str(tmp_path / "log.csv")])
        bad = CliRunner().invoke(app, ["report", "--days", "abc"])
    finally:
        for logger in loggers():
            logger.setLevel(levels.get(logger, logging.NOTSET))
    assert result.exit_code == 0, result.output
    assert "提问 2 次" in result.stdout and f"1. {UNCOVERED}（2 次）" in result.stdout and "钉钉 2 次" in result.stdout
    raw = (tmp_path / "log.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8-sig").splitlines()
    assert lines[0] == ",".join(CSV_HEADER) and len(lines) == 3 and UNCOVERED in lines[1]
    assert bad.exit_code == 2


# Platforms without buttons, and several replicas ------------------------------------------------
async def test_wecom_typed_meiyong_after_an_answer_rates_it(store, db) -> None:
    fake = FakeWeCom()
    feature = FeedbackFeature(store)
    bot = TestBot(feature, on_answer=feature, platform=WECOM, caps=PLAIN)
    api = fake.client()
    adapter = WeComAdapter(fake.settings(), bot.core, db, http=api)
    bot.core.outbound.register(WECOM, adapter)
    await adapter.start()
    cb = fake.callbacks
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_http_app([adapter.router()])),
                                     base_url="http://bot") as client:
            for msg_id, text in ((1, "党组会议多久召开一次？"), (2, "没用")):
                params, body = cb.message(cb.text_xml("zhangsan", text, msg_id))
                assert (await client.post("/wecom/callback", params=params, content=body)).status_code == 200
                await fake.wait_for_sends(msg_id)
    finally:
        await adapter.aclose()
        await api.aclose()
    answer, rated = fake.texts("zhangsan")
    assert "第十八条" in answer and answer.endswith(texts.TYPED_HINT)
    assert rated == texts.RATED_DOWN
    [row] = rows(db)
    assert (row.platform, row.user_id, row.rating, row.citation) == ("wecom", "zhangsan", "down", CITATION)


def test_a_rating_reaches_the_row_whichever_replica_receives_it_on_postgresql(pg_url) -> None:
    replicas = [Database(pg_url), Database(pg_url)]
    replicas[0].create_schema()
    a, b = (QuestionStore(r, 180) for r in replicas)
    try:
        answer_id, _ = a.record(Asked("wecom", "pg-chat", "private", "pg-user", "党组会议多久开一次", False, CITATION,
                                      TITLE, "extractive", 5))
        assert b.latest("wecom", "pg-chat", "pg-user", timedelta(minutes=10)).id == answer_id
        assert b.rate(answer_id, "wecom", "pg-chat", "pg-user", "down").value == "new"
        assert a.rate(answer_id, "wecom", "pg-chat", "other", "up").value == "foreign"
        report = build_report(a, 1)
        assert ("党组会议多久开一次", CITATION, 1) in report.rated_down
    finally:
        with replicas[0].session() as s:
            s.execute(QuestionLogRow.__table__.delete().where(QuestionLogRow.chat_id == "pg-chat"))
        for r in replicas:
            r.engine.dispose()
