"""Extractive answers: the sentences of the best article that answer the question, quoted and
cited from metadata; or a refusal when the evidence is weak, the named document is not indexed,
or the named article does not exist."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from retrieval.evidence import WHOLE_ARTICLE_CHARS, QueryTerms, blank_fit, body_of, split_sentences, terms_of
from retrieval.models import Answer, Article, Citation, Hit
from retrieval.query import ANSWER_PATTERNS, QueryAnalysis, analyze, compact
from retrieval.search import SearchInfo
from retrieval.tokenize import bigrams

REFUSAL = (
    "文件中没有找到与您的问题相关的规定，无法作答。"
    "我只依据已收录的党内法规和文件回答党建工作程序方面的问题。"
)
NO_WORDS = "请用文字描述您的问题，例如：党组会议一般多久召开一次？"
#: How much a sentence's closeness in meaning to the question counts beside its words (0..1
#: within the article). Chosen on the tuning halves: 0.5–1.2 all gain, 0.8 is the middle.
SENTENCE_VECTOR_WEIGHT = 0.8
NAMED_ARTICLE_CHARS = 400  # an article asked for by number is quoted whole up to this length
LONG_PHRASE = 10  # a run of this many question characters found verbatim: never refuse


@dataclass
class RefusalThresholds:
    """Calibrated with `make bench` on the tuning half of the project's own questions.

    e5 similarities are compressed (unrelated Chinese text still scores ~0.8), so the vector
    signal is combined with term evidence: how much of the question the best sentence and the
    best article cover, and how much of the question's vocabulary the corpus knows at all.
    """

    min_dense: float = 0.865  # below: not about these documents at all
    weak_dense: float = 0.885  # below this, the best article must also cover the question…
    min_coverage: float = 0.45  # …at least this much (idf-weighted share of question terms)
    known_dense: float = 0.88  # below this, the corpus must know…
    min_known_terms: float = 0.4  # …this share of the question's terms
    all_known: float = 0.9  # a question whose words the corpus (nearly) all knows…
    all_known_coverage: float = 0.35  # …and whose best article covers this much is answered


def should_refuse(info: SearchInfo, t: RefusalThresholds) -> bool:
    ev = info.evidence
    if ev is None:
        return True
    if info.named_article is not None:
        return False  # the question names an indexed article
    analysis = info.analysis
    if analysis.quoted and ev.quoted >= 1.0 and max(map(len, analysis.quoted)) >= 4:
        return False  # a quoted phrase found verbatim
    if ev.phrase >= LONG_PHRASE:
        return False  # a long stretch of the question is in the documents
    if info.dense < t.min_dense:
        return True
    if info.known_terms >= t.all_known and ev.article_cover >= t.all_known_coverage:
        return False  # short or abbreviated, but every word is the documents' own
    if info.dense < t.weak_dense and ev.article_cover < t.min_coverage:
        return True
    return info.known_terms < t.min_known_terms and info.dense < t.known_dense


# --------------------------------------------------------------------------- quoting
#: What a quote is chosen for: the question text, its analysis, or its weighted terms.
Question = str | QueryAnalysis | QueryTerms
#: How close each sentence is to the question in meaning (cosine of sentence vectors), or
#: None when the index has no vectors for these sentences.
SentenceSimilarity = Callable[[list[str]], Sequence[float] | None]


def question_terms(question: Question) -> QueryTerms:
    """Weighted terms of a question; without the index's idf, longer words weigh more."""
    if isinstance(question, QueryTerms):
        return question
    analysis = question if isinstance(question, QueryAnalysis) else analyze(question, [])
    return QueryTerms.build(analysis, lambda term: float(len(term.lstrip("~"))))


def best_sentences(question: Question, article: Article, limit: int = 2,
                   similarity: SentenceSimilarity | None = None) -> list[str]:
    """The sentences of the article that answer the question, in text order."""
    return best_sentences_of(question, body_of(article), limit, similarity)


def best_sentences_of(question: Question, text: str, limit: int = 2,
                      similarity: SentenceSimilarity | None = None) -> list[str]:
    """The sentences of ``text`` that answer the question, in text order.

    A sentence scores by the weighted share of the question's terms it holds, shared character
    bigrams (paraphrases), a quoted phrase, and whether it carries the kind of answer the
    question asks for (a number of times, a deadline, who…); in a quiz, the sentence around
    the blank is the answer.
    """
    q = question_terms(question)
    analysis = q.analysis
    sentences = split_sentences(text)
    if not sentences:
        return [text]
    compacts = [compact(s) for s in sentences]
    if analysis.blank:  # a quiz: the sentence around the blank is the answer
        around = [blank_fit(analysis.blank, c) for c in compacts]
        if max(around) >= 0.5:
            return [sentences[around.index(max(around))]]
    kinds = [k for k in analysis.asks if k in ANSWER_PATTERNS and k not in ("procedure", "definition")]
    sims = similarity(sentences) if similarity is not None and len(sentences) > 1 else None
    closeness = _spread(sims) if sims is not None else [0.0] * len(sentences)
    scored = []
    for i, (s, c) in enumerate(zip(sentences, compacts)):
        words = terms_of(s)
        cover = sum(w for t, w in q.terms.items() if t in words) / q.total
        grams = len(q.grams & set(bigrams(c))) / len(q.grams) if q.grams else 0.0
        bonus = 0.0
        if kinds and any(ANSWER_PATTERNS[k].search(c) for k in kinds):
            bonus += 0.3
        if analysis.quoted and any(p in c for p in analysis.quoted):
            bonus += 1.0
        scored.append((cover + 0.5 * grams + bonus + SENTENCE_VECTOR_WEIGHT * closeness[i] - 0.001 * i, i))
    scored.sort(reverse=True)
    best_score = scored[0][0]
    chosen = [scored[0][1]]
    for score, i in scored[1:limit]:
        if score >= max(0.2, best_score * 0.6):
            chosen.append(i)
    return [sentences[i] for i in sorted(chosen)]


