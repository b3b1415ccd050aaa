"""Split a normalised regulation into citable units.

Three shapes of document are recognised:

* **articles** (条例、细则、章程): ``第X编/章/节`` give the heading path, each ``第X条`` is a unit;
  款 and 项 such as ``（一）`` stay inside their article.
* **outline** (意见、通知): ``一、`` sections, ``（一）`` items, ``1.`` points; the unit is the
  item (label ``三、（六）``), or the point where a section has no items (``二、1.``), or the
  section itself where it has neither (``三、``).
* **essay**: paragraphs under short heading lines, labelled ``第N段``.

Every numbering level only accepts the next number in sequence (or a restart at 1 where a new
parent opened), so a stray "一、" in a sentence, a hard line wrap or a numbered list inside an
article does not open a new unit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from retrieval.numerals import CN_NUMERAL_CHARS as _CN
from retrieval.numerals import cn_to_int, int_to_cn

__all__ = ["Unit", "cn_to_int", "int_to_cn", "parse_document"]

_PART = re.compile(rf"^第([{_CN}]+)编\s*(.*)$")
_CHAPTER = re.compile(rf"^第([{_CN}]+)章\s*(.*)$")
_SECTION = re.compile(rf"^第([{_CN}]+)节\s*(.*)$")
_ARTICLE = re.compile(rf"^第([{_CN}]+)条(?:\s+|(?=[^\s，。、；：的款项规之]))(.*)$")
_L1 = re.compile(rf"^([{_CN}]+)、\s*(.*)$")
_L2 = re.compile(rf"^[（(]([{_CN}]+)[）)]\s*(.*)$")
_L3 = re.compile(r"^(\d{1,2})[.、](?!\d)\s*(.*)$")
_SENTENCE_END = "。！？；：”」…"

_LEVEL_CHAR = {"part": "编", "chapter": "章", "section": "节"}
MAX_ARTICLE_JUMP = 3  # tolerate a few missing articles in a scraped copy


@dataclass
class Unit:
    """A parsed unit before metadata is attached."""

    label: str
    heading: str
    text: str  # full text as cited (label included for articles)
    order: int = 0


@dataclass
class _Open:
    label: str
    heading: str
    lines: list[str] = field(default_factory=list)


def _is_heading_line(line: str) -> bool:
    return 0 < len(line) <= 30 and line[-1] not in _SENTENCE_END and "，" not in line


def parse_document(text: str) -> list[Unit]:
    """Units of a normalised document (see module docstring for the shapes)."""
    lines = [ln.strip() for ln in text.split("\n")]
    articles = _count_sequential(lines, _ARTICLE)
    if articles >= 3:
        units = _parse_articles(lines)
    else:
        l1 = _count_sequential(lines, _L1)
        l2 = _count_sequential(lines, _L2)
        units = _parse_outline(lines) if (l1 >= 2 or l2 >= 3) else _parse_essay(lines)
    for i, unit in enumerate(units):
        unit.order = i
    return [u for u in units if len(u.text) >= 8]


def _count_sequential(lines: list[str], pattern: re.Pattern[str]) -> int:
    expected, count = 1, 0
    for line in lines:
        m = pattern.match(line)
        if not m:
            continue
        try:
            n = cn_to_int(m.group(1))
        except ValueError:
            continue
        if n == expected or (count and 1 <= n - expected < MAX_ARTICLE_JUMP and pattern is _ARTICLE):
            count += 1
            expected = n + 1
        elif n == 1 and pattern is not _ARTICLE:
            expected = 2
            count += 1
    return count


# --------------------------------------------------------------------------- articles
def _parse_articles(lines: list[str]) -> list[Unit]:
    units: list[Unit] = []
    path: dict[str, str] = {}
    expected = {"part": 1, "chapter": 1, "section": 1, "article": 1}
    current: _Open | None = None
    preamble: list[str] = []
    preamble_heading = ""

    def close() -> None:
        nonlocal current
        if current is not None and current.lines:
            units.append(Unit(label=current.label, heading=current.heading, text="\n".join(current.lines)))
        current = None

    def heading() -> str:
        return " ".join(v for k, v in path.items() if v)

    for line in lines:
        if not line:
            continue
        matched = False
        for level, pattern in (("part", _PART), ("chapter", _CHAPTER), ("section", _SECTION)):
            m = pattern.match(line)
            if not m:
                continue
            n = _num(m.group(1))
            if n is None or not (n == expected[level] or (n == 1 and level != "part")):
                continue
            if len(m.group(2)) > 30:
                continue  # a sentence that happens to start with 第X章, not a heading
            expected[level] = n + 1
            title = f"第{m.group(1)}{_LEVEL_CHAR[level]} {m.group(2)}".strip()
            path[level] = re.sub(r"\s+", " ", title)
            if level in ("part", "chapter"):
                path.pop("section", None)
                if level == "part":
                    path.pop("chapter", None)
            if level == "section":
                expected["section"] = n + 1
            close()
            matched = True
            break
        if matched:
            continue
        m = _ARTICLE.match(line)
        if m:
            n = _num(m.group(1))
            if n is not None and (n == expected["article"] or 1 <= n - expected["article"] < MAX_ARTICLE_JUMP):
                close()
                expected["article"] = n + 1
                label = f"第{m.group(1)}条"
                body = m.group(2).strip()
                current = _Open(label=label, heading=heading(), lines=[f"{label} {body}".strip()])
                continue
        if current is not None:
            current.lines.append(line)
        else:
            if line in ("总纲", "序言", "前言") and not preamble_heading:
                preamble_heading = line
                if sum(len(x) for x in preamble) < 150:
                    preamble = []  # only title/date lines so far
                continue
            preamble.append(line)
    close()
    if preamble:
        label = preamble_heading or "前言"
        units[:0] = _paragraph_units(preamble, label, preamble_heading)
    return units


def _num(text: str) -> int | None:
    try:
        return cn_to_int(text)
    except ValueError:
        return None


def _paragraph_units(lines: list[str], label: str, heading: str, max_chars: int = 1200) -> list[Unit]:
    """Group free paragraphs into units of bounded size sharing one label."""
    units: list[Unit] = []
    buf: list[str] = []
    for line in lines:
        if buf and sum(len(x) for x in buf) + len(line) > max_chars:
            units.append(Unit(label=label, heading=heading, text="\n".join(buf)))
            buf = []
        buf.append(line)
    if buf:
        units.append(Unit(label=label, heading=heading, text="\n".join(buf)))
    return units


# --------------------------------------------------------------------------- outline
def _parse_outline(lines: list[str]) -> list[Unit]:
    """一、 / （一） / 1. outline; see module docstring for which level becomes the unit."""
    sections: list[dict] = []  # {label, title, intro: [], items: [{label, lines}], level}
    preamble: list[str] = []
    last = {"l1": 0, "l2": 0, "l3": 0}
    section: dict | None = None
    item: dict | None = None  # the open L2 or L3 item

    for line in lines:
        if not line:
            continue
        m1, m2, m3 = _L1.match(line), _L2.match(line), _L3.match(line)
        n1 = _num(m1.group(1)) if m1 else None
        if n1 is not None and (n1 == last["l1"] + 1):
            last["l1"] = n1
            section = {"label": f"{m1.group(1)}、", "title": line, "intro": [], "items": []}
            sections.append(section)
            item = None
            last["l3"] = 0
            continue
        n2 = _num(m2.group(1)) if m2 else None
        if section is not None and n2 is not None and (n2 == last["l2"] + 1 or (n2 == 1 and not section["items"])):
            has_l2 = any(it["kind"] == "l2" for it in section["items"])
            if n2 == 1 or has_l2 or not section["items"]:
                last["l2"] = n2
                last["l3"] = 0
                item = {"kind": "l2", "label": f"{section['label']}（{m2.group(1)}）", "lines": [line]}
                section["items"].append(item)
                continue
        n3 = int(m3.group(1)) if m3 else None
        if section is not None and n3 is not None and (item is None or item["kind"] == "l3"):
            if n3 == last["l3"] + 1 or (n3 == 1 and item is None):
                last["l3"] = n3
                item = {"kind": "l3", "label": f"{section['label']}{n3}.", "lines": [line]}
                section["items"].append(item)
                continue
        if item is not None:
            item["lines"].append(line)
        elif section is not None:
            section["intro"].append(line)
        else:
            preamble.append(line)

    units: list[Unit] = []
    if preamble:
        units.extend(_paragraph_units(preamble, "前言", ""))
    for sec in sections:
        title = sec["title"]
        intro = sec["intro"]
        if not sec["items"]:
            units.append(Unit(label=sec["label"], heading=title, text="\n".join([title, *intro])))
            continue
        if intro and sum(len(x) for x in intro) >= 30:
            units.append(Unit(label=sec["label"], heading=title, text="\n".join([title, *intro])))
        for it in sec["items"]:
            units.append(Unit(label=it["label"], heading=title, text="\n".join(it["lines"])))
    return units


# --------------------------------------------------------------------------- essay
def _parse_essay(lines: list[str]) -> list[Unit]:
    units: list[Unit] = []
    heading = ""
    n = 0
    pending = ""
    for line in lines:
        if not line:
            continue
        if _is_heading_line(line) and len(line) <= 20:
            heading = line
            continue
        text = f"{pending}\n{line}".strip() if pending else line
        if len(text) < 40:
            pending = text
            continue
        pending = ""
        n += 1
        units.append(Unit(label=f"第{n}段", heading=heading, text=text))
    if pending:
        n += 1
        units.append(Unit(label=f"第{n}段", heading=heading, text=pending))
    return units
