"""Extractive answers: the sentences of the best article that answer the question, quoted and
cited from metadata; or a refusal when the evidence is weak."""
from __future__ import annotations

import re
from dataclasses import dataclass

from retrieval.models import Answer, Article, Citation, Hit
from retrieval.normalize import normalize_question
from retrieval.search import Evidence
from retrieval.tokenize import bigrams, tokens

REFUSAL = (
    "文件中没有找到与您的问题相关的规定，无法作答。"
    "我只依据已收录的党内法规和文件回答党建工作程序方面的问题。"
)
_SENTENCE = re.compile(r"[^。！？；\n]+[。！？；]?")
# Questions that ask for a number, a frequency, a deadline or a share.
_ASKS_QUANTITY = re.compile(r"多久|多长|多少|几|频率|比例|期限|时限|什么时候|何时|每[年月季周]|至少|最多|最长|上限|下限")
# Numbers, frequencies and quantities: a sentence carrying one is likelier to hold the rule.
_QUANTITY = re.compile(r"[0-9一二两三四五六七八九十百半]+(次|天|日|个月|月|年|人|名|学时|小时|周|届|%)|每[年月季周半]|半数|三分之二|不少于|不超过|以上|以内")


@dataclass
class RefusalThresholds:
    """Calibrated with `make bench` on the project's own in-scope and out-of-scope questions.

    e5 similarities are compressed (unrelated Chinese text still scores ~0.8), so the vector
    signal is combined with term evidence: how much of the question the best article covers,
    and how much of the question's vocabulary the corpus knows at all.
    """

    min_dense: float = 0.865  # below: not about these documents at all
    weak_dense: float = 0.885  # below this, the best article must also cover the question…
    min_coverage: float = 0.45  # …at least this much (idf-weighted share of question terms)
    known_dense: float = 0.88  # below this, the corpus must know…
    min_known_terms: float = 0.4  # …this share of the question's terms


def should_refuse(evidence: Evidence, t: RefusalThresholds) -> bool:
    if evidence.dense < t.min_dense:
        return True
    if evidence.dense < t.weak_dense and evidence.coverage < t.min_coverage:
        return True
    return evidence.known_terms < t.min_known_terms and evidence.dense < t.known_dense


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def best_sentences(question: str, article: Article, limit: int = 2) -> list[str]:
    """The sentences of the article that share the most question terms, in text order."""
    return best_sentences_of(question, _strip_label(article.text, article.label), limit)


def best_sentences_of(question: str, text: str, limit: int = 2) -> list[str]:
    """The sentences of ``text`` that share the most question terms, in text order.

    Words count by length, shared character bigrams catch paraphrases (来不了 / 不能参加), and a
    sentence stating a number or frequency gets a bonus when the question asks for one.
    """
    q = normalize_question(question)
    q_terms, q_bigrams = set(tokens(q)), set(bigrams(q))
    wants_quantity = bool(_ASKS_QUANTITY.search(q))
    sentences = split_sentences(text)
    if not sentences:
        return [text]
    scored = []
    for i, s in enumerate(sentences):
        overlap = sum(len(t) for t in q_terms & set(tokens(s))) + 0.7 * len(q_bigrams & set(bigrams(s)))
        bonus = 1.5 if wants_quantity and _QUANTITY.search(s) else 0.0
        scored.append((overlap + bonus - 0.01 * i, i))
    scored.sort(reverse=True)
    best_score = scored[0][0]
    chosen = [scored[0][1]]
    for score, i in scored[1:limit]:
        if score >= max(2.0, best_score * 0.6):
            chosen.append(i)
    return [sentences[i] for i in sorted(chosen)]


def _strip_label(text: str, label: str) -> str:
    if text.startswith(label):
        text = text[len(label):].lstrip()
    return text


def extractive_answer(question: str, hits: list[Hit], evidence: Evidence,
                      thresholds: RefusalThresholds | None = None) -> Answer:
    """Build the answer from the best hit, or refuse when the evidence is weak."""
    if not hits or should_refuse(evidence, thresholds or RefusalThresholds()):
        return Answer(question=question, answer=REFUSAL, refused=True)
    top = hits[0].article
    citations = [cite(question, h) for h in hits]
    quote = citations[0].quote
    answer = f"根据{top.citation}：{quote}"
    return Answer(question=question, answer=answer, refused=False, quote=quote, citations=citations)


def cite(question: str, hit: Hit) -> Citation:
    """The citation of a hit with the sentences that answer ``question`` quoted."""
    return Citation.from_hit(hit, quote="".join(best_sentences(question, hit.article)))
