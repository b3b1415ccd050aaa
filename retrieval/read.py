"""Read a regulation file of any supported format into plain text.

Raises :class:`ReadError` with a Chinese reason naming what is wrong, so ingest can report the
file and go on with the others.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

SUPPORTED = {".txt", ".md", ".docx", ".pdf", ".html", ".htm"}
MAX_FILE_BYTES = 20 * 1024 * 1024


class ReadError(Exception):
    """A file that cannot be read; ``str(exc)`` is the reason shown to users."""


def read_text(path: Path) -> str:
    """Plain text of ``path`` (.txt .md .docx .pdf .html)."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise ReadError(f"不支持的文件类型 {suffix or '（无扩展名）'}，支持 {'、'.join(sorted(SUPPORTED))}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReadError(f"无法读取文件：{exc.strerror or exc}") from exc
    if not data.strip():
        raise ReadError("文件是空的")
    if len(data) > MAX_FILE_BYTES:
        raise ReadError(f"文件过大（超过 {MAX_FILE_BYTES // (1024 * 1024)} MB）")
    if suffix in (".txt", ".md"):
        text = _decode(data)
    elif suffix == ".docx":
        text = _docx(data)
    elif suffix == ".pdf":
        text = _pdf(data)
    else:
        text = _html(data)
    if not text.strip():
        raise ReadError("文件中没有可读取的文字")
    return text


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ReadError("无法识别文件编码（请保存为 UTF-8）")


def _docx(data: bytes) -> str:
    import docx  # python-docx

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ReadError("不是有效的 docx 文件")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many types for broken packages
        raise ReadError("不是有效的 docx 文件") from exc
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" ".join(cell.text for cell in row.cells))
    return "\n".join(lines)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ReadError("不是有效的 PDF 文件") from exc
    text = "\n".join(pages)
    if not text.strip():
        raise ReadError("PDF 中没有可提取的文字（可能是扫描件）")
    return text


def _html(data: bytes) -> str:
    import trafilatura

    html = _decode(data)
    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)
    if not text:
        raise ReadError("网页中没有找到正文")
    return text
