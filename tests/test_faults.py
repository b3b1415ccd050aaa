"""Faults: a database that cannot be opened, Chroma or the database failing while serving."""
from __future__ import annotations

import os
import subprocess

from sqlalchemy.exc import OperationalError

from bot.core.engine import Core
from bot.core.models import Capabilities, IncomingMessage
from bot.core import texts
from tests.e2e import DANGJIAN, REPO


def test_database_that_cannot_be_opened_is_a_clear_exit(tmp_path, data_copy):
    env = {**os.environ, "DANGJIAN_DATA_DIR": str(data_copy),
           "DANGJIAN_DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir/x.db"}
    env.pop("DANGJIAN_TELEGRAM_TOKEN", None)
    r = subprocess.run([DANGJIAN, "run", "--adapter", "console"], env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL, cwd=REPO)
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


async def test_database_failing_while_serving_gets_a_polite_notice():
    class Broken:
        def ask(self, question):
            raise OperationalError("select 1", {}, Exception("connection refused"))

    core = Core(Broken())
    msg = IncomingMessage(platform="console", chat_id="c", user_id="u", text="党组会议多久开一次？")
    [reply] = await core.handle(msg, Capabilities())
    assert reply.text == texts.SERVICE_UNAVAILABLE and "Traceback" not in reply.text
