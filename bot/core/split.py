"""Split long text into platform-sized messages, on block and line boundaries.

A *block* is a run of lines separated from the next by a blank line; the core renders each
citation as one block, so a citation is never cut unless it alone exceeds the limit, in which case
it is cut at line boundaries, and as a last resort inside a line.
"""
from __future__ import annotations

import re


def _size(text: str, by_bytes: bool) -> int:
    return len(text.encode("utf-8")) if by_bytes else len(text)


def _hard_cut(text: str, limit: int, by_bytes: bool) -> list[str]:
    parts: list[str] = []
    current = ""
    for ch in text:
        if current and _size(current + ch, by_bytes) > limit:
            parts.append(current)
            current = ""
        current += ch
    if current:
        parts.append(current)
    return parts


def _pack(pieces: list[str], sep: str, limit: int, by_bytes: bool) -> list[str]:
    out: list[str] = []
    current = ""
    for piece in pieces:
        candidate = piece if not current else current + sep + piece
        if _size(candidate, by_bytes) <= limit:
            current = candidate
            continue
        if current:
            out.append(current)
        current = piece
    if current:
        out.append(current)
    return out


def split_text(text: str, max_chars: int | None = None, max_bytes: int | None = None) -> list[str]:
    """Return chunks each within ``max_chars`` characters and/or ``max_bytes`` UTF-8 bytes."""
    text = text.strip("\n")
    if not text:
        return []
    limits = [(max_chars, False), (max_bytes, True)]
    chunks = [text]
    for limit, by_bytes in limits:
        if not limit:
            continue
        result: list[str] = []
        for chunk in chunks:
            if _size(chunk, by_bytes) <= limit:
                result.append(chunk)
                continue
            blocks: list[str] = []
            for block in [b.strip("\n") for b in re.split(r"\n{2,}", chunk) if b.strip("\n")]:
                if _size(block, by_bytes) <= limit:
                    blocks.append(block)
                    continue
                lines: list[str] = []
                for line in block.split("\n"):
                    lines.extend([line] if _size(line, by_bytes) <= limit else _hard_cut(line, limit, by_bytes))
                blocks.extend(_pack(lines, "\n", limit, by_bytes))
            result.extend(_pack(blocks, "\n\n", limit, by_bytes))
        chunks = result
    return [c for c in chunks if c.strip()]
