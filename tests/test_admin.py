"""AdminFeature through a real Core and a real RetrievalService on a copy of the built index:
/reindex (admins only, in the background, busy while running, report pushed through the
outbound), /reindex rollback, /corpus, and documents uploaded into the corpus folder."""
from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

import retrieval.index
from bot.admin import BUSY, NOT_ADMIN, AdminFeature, safe_upload_name
from bot.core.models import ChatRef, ChatType, IncomingFile, OutgoingMessage
from bot.core.outbound import OutboundRegistry
from bot.store.db import AuditEntry, Database
from retrieval.service import RetrievalService
from tests.conftest import CORPUS
from tests.harness import TestBot, make_settings

ADMIN, MEMBER = "9001", "4242"
NEW_RULES = (
    "第三党支部工作规则\n"
    "第一条 第三党支部的党员活动室设在办公楼五层东侧，每周三下午向党员开放。\n"
    "第二条 支部委员会会议一般每月召开一次。\n"
    "第三条 本规则自印发之日起施行。\n"
)
NEW_QUESTION = "第三党支部的党员活动室在哪里？"
REPORT_TIMEOUT = 120
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # the contract: uploads up to 5 MB


class Bot(TestBot):
    """The harness with the admin feature over a real retrieval service on a copy of the index."""

    def __init__(self, service: RetrievalService, db: Database, data: Path, corpus: Path, root: Path) -> None:
        registry = OutboundRegistry()
        self.admin = AdminFeature(service, db, corpus, registry)
        super().__init__(self.admin, qa=service, admins={f"telegram:{ADMIN}"}, registry=registry)
        self.service, self.db, self.data, self.corpus, self.root = service, db, data, corpus, root

    async def say(self, user: str, text: str = "", **kw) -> OutgoingMessage:  # type: ignore[override]
        return await super().say(text, user=user, **kw)

    def pointer(self) -> dict:
        return json.loads((self.data / "index" / "CURRENT").read_text(encoding="utf-8"))

    def audit(self) -> list[AuditEntry]:
        with self.db.session() as s:
            return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))

    async def wait_report(self, since: int = 0) -> str:
        deadline = time.monotonic() + REPORT_TIMEOUT
        while time.monotonic() < deadline:
            for text in self.outbound.texts[since:]:
                if "索引更新完成" in text or "索引更新失败" in text:
                    return text
            await asyncio.sleep(0.05)
        raise AssertionError(f"no reindex report within {REPORT_TIMEOUT}s: {self.outbound.texts}")

    async def drain(self) -> None:
        """Wait for background reindex tasks, so none outlives its test."""
        tasks = list(self.admin._tasks)
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), REPORT_TIMEOUT)


@pytest.fixture
async def bot(data_copy: Path, tmp_path: Path, embeddings) -> Bot:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    service = RetrievalService(make_settings(data_dir=data_copy, corpus_dir=corpus).retrieval_config(),
                               embeddings=embeddings)
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    db.create_schema()
    b = Bot(service, db, data_copy, corpus, tmp_path)
    yield b
    await b.drain()


@pytest.fixture
def gate(monkeypatch) -> threading.Event:
    """Holds a real ingest inside the builder (its lock taken) until the test sets the event."""
    release = threading.Event()
    real = retrieval.index.iter_corpus_files

    def gated(paths):
        assert release.wait(30), "test never released the gated ingest"
        return real(paths)

    monkeypatch.setattr(retrieval.index, "iter_corpus_files", gated)
    yield release
    release.set()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "index" not in p.relative_to(root).parts[:2]}


# /reindex ----------------------------------------------------------------------------------
async def test_member_reindex_refused_audited_nothing_rebuilt(bot: Bot) -> None:
    pointer = (bot.data / "index" / "CURRENT").read_text()
    versions = sorted(p.name for p in (bot.data / "index" / "versions").iterdir())
    for command in ("/reindex", "/reindex rollback"):
        reply = await bot.say(MEMBER, command)
        assert "管理员" in reply.text and reply.text == NOT_ADMIN
    button = await bot.say(MEMBER, callback="adm:reindex")
    assert button.toast == NOT_ADMIN
    await asyncio.sleep(0.3)  # a wrongly started background task would have begun by now
    assert bot.admin._tasks == set() and not bot.service.builder.busy
    assert (bot.data / "index" / "CURRENT").read_text() == pointer
    assert sorted(p.name for p in (bot.data / "index" / "versions").iterdir()) == versions
    assert bot.outbound.sent == []
    rows = bot.audit()
    assert [(r.platform, r.user_id, r.action, r.allowed) for r in rows] == [
        ("telegram", MEMBER, "/reindex", False),
        ("telegram", MEMBER, "/reindex rollback", False),
        ("telegram", MEMBER, "/reindex (button)", False),
    ]
    assert all(r.at is not None and r.at.tzinfo is not None for r in rows)


