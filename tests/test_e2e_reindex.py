"""End to end: admins refresh the corpus from chat while members keep asking (Telegram fake)."""
from __future__ import annotations

import shutil


from tests.e2e import REPO, BotProcess, wait_until
from tests.fakes.telegram_api import FakeTelegram

ADMIN, MEMBER = 9001, 4242
NEW_RULES = (
    "第三党支部工作规则\n"
    "第一条 第三党支部的党员活动室设在办公楼五层东侧，每周三下午向党员开放。\n"
    "第二条 支部委员会会议一般每月召开一次。\n"
    "第三条 本规则自印发之日起施行。\n"
)
SEED_TO_DELETE = "2019_jiguan_dangzuzhi_shi_shenme_gan_shenme.txt"


def _ask(tg: FakeTelegram, chat: int, text: str, timeout: float = 30):
    mark = tg.mark()
    tg.push_text(chat, chat, text)
    return tg.wait_for_messages_sync(1, timeout=timeout, since=mark)[0]


def _wait_report(tg: FakeTelegram, since: int, timeout: float = 240) -> str:
    msgs = tg.wait_for_messages_sync(
        lambda new: any(m.chat_id == ADMIN and ("索引更新完成" in m.text or "索引更新失败" in m.text) for m in new),
        timeout=timeout, since=since)
    return next(m.text for m in msgs if m.chat_id == ADMIN and ("索引更新完成" in m.text or "索引更新失败" in m.text))


def test_admin_reindex_from_chat(tg, data_copy, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(REPO / "corpus", corpus)
    env = {
        "DANGJIAN_TELEGRAM_TOKEN": tg.token, "DANGJIAN_TELEGRAM_BASE_URL": tg.base_url,
        "DANGJIAN_DATA_DIR": str(data_copy), "DANGJIAN_CORPUS_DIR": str(corpus),
        "DANGJIAN_ADMIN_IDS": f"telegram:{ADMIN}",
    }
    bot = BotProcess("telegram", env, tmp_path / "bot.log").start()
    try:
        wait_until(lambda: tg.calls("getUpdates"), 90, "the bot to poll", bot)
        before = sorted(p.name for p in corpus.iterdir())
        pointer = (data_copy / "index" / "CURRENT").read_text()

        # A member may not reindex; nothing changes.
        refusal = _ask(tg, MEMBER, "/reindex")
        assert "管理员" in refusal.text
        assert (data_copy / "index" / "CURRENT").read_text() == pointer

        # The admin adds a file and a broken one, reindexes; members keep getting answers.
        (corpus / "第三党支部工作规则.txt").write_text(NEW_RULES, encoding="utf-8")
        (corpus / "损坏的文件.docx").write_bytes(b"PK\x03\x04 broken")
        mark = tg.mark()
        started = _ask(tg, ADMIN, "/reindex")
        assert "开始" in started.text
        during = _ask(tg, MEMBER, "党组会议一般多久召开一次？")
        assert "第十八条" in during.text
        report = _wait_report(tg, mark)
        assert "损坏的文件.docx" in report and "不是有效的 docx 文件" in report
        assert "第三党支部工作规则" in report
        new = _ask(tg, MEMBER, "第三党支部的党员活动室在哪里？")
        assert "第一条" in new.text and "五层东侧" in new.text
        old = _ask(tg, MEMBER, "党组会议纪要由谁签发？")
        assert "第二十五条" in old.text

        # A deleted seed is reported as removed and no longer cited.
        (corpus / SEED_TO_DELETE).unlink()
        (corpus / "损坏的文件.docx").unlink()
        mark = tg.mark()
        _ask(tg, ADMIN, "/reindex")
        report = _wait_report(tg, mark)
        assert "删除" in report or "移除" in report
        assert "机关党组织“是什么”" in report
        answer = _ask(tg, MEMBER, "机关党组织的核心任务是什么？")
        assert "是什么”“干什么”" not in answer.text

        # Upload: admins only, in private, names sanitised.
        mark = tg.mark()
        tg.push_document(MEMBER, MEMBER, "规则.txt", NEW_RULES.encode())
        assert "管理员" in tg.wait_for_messages_sync(1, timeout=30, since=mark)[0].text
        mark = tg.mark()
        tg.push_document(ADMIN, ADMIN, "../../etc/evil.txt", b"x" * 20)
        assert "文件名不符合要求" in tg.wait_for_messages_sync(1, timeout=30, since=mark)[0].text
        mark = tg.mark()
        tg.push_document(ADMIN, ADMIN, "第四党支部工作规则.txt", NEW_RULES.replace("第三", "第四").encode())
        saved = tg.wait_for_messages_sync(1, timeout=30, since=mark)[0]
        assert "已保存" in saved.text and saved.reply_markup
        assert (corpus / "第四党支部工作规则.txt").is_file()
        assert not (tmp_path / "etc").exists()

        # Rollback switches back to the previous version.
        back = _ask(tg, ADMIN, "/reindex rollback")
        assert "已回退" in back.text
        assert bot.alive
        assert sorted(p.name for p in corpus.iterdir()) != before  # files are the admin's to manage
    finally:
        bot.stop()
