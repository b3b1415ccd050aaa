"""Question analysis: what a question names, quotes and asks for, before any searching.

* the **documents it names** (《发展党员工作细则》, 党章, 支部工作条例…), matched against the titles
  and aliases of the indexed documents; names in 《》 (or after 根据/按照/依据) that match no indexed
  document are kept as ``unknown_docs``;
* an **article number** (第十条, 第10条);
* **quoted phrases** (“…”, "…", 「…」) and the two sides of a **quiz blank** （　　）;
* the **kind of answer** the question words ask for (frequency, duration, count, who, procedure,
  definition, list, yes/no);
* the **core** of the question: without scaffolding such as "请问", "这种说法对吗", "根据…规定".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from retrieval.numerals import CN_NUMERAL_CHARS, int_to_cn, normalize_quantities
from retrieval.normalize import normalize_question
from retrieval.tokenize import load_synonyms

# --------------------------------------------------------------------------- answer types
#: Question words → the kind of answer they ask for.
ASK_PATTERNS: dict[str, re.Pattern[str]] = {
    "frequency": re.compile(r"多久.{0,4}(一次|1次)|多长时间.{0,4}(一次|1次)|几次|多少次|频次|频率|每.{0,4}(几|多少)次|隔多久|多久(开|召开|举行|进行|组织)"),
    "age": re.compile(r"多大年[纪龄]|多少岁|几岁|年龄|年满|周岁"),
    "duration": re.compile(r"多长时间|多久|几天|几个月|几年|多少天|多少年|多少个月|多长|期限|时限|什么时候|何时|哪天|最长|最短|几个工作日|多少个工作日"),
    "count": re.compile(r"多少(人|名|个|位|票)|几(人|名|个|位)|人数|比例|多少|几成|百分之几|(至少|最多|不少于|不超过).{0,4}(几|多少)|有几种|几种"),
    "who": re.compile(r"谁|由哪|哪个(部门|组织|机关|单位|机构|党组织)|哪一级|哪级|什么人|什么机构|什么部门|哪些人|什么组织|向哪|报哪"),
    "procedure": re.compile(r"怎么办|如何|怎么|怎样|什么程序|哪些程序|流程|步骤|手续|程序|按什么|走什么"),
    "definition": re.compile(r"是什么|什么是|指什么|含义|定义|为什么|怎么理解"),
    "list": re.compile(r"哪些|哪几|包括什么|包括哪|有什么要求|什么要求|什么内容|内容有"),
    "yes_no": re.compile(r"对吗|对不对|是否正确|是否准确|正确吗|是不是|能不能|可不可以|可以吗|能否|行不行|算不算|要不要|需不需要|吗[？?]?$"),
}
#: Sentences likely to carry each kind of answer.
ANSWER_PATTERNS: dict[str, re.Pattern[str]] = {
    "age": re.compile(r"\d+(周岁|岁)|年满"),
    "frequency": re.compile(r"每[年月季周半届天日]|每季度|每个?月|定期|\d+次|经常"),
    "duration": re.compile(r"\d+(个工作日|个月|天|日|年|周|小时)|[内前后]|之日|期间|届满|期满|不超过|以上"),
    "count": re.compile(r"\d+(人|名|个|位|种)|半数|\d+/\d+|\d+%|以上|以下|不超过|不少于|至少|多数"),
    "who": re.compile(r"由|负责|报.{0,10}(批准|审批|备案)|批准|指定|担任|主持|召集|决定"),
    "procedure": re.compile(r"经|应当|后|报|程序|并|先|再"),
    "definition": re.compile(r"是|指|即|为"),
    "list": re.compile(r"：|；|、|（[一二三四五六七八九十]+）"),
    "yes_no": re.compile(r"不得|不能|不应|禁止|严禁|可以|应当|必须|一律|不宜|不再"),
}

# Scaffolding around the question proper.
_TAILS = re.compile(
    r"[，,。]?\s*(这一?种?说法|这个说法|以上说法|该说法|这样|这)?(是否)?(对吗|对不对|正确吗|是否正确|是否准确|准确吗|"
    r"正确与否|说得对吗|有没有依据|有依据吗)[？?！!。]*$"
)
_LEADS = re.compile(r"^(请问|想问一下|想问|问一下|我想知道|请教一下|请教|判断题[:：]?|填空题?[:：]?|单选题[:：]?|多选题[:：]?)[，,：:\s]*")
_SOURCE_PHRASE = re.compile(r"(根据|按照|依据|依照|按|照)(党的)?(有关|相关)?(规定|要求|文件|制度)[，,]?")
_BLANK = re.compile(r"[（(][\s\u3000_＿]*[）)]|_{2,}|＿{2,}|【\s*】|\[\s*\]")
_QUOTED = re.compile(r"[“\"「『]([^”\"」』]{2,60})[”\"」』]")
_BOOK = re.compile(r"《([^》]{2,60})》")
_ARTICLE = re.compile(rf"第([{CN_NUMERAL_CHARS}]+|\d+)条")
_DOC_SUFFIX = r"(条例|细则|章程|规定|办法|准则|规则|意见|通知|决定|纲要|制度|党章|法)"
_BARE_DOC = re.compile(rf"(?:根据|按照|依据|依照|按|照|参照|对照)《?([\u4e00-\u9fff]{{2,24}}?{_DOC_SUFFIX})》?")
_GENERIC_DOC = re.compile(rf"^(本|该|有关|相关|上述|这个|这项|这部|党内|党的|规定|上级){_DOC_SUFFIX}?|^{_DOC_SUFFIX}$")
_LEFTOVER_LEAD = re.compile(r"^((根据|按照|依据|依照|按|照|对照)[，,、]*)?(([中里的])?(规定|要求|提出|明确|指出)了?)?[，,：:]*")
_PUNCT = re.compile(r"[\s，。、；：？！,.;:?!“”\"'‘’（）()《》〈〉【】\[\]…—\-·]+")


def compact(text: str) -> str:
    """Text without spaces and punctuation, numbers in quantities as digits: what phrase
    matching compares (``每季度召开一次。`` → ``每季度召开1次``)."""
    return _PUNCT.sub("", normalize_quantities(text))


# --------------------------------------------------------------------------- document names
@dataclass(frozen=True)
class DocName:
    doc_id: str
    title: str
    names: tuple[str, ...]  # compact forms: title, short title, aliases
    year: str = ""  # of the edition (from the document's date)


def _short_titles(title: str) -> list[str]:
    """Forms people use for a title: without 中国共产党/中共 and without a trailing （试行）."""
    forms = {title}
    base = re.sub(r"[（(][^（）()]*[）)]$", "", title).strip()
    forms.add(base)
    for t in list(forms):
        for prefix in ("中国共产党", "中共"):
            if t.startswith(prefix) and len(t) - len(prefix) >= 4:
                forms.add(t[len(prefix):])
    return [f for f in forms if f]


_KIND_WORDS = ("若干意见", "意见", "通知", "决定", "规定", "办法", "细则", "条例")


def _issuer_forms(title: str, issuer: str) -> set[str]:
    """"河南省委的意见": who issued it and what kind of text it is, as people refer to a
    document (from "X关于…的意见" titles and the metadata's issuer)."""
    kind = next((k for k in _KIND_WORDS if re.sub(r"[（(][^（）()]*[）)]$", "", title).endswith(k)), None)
    if kind is None:
        return set()
    issuers = {title.split("关于", 1)[0]} if "关于" in title[1:] else set()
    if issuer and not re.search(r"[（(]", issuer):
        issuers.add(issuer)
    forms = set()
    for who in filter(None, issuers):
        for w in _short_titles(who) if len(who) >= 6 else [who]:
            forms.update({f"{w}的{kind}", f"{w}的意见"} if kind == "若干意见" else {f"{w}的{kind}"})
    return forms


def build_doc_names(documents: list[dict]) -> list[DocName]:
    """Name table from manifest entries (``doc_id``, ``title``, ``aliases``, ``issuer``)."""
    out = []
    aliases_by_title: dict[str, set[str]] = {}
    for d in documents:  # editions of one document share their aliases (党章 for every 章程)
        aliases_by_title.setdefault(d["title"], set()).update(d.get("aliases", []))
    issuer_forms = {d["title"]: _issuer_forms(d["title"], d.get("issuer") or "") for d in documents}
    titles_by_form: dict[str, set[str]] = {}
    for title, forms in issuer_forms.items():
        for form in forms:
            titles_by_form.setdefault(form, set()).add(title)
    for d in documents:
        unique = [f for f in issuer_forms[d["title"]] if len(titles_by_form[f]) == 1]  # 中共中央的条例: which?
        names = {compact(n) for n in [*_short_titles(d["title"]), *aliases_by_title[d["title"]], *unique] if n}
        out.append(DocName(d["doc_id"], d["title"], tuple(sorted((n for n in names if len(n) >= 2), key=len, reverse=True)),
                           year=str(d.get("date") or "")[:4]))
    return out


#: National party congresses by ordinal, for "十九大党章" (the edition adopted there).
CONGRESS_YEARS = {"十五大": "1997", "十六大": "2002", "十七大": "2007", "十八大": "2012", "十九大": "2017", "二十大": "2022"}
_YEAR = re.compile(r"(19[4-9]\d|20[0-4]\d)年")


def _edition_years(text: str) -> set[str]:
    years = set(_YEAR.findall(text))
    years.update(year for name, year in CONGRESS_YEARS.items() if name in text)
    return years


def _pick_editions(named: list[str], names: list[DocName], text: str) -> list[str]:
    """Where the question names an edition (2007年版, 十九大党章) of a document indexed in several
    editions, keep that edition; otherwise keep all, current first (the order of ``names``)."""
    by_id = {d.doc_id: d for d in names}
    titles = {by_id[i].title for i in named if i in by_id}
    out = list(named)
    for title in titles:
        editions = [d for d in names if d.title == title]
        if len(editions) < 2:
            continue
        years = _edition_years(text)
        chosen = [d.doc_id for d in editions if d.year in years]
        keep = chosen or [d.doc_id for d in editions]
        out = [i for i in out if by_id.get(i) is None or by_id[i].title != title]
        out.extend(keep)
    return out


def _bigram_set(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(len(text) - 1)}


def _similar(a: str, b: str) -> float:
    """Dice similarity of character bigrams (0..1)."""
    x, y = _bigram_set(a), _bigram_set(b)
    return 2 * len(x & y) / (len(x) + len(y)) if x and y else 0.0


NAME_SIMILARITY = 0.75  # a name in 《》 this close to an indexed title names that document


def _match_name(name: str, table: list[DocName]) -> list[str]:
    """doc_ids a written document name refers to (exact or close), best first."""
    c = compact(name)
    exact = [d.doc_id for d in table if c in d.names]
    if exact:
        return exact
    scored = [(max(_similar(c, n) for n in d.names), d.doc_id) for d in table if d.names]
    best = max((s for s, _ in scored), default=0.0)
    if best >= NAME_SIMILARITY:
        return [doc for s, doc in scored if s >= best - 0.02]
    # "党员教育管理条例" for "中国共产党党员教育管理工作条例": every character in order
    contained = [d.doc_id for d in table if any(_subsequence(c, n) for n in d.names) and len(c) >= 5]
    return contained


def _subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


# --------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class QueryAnalysis:
    text: str  # normalised question
    core: str  # without scaffolding, blanks and document names: what the question is about
    named_docs: tuple[str, ...] = ()  # doc_ids of indexed documents the question names
    unknown_docs: tuple[str, ...] = ()  # names of documents that are not indexed
    article: str | None = None  # 第十条
    quoted: tuple[str, ...] = ()  # quoted phrases (compact form)
    blank: tuple[str, str] | None = None  # compact text just before and after a quiz blank
    asks: frozenset[str] = field(default_factory=frozenset)  # answer kinds asked for
    statement: bool = False  # a true/false statement ("…，对吗？")

    @property
    def is_quiz(self) -> bool:
        return self.blank is not None


def analyze(question: str, names: list[DocName]) -> QueryAnalysis:
    text = normalize_question(question)
    statement = bool(_TAILS.search(text))
    core = _TAILS.sub("", text)
    core = _LEADS.sub("", core)
    core = _SOURCE_PHRASE.sub("", core)

    named: list[str] = []
    unknown: list[str] = []
    for m in _BOOK.finditer(text):
        ids = _match_name(m.group(1), names)
        if ids:
            named.extend(i for i in ids if i not in named)
        elif re.search(_DOC_SUFFIX + r"([（(][^）)]*[）)])?$", m.group(1)):
            unknown.append(m.group(1))
    flat = compact(text)
    bare: list[str] = []
    for d in names:  # bare names: 党章规定…, 根据支部工作条例…
        found = [n for n in d.names if _is_specific(n) and n in flat]
        if found:
            bare.extend(found)
            if d.doc_id not in named:
                named.append(d.doc_id)
    for m in _BARE_DOC.finditer(re.sub(r"《[^》]*》", "", text)):
        name = m.group(1)
        if _GENERIC_DOC.search(name) or _match_name(name, names):
            continue
        if name not in unknown and not any(name in u or u in name for u in unknown):
            unknown.append(name)

    named = _pick_editions(named, names, text)
    # Document names are not what the question asks about: keep them out of the core.
    core = _BOOK.sub("", core)
    for name in sorted(bare, key=len, reverse=True):
        core = core.replace(name, "")
    core = _ARTICLE.sub("", core)
    core = _LEFTOVER_LEAD.sub("", core.strip())

    article = None
    m = _ARTICLE.search(text)
    if m:
        number = m.group(1)
        article = f"第{int_to_cn(int(number))}条" if number.isdigit() else f"第{number}条"

    quoted = tuple(compact(q) for q in _QUOTED.findall(text) if len(compact(q)) >= 2)
    blank = None
    parts = _BLANK.split(core, maxsplit=1)
    if len(parts) == 2:
        left = compact(re.split(r"[，。；：,;:]", parts[0])[-1])[-12:]
        right = compact(re.split(r"[，。；：,;:]", parts[1])[0])[:12]
        blank = (left, right)
        core = parts[0] + parts[1]

    asks = frozenset(kind for kind, pattern in ASK_PATTERNS.items() if pattern.search(text))
    if statement:
        asks = asks | {"yes_no"}
    return QueryAnalysis(
        text=text, core=core.strip(), named_docs=tuple(named), unknown_docs=tuple(unknown), article=article,
        quoted=quoted, blank=blank, asks=asks, statement=statement,
    )


# Names too generic to say which document is meant when written bare (without 《》).
_GENERIC_NAMES = {"章程", "条例", "细则", "意见", "通知", "规定", "办法"}


def _is_specific(name: str) -> bool:
    return name not in _GENERIC_NAMES and (len(name) >= 4 or name == "党章")


# --------------------------------------------------------------------------- subjects
SUBJECTS_FILE = Path(__file__).parent / "data" / "subjects.txt"


@lru_cache(maxsize=1)
def _subject_words() -> tuple[str, ...]:
    words = {w.split("#", 1)[0].strip() for w in SUBJECTS_FILE.read_text(encoding="utf-8").splitlines()}
    synonyms = load_synonyms()
    words |= {w for w, canonical in synonyms.items() if canonical in words} | {c for c in synonyms.values() if c in words}
    return tuple(sorted((w for w in words if len(w) >= 2), key=len, reverse=True))


def find_subjects(text: str) -> list[str]:
    """The subjects a text names (retrieval/data/subjects.txt: meetings, bodies, roles,
    procedures, documents), longest first where they overlap, in the order they appear."""
    text = normalize_question(text)
    found: list[tuple[int, str]] = []
    taken = [False] * len(text)
    for word in _subject_words():
        start = text.find(word)
        while start >= 0:
            if not any(taken[start:start + len(word)]):
                found.append((start, word))
                for i in range(start, start + len(word)):
                    taken[i] = True
            start = text.find(word, start + 1)
    return [w for _, w in sorted(found)]
