"""Render an :class:`Answer` as chat text: the answer, then one block per citation."""
from __future__ import annotations

from retrieval.models import Answer

MAX_QUOTE_CHARS = 300
MIN_RELATIVE_SCORE = 0.5  # secondary citations shown only when close to the best one


def format_answer(answer: Answer, max_citations: int = 3) -> str:
    """Answer first, then "依据：" and each citation with its quoted sentences (one block each)."""
    if answer.refused or not answer.citations:
        return answer.answer
    if answer.mode == "llm":  # every [n] in the text needs its block; the list holds only cited ones
        max_citations = max(max_citations, len(answer.citations))
    top_score = answer.citations[0].score or 1.0
    shown = [c for i, c in enumerate(answer.citations[:max_citations])
             if i == 0 or answer.mode == "llm" or c.score >= MIN_RELATIVE_SCORE * top_score]
    blocks = [answer.answer.strip(), "依据："]
    for i, c in enumerate(shown, start=1):
        quote = c.quote or (c.text[len(c.label):].lstrip() if c.text.startswith(c.label) else c.text)
        if len(quote) > MAX_QUOTE_CHARS:
            quote = quote[:MAX_QUOTE_CHARS] + "……"
        marker = f"[{i}] " if answer.mode == "llm" else ""
        blocks.append(f"{marker}{c.citation}\n“{quote}”")
    return "\n\n".join(blocks)
