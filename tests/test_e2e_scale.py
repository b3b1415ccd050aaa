"""End to end, scaled out: a Chroma server, PostgreSQL, and two WeCom replicas sharing no disk.

The test is about replicas, not answers: its corpus is one document of the default corpus (the
one the questions are about), so the ingests into the Chroma server stay short."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e import DANGJIAN, REPO, TZ, BotProcess, ReminderClock, wait_until
from tests.fakes.wecom_api import FakeWeCom
from tests.servers import ServerUnavailable, chroma_server, free_port, postgres_server

DOCUMENT = "2019_liaoning_jiguan_shiwu_guanliju_dangzu_gongzuo_xize.txt"  # 第十八条, 第二十五条
#: Seconds from the replicas' start until the first reminders may fall due: both start, answer,
#: register two meetings; then replica A is killed before they are due.
REMINDER_DELAY = 35
#: The second reminders come this much later, when A has been restarted.
SECOND_REMINDER_AFTER = 30
NEW_DOC = "第五党支部学习制度\n第一条 第五党支部每月最后一个星期四下午集中学习，地点在图书馆二楼报告厅。\n第二条 本制度自印发之日起施行。\n"


@pytest.fixture
def servers():
    try:
        with postgres_server() as pg, chroma_server() as chroma:
            yield pg, chroma
    except ServerUnavailable as exc:  # the fixture in tests/servers.py reports this loudly
        pytest.skip(f"PostgreSQL or Chroma server not available: {exc}")


def test_two_replicas_share_index_state_and_reminders(servers, tmp_path):
    pg_url, chroma_url = servers
    fake = FakeWeCom().start()
    corpus, prompts = tmp_path / "corpus", tmp_path / "prompts"
    corpus.mkdir()
    for name in (DOCUMENT, "metadata.yaml"):
        shutil.copy(REPO / "corpus" / name, corpus / name)
    shutil.copytree(REPO / "prompts", prompts)
    shutil.rmtree(prompts / "checklists")  # they cite documents this corpus does not have
    (prompts / "checklists").mkdir()
    common = {
        "DANGJIAN_DATABASE_URL": pg_url, "DANGJIAN_CHROMA_URL": chroma_url,
        "DANGJIAN_CORPUS_DIR": str(corpus), "DANGJIAN_PROMPTS_DIR": str(prompts),
        "DANGJIAN_WECOM_CORP_ID": fake.corp_id, "DANGJIAN_WECOM_AGENT_ID": str(fake.agent_id),
        "DANGJIAN_WECOM_SECRET": fake.secret, "DANGJIAN_WECOM_TOKEN": fake.callbacks.token,
        "DANGJIAN_WECOM_AES_KEY": fake.callbacks.aes_key, "DANGJIAN_WECOM_API_BASE": fake.base_url,
        "DANGJIAN_HTTP_HOST": "127.0.0.1", "DANGJIAN_REMINDER_POLL_SECONDS": "2",
    }
    data = {name: tmp_path / f"data-{name}" for name in ("ingest", "a", "b")}
    for folder in data.values():
        folder.mkdir()

    env_ingest = {**common, "DANGJIAN_DATA_DIR": str(data["ingest"])}
    ingester = BotProcess("x", env_ingest, tmp_path / "i.log")
    r = subprocess.run([DANGJIAN, "ingest"], env=ingester.env, cwd=ingester.cwd, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr

    # Reminder times are chosen once the index exists, so a slow ingest cannot eat the lead time.
    clock = ReminderClock.start(REMINDER_DELAY)
    early = clock.offset + 60  # the first reminder of a meeting a minute after clock.meeting()'s
    late = early - SECOND_REMINDER_AFTER
    common["DANGJIAN_REMINDER_OFFSETS"] = f"{early}s,{late}s"
    ports = {"a": free_port(), "b": free_port()}
    bots = {
        name: BotProcess("wecom", {**common, "DANGJIAN_DATA_DIR": str(data[name]), "DANGJIAN_HTTP_PORT": str(ports[name])},
                         tmp_path / f"{name}.log")
        for name in ("a", "b")
    }
    cb = fake.callbacks

    def post(name: str, user: str, text: str, msg_id: int) -> httpx.Response:
        params, body = cb.message(cb.text_xml(user, text, msg_id))
        return httpx.post(f"http://127.0.0.1:{ports[name]}/wecom/callback", params=params, content=body, timeout=5)

    def up(name: str) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{ports[name]}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        for bot in bots.values():
            bot.start()
        for name, bot in bots.items():
            wait_until(lambda n=name: up(n), 120, f"replica {name}", bot)

        # Both replicas answer; a MsgId retried on the other replica is answered once.
        assert post("a", "u1", "党组会议一般多久召开一次？", 1).status_code == 200
        assert post("b", "u2", "党组会议一般多久召开一次？", 2).status_code == 200
        assert post("b", "u1", "党组会议一般多久召开一次？", 1).status_code == 200
        wait_until(lambda: fake.texts("u1") and fake.texts("u2"), 30, "both answers")
        for user in ("u1", "u2"):
            assert "第十八条" in fake.texts(user)[0] and "每月" in fake.texts(user)[0]

        # 没用 typed to B rates the answer A gave (the question log is in PostgreSQL).
        post("b", "u1", "没用", 6)
        wait_until(lambda: len(fake.texts("u1")) >= 2, 30, "the rating through B")
        assert fake.texts("u1")[1].startswith("已记录：没用")

        # Meetings added through A are listed through B.
        first = clock.meeting(margin=8) + timedelta(minutes=1)  # first reminder due while A is down
        hhmm1 = first.strftime("%H:%M")
        post("a", "sec", clock.command(first), 3)
        post("a", "sec", clock.command(first, "党小组会", "二楼会议室"), 4)
        wait_until(lambda: len(fake.texts("sec")) >= 2, 30, "the confirmations")
        assert all(re.search(r"#\d+", t) for t in fake.texts("sec")[:2])
        post("b", "sec", "/meetings", 5)
        wait_until(lambda: len(fake.texts("sec")) >= 3, 30, "the list from B")
        listing = fake.texts("sec")[2]
        assert "支委会" in listing and "党小组会" in listing

        # A dies; B sends the first reminders on time, once; A restarted sends nothing again.
        bots["a"].kill()

        def reminders(kind: str) -> list[str]:
            return [t for t in fake.texts("sec") if "提醒】" in t and kind in t]

        wait_until(lambda: reminders("支委会") and reminders("党小组会"), 120, "the first reminders", bots["b"])
        due = first - timedelta(seconds=early)
        assert datetime.now(TZ) - due < timedelta(seconds=15)
        bots["a"].start()
        wait_until(lambda: up("a"), 120, "replica a again", bots["a"])

        # A re-ingest with a new document while B serves: every question answered meanwhile.
        (corpus / "第五党支部学习制度.txt").write_text(NEW_DOC, encoding="utf-8")
        ingest = subprocess.Popen([DANGJIAN, "ingest"], env=ingester.env, cwd=ingester.cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        asked = 0
        while ingest.poll() is None:
            asked += 1
            post("b", f"q{asked}", "党组会议纪要由谁签发？", 100 + asked)
            time.sleep(1.0)
        assert ingest.returncode == 0, ingest.stderr.read()
        wait_until(lambda: all(fake.texts(f"q{i}") for i in range(1, asked + 1)), 30, "answers during the swap")
        assert all("第二十五条" in fake.texts(f"q{i}")[0] for i in range(1, asked + 1))
        deadline = time.monotonic() + 30
        msg = 500
        while True:
            msg += 1
            post("b", f"n{msg}", "第五党支部在哪里集中学习？", msg)
            wait_until(lambda m=msg: fake.texts(f"n{m}"), 30, "the new-document answer")
            if "第一条" in fake.texts(f"n{msg}")[0] and "图书馆" in fake.texts(f"n{msg}")[0]:
                break
            assert time.monotonic() < deadline, "new article not answerable within 30 s"
            time.sleep(2)

        # The later reminders, due while both run: each sent exactly once.
        wait_until(lambda: len(reminders("支委会")) >= 2 and len(reminders("党小组会")) >= 2, 150,
                   "the second reminders", bots["b"])
        time.sleep(5)
        assert len(reminders("支委会")) == 2 and len(reminders("党小组会")) == 2
        assert hhmm1 in reminders("支委会")[0] and "三楼会议室" in reminders("支委会")[0]

        # State lives in PostgreSQL; no replica keeps an embedded store.
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from meetings")).scalar() == 2
            assert conn.execute(sa.text("select rating from question_log where user_id = 'u1'")).scalar() == "down"
        engine.dispose()
        for folder in data.values():
            leftovers = [p for p in folder.rglob("*") if p.name == "chroma.sqlite3" or p.suffix == ".db"]
            assert not leftovers, leftovers
        assert all(bot.alive for bot in bots.values())
    finally:
        for bot in bots.values():
            bot.stop()
        fake.stop()
