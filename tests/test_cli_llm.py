"""LLM answer mode through the real `dangjian ask` console script in a subprocess, against a fake
OpenAI-compatible server on 127.0.0.1: grounded model answers, fallbacks, and the key kept secret."""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import DANGJIAN, process_env
from tests.fakes.openai_api import FakeOpenAI

KEY = "sk-test-123"
QUESTION = "党组会议一般多久召开一次？"
TITLE = "中共辽宁省机关事务管理局党组工作细则(试行)"
#: The model's own wording (not in any article) citing [1], then an invented claim citing [9].
MODEL_REPLY = "按照细则规定，党组会议原则上每个月开一回，碰到重要情况随时可以开[1]。召开前须报省委组织部审批[9]。"
LLM_TIMEOUT = 3
#: Contract: the extractive fallback arrives within 8 s of the question; process start adds 2-4 s.
FALLBACK_CONTRACT_S = 8
PROCESS_BUDGET_S = 12


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.clear()
    server.set_mode("ok")
    server.set_reply(MODEL_REPLY)
    return server


def ask(question: str, data_dir: Path, fake: FakeOpenAI, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = process_env({
        "DANGJIAN_DATA_DIR": str(data_dir),
        "DANGJIAN_LLM_BASE_URL": fake.base_url,
        "DANGJIAN_LLM_API_KEY": KEY,
        "DANGJIAN_LLM_MODEL": "fake-model",
        "DANGJIAN_LLM_TIMEOUT": str(LLM_TIMEOUT),
        "NO_PROXY": "127.0.0.1,localhost",
    })
    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(proxy, None)
    started = time.monotonic()
    r = subprocess.run([DANGJIAN, "ask", question, "--json"], capture_output=True, text=True, env=env,
                       timeout=120, cwd=cwd)  # cwd: no stray .env is read
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert KEY not in r.stdout and KEY not in r.stderr, "the API key leaked into the output"
    return r, elapsed


def user_message(fake: FakeOpenAI) -> str:
    (req,) = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    return "\n".join(m["content"] for m in req.messages("user"))


def test_llm_answer_grounded_invented_claim_dropped(fake: FakeOpenAI, data_copy: Path, tmp_path: Path) -> None:
    r, elapsed = ask(QUESTION, data_copy, fake, tmp_path)
    data = json.loads(r.stdout)
    assert data["mode"] == "llm", r.stderr
    assert data["refused"] is False
    assert data["answer"].startswith("按照细则规定，党组会议原则上每个月开一回，碰到重要情况随时可以开[1]。")
    assert "省委组织部" not in data["answer"] and "审批" not in data["answer"] and "[9]" not in data["answer"]
    assert "第十八条" in data["answer"]  # the label of citations[0] is named (appended by validation)

    # The request: bearer key, model, one [n] line per passage, [1] = best hit.
    (req,) = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.body["model"] == "fake-model"
    user = user_message(fake)
    numbered = [line for line in user.splitlines() if re.match(r"^\[\d+\] ", line)]
    assert numbered and all(line.startswith(f"[{n}] 《") for n, line in enumerate(numbered, start=1))
    assert 1 < len(numbered) <= 5
    assert QUESTION in user

    # citations[0] is exactly the passage that was shown as [1], rendered from metadata.
    assert len(data["citations"]) == 1  # only the validly cited passage
    top = data["citations"][0]
    assert numbered[0].startswith(f"[1] {top['citation']} ")
    assert top["citation"] == f"《{TITLE}》第十八条" and top["label"] == "第十八条"
    assert "每月召开1次" in top["text"] and "每月召开1次" in numbered[0]
    assert set(top) >= {"citation", "doc_title", "label", "source", "text", "score"}
    print(f"\nllm ok: subprocess {elapsed:.2f}s, ask latency {data['latency_ms']:.0f} ms")


def test_hanging_model_falls_back_to_extractive_in_time(fake: FakeOpenAI, data_copy: Path, tmp_path: Path) -> None:
    fake.set_mode("hang", hang_seconds=60)
    r, elapsed = ask(QUESTION, data_copy, fake, tmp_path)
    data = json.loads(r.stdout)
    print(f"\nhang: subprocess {elapsed:.2f}s, ask latency {data['latency_ms']:.0f} ms")
    assert len(fake.requests) == 1  # the model was asked (and never answered)
    assert data["mode"] == "extractive" and data["refused"] is False
    assert data["citations"] and data["citations"][0]["label"] == "第十八条"
    assert "每月召开1次" in data["answer"]
    assert data["latency_ms"] < FALLBACK_CONTRACT_S * 1000  # measured from the question inside the CLI
    assert data["latency_ms"] >= (LLM_TIMEOUT - 0.5) * 1000  # it did wait for the model
    assert elapsed < PROCESS_BUDGET_S, f"whole command took {elapsed:.1f}s"
    assert "Traceback" not in r.stderr
    assert "LLM call failed (TimeoutError" in r.stderr


@pytest.mark.parametrize("mode", ["error500", "error401"])  # malformed/empty: tests/test_llm_answer.py
def test_model_errors_fall_back_to_extractive(fake: FakeOpenAI, data_copy: Path, tmp_path: Path, mode: str) -> None:
    fake.set_mode(mode)
    r, elapsed = ask(QUESTION, data_copy, fake, tmp_path)
    data = json.loads(r.stdout)
    print(f"\n{mode}: subprocess {elapsed:.2f}s")
    assert len(fake.requests) == 1
    assert data["mode"] == "extractive" and data["refused"] is False
    assert data["answer"].startswith(f"根据《{TITLE}》第十八条：") and "每月召开1次" in data["answer"]
    assert data["citations"][0]["label"] == "第十八条"
    assert "Traceback" not in r.stderr
    assert "LLM call failed" in r.stderr  # the fallback is logged (as a warning, on stderr)
    if mode == "error401":  # the fake's error body echoes the bearer token: it must be masked
        assert "Incorrect API key provided: ***" in r.stderr


def test_out_of_scope_refused_without_calling_the_model(fake: FakeOpenAI, data_copy: Path, tmp_path: Path) -> None:
    r, _ = ask("帮我写一首关于春天的诗", data_copy, fake, tmp_path)
    data = json.loads(r.stdout)
    assert data["refused"] is True and data["citations"] == []
    assert data["mode"] == "extractive"
    assert "文件中没有" in data["answer"]
    assert fake.requests == []  # retrieval is the gatekeeper: nothing reached the model