async def test_admin_reindex_runs_in_background_busy_then_reports(bot: Bot, gate: threading.Event) -> None:
    old = bot.pointer()["current"]
    (bot.corpus / "第三党支部工作规则.txt").write_text(NEW_RULES, encoding="utf-8")

    started = time.monotonic()
    reply = await bot.say(ADMIN, "/reindex")
    assert time.monotonic() - started < 2
    assert "已开始" in reply.text
    # The build is held inside the builder: the reply did not wait for it.
    deadline = time.monotonic() + 10
    while not bot.service.builder.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert bot.service.builder.busy

    assert (await bot.say(ADMIN, "/reindex")).text == BUSY
    assert "正在更新，请稍候" in BUSY
    assert (await bot.say(ADMIN, callback="adm:reindex")).text == BUSY
    assert (await bot.say(ADMIN, "/reindex rollback")).text == BUSY
    # Members keep getting answers from the serving index meanwhile.
    during = await bot.say(MEMBER, "党组会议一般多久召开一次？")
    assert "第十八条" in during.text and "每月" in during.text
    assert bot.outbound.sent == [] and bot.pointer()["current"] == old

    gate.set()
    report = await bot.wait_report()
    assert "索引更新完成" in report, report
    assert "第三党支部工作规则" in report and "新增" in report
    (ref, msgs), = bot.outbound.sent
    assert ref == ChatRef(platform="telegram", chat_id=ADMIN, chat_type=ChatType.PRIVATE, user_id=ADMIN)
    pointer = bot.pointer()
    assert pointer["current"] != old and pointer["previous"] == old
    assert pointer["current"] in report
    assert bot.service.index.version == pointer["current"]
    new = await bot.say(MEMBER, NEW_QUESTION)
    assert "第三党支部工作规则" in new.text and "第一条" in new.text and "五层东侧" in new.text
    allowed = [(r.user_id, r.action, r.allowed) for r in bot.audit()]
    assert allowed[0] == (ADMIN, "/reindex", True)
    await bot.drain()
    assert bot.admin._tasks == set() and not bot.service.builder.busy
    # Idle again: a new /reindex is accepted.
    assert "已开始" in (await bot.say(ADMIN, "/reindex")).text
    assert "文件内容没有变化" in await bot.wait_report(since=1)


async def test_second_reindex_busy_without_gating(bot: Bot) -> None:
    first = await bot.say(ADMIN, "/reindex")
    second = await bot.say(ADMIN, "/reindex")
    assert "已开始" in first.text and second.text == BUSY
    assert "索引更新完成" in await bot.wait_report()
    await bot.drain()
    assert len(bot.outbound.sent) == 1  # one report: the second request started nothing


async def test_reindex_rollback_switches_to_previous_version(bot: Bot) -> None:
    original = bot.pointer()["current"]
    none = await bot.say(ADMIN, "/reindex rollback")
    assert "没有可以回退" in none.text and bot.pointer()["current"] == original

    (bot.corpus / "第三党支部工作规则.txt").write_text(NEW_RULES, encoding="utf-8")
    assert "已开始" in (await bot.say(ADMIN, "/reindex")).text
    assert "索引更新完成" in await bot.wait_report()
    await bot.drain()
    rebuilt = bot.pointer()["current"]
    assert rebuilt != original
    assert "五层东侧" in (await bot.say(MEMBER, NEW_QUESTION)).text

    back = await bot.say(ADMIN, "/reindex rollback")
    assert "已回退" in back.text and original in back.text
    assert bot.pointer()["current"] == original and bot.pointer()["previous"] == rebuilt
    assert bot.service.index.version == original
    assert "五层东侧" not in (await bot.say(MEMBER, NEW_QUESTION)).text
    assert "第十八条" in (await bot.say(MEMBER, "党组会议一般多久召开一次？")).text
    assert ("telegram", ADMIN, "/reindex rollback", True) in [
        (r.platform, r.user_id, r.action, r.allowed) for r in bot.audit()]


async def test_reindex_usage_for_unknown_argument(bot: Bot) -> None:
    pointer = (bot.data / "index" / "CURRENT").read_text()
    reply = await bot.say(ADMIN, "/reindex everything")
    assert "用法" in reply.text and bot.admin._tasks == set()
    assert (bot.data / "index" / "CURRENT").read_text() == pointer