def _spread(sims) -> list[float]:
    """Similarities rescaled to 0..1 within one article (e5 similarities are compressed)."""
    values = [float(x) for x in sims]
    low, high = min(values), max(values)
    return [(v - low) / (high - low) if high > low else 0.0 for v in values]


def quote_for(question: Question, article: Article, similarity: SentenceSimilarity | None = None) -> str:
    """What is quoted from an article: all of a short one, else its answering sentences (one
    more for each further part of a question asked in several parts)."""
    body = body_of(article)
    if len(body) <= WHOLE_ARTICLE_CHARS:
        return body.replace("\n", "")
    text = question_terms(question).analysis.text
    parts = max(1, len(re.findall(r"[？?]+(?=.)", text)) + 1)
    return "".join(best_sentences(question, article, limit=min(2 + parts - 1, 4), similarity=similarity))


def cite(question: Question, hit: Hit, similarity: SentenceSimilarity | None = None) -> Citation:
    """The citation of a hit with the sentences that answer ``question`` quoted."""
    return Citation.from_hit(hit, quote=quote_for(question, hit.article, similarity))


# --------------------------------------------------------------------------- answers
def extractive_answer(question: str, hits: list[Hit], info: SearchInfo,
                      thresholds: RefusalThresholds | None = None, *,
                      last_article: Article | None = None, doc_titles: dict[str, str] | None = None,
                      similarity: SentenceSimilarity | None = None) -> Answer:
    """Build the answer from the best hit, or refuse (weak evidence, an unindexed document, an
    article number the named document does not have)."""
    analysis = info.analysis
    if analysis.unknown_docs and not analysis.named_docs:
        return _unknown_document(question, analysis, hits, info, thresholds)
    if analysis.article and analysis.named_docs and info.named_article is None and last_article is not None:
        title = (doc_titles or {}).get(analysis.named_docs[0], "该文件")
        text = f"《{title}》没有{analysis.article}，最后一条是{last_article.label}。请核对条号后再问。"
        return Answer(question=question, answer=text, refused=True)
    if not hits or should_refuse(info, thresholds or RefusalThresholds()):
        return Answer(question=question, answer=REFUSAL, refused=True)
    if info.named_article is not None and hits[0].article.key != info.named_article.key:
        hits = [Hit(article=info.named_article, score=hits[0].score), *[h for h in hits if h.article.key != info.named_article.key]]
    top = hits[0].article
    terms = info.terms or analysis
    # The answer's own quote also weighs sentence vectors (paraphrases no word of the question
    # shares); the further citations are quoted by words alone, which is cheaper.
    citations = [cite(terms, h, similarity if i == 0 else None) for i, h in enumerate(hits)]
    if info.named_article is not None and len(body_of(top)) <= NAMED_ARTICLE_CHARS:  # asked for by number
        citations[0] = Citation.from_hit(hits[0], quote=body_of(top).replace("\n", ""))
    quote = citations[0].quote
    answer = f"根据{top.citation}：{quote}"
    return Answer(question=question, answer=answer, refused=False, quote=quote, citations=citations)


def _unknown_document(question: str, analysis: QueryAnalysis, hits: list[Hit], info: SearchInfo,
                      thresholds: RefusalThresholds | None) -> Answer:
    """The question names a document that is not indexed: say so, and list related indexed
    articles only as such (never as that document's answer)."""
    names = "、".join(f"《{n}》" for n in analysis.unknown_docs)
    text = f"已收录的文件中没有{names}，无法按该文件作答。"
    if hits and not should_refuse(info, thresholds or RefusalThresholds()):
        related = [cite(analysis, h) for h in hits[:2]]
        lines = [f"{c.citation}：{c.quote}" for c in related]
        text += "\n已收录文件中与此相关的规定如下（不是" + names + "的内容，仅供参考）：\n" + "\n".join(lines)
        return Answer(question=question, answer=text, refused=True, citations=related)
    return Answer(question=question, answer=text, refused=True)
