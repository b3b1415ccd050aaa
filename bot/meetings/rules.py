"""Meeting rules from ``prompts/meeting_rules.yaml``, each resolved to the article it cites.

A rule says how often a type of meeting is due (or only what to remember about it) and where
that is written: ``doc_id`` + article ``label`` resolved through the retriever's
:data:`~retrieval.models.ArticleLookup`, and a short ``quote`` that must occur in the article
text (compared after NFKC normalisation and with whitespace removed, so half-width and
full-width punctuation match). A rule whose document is not indexed, whose label is not found
or whose quote does not occur is *unresolved*: it is left out of plans and reminders and listed
in :attr:`MeetingRules.unresolved` for the administrators.

Several rules may name the same type; the first one that resolves is the one used (so a second
rule acts as a fallback citation).
"""
from __future__ import annotations

import logging
import unicodedata
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from bot.meetings.parse import TYPE_ALIASES
from retrieval.models import Article, ArticleLookup
from retrieval.normalize import to_simplified

log = logging.getLogger(__name__)

RuleFrequency = Literal["month", "quarter", "year"]

FREQUENCY_LABELS: dict[str, str] = {"month": "每月", "quarter": "每季度", "year": "每年"}
PERIOD_LABELS: dict[str, str] = {"month": "本月", "quarter": "本季度", "year": "本年度"}


class MeetingRule(BaseModel):
    """One entry of meeting_rules.yaml."""

    type: str = Field(min_length=1)  # canonical meeting type (see bot.meetings.parse.KNOWN_TYPES)
    frequency: RuleFrequency | None = None  # None: a rule to remember, not a frequency
    summary: str = Field(min_length=1)  # what the rule says, shown to users
    doc_id: str = Field(min_length=1)
    label: str = Field(min_length=1)  # 第十二条 / 三、（六）
    quote: str = Field(min_length=2)  # must occur in the article text
    plan: bool = True  # list it in /meeting plan (regular meetings of a party branch)
    also_counts: list[str] = Field(default_factory=list)  # other types that satisfy it in a plan


class RuleFile(BaseModel):
    rules: list[MeetingRule]
    #: question words that, with a plan meeting type, make an answer point to /meeting plan
    plan_pointer_when: list[str] = Field(default_factory=list)


class ResolvedRule(BaseModel):
    """A rule together with the indexed article it cites."""

    rule: MeetingRule
    article: Article

    @property
    def type(self) -> str:
        return self.rule.type

    @property
    def citation(self) -> str:
        """``《中国共产党支部工作条例（试行）》第十二条``."""
        return self.article.citation

    @property
    def counted_types(self) -> list[str]:
        return [self.rule.type, *self.rule.also_counts]


def normalise_for_match(text: str) -> str:
    """NFKC with all whitespace removed: the form quotes and article texts are compared in."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def quote_occurs(quote: str, text: str) -> bool:
    return normalise_for_match(quote) in normalise_for_match(text)


def read_rule_file(path: Path) -> RuleFile:
    """Parse and validate the YAML file; ValueError with the file name on any problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return RuleFile.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"meeting rules file {path} is invalid: {exc}") from exc


class MeetingRules:
    """Rules resolved against the serving index. Reload after a reindex."""

    def __init__(self, rules: list[MeetingRule], lookup: ArticleLookup, path: Path | None = None,
                 pointer_when: list[str] | None = None) -> None:
        self._rules = list(rules)
        self._path = path
        self._pointer_when = list(pointer_when or [])
        self._resolved: list[ResolvedRule] = []
        self._unresolved: list[str] = []
        self._resolve(lookup)

    @classmethod
    def load(cls, path: Path, lookup: ArticleLookup) -> MeetingRules:
        """Read ``path`` (raises ValueError when the file is missing or malformed) and resolve."""
        data = read_rule_file(path)
        return cls(data.rules, lookup, path, data.plan_pointer_when)

    def reload(self, lookup: ArticleLookup) -> None:
        """Re-read the file (if loaded from one) and resolve again, e.g. after a reindex.

        A file that became unreadable keeps the previous rules and adds a message to
        :attr:`unresolved`, so a reindex never fails because of this file.
        """
        problem: str | None = None
        if self._path is not None:
            try:
                data = read_rule_file(self._path)
                self._rules, self._pointer_when = data.rules, data.plan_pointer_when
            except ValueError as exc:
                log.error("%s; keeping the previous meeting rules", exc)
                problem = f"会议规则文件 {self._path.name} 无法读取，仍使用上次的规则：{exc}"
        self._resolve(lookup)
        if problem:
            self._unresolved = [problem, *self._unresolved]

    def _resolve(self, lookup: ArticleLookup) -> None:
        resolved: list[ResolvedRule] = []
        unresolved: list[str] = []
        for rule in self._rules:
            where = f"{rule.doc_id} {rule.label}"
            try:
                article = lookup(rule.doc_id, rule.label)
            except Exception as exc:  # a broken index must not break start-up
                log.warning("lookup of %s failed: %s", where, exc)
                article = None
            if article is None:
                unresolved.append(f"会议规则“{rule.type}”的出处（{where}）未在文件库中找到，已略去。")
            elif not quote_occurs(rule.quote, article.text):
                unresolved.append(
                    f"会议规则“{rule.type}”的引文“{rule.quote}”在{article.citation}中找不到，已略去。"
                )
            else:
                resolved.append(ResolvedRule(rule=rule, article=article))
        # Swap whole lists so readers on other tasks never see a half-built state.
        self._resolved, self._unresolved = resolved, unresolved
        for message in unresolved:
            log.warning("%s", message)

    # ------------------------------------------------------------------ queries
    @property
    def rules(self) -> list[MeetingRule]:
        return list(self._rules)

    @property
    def resolved(self) -> list[ResolvedRule]:
        return list(self._resolved)

    @property
    def unresolved(self) -> list[str]:
        """One Chinese message per rule that could not be resolved (for the admins)."""
        return list(self._unresolved)

    def for_type(self, meeting_type: str) -> ResolvedRule | None:
        """The first resolved rule for this (canonical) type, or None."""
        for r in self._resolved:
            if r.rule.type == meeting_type:
                return r
        return None

    def plan_rules(self) -> list[ResolvedRule]:
        """Resolved rules for /meeting plan: one per type, with a frequency, in file order."""
        seen: set[str] = set()
        out: list[ResolvedRule] = []
        for r in self._resolved:
            if r.rule.plan and r.rule.frequency and r.rule.type not in seen:
                seen.add(r.rule.type)
                out.append(r)
        return out

    def asks_about_plan(self, question: str) -> bool:
        """True when a question asks how often a meeting of the plan is held (the trigger words
        are ``plan_pointer_when`` in the rule file)."""
        text = normalise_for_match(to_simplified(question))
        if not any(word in text for word in self._pointer_when):
            return False
        types = {t for r in self.plan_rules() for t in r.counted_types}
        names = types | {alias for alias, canonical in TYPE_ALIASES.items() if canonical in types}
        return any(name in text for name in names)

    def missing_plan_types(self) -> list[str]:
        """Plan types with no resolved rule at all (named in the plan's note)."""
        have = {r.rule.type for r in self.plan_rules()}
        out: list[str] = []
        for rule in self._rules:
            if rule.plan and rule.frequency and rule.type not in have and rule.type not in out:
                out.append(rule.type)
        return out