# /corpus -----------------------------------------------------------------------------------
async def test_corpus_lists_documents_with_article_counts(bot: Bot) -> None:
    version = bot.pointer()["current"]
    manifest = json.loads((bot.data / "index" / "versions" / version / "manifest.json").read_text(encoding="utf-8"))
    docs = manifest["documents"]
    assert len(docs) == len(list(CORPUS.glob("*.txt")))  # every corpus file indexed
    for user in (MEMBER, ADMIN):  # anyone may look
        text = (await bot.say(user, "/corpus")).text
        assert version in text and f"共 {len(docs)} 个文件" in text
        lines = text.splitlines()
        for doc in docs:
            line = next(line for line in lines if f"《{doc['title']}》" in line)
            assert f" {doc['articles']} 条" in line
    assert "中共辽宁省机关事务管理局党组工作细则(试行)》 41 条" in text


# Uploads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "../x.txt", "a/b.txt", "a\\b.txt", ".hidden.txt", "x.exe", "x.txt\x00.exe", "规则\x00.txt", "", "   ",
    "..", "../../etc/passwd", "无扩展名", "x.TXT.sh", "a" * 250 + ".txt", "x<y>.txt", "x\n.txt",
])
def test_safe_upload_name_rejects(name: str) -> None:
    assert safe_upload_name(name) is None


@pytest.mark.parametrize("name", ["第三党支部工作规则.txt", "规则.docx", "rules.PDF", "通知.md", "page.html"])
def test_safe_upload_name_accepts(name: str) -> None:
    assert safe_upload_name(name) == name


def test_safe_upload_name_normalises_to_nfc() -> None:
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "Übersicht.txt")
    assert decomposed != "Übersicht.txt"
    assert safe_upload_name(decomposed) == "Übersicht.txt"


async def test_member_upload_refused_and_audited(bot: Bot) -> None:
    before = tree(bot.root)
    reply = await bot.say(MEMBER, file=IncomingFile(filename="规则.txt", content=NEW_RULES.encode()))
    assert "管理员" in reply.text
    assert tree(bot.root) == before
    assert [(r.user_id, r.action, r.allowed) for r in bot.audit()] == [(MEMBER, "upload 规则.txt", False)]


async def test_upload_in_group_is_redirected_to_private(bot: Bot) -> None:
    before = tree(bot.root)
    reply = await bot.say(ADMIN, file=IncomingFile(filename="规则.txt", content=NEW_RULES.encode()),
                          chat_type=ChatType.GROUP)
    assert "私聊" in reply.text and tree(bot.root) == before


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("../x.txt", NEW_RULES.encode(), "文件名不符合要求"),
    ("../../evil.txt", NEW_RULES.encode(), "文件名不符合要求"),
    ("x.exe", b"MZ\x90\x00", "文件名不符合要求"),
    ("big.txt", b"a" * (MAX_UPLOAD_BYTES + 1), "太大"),
    ("empty.txt", b"", "空的"),
    ("blank.txt", b" \n\t\n", "空的"),
])
async def test_bad_uploads_refused_nothing_written(bot: Bot, name: str, content: bytes, expected: str) -> None:
    before = tree(bot.root)
    reply = await bot.say(ADMIN, file=IncomingFile(filename=name, content=content))
    assert expected in reply.text
    assert tree(bot.root) == before
    assert not (bot.root / "x.txt").exists() and not (bot.root.parent / "evil.txt").exists()


async def test_good_upload_lands_in_corpus_only(bot: Bot) -> None:
    before = tree(bot.root)
    content = NEW_RULES.encode()
    reply = await bot.say(ADMIN, file=IncomingFile(filename="第三党支部工作规则.txt", content=content))
    assert "已保存" in reply.text and "第三党支部工作规则.txt" in reply.text
    assert reply.buttons and reply.buttons[0][0].data == "adm:reindex"
    assert tree(bot.root) - before == {"corpus/第三党支部工作规则.txt"}
    assert before - tree(bot.root) == set()
    assert (bot.corpus / "第三党支部工作规则.txt").read_bytes() == content
    # Exactly at the limit is accepted; sending the same name again replaces the file.
    exact = b"x" * MAX_UPLOAD_BYTES
    again = await bot.say(ADMIN, file=IncomingFile(filename="第三党支部工作规则.txt", content=exact))
    assert "已替换" in again.text
    assert (bot.corpus / "第三党支部工作规则.txt").read_bytes() == exact
    assert tree(bot.root) - before == {"corpus/第三党支部工作规则.txt"}
    # The button starts the reindex, which indexes the uploaded (valid) file.
    (bot.corpus / "第三党支部工作规则.txt").write_bytes(content)
    started = await bot.say(ADMIN, callback="adm:reindex")
    assert "已开始" in started.text
    report = await bot.wait_report()
    assert "第三党支部工作规则" in report
