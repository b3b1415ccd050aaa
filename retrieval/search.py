"""Hybrid search over one loaded index version: BM25 (jieba tokens) fused with e5 vectors.

A :class:`LoadedIndex` holds everything a question needs in memory (articles, BM25 statistics)
and asks Chroma, through LangChain's vector store, for the nearest chunks. Fusion is weighted
reciprocal rank at the article level.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from langchain_chroma import Chroma

from retrieval.embed import E5Embeddings
from retrieval.models import Article, Hit
from retrieval.normalize import normalize_question
from retrieval.tokenize import index_terms, tokens

# Tuned with `make bench` on the project's own question sets (tests/data), not on the dev set.
log = logging.getLogger(__name__)

RRF_K = 10
BM25_K1 = 0.9
BM25_B = 0.4
DENSE_CANDIDATES = 40


@dataclass
class FusionWeights:
    bm25: float = 1.0
    dense: float = 0.3
    superseded_penalty: float = 0.7


@dataclass
class Evidence:
    """What the refusal gate looks at for the best hit."""

    coverage: float  # idf-weighted share of question terms found in the best article
    dense: float  # cosine similarity of the nearest chunk (how in-domain the question is)
    known_terms: float  # idf-weighted share of question terms that occur anywhere in the corpus


class BM25:
    """Okapi BM25 over pre-tokenised chunks (small corpora: dense term-frequency dicts)."""

    def __init__(self, docs: list[list[str]]) -> None:
        self.n = len(docs)
        self.lengths = np.array([len(d) for d in docs], dtype=np.float32)
        self.avg = float(self.lengths.mean()) if self.n else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                self.postings[term].append((i, tf))
        self.df = {t: len(p) for t, p in self.postings.items()}

    def idf(self, term: str) -> float:
        df = self.df.get(term, 0)
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query: list[str]) -> np.ndarray:
        out = np.zeros(self.n, dtype=np.float32)
        norm = BM25_K1 * (1 - BM25_B + BM25_B * self.lengths / max(self.avg, 1e-6))
        for term in set(query):
            idf = self.idf(term)
            for i, tf in self.postings.get(term, ()):
                out[i] += idf * tf * (BM25_K1 + 1) / (tf + norm[i])
        return out


class LoadedIndex:
    """One index version in memory, ready to answer searches. Immutable once built."""

    def __init__(self, version: str, client, collection_name: str, embeddings: E5Embeddings,
                 manifest: dict | None = None, weights: FusionWeights | None = None) -> None:
        self.version = version
        self.manifest = manifest or {}
        self.embeddings = embeddings
        self.weights = weights or FusionWeights()
        self.store = Chroma(client=client, collection_name=collection_name, embedding_function=embeddings)
        got = self.store.get(include=["documents", "metadatas", "embeddings"])
        self.chunk_ids: list[str] = list(got["ids"])
        self.chunk_article: list[str] = []
        self.articles: dict[str, Article] = {}
        token_lists: list[list[str]] = []
        for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"]):
            article = Article(
                doc_id=meta["doc_id"], doc_title=meta["doc_title"], label=meta["label"],
                heading=meta.get("heading", ""), text=meta["article_text"], source=meta["source"],
                date=meta.get("date") or None, status=meta.get("status", "current"), edition=meta.get("edition") or None,
                order=int(meta["order"]),
            )
            self.articles.setdefault(article.key, article)
            self.chunk_article.append(article.key)
            token_lists.append(index_terms(doc))
        self.chunk_index = {cid: i for i, cid in enumerate(self.chunk_ids)}
        # A copy of the vectors: if the Chroma server is unreachable, search goes on in memory.
        embeddings_ = got.get("embeddings")
        self.vectors = (np.asarray(embeddings_, dtype=np.float32) if embeddings_ is not None and len(embeddings_)
                        else np.zeros((0, 384), dtype=np.float32))
        self.bm25 = BM25(token_lists)
        self.article_terms: dict[str, set[str]] = defaultdict(set)
        for key, toks in zip(self.chunk_article, token_lists):
            self.article_terms[key].update(t for t in toks if not t.startswith("#"))
        self._by_label = {(a.doc_id, a.label): a for a in sorted(self.articles.values(), key=lambda a: -a.order)}
        self._doc_names = self._doc_name_table()

    # ------------------------------------------------------------------ lookup
    def _doc_name_table(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for a in self.articles.values():
            names[a.doc_id] = a.doc_id
            names[a.doc_title] = a.doc_id
        for d in self.manifest.get("documents", []):
            for alias in d.get("aliases", []):
                names[alias] = d["doc_id"]
        return names

    def lookup(self, doc: str, label: str) -> Article | None:
        """The article (first part) with this label in the document named by id, title or alias."""
        doc_id = self._doc_names.get(doc.strip().strip("《》"))
        return self._by_label.get((doc_id, label.strip())) if doc_id else None

    def documents(self) -> list[dict]:
        return list(self.manifest.get("documents", []))

    # ------------------------------------------------------------------ search
    def search(self, question: str, k: int = 5) -> tuple[list[Hit], Evidence]:
        q = normalize_question(question)
        q_tokens = tokens(q)
        if not q_tokens and not re.search(r"\w", q):
            return [], Evidence(0.0, 0.0, 0.0)
        bm25_rank = self._bm25_rank(index_terms(q))
        dense_rank, dense_sim = self._dense_rank(q)
        fused: dict[str, float] = defaultdict(float)
        for rank, key in enumerate(bm25_rank):
            fused[key] += self.weights.bm25 / (RRF_K + rank + 1)
        for rank, key in enumerate(dense_rank):
            fused[key] += self.weights.dense / (RRF_K + rank + 1)
        for key in fused:
            if self.articles[key].status == "superseded":
                fused[key] *= self.weights.superseded_penalty
        ranked = sorted(fused, key=lambda key: -fused[key])[:k]
        hits = [Hit(article=self.articles[key], score=fused[key] * RRF_K / 2) for key in ranked]
        evidence = self._evidence(q_tokens, ranked[0] if ranked else None, dense_sim)
        return hits, evidence

    def _bm25_rank(self, q_tokens: list[str]) -> list[str]:
        if not q_tokens:
            return []
        scores = self.bm25.scores(q_tokens)
        best: dict[str, float] = {}
        for i in np.argsort(-scores)[:200]:
            if scores[i] <= 0:
                break
            key = self.chunk_article[i]
            if key not in best:
                best[key] = float(scores[i])
        return list(best)

    def _nearest_chunks(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """(chunk position, cosine similarity), nearest first: Chroma, or memory if it is down."""
        try:
            results = self.store.similarity_search_by_vector_with_relevance_scores(vector.tolist(), k=n)
            out = [(self.chunk_index[doc.id], 1.0 - float(distance))  # cosine distance → similarity
                   for doc, distance in results if doc.id in self.chunk_index]
            if out or not len(self.vectors):
                return out
        except Exception:
            log.warning("vector search in Chroma failed; searching the in-memory copy", exc_info=True)
        if not len(self.vectors):
            return []
        sims = self.vectors @ vector
        top = np.argsort(-sims)[:n]
        return [(int(i), float(sims[i])) for i in top]

    def _dense_rank(self, q: str) -> tuple[list[str], dict[str, float]]:
        vector = self.embeddings.query(q)
        n = min(DENSE_CANDIDATES, len(self.chunk_ids))
        order: list[str] = []
        sims: dict[str, float] = {}
        for idx, sim in self._nearest_chunks(vector, n):
            key = self.chunk_article[idx]
            if key not in sims:
                sims[key] = sim
                order.append(key)
        return order, sims

    def _evidence(self, q_tokens: list[str], best: str | None, dense_sim: dict[str, float]) -> Evidence:
        if best is None:
            return Evidence(0.0, 0.0, 0.0)
        terms = set(q_tokens)
        max_idf = math.log(1 + (self.bm25.n + 0.5) / 0.5)
        weights = {t: (self.bm25.idf(t) if t in self.bm25.df else max_idf) for t in terms}
        total = sum(weights.values()) or 1.0
        found = sum(w for t, w in weights.items() if t in self.article_terms[best])
        known = sum(w for t, w in weights.items() if t in self.bm25.df)
        top_dense = max(dense_sim.values(), default=0.0)
        return Evidence(coverage=found / total, dense=top_dense, known_terms=known / total)
