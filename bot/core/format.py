"""Render an :class:`Answer` as chat text: the answer, then one block per citation."""
from __future__ import annotations

from retrieval.models import Answer

MAX_QUOTE_CHARS = 300


def format_answer(answer: Answer, max_citations: int = 3) -> str:
    """Answer first, then "依据：" and each citation as its own block (never split inside)."""
    if answer.refused or not answer.citations:
        return answer.answer
    blocks = [answer.answer.strip()]
    lines = ["依据："]
    for i, c in enumerate(answer.citations[:max_citations], start=1):
        quote = c.text if len(c.text) <= MAX_QUOTE_CHARS else c.text[:MAX_QUOTE_CHARS] + "……"
        marker = f"[{i}] " if answer.mode == "llm" else ""
        lines.append(f"{marker}{c.citation}\n“{quote}”")
    blocks.append("\n\n".join(lines))
    return "\n\n".join(blocks)
