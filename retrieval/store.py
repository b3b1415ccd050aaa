"""Where index versions live: Chroma collections plus a pointer naming the serving version.

Embedded (default): each version is its own Chroma ``PersistentClient`` folder under
``data/index/versions/<version>/`` and the pointer is the file ``data/index/CURRENT``; a version
is complete before the pointer names it, so a failed or killed ingest leaves the old one serving.

Server (``DANGJIAN_CHROMA_URL``): versions are collections ``dj_<version>`` on the Chroma server.
The pointer and manifests are kept by a :class:`PointerStore` (the file store, or the database).
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import chromadb
from chromadb.config import Settings as ChromaSettings

COLLECTION = "units"
SENTENCES = "sentences"


def chroma_settings() -> ChromaSettings:
    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def new_version_name() -> str:
    return datetime.now(timezone.utc).strftime("v%Y%m%dT%H%M%S%f")


class PointerStore(Protocol):
    """Keeps which version serves, the previous one, and each version's manifest."""

    def read(self) -> dict | None: ...  # {"current": v, "previous": v|None, "switched_at": iso}

    def write(self, current: str, previous: str | None) -> None: ...

    def save_manifest(self, version: str, manifest: dict) -> None: ...

    def load_manifest(self, version: str) -> dict | None: ...


class FilePointerStore:
    """Pointer and manifests as JSON files in the index folder (atomic replace)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self) -> dict | None:
        path = self.root / "CURRENT"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write(self, current: str, previous: str | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"current": current, "previous": previous, "switched_at": datetime.now(timezone.utc).isoformat()}
        _atomic_write(self.root / "CURRENT", json.dumps(data))

    def save_manifest(self, version: str, manifest: dict) -> None:
        folder = self.root / "versions" / version
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1))

    def load_manifest(self, version: str) -> dict | None:
        path = self.root / "versions" / version / "manifest.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ChromaLocation:
    """Opens the collection of a version, embedded or on a Chroma server."""

    def __init__(self, index_root: Path, chroma_url: str | None = None) -> None:
        self.index_root = index_root
        self.chroma_url = chroma_url
        self._http: chromadb.ClientAPI | None = None

    @property
    def is_server(self) -> bool:
        return bool(self.chroma_url)

    def _client(self, version: str) -> chromadb.ClientAPI:
        if self.chroma_url:
            if self._http is None:
                u = urlparse(self.chroma_url)
                self._http = chromadb.HttpClient(
                    host=u.hostname or "127.0.0.1", port=u.port or (443 if u.scheme == "https" else 8000),
                    ssl=u.scheme == "https", settings=chroma_settings(),
                )
            return self._http
        path = self.index_root / "versions" / version / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings())

    def collection_name(self, version: str) -> str:
        return f"dj_{version}" if self.chroma_url else COLLECTION

    def sentences_name(self, version: str) -> str:
        """The collection of the version's sentence vectors (for choosing what to quote)."""
        return f"djs_{version}" if self.chroma_url else SENTENCES

    def create(self, version: str):
        return self._create(version, self.collection_name(version))

    def create_sentences(self, version: str):
        return self._create(version, self.sentences_name(version))

    def _create(self, version: str, name: str):
        return self._client(version).create_collection(
            name=name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
        )

    def open(self, version: str):
        return self._client(version).get_collection(name=self.collection_name(version), embedding_function=None)

    def open_sentences(self, version: str):
        return self._client(version).get_collection(name=self.sentences_name(version), embedding_function=None)

    def client_and_name(self, version: str) -> tuple[chromadb.ClientAPI, str]:
        return self._client(version), self.collection_name(version)

    def drop(self, version: str) -> None:
        """Delete a version's data (best effort)."""
        if self.chroma_url:
            for name in (self.collection_name(version), self.sentences_name(version)):
                try:
                    self._client(version).delete_collection(name)
                except Exception:  # already gone
                    pass
        shutil.rmtree(self.index_root / "versions" / version, ignore_errors=True)

    def existing_versions(self) -> list[str]:
        """Versions with data: folders (embedded) or ``dj_*`` collections (server)."""
        if self.chroma_url:
            client = self._client("")
            names = [getattr(c, "name", c) for c in client.list_collections()]
            return sorted(n[3:] for n in names if isinstance(n, str) and n.startswith("dj_"))
        folder = self.index_root / "versions"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
