"""Hybrid search over one loaded index version: BM25 (jieba tokens) fused with e5 vectors.

A :class:`LoadedIndex` holds everything a question needs in memory (articles, BM25 statistics)
and asks Chroma, through LangChain's vector store, for the nearest chunks. Fusion is weighted
reciprocal rank at the article level.
"""
from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from langchain_chroma import Chroma

from retrieval.embed import E5Embeddings
from retrieval.evidence import Evidence, PreparedArticle, QueryTerms, article_evidence, prepare, quotable_sentences
from retrieval.models import Article, Hit
from retrieval.numerals import count_fit
from retrieval.query import QueryAnalysis, analyze, build_doc_names
from retrieval.rerank import FirstStage, Reranker, features
from retrieval.tokenize import index_terms

# Tuned with `make bench` on the project's own question sets (tests/data), not on the dev set.
log = logging.getLogger(__name__)

RRF_K = 10
BM25_K1 = 0.9
BM25_B = 0.4
DENSE_CANDIDATES = 40
CANDIDATES = 40  # first-stage articles looked at closely
HEAD_COUNT_FIT = 0.5  # a rule whose head-count bound is at least this close to the stated number
NAMED_CANDIDATES = 15  # and the best BM25 articles of a document the question names
OTHER_SOURCE_RATIO = 0.5  # see LoadedIndex._distinct_first
NAMED_FIRST_RATIO = 0.6  # a named document's articles scoring at least this share of the best come first


@dataclass
class FusionWeights:
    bm25: float = 1.0
    dense: float = 0.3


