"""The loopback PostgreSQL and Chroma servers of tests/servers.py, and the docker/ files."""
from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

# The fixtures live in tests/servers.py; conftest.py registers the plugin as well (registering it
# twice is a no-op), this line keeps the module runnable on its own. The context managers are
# imported inside the tests so that pytest imports the plugin first (assertion rewriting).


REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"


def _accepts_tcp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# PostgreSQL --------------------------------------------------------------------------------------
def test_postgres_answers_sqlalchemy_and_keeps_a_table(pg_url):
    from sqlalchemy import create_engine, text

    assert re.fullmatch(r"postgresql\+psycopg://postgres@127\.0\.0\.1:\d+/dangjian", pg_url)
    engine = create_engine(pg_url)
    table = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            assert conn.execute(text("select current_database()")).scalar_one() == "dangjian"
            assert conn.execute(text("show fsync")).scalar_one() == "off"
            conn.execute(text(f"create table {table} (id serial primary key, name text not null)"))
            conn.execute(text(f"insert into {table} (name) values (:n)"), [{"n": "党建"}, {"n": "支部"}])
        with engine.connect() as conn:  # a new connection sees the committed rows
            rows = conn.execute(text(f"select name from {table} order by id")).scalars().all()
            assert rows == ["党建", "支部"]
            conn.execute(text(f"drop table {table}"))
            conn.commit()
    finally:
        engine.dispose()


def test_postgres_server_is_stopped_and_removed_when_the_test_fails(pg_url):
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.servers import SERVER_ROOTS, postgres_server

    with pytest.raises(RuntimeError, match="test failed"):
        with postgres_server(database="other") as url:
            root = SERVER_ROOTS[url]
            assert root.is_dir()
            port = make_url(url).port
            assert port != make_url(pg_url).port  # a private server beside the session one
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="other") as conn:
                assert conn.execute("select 1").fetchone() == (1,)
            raise RuntimeError("test failed")
    assert not _accepts_tcp(port)
    assert not root.exists()  # (other test workers may be starting servers of their own meanwhile)


# Chroma -------------------------------------------------------------------------------------------
def _client(url: str):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    u = urlparse(url)
    return chromadb.HttpClient(host=u.hostname, port=u.port, settings=ChromaSettings(anonymized_telemetry=False))


