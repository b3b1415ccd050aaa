"""Vectors of embedded passages by the SHA-1 of their text, kept between builds.

A new index version re-embeds only passages whose exact text was not embedded before: neither
in the serving version nor in any earlier build of this data dir (the cache), nor earlier in
the same build (identical articles of several editions are embedded once). The cache is one
SQLite file in the index folder, pruned to the passages of the latest build; it is an
optimisation only (a missing or unreadable cache just means more embedding), and is not kept
when the index lives on a Chroma server (replicas keep nothing in their data dirs).
"""
from __future__ import annotations

import hashlib
import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
CACHE_FILE = "embedding-cache.sqlite3"


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: no cache

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        return conn

    def get_many(self, keys: list[str]) -> dict[str, list[float]]:
        if self.path is None or not keys:
            return {}
        try:
            with closing(self._connect()) as conn:
                out: dict[str, list[float]] = {}
                for start in range(0, len(keys), 500):
                    part = keys[start:start + 500]
                    rows = conn.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})", part)
                    out.update((k, np.frombuffer(v, dtype=np.float32).tolist()) for k, v in rows)
                return out
        except sqlite3.Error:
            log.warning("embedding cache unreadable; embedding anew", exc_info=True)
            return {}

    def replace(self, vectors: dict[str, list[float]]) -> None:
        """Keep exactly these vectors (the passages of the build just finished); a damaged cache
        file is replaced."""
        if self.path is None:
            return
        for attempt in (1, 2):
            try:
                with closing(self._connect()) as conn, conn:
                    conn.execute("DELETE FROM vectors")
                    conn.executemany("INSERT INTO vectors (key, vector) VALUES (?, ?)",
                                     ((k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()))
                return
            except sqlite3.DatabaseError:
                if attempt == 2:
                    log.warning("could not write the embedding cache", exc_info=True)
                    return
                self.path.unlink(missing_ok=True)
