"""Embeddings are computed once per distinct passage: reused from earlier builds (the cache in
the index folder) and shared by identical articles of several editions in one build."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from retrieval.config import RetrievalConfig
from retrieval.embed_cache import CACHE_FILE
from retrieval.service import RetrievalService

EDITION = """标题: 某某工作规则（{year}年修订）
第一条 为了规范党支部工作，制定本规则。
第二条 党小组会一般每月召开1次。
第三条 {changed}
"""


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    (folder / "rules_2017.txt").write_text(EDITION.format(year=2017, changed="支委会每届任期两年或三年。"), encoding="utf-8")
    (folder / "rules_2022.txt").write_text(EDITION.format(year=2022, changed="支委会每届任期三年至五年。"), encoding="utf-8")
    return folder


def test_identical_articles_of_two_editions_are_embedded_once_and_rebuilds_reuse_everything(tmp_path, embeddings):
    corpus = _corpus(tmp_path / "corpus")
    service = RetrievalService(RetrievalConfig(index_dir=tmp_path / "data" / "index", corpus_dir=corpus), embeddings=embeddings)
    first = service.ingest()
    assert first.chunks == 6 and first.embedded == 4  # 第一条 and 第二条 are the same in both editions
    assert (tmp_path / "data" / "index" / CACHE_FILE).is_file()
    second = service.ingest()
    assert second.embedded == 0
    # A fresh data dir has no cache: everything is embedded again.
    other = RetrievalService(RetrievalConfig(index_dir=tmp_path / "other" / "index", corpus_dir=corpus), embeddings=embeddings)
    assert other.ingest().embedded == 4


def test_a_corrupt_cache_only_costs_time(tmp_path, embeddings):
    corpus = _corpus(tmp_path / "corpus")
    index = tmp_path / "data" / "index"
    service = RetrievalService(RetrievalConfig(index_dir=index, corpus_dir=corpus), embeddings=embeddings)
    service.ingest()
    (index / CACHE_FILE).write_bytes(b"not a database")
    report = service.ingest()  # the serving version still lends its vectors
    assert report.ok and report.embedded == 0
    assert service.ask("党小组会多久开一次？").citations[0].label == "第二条"
    with closing(sqlite3.connect(index / CACHE_FILE)) as conn:  # the damaged cache was replaced
        assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 4


def test_the_same_article_of_an_older_edition_comes_after_the_distinct_rules(tmp_path, embeddings):
    corpus = _corpus(tmp_path / "corpus")
    service = RetrievalService(RetrievalConfig(index_dir=tmp_path / "data" / "index", corpus_dir=corpus), embeddings=embeddings)
    service.ingest()
    cited = service.ask("党小组会一般多久召开一次？").citations
    assert cited[0].label == "第二条" and "2022年版" in cited[0].citation  # the current edition first
    texts = [c.text for c in cited]
    repeat = texts.index(cited[0].text, 1)  # the 2017 copy of the same article…
    assert all(t != cited[0].text for t in texts[1:repeat]) and repeat == len(set(texts))  # …after every distinct one


LONG = """标题: 某某会议规则
第一条 为了开好会议，制定本规则。
第二条 党组民主生活会每年召开1次。党组成员开展严肃认真的批评和自我批评，会议由书记主持并作总结讲话。因故缺席的党组成员，应提交书面发言，列入会议记录。会后由主持人将会议情况和相关意见转告缺席同志，并在规定时限内形成会议纪要。会议情况应当按照规定时限向上级党组织作出书面报告。
第三条 本规则自印发之日起施行。
"""


def test_sentences_of_long_articles_are_embedded_once_and_an_index_without_them_still_answers(tmp_path, embeddings):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "rules.txt").write_text(LONG, encoding="utf-8")
    index = tmp_path / "data" / "index"
    service = RetrievalService(RetrievalConfig(index_dir=index, corpus_dir=corpus), embeddings=embeddings)
    first = service.ingest()
    assert first.chunks == 3 and first.embedded == 3 + 5  # three passages, the five sentences of 第二条
    assert service.ingest().embedded == 0  # a rebuild reuses the sentence vectors too
    loaded = service.index
    assert loaded.sentence_similarity(embeddings.query("缺席")) is not None
    # An index built before sentence vectors (no such collection): quotes by words alone.
    client, _ = service.location.client_and_name(loaded.version)
    client.delete_collection(service.location.sentences_name(loaded.version))
    service._index = None
    service.reload()
    assert service.index.sentence_similarity(embeddings.query("缺席")) is None
    answer = service.ask("民主生活会上有党组成员因故缺席，要提交什么？")
    assert not answer.refused and "书面发言" in answer.answer
