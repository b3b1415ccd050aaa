"""Chinese tokenisation for BM25 and term overlap: jieba with a party-work domain dictionary,
synonyms folded to one form (retrieval/data/synonyms.txt), numbers in quantities as digits."""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import jieba

from retrieval.numerals import normalize_quantities, quantity_terms

_DICT = Path(__file__).parent / "data" / "domain_dict.txt"
_SYNONYMS = Path(__file__).parent / "data" / "synonyms.txt"
_WORD = re.compile(r"[\u3400-\u9fffA-Za-z0-9]")
# Function words and question words that carry no topic.
STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 等 要 对 把 被 由 为 以 于 从 向 也 都 就 并 而 其 之 这 那 该 各 每 "
    "个 有 没有 不 吗 呢 吧 啊 么 什么 多少 多久 怎么 怎样 如何 哪些 哪个 哪 谁 几 几次 几天 是否 "
    "能 能否 可以 应 应当 应该 需要 必须 一般 一下 请问 请 我 你 他 她 它 我们 你们 他们 "
    "时 时候 时间 一次 次 多 长 才 算 还 又 再 更 最 中 上 下 里 后 前 内 外 进行 开展 工作 有关 相关 规定 "
    "要求 情况 问题 如果 但 但是 通过 按照 根据 关于 一个".split()
)


def load_synonyms(path: Path = _SYNONYMS) -> dict[str, str]:
    """{word: the group's first word} from a synonyms file (one group per line, # comments)."""
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        for word in words[1:]:
            table.setdefault(word, words[0])
    return table


@lru_cache(maxsize=1)
def _synonyms() -> dict[str, str]:
    return load_synonyms()


@lru_cache(maxsize=1)
def _tokenizer() -> jieba.Tokenizer:
    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    tok.load_userdict(str(_DICT))
    for word, canonical in _synonyms().items():  # keep every synonym whole when segmenting
        for w in (word, canonical):
            if len(w) > 1:
                tok.add_word(w, freq=max(tok.FREQ.get(w, 0), 50))
    return tok


def tokens(text: str) -> list[str]:
    """Content tokens (search mode: long words and their parts) with synonyms folded to one form;
    stopwords, punctuation and bare numbers (see :func:`index_terms`) dropped."""
    synonyms = _synonyms()
    out = []
    for word in _tokenizer().lcut_for_search(text.lower()):
        word = word.strip()
        if word and _WORD.search(word) and word not in STOPWORDS and not word.isdigit():
            out.append(synonyms.get(word, word))
    return out


_CJK_RUN = re.compile(r"[\u3400-\u9fff]+")


def bigrams(text: str) -> list[str]:
    """Overlapping CJK character bigrams (prefixed '#'): they match paraphrases and word parts
    that segmentation splits differently (党组会 / 党组会议, 召开 / 开会)."""
    out: list[str] = []
    for run in _CJK_RUN.findall(text):
        out.extend("#" + run[i : i + 2] for i in range(len(run) - 1))
    return out


def index_terms(text: str) -> list[str]:
    """BM25 terms: jieba content words, character bigrams, and quantities (``~1次``), with
    numbers in quantities written as digits so 一次 and 1次 match."""
    text = normalize_quantities(text)
    return tokens(text) + bigrams(text) + quantity_terms(text)


def warm_up() -> None:
    """Load the dictionary now (about a second) rather than on the first question."""
    tokens("党组会议")
