"""Build a new index version from regulation files (the code path of `dangjian ingest` and
`/reindex`): parse, chunk, embed (reusing unchanged embeddings), write, then switch."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from retrieval.documents import ParsedDocument, iter_corpus_files, load_metadata, mark_superseded, parse_file
from retrieval.embed import E5Embeddings
from retrieval.embed_cache import CACHE_FILE, EmbeddingCache, text_key
from retrieval.evidence import quotable_sentences
from retrieval.models import Article
from retrieval.read import ReadError
from retrieval.store import ChromaLocation, PointerStore, new_version_name

log = logging.getLogger(__name__)

CHUNK_CHARS = 240
EMBED_BATCH = 64  # passages per call: the engine spreads a batch over the cores
KEEP_VERSIONS = 2  # the serving one and the previous one (for rollback)

#: progress(stage, done, total, detail)
Progress = Callable[[str, int, int, str], None]


class IngestError(RuntimeError):
    """The whole ingest failed; the serving index is untouched. Message is Chinese."""


class IngestBusy(IngestError):
    """Another ingest is running in this process."""


@dataclass
class FileError:
    file: str
    reason: str


@dataclass
class IngestReport:
    version: str
    documents: list[dict] = field(default_factory=list)  # manifest entries
    added: list[str] = field(default_factory=list)  # titles
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    articles: int = 0
    chunks: int = 0
    embedded: int = 0  # chunks embedded anew (the rest reused)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


def chunk_article(article: Article, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Split a long article into parts at line/sentence boundaries; short ones stay whole."""
    text = article.text
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    for line in text.split("\n"):
        while len(line) > max_chars:
            cut = max(line.rfind(p, 0, max_chars) for p in "。；！？")
            cut = cut + 1 if cut > max_chars // 3 else max_chars
            pieces.append(line[:cut])
            line = line[cut:]
        if line:
            pieces.append(line)
    parts: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(piece) + 1 > max_chars:
            parts.append(current)
            current = piece
        else:
            current = f"{current}\n{piece}" if current else piece
    if current:
        parts.append(current)
    return parts


def passage_text(article: Article, chunk: str) -> str:
    """What is embedded and indexed for a chunk: document title and heading give it context."""
    return f"{article.doc_title}｜{article.heading}\n{chunk}" if article.heading else f"{article.doc_title}\n{chunk}"


