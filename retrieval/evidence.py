"""Sentence-level evidence: how well one article's sentences answer a question.

Each indexed article is prepared once when an index version is loaded (:func:`prepare`): its
sentences with their terms (synonyms folded, quantities as ``~1次``), character bigrams and a
compact form for phrase matching. :func:`article_evidence` then measures, for one question,
the best sentence (idf-weighted share of the question's terms, shared bigrams), the whole
article's coverage, the longest phrase shared with the question, quoted phrases and quiz
blanks found verbatim, quantities, and whether the best sentences carry the kind of answer
the question asks for.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from retrieval.models import Article
from retrieval.numerals import CountRange, count_fit, count_ranges, head_counts, normalize_quantities, quantity_terms
from retrieval.query import ANSWER_PATTERNS, QueryAnalysis, compact
from retrieval.tokenize import bigrams, tokens

_SENTENCE = re.compile(r"[^。！？；\n]+[。！？；]?")
_NOTICE = re.compile(r"新华社|近日|印发|通知|现将|经.{0,12}同意|发布|学习材料|全文如下")
HEADING_ONLY_CHARS = 16  # an article body shorter than this with no sentence end states no rule


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


#: Articles this short are quoted whole; from longer ones the answering sentences are chosen.
WHOLE_ARTICLE_CHARS = 120


def quotable_sentences(article: Article) -> list[str]:
    """The sentences a quote is chosen from (none when the article is quoted whole). Ingest
    embeds exactly these, so sentence vectors are there for every choice to be made."""
    body = body_of(article)
    return split_sentences(body) if len(body) > WHOLE_ARTICLE_CHARS else []


def body_of(article: Article) -> str:
    """The article text without its leading label (第十九条 / （六）)."""
    text = article.text
    return text[len(article.label):].lstrip() if text.startswith(article.label) else text


@lru_cache(maxsize=50_000)
def terms_of(text: str) -> frozenset[str]:
    """Search terms of a text: folded words plus quantities (no bigrams). Cached: the same
    sentences are quoted again and again."""
    normal = normalize_quantities(text)
    return frozenset(tokens(normal)) | frozenset(quantity_terms(normal))


@dataclass(frozen=True)
class Sentence:
    text: str  # as printed
    compact: str
    terms: frozenset[str]
    grams: frozenset[str]


@dataclass(frozen=True)
class PreparedArticle:
    sentences: tuple[Sentence, ...]
    compact: str
    terms: frozenset[str]
    heading_only: bool
    notice_preface: bool  # a 前言 that is a news item or cover notice (印发…通知), not rules
    count_ranges: tuple[CountRange, ...] = ()  # head counts its clauses apply to (50人以上、100人以下)


def prepare(article: Article) -> PreparedArticle:
    body = body_of(article)
    sentences = []
    for s in split_sentences(body) or [body]:
        c = compact(s)
        sentences.append(Sentence(s, c, terms_of(s), frozenset(bigrams(c))))
    all_terms = frozenset().union(*(s.terms for s in sentences)) if sentences else frozenset()
    first_line_removed = body.split("\n", 1)[1] if "\n" in body else ""
    heading_only = (len(body) < HEADING_ONLY_CHARS and not re.search(r"[。；！？]", body)) or (
        article.label.endswith("、") and not first_line_removed.strip() and "。" not in body)
    notice_preface = article.label == "前言" and bool(_NOTICE.search(body))
    return PreparedArticle(tuple(sentences), "".join(s.compact for s in sentences), all_terms, heading_only, notice_preface,
                           count_ranges(normalize_quantities(body)))


@dataclass(frozen=True)
class QueryTerms:
    """The question side of the evidence, computed once per question."""

    terms: dict[str, float]  # term → idf weight
    grams: frozenset[str]
    quantities: frozenset[str]
    compact: str  # compact core, for phrases
    analysis: QueryAnalysis
    head_counts: tuple[float, ...] = ()  # numbers of people the question states (有60个党员)

    @classmethod
    def build(cls, analysis: QueryAnalysis, idf: Callable[[str], float]) -> QueryTerms:
        core = analysis.core
        normal = normalize_quantities(core)
        words = set(tokens(normal))
        quantities = set(quantity_terms(normal))
        return cls(
            terms={t: idf(t) for t in words | quantities}, grams=frozenset(bigrams(compact(core))),
            quantities=frozenset(quantities), compact=compact(core), analysis=analysis,
            head_counts=head_counts(normal),
        )

    @property
    def total(self) -> float:
        return sum(self.terms.values()) or 1.0


def longest_shared(q: str, text: str) -> int:
    """Length of the longest substring of ``q`` that occurs in ``text``."""
    best = 0
    for i in range(len(q)):
        length = best + 1
        while i + length <= len(q) and q[i:i + length] in text:
            best = length
            length += 1
    return best


def _affix_found(context: str, text: str, suffix: bool) -> int:
    """Characters of the blank's context found in ``text`` (the end of the left side, the start
    of the right side)."""
    for n in range(len(context), 1, -1):
        piece = context[-n:] if suffix else context[:n]
        if piece in text:
            return n
    return 0


def blank_fit(blank: tuple[str, str], text: str) -> float:
    """How much of the text just before and after a quiz blank occurs in ``text`` (0..1)."""
    left, right = blank
    found = 0.0
    if left:
        found += _affix_found(left, text, suffix=True) / len(left)
    if right:
        found += _affix_found(right, text, suffix=False) / len(right)
    return found / ((bool(left) + bool(right)) or 1)


@dataclass(frozen=True)
class Evidence:
    sentence_cover: float  # best sentence: idf-weighted share of question terms
    sentence_grams: float  # best sentence: share of question bigrams
    article_cover: float  # whole article: idf-weighted share of question terms
    phrase: int  # longest run of question characters found verbatim in the article
    quoted: float  # share of the question's quoted phrases found verbatim (1 if none quoted)
    blank: float  # quiz blank: share of its two sides found around one sentence position
    quantities: float  # share of the question's quantities found in the article
    answer_kind: float  # the best sentences carry the kind of answer asked for
    best_sentence: int  # index of the best sentence


def article_evidence(q: QueryTerms, a: PreparedArticle) -> Evidence:
    total = q.total
    best = (-1.0, 0.0, 0)
    for i, s in enumerate(a.sentences):
        cover = sum(w for t, w in q.terms.items() if t in s.terms) / total
        grams = len(q.grams & s.grams) / len(q.grams) if q.grams else 0.0
        score = cover + 0.5 * grams
        if score > best[0] + 1e-9:
            best = (score, cover, i)
    _, cover, index = best
    grams = len(q.grams & a.sentences[index].grams) / len(q.grams) if q.grams and a.sentences else 0.0
    article_cover = sum(w for t, w in q.terms.items() if t in a.terms) / total
    quoted = (sum(p in a.compact for p in q.analysis.quoted) / len(q.analysis.quoted)) if q.analysis.quoted else 1.0
    blank = max((blank_fit(q.analysis.blank, s.compact) for s in a.sentences), default=0.0) if q.analysis.blank else 0.0
    quantities = (len(q.quantities & a.terms) / len(q.quantities)) if q.quantities else 0.0
    if q.head_counts and a.count_ranges:  # 有60个党员 falls in 50人以上、100人以下
        quantities = max(quantities, count_fit(q.head_counts, a.count_ranges))
    kinds = [k for k in q.analysis.asks if k not in ("yes_no", "procedure", "definition")]
    answer_kind = 0.0
    if kinds and a.sentences:
        text = a.sentences[index].compact
        answer_kind = float(any(ANSWER_PATTERNS[k].search(normalize_quantities(text)) for k in kinds))
    return Evidence(
        sentence_cover=cover, sentence_grams=grams, article_cover=article_cover,
        phrase=longest_shared(q.compact, a.compact), quoted=quoted, blank=blank, quantities=quantities,
        answer_kind=answer_kind, best_sentence=index,
    )
