"""Shared fixtures: paths, and a built index of the default corpus (built once per session).

The index is built by ``dangjian ingest`` in a background process that starts as soon as the
tests are collected (once per run, also under pytest-xdist), while the tests that do not need it
run first (they are ordered so). Tests read it through :func:`data_copy` (a private copy) or
:func:`service`, never modify it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

pytest_plugins = ["tests.servers"]

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus"
SHARED = Path(os.environ.get("DANGJIAN_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}: CI runs with shared/ beside the repo")
    return SHARED


@pytest.fixture(scope="session")
def embeddings():
    from retrieval.embed import E5Embeddings

    return E5Embeddings()


_INDEX_FIXTURES = {"built_data_dir", "data_copy", "service"}
_ROOT_ENV = "DANGJIAN_TEST_INDEX_ROOT"  # shared by pytest-xdist workers (they inherit it)
_owner: dict[str, Path] = {}


def _needs_index(item: pytest.Item) -> bool:
    return bool(_INDEX_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_configure(config: pytest.Config) -> None:
    """The process that starts the run (the xdist controller, or pytest alone) owns the folder
    where the index is built; xdist workers inherit its path."""
    if _ROOT_ENV not in os.environ:
        root = Path(tempfile.mkdtemp(prefix="dangjian-index-"))
        os.environ[_ROOT_ENV] = str(root)
        _owner["root"] = root


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that need the built index last, and start building it now, once per run,
    in a background process (the first collecting process to get here starts it)."""
    items.sort(key=_needs_index)
    if not any(_needs_index(item) for item in items):
        return
    root = Path(os.environ[_ROOT_ENV])
    try:
        os.close(os.open(root / "started", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return  # another worker started it
    from tests.e2e import DANGJIAN, process_env

    (root / "cwd").mkdir()
    env = process_env({"DANGJIAN_DATA_DIR": str(root / "data"), "DANGJIAN_CORPUS_DIR": str(CORPUS)})
    script = '"$0" ingest > ingest.log 2>&1; echo $? > status.tmp && mv status.tmp status'
    proc = subprocess.Popen(["sh", "-c", script, DANGJIAN], env=env, cwd=root, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    (root / "pid").write_text(str(proc.pid))


def pytest_unconfigure(config: pytest.Config) -> None:
    root = _owner.pop("root", None)
    if root is None:
        return
    pid = root / "pid"
    if pid.exists() and not (root / "status").exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid.read_text()), signal.SIGKILL)  # a run stopped early: no orphan build
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def built_data_dir() -> Path:
    """A data dir with the default corpus indexed (read-only for tests: copy it to modify)."""
    root = Path(os.environ[_ROOT_ENV])
    deadline = time.monotonic() + 900
    while not (root / "status").exists():
        if not (root / "started").exists() or time.monotonic() > deadline:
            pytest.fail("the index of the default corpus is not being built")
        time.sleep(0.2)
    if (root / "status").read_text().strip() != "0":
        pytest.fail(f"dangjian ingest of the default corpus failed:\n{(root / 'ingest.log').read_text()[-3000:]}")
    return root / "data"


@pytest.fixture
def data_copy(built_data_dir, tmp_path) -> Path:
    """A private writable copy of the built data dir."""
    target = tmp_path / "data"
    shutil.copytree(built_data_dir, target)
    return target


@pytest.fixture(scope="session")
def service(built_data_dir, embeddings):
    from retrieval.service import RetrievalService
    from tests.harness import make_settings

    settings = make_settings(data_dir=built_data_dir, corpus_dir=CORPUS)
    return RetrievalService(settings.retrieval_config(), embeddings=embeddings)


@pytest.fixture
def tg():
    """A running fake Telegram Bot API server (tests/fakes/telegram_api.py)."""
    from tests.fakes.telegram_api import FakeTelegram

    fake = FakeTelegram()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def db(tmp_path):
    """A fresh SQLite database with the core tables (features import theirs before use)."""
    from bot.store.db import Database

    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.create_schema()
    return database
