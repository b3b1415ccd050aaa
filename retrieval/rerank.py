"""Ranking candidates by their evidence: a linear model over a few general signals.

The features say how well an article answers a question (best sentence, phrases, quoted text,
quiz blanks, quantities, answer kind), how the first-stage search ranked it (BM25, vectors and
their reciprocal-rank fusion), how close in meaning its closest sentence is to the question, and what kind of text it is (the document's kind, a news preface,
a superseded edition, a bare heading, the document or article the question names). Weights live
in ``retrieval/data/rerank_weights.json``: those under ``fixed`` are priors set by reasoning
(document kind: regulation > opinion > notice > news; a named document or article first; the
current edition first; a bare heading or a news preface is never the answer by itself); the
rest are fitted by ``scripts/train_rerank.py`` on the tuning half of the project's own questions
(see that script). Features missing from the file weigh 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from retrieval.evidence import Evidence, PreparedArticle
from retrieval.models import Article
from retrieval.query import QueryAnalysis

WEIGHTS_FILE = Path(__file__).parent / "data" / "rerank_weights.json"
PHRASE_CAP = 20  # characters of shared phrase beyond which more length adds nothing

FEATURES = (
    "rrf", "bm25", "dense", "sentence_cover", "sentence_grams", "article_cover", "phrase", "quoted",
    "blank", "quantities", "answer_kind", "sentence_dense", "named", "named_other", "article_match", "kind_opinion",
    "kind_notice", "kind_article", "kind_news", "preface", "superseded", "heading_only",
)


@dataclass(frozen=True)
class FirstStage:
    """How the first-stage search saw one candidate (each relative to the best candidate)."""

    rrf: float  # fused reciprocal rank / best fused
    bm25: float  # BM25 / best BM25
    dense: float  # cosine similarity − best similarity (≤ 0); −0.1 when not among the nearest
    sentence_dense: float = 0.0  # (its closest sentence's similarity − the best candidate's) × 10, in −1..0


def features(q: QueryAnalysis, article: Article, first: FirstStage, ev: Evidence, prepared: PreparedArticle) -> dict[str, float]:
    named = article.doc_id in q.named_docs
    return {
        "rrf": first.rrf,
        "bm25": first.bm25,
        "dense": first.dense,
        "sentence_cover": ev.sentence_cover,
        "sentence_grams": ev.sentence_grams,
        "article_cover": ev.article_cover,
        "phrase": min(ev.phrase, PHRASE_CAP) / PHRASE_CAP,
        "quoted": ev.quoted if q.quoted else 0.0,
        "blank": ev.blank if q.blank else 0.0,
        "quantities": ev.quantities,
        "answer_kind": ev.answer_kind,
        "sentence_dense": first.sentence_dense,
        "named": float(named),
        "named_other": float(bool(q.named_docs) and not named),
        "article_match": float(q.article is not None and article.label == q.article and (named or not q.named_docs)),
        "kind_opinion": float(article.kind == "opinion"),
        "kind_notice": float(article.kind == "notice"),
        "kind_article": float(article.kind == "article"),
        "kind_news": float(article.kind == "news"),
        "preface": float(prepared.notice_preface),
        "superseded": float(article.status == "superseded"),
        "heading_only": float(prepared.heading_only),
    }


class Reranker:
    def __init__(self, weights: dict[str, float], bias: float = 0.0) -> None:
        self.weights = {k: float(weights.get(k, 0.0)) for k in FEATURES}
        self.bias = bias

    @classmethod
    def load(cls, path: Path = WEIGHTS_FILE) -> Reranker:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["weights"], data.get("bias", 0.0))

    def score(self, feats: dict[str, float]) -> float:
        """A score in (0, 1): the logistic of the weighted sum."""
        z = self.bias + sum(self.weights[k] * v for k, v in feats.items() if k in self.weights)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
