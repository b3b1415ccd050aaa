"""Data shapes shared by ingest, index, search and answers."""
from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field


class DocumentMeta(BaseModel):
    """Per-document metadata (from corpus/metadata.yaml, or guessed from the file)."""

    doc_id: str
    title: str
    issuer: str | None = None
    date: str | None = None  # edition / issue date, ISO or as printed
    status: str = "current"  # "current" or "superseded"
    edition: str | None = None  # "2022年版" when several editions of the document are indexed
    source: str  # file name relative to the corpus folder
    aliases: list[str] = Field(default_factory=list)
    kind: str = "regulation"  # regulation | opinion | notice | article | news (see corpus/metadata.yaml)


class Article(BaseModel):
    """One retrievable unit: an article (条), an opinion item (三、（六）) or an essay paragraph."""

    doc_id: str
    doc_title: str
    label: str  # 第十九条 / 三、（六） / 二、1. / 第3段
    heading: str = ""  # 第四章 议事决策 / 三、加强机关基层组织建设…
    text: str  # full text of the unit as cited
    source: str
    date: str | None = None
    status: str = "current"
    edition: str | None = None  # named in the citation when several editions are indexed
    order: int = 0  # position within the document
    kind: str = "regulation"  # the document's kind (regulation, opinion, notice, article, news)

    @property
    def key(self) -> str:
        return f"{self.doc_id}#{self.order}"

    @property
    def citation(self) -> str:
        edition = f"（{self.edition}）" if self.edition else ""
        return f"《{self.doc_title}》{edition}{self.label}"


class Hit(BaseModel):
    article: Article
    score: float


class Citation(BaseModel):
    """A citation as printed by `ask --json` and `batch`."""

    citation: str
    doc_title: str
    label: str
    source: str
    text: str
    score: float
    #: The sentences of ``text`` that answer the question (shown in chat; not part of `batch`).
    quote: str = Field(default="", exclude=True)

    @classmethod
    def from_hit(cls, hit: Hit, quote: str = "") -> Citation:
        a = hit.article
        return cls(
            citation=a.citation, doc_title=a.doc_title, label=a.label, source=a.source,
            text=a.text, score=round(hit.score, 4), quote=quote,
        )


class Answer(BaseModel):
    question: str
    answer: str
    refused: bool
    citations: list[Citation] = Field(default_factory=list)
    quote: str = ""  # the sentence(s) quoted from citations[0]
    mode: str = "extractive"  # or "llm"


#: Resolve a citation given as (doc_id, article label) to the indexed article, or None.
#: Used by checklists and meeting rules; provided by the retriever over the serving index.
ArticleLookup = Callable[[str, str], "Article | None"]
