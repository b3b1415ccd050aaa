"""From files to documents: metadata, clean-up and parsing into :class:`Article` units."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from retrieval.models import Article, DocumentMeta
from retrieval.normalize import is_boilerplate, is_mostly_latin, normalize_text
from retrieval.parse import parse_document
from retrieval.read import SUPPORTED, read_text

METADATA_FILE = "metadata.yaml"
# Header lines some sources carry before the text ("标题: …", "法规标题：…").
_HEADER = re.compile(r"^(标题|来源|说明|法规标题|颁布时间|颁布主体|通过会议|法规正文|发文字号|发布日期|实施日期)[:：]\s*(.*)$")
_DATE = re.compile(r"(\d{4})[年\-./](\d{1,2})[月\-./](\d{1,2})")
_YEAR = re.compile(r"(19|20)\d{2}")


@dataclass
class ParsedDocument:
    meta: DocumentMeta
    articles: list[Article]
    content_hash: str


def load_metadata(folder: Path) -> dict[str, dict]:
    """The folder's metadata.yaml as {file name: fields}; empty when absent or unreadable."""
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def iter_corpus_files(paths: list[Path]) -> list[Path]:
    """Supported files under the given files/folders, sorted, metadata.yaml and dotfiles excluded."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                f for f in sorted(p.rglob("*"))
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.name != METADATA_FILE and f.name.upper() != "MANIFEST.TSV" and f.suffix.lower() != ".yaml"
            )
        elif p.exists():
            found.append(p)
        else:
            found.append(p)  # reported as unreadable by the caller
    return found


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED


def parse_file(path: Path, meta_fields: dict | None = None) -> ParsedDocument:
    """Read, clean and parse one file; raises retrieval.read.ReadError with a Chinese reason."""
    raw = read_text(path)
    content_hash = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    text = normalize_text(raw)
    header, body_lines = _split_header(text.split("\n"))
    body_lines = _drop_furniture(body_lines)
    meta = _meta_for(path, meta_fields or {}, header, body_lines)
    body_lines = _drop_title_lines(body_lines, meta.title)
    units = parse_document("\n".join(body_lines))
    articles = [
        Article(
            doc_id=meta.doc_id, doc_title=meta.title, label=u.label, heading=u.heading, text=u.text,
            source=meta.source, date=meta.date, status=meta.status, order=u.order, kind=meta.kind,
        )
        for u in units
    ]
    return ParsedDocument(meta=meta, articles=articles, content_hash=content_hash)


def _drop_furniture(lines: list[str]) -> list[str]:
    """Drop boilerplate, English translation lines, and a scraped page title after a breadcrumb."""
    out: list[str] = []
    after_breadcrumb = False
    for line in lines:
        if is_boilerplate(line):
            after_breadcrumb = after_breadcrumb or ">" in line or "位置" in line
            continue
        if is_mostly_latin(line):
            continue
        if after_breadcrumb and line.strip():
            after_breadcrumb = False
            if "。" not in line:
                continue  # the page's own title, which may belong to another article
        out.append(line)
    return out


def _split_header(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    header: dict[str, str] = {}
    body: list[str] = []
    in_header = True
    for line in lines:
        m = _HEADER.match(line) if in_header else None
        if m:
            header[m.group(1)] = m.group(2).strip()
            continue
        if line.strip():
            in_header = False if header or body else in_header
        body.append(line)
    return header, body


def _meta_for(path: Path, fields: dict, header: dict[str, str], body: list[str]) -> DocumentMeta:
    title = fields.get("title") or header.get("标题") or header.get("法规标题") or _first_line(body) or path.stem
    title = str(title).strip().strip("《》")
    date = fields.get("date") or _guess_date(header.get("颁布时间", "") + " " + header.get("标题", "") + " " + path.stem)
    base_title = re.sub(r"[（(][^（）()]*[）)]$", "", title).strip() if "标题" in header and not fields.get("title") else title
    return DocumentMeta(
        doc_id=str(fields.get("doc_id") or _slug(path.stem)),
        title=base_title,
        issuer=fields.get("issuer") or header.get("颁布主体") or None,
        date=str(date) if date else None,
        status=str(fields.get("status") or "current"),
        source=path.name,
        aliases=[str(a) for a in fields.get("aliases", [])],
        kind=str(fields.get("kind") or guess_kind(base_title)),
    )


KINDS = ("regulation", "opinion", "notice", "article", "news")
_KIND_BY_TITLE = (  # checked in order; the title's last word decides
    ("notice", re.compile(r"通知[^。]{0,20}$|征求意见|^.{0,40}：关于")),
    ("news", re.compile(r"举行|召开了|报道|新闻|纪实|综述|侧记")),
    ("opinion", re.compile(r"意见$|若干意见|实施意见|指导意见")),
    ("regulation", re.compile(r"(条例|章程|细则|规定|办法|准则|规则|制度|党章)([（(][^）)]*[）)])?$")),
)


def guess_kind(title: str) -> str:
    """The kind of a document from its title, for files without a ``kind`` in metadata.yaml."""
    for kind, pattern in _KIND_BY_TITLE:
        if pattern.search(title):
            return kind
    return "article"


def _first_line(lines: list[str]) -> str:
    for line in lines:
        if line.strip() and len(line.strip()) <= 60:
            return line.strip()
    return ""


def _guess_date(text: str) -> str | None:
    m = _DATE.search(text)
    if m:
        return f"{m.group(1)}-{int(m.group(2)):02d}-{int(m.group(3)):02d}"
    digits = re.search(r"\b(\d{4})(\d{2})(\d{2})\b", text)
    if digits:
        return f"{digits.group(1)}-{digits.group(2)}-{digits.group(3)}"
    y = _YEAR.search(text)
    return y.group(0) if y else None


def _slug(stem: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower()
    if not slug or len(slug) < 3:
        slug = "doc-" + hashlib.sha1(stem.encode("utf-8")).hexdigest()[:10]
    return slug


def _drop_title_lines(lines: list[str], title: str) -> list[str]:
    """Drop leading lines that only repeat the title (they would become a useless unit)."""
    out: list[str] = []
    compact_title = re.sub(r"\W", "", title)
    for i, line in enumerate(lines):
        compact = re.sub(r"\W", "", line)
        if i < 15 and compact and (compact == compact_title or (len(compact) > 4 and compact in compact_title)):
            continue
        out.append(line)
    return out


def mark_superseded(docs: list[ParsedDocument]) -> None:
    """Where several editions of one regulation are indexed, all but the newest are superseded."""
    by_title: dict[str, list[ParsedDocument]] = {}
    for d in docs:
        by_title.setdefault(d.meta.title, []).append(d)
    for editions in by_title.values():
        if len(editions) < 2:
            continue
        editions.sort(key=lambda d: d.meta.date or "")
        for d in editions:
            edition = f"{d.meta.date[:4]}年版" if d.meta.date else None
            d.meta.edition = edition
            for a in d.articles:
                a.edition = edition
        for old in editions[:-1]:
            old.meta.status = "superseded"
            for a in old.articles:
                a.status = "superseded"