class IndexBuilder:
    """Builds index versions. One build at a time per process (a second one raises IngestBusy)."""

    def __init__(self, location: ChromaLocation, pointer: PointerStore, embeddings: E5Embeddings) -> None:
        self.location = location
        self.pointer = pointer
        self.embeddings = embeddings
        self.cache = EmbeddingCache(None if location.is_server else location.index_root / CACHE_FILE)
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def build(self, paths: list[Path], progress: Progress | None = None) -> IngestReport:
        if not self._lock.acquire(blocking=False):
            raise IngestBusy("正在更新索引，请稍候")
        try:
            return self._build(paths, progress or (lambda *a: None))
        finally:
            self._lock.release()

    # ------------------------------------------------------------------
    def _build(self, paths: list[Path], progress: Progress) -> IngestReport:
        started = time.monotonic()
        files = iter_corpus_files(paths)
        version = new_version_name()
        report = IngestReport(version=version)
        docs = self._parse_all(paths, files, report, progress)
        if not docs:
            raise IngestError("没有可索引的文件：" + ("；".join(f"{e.file}：{e.reason}" for e in report.errors) or "目录为空"))
        mark_superseded(docs)

        rows: list[tuple[str, str, dict, Article]] = []  # id, passage, metadata
        for d in docs:
            for a in d.articles:
                for part, chunk in enumerate(chunk_article(a)):
                    rows.append((f"{a.doc_id}#{a.order}#{part}", passage_text(a, chunk), _metadata(a, part), a))
        report.articles = sum(len(d.articles) for d in docs)
        report.chunks = len(rows)
        # Sentences of the longer articles, embedded too: the quote weighs closeness in meaning.
        sentences = list(dict.fromkeys(s for d in docs for a in d.articles for s in quotable_sentences(a)))

        previous = self.pointer.read()
        prev_version = previous["current"] if previous else None
        keys = [text_key(p) for _, p, _, _ in rows]
        sentence_keys = [text_key(s) for s in sentences]
        known = self._previous_embeddings(prev_version)
        known.update(self.cache.get_many([k for k in set(keys + sentence_keys) if k not in known]))
        todo: dict[str, str] = {}  # key → text, each distinct passage or sentence embedded once
        for key, text in [*zip(keys, (r[1] for r in rows)), *zip(sentence_keys, sentences)]:
            if key not in known:
                todo.setdefault(key, text)
        report.embedded = len(todo)
        pending = list(todo.items())
        for start in range(0, len(pending), EMBED_BATCH):
            batch = pending[start : start + EMBED_BATCH]
            for (key, _), vec in zip(batch, self.embeddings.passages([p for _, p in batch])):
                known[key] = vec.tolist()
            progress("embed", min(start + EMBED_BATCH, len(pending)), len(pending), "计算向量")
        vectors = [known[key] for key in keys]

        try:
            collection = self.location.create(version)
            for start in range(0, len(rows), 256):
                batch = rows[start : start + 256]
                collection.add(
                    ids=[r[0] for r in batch],
                    documents=[r[1] for r in batch],
                    metadatas=[r[2] for r in batch],
                    embeddings=[vectors[start + j] for j in range(len(batch))],
                )
                progress("write", min(start + 256, len(rows)), len(rows), "写入索引")
            self._write_sentences(version, sentences, [known[k] for k in sentence_keys])
            manifest = self._manifest(version, docs, report)
            self.pointer.save_manifest(version, manifest)
            self.cache.replace({key: known[key] for key in set(keys + sentence_keys)})
        except Exception as exc:
            self.location.drop(version)
            raise IngestError(f"写入索引失败，当前索引保持不变：{exc}") from exc

        self._diff(report, self.pointer.load_manifest(prev_version) if prev_version else None, manifest)
        self.pointer.write(version, prev_version)
        self._cleanup(keep={version, prev_version})
        report.documents = manifest["documents"]
        report.seconds = round(time.monotonic() - started, 2)
        return report

    def _parse_all(self, roots: list[Path], files: list[Path], report: IngestReport, progress: Progress) -> list[ParsedDocument]:
        metadata: dict[str, dict] = {}
        for root in roots:
            folder = root if root.is_dir() else root.parent
            metadata.update(load_metadata(folder))
        docs: list[ParsedDocument] = []
        seen_hashes: set[str] = set()
        seen_ids: set[str] = set()
        for n, path in enumerate(files, start=1):
            progress("parse", n, len(files), path.name)
            if not path.exists():
                report.errors.append(FileError(path.name, "文件不存在"))
                continue
            try:
                doc = parse_file(path, metadata.get(path.name))
            except ReadError as exc:
                report.errors.append(FileError(path.name, str(exc)))
                continue
            except Exception as exc:  # a parser bug must not stop the other files
                log.exception("failed to parse %s", path)
                report.errors.append(FileError(path.name, f"解析失败：{type(exc).__name__}"))
                continue
            if doc.content_hash in seen_hashes:
                continue  # the same file given twice (e.g. corpus/ and extra/)
            if not doc.articles:
                report.errors.append(FileError(path.name, "没有识别出任何条文或段落"))
                continue
            if doc.meta.doc_id in seen_ids:
                doc.meta.doc_id = f"{doc.meta.doc_id}-{doc.content_hash[:6]}"
                for a in doc.articles:
                    a.doc_id = doc.meta.doc_id
            seen_hashes.add(doc.content_hash)
            seen_ids.add(doc.meta.doc_id)
            docs.append(doc)
        return docs

    def _write_sentences(self, version: str, sentences: list[str], vectors: list[list[float]]) -> None:
        collection = self.location.create_sentences(version)
        for start in range(0, len(sentences), 256):
            collection.add(
                ids=[f"s{i}" for i in range(start, min(start + 256, len(sentences)))],
                documents=sentences[start : start + 256], embeddings=vectors[start : start + 256],
            )

    def _previous_embeddings(self, version: str | None) -> dict[str, list[float]]:
        if not version:
            return {}
        known: dict[str, list[float]] = {}
        for open_ in (self.location.open, self.location.open_sentences):
            try:
                got = open_(version).get(include=["documents", "embeddings"])
            except Exception:  # not there (an index built before sentence vectors)
                continue
            docs = got.get("documents") or []
            embs = got.get("embeddings")
            if embs is not None:
                known.update({text_key(d): list(map(float, e)) for d, e in zip(docs, embs)})
        return known

    @staticmethod
    def _manifest(version: str, docs: list[ParsedDocument], report: IngestReport) -> dict:
        return {
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "documents": [
                {
                    "doc_id": d.meta.doc_id, "title": d.meta.title, "source": d.meta.source,
                    "date": d.meta.date, "status": d.meta.status, "issuer": d.meta.issuer, "edition": d.meta.edition,
                    "aliases": d.meta.aliases, "kind": d.meta.kind, "hash": d.content_hash, "articles": len(d.articles),
                }
                for d in docs
            ],
            "errors": [{"file": e.file, "reason": e.reason} for e in report.errors],
            "articles": report.articles,
            "chunks": report.chunks,
        }

    @staticmethod
    def _diff(report: IngestReport, old: dict | None, new: dict) -> None:
        before = {d["source"]: d for d in (old or {}).get("documents", [])}
        after = {d["source"]: d for d in new["documents"]}
        report.added = [after[s]["title"] for s in after if s not in before]
        report.removed = [before[s]["title"] for s in before if s not in after]
        report.changed = [after[s]["title"] for s in after if s in before and before[s]["hash"] != after[s]["hash"]]

    def _cleanup(self, keep: set[str | None]) -> None:
        """Drop versions other than the serving and the previous one (kept for rollback and for
        replicas that have not switched yet), including half-built ones of killed ingests."""
        try:
            versions = self.location.existing_versions()
        except Exception:  # cleanup is best effort
            log.warning("could not list index versions for cleanup", exc_info=True)
            return
        oldest_kept = min(v for v in keep if v)
        for v in versions:
            # Only versions older than the ones kept: a newer unpublished one may be another
            # process's build in progress (a killed build's leftovers go at the next success).
            if v not in keep and v < oldest_kept:
                self.location.drop(v)
                forget = getattr(self.pointer, "forget", None)
                if forget:
                    forget(v)


def _metadata(a: Article, part: int) -> dict:
    return {
        "doc_id": a.doc_id, "doc_title": a.doc_title, "label": a.label, "heading": a.heading,
        "source": a.source, "date": a.date or "", "status": a.status, "edition": a.edition or "", "order": a.order, "part": part,
        "kind": a.kind,
        "article_text": a.text,
    }
