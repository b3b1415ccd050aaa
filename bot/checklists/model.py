"""Checklist data shapes: the YAML file as written (``*Spec``) and the resolved, cited form.

A checklist file under ``prompts/checklists/`` is parsed into :class:`ChecklistSpec`; the loader
resolves every step's citation against the serving index and produces :class:`Checklist`, whose
steps carry the rendered citation (``《title》第二十七条``) and the quote taken verbatim from the
indexed article text.
"""
from __future__ import annotations

import unicodedata

from pydantic import BaseModel, ConfigDict, Field, field_validator

from retrieval.normalize import to_simplified

#: Words that follow ``/checklist`` as sub-commands, so no checklist may be called that.
RESERVED_NAMES = frozenset({"status", "reset", "list", "help"})

# Checklist ids appear in callback data (chk:<id>:<step>:<action>), which is limited to 64 bytes.
_ID_PATTERN = r"^[a-z][a-z0-9_]{1,15}$"
MAX_STEPS = 99


class CitationSpec(BaseModel):
    """Where a step's rule comes from: a document id, an article label and an optional quote."""

    model_config = ConfigDict(extra="forbid")

    doc: str = Field(min_length=1)  # doc_id in the index, e.g. zhibu-gongzuo-tiaoli-2018
    label: str = Field(min_length=1)  # 第十七条 / 三、（十一）
    quote: str | None = None  # substring of the article text to show instead of the whole article


class StepSpec(BaseModel):
    """One step as written in YAML."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None  # short name for lists and the summary; defaults to the text
    text: str = Field(min_length=1)  # what to do
    who: str = Field(min_length=1)  # who does it
    deadline: str | None = None  # free-text hint: 会前 / 每年第四季度 / 会后按规定时限
    meeting_type: str | None = None  # offers 加入会议提醒 (/meeting add <type> …)
    citation: CitationSpec

    @field_validator("meeting_type")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        # It becomes the first word of a /meeting add template, which is split on spaces.
        if value is not None and (not value.strip() or any(ch.isspace() for ch in value.strip())):
            raise ValueError("meeting_type must be one word without spaces, e.g. 组织生活会")
        return value


class ChecklistSpec(BaseModel):
    """One checklist file as written in YAML."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID_PATTERN)
    title: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    description: str = Field(min_length=1)
    order: int = 100  # position in the /checklist list (then by id)
    #: question words that, with the checklist's title or an alias, make an answer point to it
    pointer_when: list[str] = Field(default_factory=list)
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is a /checklist sub-command and cannot be a checklist id")
        return value


class Step(BaseModel):
    """A resolved step: what, who, when, and the rule it rests on."""

    model_config = ConfigDict(frozen=True)

    title: str
    text: str
    who: str
    deadline: str | None = None
    meeting_type: str | None = None
    doc_id: str
    label: str
    citation: str  # Article.citation, e.g. 《中国共产党支部工作条例（试行）》第十七条
    quote: str  # verbatim from the indexed article text (the whole article when no quote given)


class Checklist(BaseModel):
    """A resolved checklist, ready to be walked through."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    aliases: tuple[str, ...] = ()
    description: str
    order: int = 100
    pointer_when: tuple[str, ...] = ()
    steps: tuple[Step, ...]

    def pointed_to_by(self, question: str) -> bool:
        """A question about preparing or holding this meeting (see ``pointer_when``)."""
        text = name_key(to_simplified(question))
        names = [name_key(n) for n in (self.title, *self.aliases) if not n.isascii()]
        return any(n in text for n in names) and any(w in text for w in self.pointer_when)

    @property
    def size(self) -> int:
        return len(self.steps)


class ChecklistError(ValueError):
    """Checklist files that cannot be used; ``problems`` names checklist and step of each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("checklists are broken:\n" + "\n".join(f"- {p}" for p in self.problems))


def name_key(text: str) -> str:
    """Comparable form of a checklist name typed by a user or written as an alias.

    Width-folded (NFKC), lower-cased, without spaces and surrounding quotes or brackets.
    """
    folded = unicodedata.normalize("NFKC", text).lower()
    folded = "".join(ch for ch in folded if not ch.isspace())
    return folded.strip("\"'“”‘’《》<>「」[]【】")
