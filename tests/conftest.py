"""Shared fixtures: paths, a built index of the default corpus (built once per session)."""
from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="session")
def built_data_dir(tmp_path_factory, embeddings) -> Path:
    """A data dir with the default corpus indexed (read-only for tests: copy it to modify)."""
    from bot.settings import Settings
    from retrieval.service import RetrievalService

    data = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir=data, corpus_dir=CORPUS)
    RetrievalService(settings.retrieval_config(), embeddings=embeddings).ingest([CORPUS])
    return data


@pytest.fixture
def data_copy(built_data_dir, tmp_path) -> Path:
    """A private writable copy of the built data dir."""
    target = tmp_path / "data"
    shutil.copytree(built_data_dir, target)
    return target


@pytest.fixture(scope="session")
def service(built_data_dir, embeddings):
    from bot.settings import Settings
    from retrieval.service import RetrievalService

    return RetrievalService(Settings(data_dir=built_data_dir, corpus_dir=CORPUS).retrieval_config(), embeddings=embeddings)


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