@dataclass
class SearchInfo:
    """What the refusal gate looks at: the question, the best article's evidence, how close the
    nearest passage is, and how much of the question the corpus knows at all."""

    analysis: QueryAnalysis
    evidence: Evidence | None = None
    dense: float = 0.0  # cosine similarity of the nearest chunk
    known_terms: float = 0.0  # idf-weighted share of the question's terms found anywhere
    named_article: Article | None = None  # the article the question names, when indexed
    terms: QueryTerms | None = None  # the question's terms with the index's idf weights
    vector: np.ndarray | None = None  # the question's embedding


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
                 manifest: dict | None = None, weights: FusionWeights | None = None,
                 reranker: Reranker | None = None, sentences_name: str | None = None) -> None:
        self.version = version
        self.manifest = manifest or {}
        self.embeddings = embeddings
        self.weights = weights or FusionWeights()
        self.reranker = reranker or Reranker.load()
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
                order=int(meta["order"]), kind=meta.get("kind") or "regulation",
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
        self._max_idf = math.log(1 + (self.bm25.n + 0.5) / 0.5)
        self.prepared: dict[str, PreparedArticle] = {key: prepare(a) for key, a in self.articles.items()}
        self._by_label = {(a.doc_id, a.label): a for a in sorted(self.articles.values(), key=lambda a: -a.order)}
        self._doc_names = self._doc_name_table()
        self.doc_names = build_doc_names(self._documents_for_names())
        self.doc_titles = {a.doc_id: a.doc_title for a in self.articles.values()}
        self._sentence_vectors = _load_sentence_vectors(client, sentences_name)
        self._article_sentences: dict[str, np.ndarray] = {}  # article key → its sentences' vectors
        for key, article in self.articles.items():
            vectors = [self._sentence_vectors.get(s) for s in quotable_sentences(article)]
            if vectors and all(v is not None for v in vectors):
                self._article_sentences[key] = np.vstack(vectors)

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

    def _documents_for_names(self) -> list[dict]:
        """Manifest entries (title, aliases) of the documents, current editions first."""
        docs = {d["doc_id"]: d for d in self.manifest.get("documents", [])}
        for a in self.articles.values():
            docs.setdefault(a.doc_id, {"doc_id": a.doc_id, "title": a.doc_title, "aliases": [], "status": a.status})
        return sorted(docs.values(), key=lambda d: d.get("status", "current") != "current")

    def lookup(self, doc: str, label: str) -> Article | None:
        """The article (first part) with this label in the document named by id, title or alias."""
        doc_id = self._doc_names.get(doc.strip().strip("《》"))
        return self._by_label.get((doc_id, label.strip())) if doc_id else None

    def documents(self) -> list[dict]:
        return list(self.manifest.get("documents", []))

    # ------------------------------------------------------------------ search
    def search(self, question: str, k: int = 5) -> tuple[list[Hit], SearchInfo]:
        """The ``k`` best articles for a question, and what the refusal gate needs to know."""
        analysis, rows, info = self.candidates(question)
        if not rows:
            return [], info
        scored = [(self.reranker.score(feats), key, ev) for key, feats, ev in rows]
        scored.sort(key=lambda row: (-row[0], self.articles[row[1]].status != "current", row[1]))
        if analysis.named_docs:  # the named document first, unless its best is far weaker
            floor = NAMED_FIRST_RATIO * scored[0][0]
            first = [row for row in scored if self.articles[row[1]].doc_id in analysis.named_docs and row[0] >= floor]
            scored = first + [row for row in scored if row not in first]
        scored = self._distinct_first(scored)
        hits = [Hit(article=self.articles[key], score=score) for score, key, _ in scored[:k]]
        info.evidence = scored[0][2]
        return hits, info

    def _closest_sentences(self, keys: list[str], vector: np.ndarray, dense_sim: dict[str, float]) -> dict[str, float]:
        """Per candidate, the similarity of its sentence closest to the question (an article
        quoted whole counts as one sentence: its passage's similarity, when among the nearest)."""
        out = {}
        for key in keys:
            matrix = self._article_sentences.get(key)
            if matrix is not None:
                out[key] = float((matrix @ vector).max())
            elif key in dense_sim:
                out[key] = dense_sim[key]
        return out

    def sentence_similarity(self, vector: np.ndarray | None) -> Callable[[list[str]], list[float] | None] | None:
        """A function giving each sentence's cosine similarity to the question vector, from the
        vectors computed at ingest (None for sentences without one: nothing is embedded here,
        so answers stay fast)."""
        if vector is None or not self._sentence_vectors:
            return None

        def similarity(sentences: list[str]) -> list[float] | None:
            vectors = [self._sentence_vectors.get(s) for s in sentences]
            if any(v is None for v in vectors):
                return None
            return [float(v @ vector) for v in vectors]
        return similarity

    def _distinct_first(self, scored: list) -> list:
        """Articles whose text repeats a better-ranked one (the same article in an older edition)
        go after the distinct ones, so the first citations are different rules; and the first
        three are not all from one document when another one has a close article."""
        seen: set[str] = set()
        distinct, repeats = [], []
        for row in scored:
            text = self.prepared[row[1]].compact
            (repeats if text in seen else distinct).append(row)
            seen.add(text)
        out = distinct + repeats
        # When the first three all come from one document, the third place goes to the best
        # article of another document unless it is far weaker: a second source to check.
        if len(out) > 3 and len({self.articles[r[1]].doc_id for r in out[:3]}) == 1:
            first_doc = self.articles[out[0][1]].doc_id
            other = next((i for i, r in enumerate(out[3:], 3)
                          if self.articles[r[1]].doc_id != first_doc and r[0] >= OTHER_SOURCE_RATIO * out[0][0]), None)
            if other is not None:
                out.insert(2, out.pop(other))
        return out

    def candidates(self, question: str) -> tuple[QueryAnalysis, list[tuple[str, dict[str, float], Evidence]], SearchInfo]:
        """Analyse the question, gather candidate articles and compute their features (the
        reranker's input; ``scripts/train_rerank.py`` fits its weights on these rows)."""
        analysis = analyze(question, self.doc_names)
        q = QueryTerms.build(analysis, self._idf)
        info = SearchInfo(analysis=analysis, terms=q)
        if not q.terms and not q.grams and not analysis.named_docs:
            return analysis, [], info
        bm25 = self._bm25_scores(index_terms(analysis.core or analysis.text))
        dense_rank, dense_sim, info.vector = self._dense_rank(analysis.text)
        fused: dict[str, float] = defaultdict(float)
        for rank, key in enumerate(sorted(bm25, key=lambda key: -bm25[key])):
            fused[key] += self.weights.bm25 / (RRF_K + rank + 1)
        for rank, key in enumerate(dense_rank):
            fused[key] += self.weights.dense / (RRF_K + rank + 1)
        top_dense = max(dense_sim.values(), default=0.0)
        info.dense = top_dense
        info.known_terms = sum(w for t, w in q.terms.items() if t in self.bm25.df) / q.total
        info.named_article = self.lookup_named_article(analysis)
        keys = self._candidate_keys(analysis, fused, bm25, info.named_article, q.head_counts)
        closest = self._closest_sentences(keys, info.vector, dense_sim)
        top_closest = max(closest.values(), default=0.0)
        top_fused = max((fused.get(key, 0.0) for key in keys), default=0.0) or 1.0
        top_bm25 = max(bm25.values(), default=0.0) or 1.0
        rows = []
        for key in keys:
            article, prepared = self.articles[key], self.prepared[key]
            ev = article_evidence(q, prepared)
            first = FirstStage(
                rrf=fused.get(key, 0.0) / top_fused, bm25=bm25.get(key, 0.0) / top_bm25,
                dense=(dense_sim[key] - top_dense) if key in dense_sim else -0.1,
                # e5 similarities of related Chinese text lie within ~0.1 of each other: ×10
                # spreads the gap to the best candidate over 0..−1.
                sentence_dense=max(-1.0, (closest[key] - top_closest) * 10) if key in closest else -1.0,
            )
            rows.append((key, features(analysis, article, first, ev, prepared), ev))
        return analysis, rows, info

    def known_share(self, text: str) -> float:
        """The idf-weighted share of the text's terms that occur in this index."""
        q = QueryTerms.build(analyze(text, self.doc_names), self._idf)
        return sum(w for t, w in q.terms.items() if t in self.bm25.df) / q.total if q.terms else 0.0

    def _idf(self, term: str) -> float:
        return self.bm25.idf(term) if term in self.bm25.df else self._max_idf

    def _candidate_keys(self, analysis: QueryAnalysis, fused: dict[str, float], bm25: dict[str, float],
                        named_article: Article | None, head_counts: tuple[float, ...] = ()) -> list[str]:
        """Articles worth a closer look: the best of the first stage, the best of any named
        document, and every article holding a quoted phrase or the text around a quiz blank."""
        keys = sorted(fused, key=lambda key: -fused[key])[:CANDIDATES]
        chosen = dict.fromkeys(keys)
        if analysis.named_docs:
            named = [key for key in sorted(bm25, key=lambda key: -bm25[key]) if self.articles[key].doc_id in analysis.named_docs]
            chosen.update(dict.fromkeys(named[:NAMED_CANDIDATES]))
        needles = [p for p in analysis.quoted if len(p) >= 4]
        if analysis.blank:
            needles += [side for side in analysis.blank if len(side) >= 4]
        if needles:
            for key, prepared in self.prepared.items():
                if any(n in prepared.compact for n in needles):
                    chosen.setdefault(key)
        if head_counts:  # "有120名党员": every rule for a range of head counts holding that number
            for key, prepared in self.prepared.items():
                if count_fit(head_counts, prepared.count_ranges) >= HEAD_COUNT_FIT:
                    chosen.setdefault(key)
        if named_article is not None:
            chosen.setdefault(named_article.key)
        return list(chosen)

    def lookup_named_article(self, analysis: QueryAnalysis) -> Article | None:
        """The article a question names by number in a document it names (第十条 of 《…》)."""
        if analysis.article is None or not analysis.named_docs:
            return None
        for doc_id in analysis.named_docs:
            article = self._by_label.get((doc_id, analysis.article))
            if article is None and self.last_article(doc_id) is None:
                # An opinion numbered 三、（十一） has no 第十一条: people call its item （十一） so.
                item = f"（{analysis.article[1:-1]}）"
                article = next((a for a in sorted(self.articles.values(), key=lambda a: a.order)
                                if a.doc_id == doc_id and a.label.endswith(item)), None)
            if article is not None:
                return article
        return None

    def last_article(self, doc_id: str) -> Article | None:
        """The last 第X条 of a document (for "there is no 第九十九条; the last one is …")."""
        numbered = [a for a in self.articles.values() if a.doc_id == doc_id and a.label.startswith("第") and a.label.endswith("条")]
        return max(numbered, key=lambda a: a.order, default=None)

    def _bm25_scores(self, q_terms: list[str]) -> dict[str, float]:
        """Best chunk score per article (the 200 best chunks)."""
        if not q_terms:
            return {}
        scores = self.bm25.scores(q_terms)
        best: dict[str, float] = {}
        for i in np.argsort(-scores)[:200]:
            if scores[i] <= 0:
                break
            best.setdefault(self.chunk_article[i], float(scores[i]))
        return best

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

    def _dense_rank(self, q: str) -> tuple[list[str], dict[str, float], np.ndarray]:
        vector = self.embeddings.query(q)
        n = min(DENSE_CANDIDATES, len(self.chunk_ids))
        order: list[str] = []
        sims: dict[str, float] = {}
        for idx, sim in self._nearest_chunks(vector, n):
            key = self.chunk_article[idx]
            if key not in sims:
                sims[key] = sim
                order.append(key)
        return order, sims, vector


def _load_sentence_vectors(client, name: str | None) -> dict[str, np.ndarray]:
    """The version's sentence vectors by sentence text ({} for an index built without them)."""
    if not name:
        return {}
    try:
        got = client.get_collection(name=name, embedding_function=None).get(include=["documents", "embeddings"])
    except Exception:  # an index built before sentence vectors: quotes are chosen by words alone
        log.info("index has no sentence vectors; quotes are chosen by words alone")
        return {}
    vectors = got.get("embeddings")
    if vectors is None or not len(vectors):
        return {}
    return {s: np.asarray(v, dtype=np.float32) for s, v in zip(got.get("documents") or [], vectors)}