def test_chroma_stores_and_queries_explicit_embeddings(chroma_url):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", chroma_url)
    client = _client(chroma_url)
    assert client.heartbeat() > 0
    name = f"t_{uuid.uuid4().hex[:12]}"
    col = client.create_collection(name=name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    try:
        col.add(
            ids=["a", "b", "c"],
            embeddings=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            documents=["党组会议", "支部大会", "民主生活会"],
            metadatas=[{"label": "第十八条"}, {"label": "第十九条"}, {"label": "第二十条"}],
        )
        assert col.count() == 3
        found = col.query(query_embeddings=[[0.1, 0.9, 0.0]], n_results=2, include=["documents", "metadatas", "distances"])
        assert found["ids"][0] == ["b", "a"]
        assert found["documents"][0][0] == "支部大会"
        assert found["metadatas"][0][0] == {"label": "第十九条"}
        assert found["distances"][0][0] < found["distances"][0][1]
        # A second client (another replica) sees the same data.
        assert _client(chroma_url).get_collection(name, embedding_function=None).count() == 3
    finally:
        client.delete_collection(name)
    assert name not in [c.name for c in client.list_collections()]


def test_project_chroma_location_uses_the_server(chroma_url, tmp_path):
    from retrieval.store import ChromaLocation

    location = ChromaLocation(tmp_path / "index", chroma_url)
    version = f"v{uuid.uuid4().hex[:8]}"
    col = location.create(version)
    col.add(ids=["x"], embeddings=[[0.6, 0.8]], documents=["第一条"])
    assert location.open(version).get(ids=["x"])["documents"] == ["第一条"]
    location.drop(version)
    client, name = location.client_and_name(version)
    assert name not in [c.name for c in client.list_collections()]
    assert not (tmp_path / "index").exists()  # server mode writes nothing locally


def test_chroma_server_is_stopped_and_removed_when_the_test_fails(chroma_url):
    from tests.servers import SERVER_ROOTS, chroma_server

    with pytest.raises(RuntimeError, match="test failed"):
        with chroma_server() as url:
            root = SERVER_ROOTS[url]
            assert root.is_dir()
            port = urlparse(url).port
            assert url != chroma_url
            assert _client(url).heartbeat() > 0
            raise RuntimeError("test failed")
    assert not _accepts_tcp(port)
    assert not root.exists()


# docker/ (Docker does not run on the dev machines: these files are checked by reading) ------------
def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_file_names_services_and_urls():
    import chromadb

    services = _compose()["services"]
    assert {"bot", "chroma", "postgres", "ingest"} <= set(services)
    bot = services["bot"]
    env = bot["environment"]
    assert env["DANGJIAN_CHROMA_URL"] == "http://chroma:8000"
    assert env["DANGJIAN_DATABASE_URL"] == "postgresql+psycopg://dangjian:dangjian@postgres:5432/dangjian"
    assert (DOCKER / bot["build"]["context"] / bot["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert bot["env_file"] == ["bot.env"] and (DOCKER / "bot.env.example").is_file()
    assert bot["deploy"]["replicas"] >= 2
    assert {name: dep["condition"] for name, dep in bot["depends_on"].items()} == {
        "postgres": "service_healthy", "chroma": "service_healthy",
    }
    assert services["ingest"]["command"] == ["dangjian", "ingest"]
    assert services["ingest"]["environment"] == env

    # The URL's credentials, host and database are the postgres service's.
    db = urlparse(env["DANGJIAN_DATABASE_URL"])
    pg = services["postgres"]
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg["environment"]["POSTGRES_USER"], pg["environment"]["POSTGRES_PASSWORD"], pg["environment"]["POSTGRES_DB"],
    )
    assert re.fullmatch(r"postgres:1[56](\..*)?", pg["image"]) and "pg_isready" in str(pg["healthcheck"]["test"])

    # Chroma: pinned to the client's minor version, data on a volume at the image's /data.
    chroma = services["chroma"]
    tag = chroma["image"].split(":", 1)[1]
    assert chroma["image"].startswith("chromadb/chroma:")
    assert tag.split(".")[:2] == chromadb.__version__.split(".")[:2]
    assert any(v.endswith(":/data") for v in chroma["volumes"])
    assert "/api/v2/heartbeat" in str(chroma["healthcheck"]["test"])
    assert chroma["environment"]["ANONYMIZED_TELEMETRY"] == "False"


def test_bot_env_example_lists_every_setting():
    from bot.settings import Settings

    text = (DOCKER / "bot.env.example").read_text(encoding="utf-8")
    named = set(re.findall(r"\b(DANGJIAN_[A-Z0-9_]+)=", text))
    expected = {f"DANGJIAN_{name.upper()}" for name in Settings.model_fields}
    assert expected - named == set(), "settings missing from docker/bot.env.example"
    assert named - expected == set(), "unknown settings in docker/bot.env.example"


def test_dockerfile_installs_the_checkout_the_app_reads():
    from bot import app

    dockerfile = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    copied = re.findall(r"^COPY (?:--chown=\S+ )?(\S+)", dockerfile, re.M)
    for source in copied:
        assert (REPO / source).exists(), source
    # prompts/ and corpus/ are read from the working directory (DANGJIAN_PROMPTS_DIR, _CORPUS_DIR).
    assert re.search(r"^WORKDIR /app\b", dockerfile, re.M)
    assert {"bot/", "retrieval/", "prompts/", "corpus/", "pyproject.toml"} <= set(copied)
    assert "pip install --no-deps -e /app" in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "/healthz" in dockerfile and "EXPOSE 8080" in dockerfile
    assert 'CMD ["dangjian", "run", "--adapter", "wecom"]' in dockerfile
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "data", ".env", "tests"} <= set(ignored)
    assert not {"bot", "retrieval", "prompts", "corpus", "pyproject.toml"} & set(ignored)
