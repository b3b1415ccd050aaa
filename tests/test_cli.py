"""The CLI contract, through the real console script in a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e import DANGJIAN, REPO, process_env, work_dir


def run(args: list[str], data_dir: Path, corpus: Path | None = None, stdin: str | None = None, timeout: int = 300):
    env = process_env({"DANGJIAN_DATA_DIR": str(data_dir), "DANGJIAN_CORPUS_DIR": str(corpus or REPO / "corpus")})
    return subprocess.run([DANGJIAN, *args], capture_output=True, text=True, env=env, timeout=timeout, input=stdin,
                          cwd=work_dir(data_dir.parent))


def test_ask_json_cites_the_governing_article(data_copy):
    r = run(["ask", "党组会议要多少人到会才能召开？", "--json"], data_copy)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["refused"] is False
    assert "第十九条" in data["answer"] and "半数以上" in data["answer"]
    top = data["citations"][0]
    assert top["citation"] == "《中共辽宁省机关事务管理局党组工作细则(试行)》第十九条"
    assert top["label"] == "第十九条"
    assert top["doc_title"] == "中共辽宁省机关事务管理局党组工作细则(试行)"
    assert top["source"].endswith(".txt") and "半数以上党组成员到会方可召开" in top["text"]
    assert isinstance(top["score"], float) and data["latency_ms"] > 0


def test_ask_plain_text_and_out_of_scope(data_copy):
    r = run(["ask", "党组会议一般多久召开一次？"], data_copy)
    assert r.returncode == 0 and "第十八条" in r.stdout and "每月" in r.stdout
    r = run(["ask", "帮我写一首关于春天的诗", "--json"], data_copy)
    data = json.loads(r.stdout)
    assert data["refused"] is True and data["citations"] == []
    assert "文件中没有" in data["answer"] and "第" not in data["answer"]


def test_ask_bad_input_and_missing_index(tmp_path, data_copy):
    r = run(["ask", "   "], data_copy)
    assert r.returncode != 0 and "问题不能为空" in r.stderr and "Traceback" not in r.stderr
    r = run(["ask", "党组会议多久开一次"], tmp_path / "empty")
    assert r.returncode != 0 and "dangjian ingest" in r.stderr and "Traceback" not in r.stderr


def test_batch_contract_and_dev_scores(data_copy, shared_dir, tmp_path):
    dev = shared_dir / "eval" / "dev.jsonl"
    questions = [json.loads(x) for x in dev.read_text(encoding="utf-8").splitlines() if x.strip()]
    lines = dev.read_text(encoding="utf-8").splitlines()
    junk = ["{not json", json.dumps({"id": "long", "q": "党组会议" * 5000}), json.dumps({"id": "bin", "q": "\x00\x01\ufffd" * 300})]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines + junk) + "\n", encoding="utf-8")
    r = run(["batch", str(inp)], data_copy)
    assert r.returncode == 0, r.stderr
    out_lines = r.stdout.splitlines()
    assert len(out_lines) == len(questions) + len(junk)
    assert all(line.startswith("{") for line in out_lines)
    rows = [json.loads(line) for line in out_lines]
    assert "error" in rows[len(questions)] and rows[len(questions)]["line"] == len(questions) + 1
    by_id = {row["id"]: row for row in rows}
    for key in ("long", "bin"):
        assert by_id[key]["latency_ms"] < 2000
    for row in rows[: len(questions)]:
        assert set(row) >= {"id", "answer", "refused", "citations", "latency_ms"}
        for c in row["citations"]:
            assert set(c) >= {"citation", "doc_title", "label", "source", "text", "score"}
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(out_lines[: len(questions)]), encoding="utf-8")
    sys.path.insert(0, str(shared_dir / "eval"))
    import score  # the shared scorer

    result = score.score(questions, [json.loads(x) for x in out_lines[: len(questions)]])
    assert result["hit@1"] >= 0.85, result
    assert result["hit@3"] >= 0.95, result
    assert result["oos_refusal"] >= 0.75, result
    assert result["false_refusal"] <= 0.07, result
    assert result["malformed_citations"] == 0


def _corrupt_docx(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is not really a docx")


def test_ingest_reports_bad_file_and_indexes_the_rest(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "第三党支部工作规则.txt").write_text(
        "第三党支部工作规则\n第一条 第三党支部每月第一个星期五下午召开支部委员会会议。\n"
        "第二条 支部党员大会每季度召开一次。\n第三条 本规则自印发之日起施行。\n", encoding="utf-8")
    _corrupt_docx(corpus / "损坏的文件.docx")
    data = tmp_path / "data"
    r = run(["ingest"], data, corpus)
    assert r.returncode == 1
    assert "损坏的文件.docx：不是有效的 docx 文件" in r.stderr
    assert "第三党支部工作规则" in r.stderr
    r = run(["ask", "第三党支部什么时候召开支部委员会会议？", "--json"], data, corpus)
    top = json.loads(r.stdout)["citations"][0]
    assert top["label"] == "第一条" and "每月第一个星期五" in top["text"]


def test_failed_ingest_keeps_the_serving_index(data_copy, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    _corrupt_docx(bad / "坏.docx")
    (bad / "空.txt").write_text("", encoding="utf-8")
    before = (data_copy / "index" / "CURRENT").read_text()
    r = run(["ingest", str(bad)], data_copy)
    assert r.returncode == 1 and "索引失败" in r.stderr and "坏.docx" in r.stderr and "空.txt" in r.stderr
    assert (data_copy / "index" / "CURRENT").read_text() == before
    r = run(["ask", "党组会议纪要由谁签发？", "--json"], data_copy)
    assert json.loads(r.stdout)["citations"][0]["label"] == "第二十五条"


def test_ingest_if_missing_skips_an_existing_index(data_copy):
    before = (data_copy / "index" / "CURRENT").read_text()
    r = run(["ingest", "--if-missing"], data_copy)
    assert r.returncode == 0 and "跳过" in r.stderr
    assert (data_copy / "index" / "CURRENT").read_text() == before
