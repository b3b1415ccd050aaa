"""Faults: a database that cannot be opened, Chroma or the database failing while serving."""
from __future__ import annotations

import shutil
import subprocess

from bot.checklists import ChecklistFeature
from bot.core import texts
from bot.store.db import Database
from tests.e2e import DANGJIAN, process_env, work_dir
from tests.harness import TestBot


def test_database_that_cannot_be_opened_is_a_clear_exit(tmp_path):
    env = process_env({"DANGJIAN_DATA_DIR": str(tmp_path / "data"),
                       "DANGJIAN_DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir/x.db"})
    r = subprocess.run([DANGJIAN, "run", "--adapter", "console"], env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL, cwd=work_dir(tmp_path))
    assert r.returncode == 3
    assert "启动失败" in r.stderr and "无法打开数据库" in r.stderr
    assert r.stderr.count("Traceback") == 0


def test_chroma_failing_while_serving_falls_back_to_the_in_memory_vectors(service, monkeypatch):
    index = service.index

    def down(*args, **kwargs):
        raise ConnectionError("chroma server unreachable")

    monkeypatch.setattr(index.store, "similarity_search_by_vector_with_relevance_scores", down)
    answer = service.ask("党组会议一般多久召开一次？")
    assert not answer.refused and answer.citations[0].label == "第十八条"
    assert service.ask("帮我写一首关于春天的诗").refused


async def test_database_failing_while_serving_gets_a_polite_notice(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    db = Database(f"sqlite:///{folder}/state.db")
    db.create_schema()
    bot = TestBot(ChecklistFeature(db, [], timezone="Asia/Shanghai"))
    assert "还没有开始任何清单" in (await bot.say("/checklist status")).text
    db.engine.dispose()
    shutil.rmtree(folder)  # the database is gone while the bot serves
    reply = await bot.say("/checklist status")
    assert reply.text == texts.SERVICE_UNAVAILABLE and "Traceback" not in reply.text
    assert "依据" in (await bot.say("党组会议多久召开一次？")).text  # questions are still answered
