"""The retrieval service the bot and CLI use: the serving index, questions, lookups, ingest.

The serving :class:`LoadedIndex` is swapped atomically (a single reference assignment) after a
new version is published, so questions keep being answered from the old index while a new one
builds, and never see a half-built one.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from retrieval.answer import NO_WORDS, REFUSAL, RefusalThresholds, extractive_answer
from retrieval.config import RetrievalConfig
from retrieval.embed import E5Embeddings
from retrieval.index import IndexBuilder, IngestReport, Progress
from retrieval.models import Answer, Article
from retrieval.query import find_subjects
from retrieval.search import LoadedIndex
from retrieval.store import ChromaLocation, FilePointerStore, PointerStore

log = logging.getLogger(__name__)


class NoIndex(RuntimeError):
    """No index has been built yet (message in Chinese)."""


class RetrievalService:
    def __init__(self, config: RetrievalConfig, pointer: PointerStore | None = None,
                 embeddings: E5Embeddings | None = None) -> None:
        self.config = config
        self.location = ChromaLocation(config.index_dir, config.chroma_url)
        self.pointer = pointer or FilePointerStore(config.index_dir)
        self.embeddings = embeddings or E5Embeddings()
        self.builder = IndexBuilder(self.location, self.pointer, self.embeddings)
        self.thresholds = RefusalThresholds()
        self._index: LoadedIndex | None = None
        self._swap_lock = threading.Lock()
        self._llm = None
        if config.llm is not None:
            from retrieval.llm import LLMAnswerer

            self._llm = LLMAnswerer(config.llm, config.prompts_dir)

    # ------------------------------------------------------------------ serving index
    @property
    def index(self) -> LoadedIndex:
        if self._index is None:
            self.reload()
        if self._index is None:
            raise NoIndex("还没有建立索引，请先运行 `dangjian ingest`。")
        return self._index

    @property
    def has_index(self) -> bool:
        return self._index is not None or self.pointer.read() is not None

    def reload(self) -> bool:
        """Load the version the pointer names if it is not the one serving; True if switched."""
        pointer = self.pointer.read()
        if not pointer:
            return False
        version = pointer["current"]
        if self._index is not None and self._index.version == version:
            return False
        with self._swap_lock:
            if self._index is not None and self._index.version == version:
                return False
            client, name = self.location.client_and_name(version)
            loaded = LoadedIndex(version, client, name, self.embeddings, manifest=self.pointer.load_manifest(version),
                                 sentences_name=self.location.sentences_name(version))
            self._index = loaded  # atomic swap
            log.info("serving index version %s (%d articles)", version, len(loaded.articles))
            return True

    def lookup(self, doc: str, label: str) -> Article | None:
        return self.index.lookup(doc, label)

    # ------------------------------------------------------------------ questions
    def ask(self, question: str) -> Answer:
        """Answer one question (never raises for bad input; raises NoIndex without an index)."""
        question = (question or "")[: self.config.max_question_chars]
        if not question.strip():
            return Answer(question=question, answer=REFUSAL, refused=True)
        if not any(ch.isalnum() for ch in question):  # only punctuation or emoji: a hint, not a refusal
            return Answer(question=question, answer=NO_WORDS, refused=True)
        index = self.index
        hits, info = index.search(question, k=self.config.top_k)
        named = info.analysis.named_docs
        answer = extractive_answer(
            question, hits, info, self.thresholds,
            last_article=index.last_article(named[0]) if named else None, doc_titles=index.doc_titles,
            similarity=index.sentence_similarity(info.vector),
        )
        if self._llm is not None and not answer.refused:
            answer = self._llm.answer(question, hits, answer)
        return answer

    # ------------------------------------------------------------------ ingest
    def ingest(self, paths: list[Path] | None = None, progress: Progress | None = None) -> IngestReport:
        """Build a new version from the paths (default: the corpus folder) and serve it."""
        report = self.builder.build(paths or [self.config.corpus_dir], progress)
        self.reload()
        return report

    def rollback(self) -> str | None:
        """Switch back to the previous version; returns it, or None if there is none."""
        pointer = self.pointer.read()
        if not pointer or not pointer.get("previous"):
            return None
        previous = pointer["previous"]
        if self.pointer.load_manifest(previous) is None:
            return None
        self.pointer.write(previous, pointer["current"])
        self.reload()
        return previous

    # ------------------------------------------------------------------ conversations
    @staticmethod
    def subjects(text: str) -> list[str]:
        """The subjects (meetings, bodies, roles, procedures) a message names."""
        return find_subjects(text)

    def known_share(self, text: str) -> float:
        """The idf-weighted share of a message's search terms that occur in the documents (0..1);
        chatter about other things ("帮我写一首诗") scores near 0."""
        return self.index.known_share(text)

    def rewrite_follow_up(self, previous: str, label: str, follow_up: str) -> str | None:
        """With an LLM: the follow-up rewritten as a standalone question; else None."""
        return self._llm.rewrite(previous, label, follow_up) if self._llm is not None else None

    def close(self) -> None:
        """Release what the service holds beyond memory (the LLM client's thread)."""
        if self._llm is not None:
            self._llm.close()

    def warm_up(self) -> None:
        """Load the index and run one question so the first user does not wait."""
        t = time.monotonic()
        if self.has_index:
            self.index.search("党组会议", k=1)
        log.info("warm-up took %.2fs", time.monotonic() - t)
