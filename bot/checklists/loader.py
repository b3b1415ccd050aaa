"""Load checklist YAML files and resolve every step's citation against the serving index.

Nothing is loaded half-way: every problem in every file (bad YAML, a field missing, an unknown
document or article label, a quote that does not occur in the article) is collected and raised
together as one :class:`ChecklistError` that names the checklist and the step, so a corpus refresh
cannot silently leave a checklist citing nothing.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import yaml
from pydantic import ValidationError

from bot.checklists.model import (
    RESERVED_NAMES,
    Checklist,
    ChecklistError,
    ChecklistSpec,
    Step,
    StepSpec,
    name_key,
)
from retrieval.models import Article, ArticleLookup

# Quote marks that differ between sources but mean the same; everything else is NFKC-folded.
_QUOTE_MARKS = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "「": '"', "」": '"'})


def _folded(text: str) -> tuple[str, list[int]]:
    """Width-folded text without whitespace, and for each kept character its index in ``text``."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).translate(_QUOTE_MARKS):
            if not c.isspace():
                chars.append(c)
                index.append(i)
    return "".join(chars), index


def find_quote(article_text: str, quote: str) -> str | None:
    """The span of ``article_text`` that ``quote`` denotes, or None when it does not occur.

    Matching ignores whitespace and full-/half-width differences (``(一)`` = ``（一）``,
    ``,`` = ``，``), so a quote survives the index's normalisation; the returned span is taken
    from the article itself, so what users see is always the indexed text.
    """
    haystack, index = _folded(article_text)
    needle, _ = _folded(quote)
    if not needle:
        return None
    pos = haystack.find(needle)
    if pos < 0:
        return None
    return article_text[index[pos] : index[pos + len(needle) - 1] + 1]


def load_checklists(directory: Path, lookup: ArticleLookup) -> list[Checklist]:
    """Parse every ``*.yaml``/``*.yml`` in ``directory`` and resolve their citations.

    ``lookup(doc_id, label)`` returns the indexed :class:`Article` or None. Returns the checklists
    sorted by their ``order`` field, then id. Raises :class:`ChecklistError` listing every problem (each naming the
    file, the checklist id and the step number) when anything cannot be resolved.
    """
    if not directory.is_dir():
        raise ChecklistError([f"checklist directory {directory} does not exist"])
    problems: list[str] = []
    specs: list[tuple[Path, ChecklistSpec]] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in {".yaml", ".yml"}):
        spec = _parse(path, problems)
        if spec is not None:
            specs.append((path, spec))
    _check_names(specs, problems)
    checklists = [_resolve(path, spec, lookup, problems) for path, spec in specs]
    if problems:
        raise ChecklistError(problems)
    return sorted(checklists, key=lambda c: (c.order, c.id))


def _parse(path: Path, problems: list[str]) -> ChecklistSpec | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{path.name}: cannot read the file: {exc}")
        return None
    try:
        return ChecklistSpec.model_validate(data)
    except ValidationError as exc:
        name = data.get("id") if isinstance(data, dict) else None
        where = f"{path.name} (checklist {name})" if name else path.name
        for err in exc.errors():
            loc = list(err["loc"])
            if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
                field = ".".join(str(x) for x in loc[2:]) or "step"
                problems.append(f"{where} step {loc[1] + 1}: {field}: {err['msg']}")
            else:
                field = ".".join(str(x) for x in loc) or "file"
                problems.append(f"{where}: {field}: {err['msg']}")
        return None


def _check_names(specs: list[tuple[Path, ChecklistSpec]], problems: list[str]) -> None:
    """Ids, titles and aliases must each lead to exactly one checklist."""
    owner: dict[str, str] = {}
    for path, spec in specs:
        for name in {spec.id, spec.title, *spec.aliases}:
            key = name_key(name)
            if not key:
                problems.append(f"{path.name} (checklist {spec.id}): empty alias")
                continue
            if key in RESERVED_NAMES:
                problems.append(f"{path.name} (checklist {spec.id}): name {name!r} is a sub-command")
                continue
            other = owner.setdefault(key, spec.id)
            if other != spec.id:
                problems.append(
                    f"{path.name} (checklist {spec.id}): name {name!r} is also used by checklist {other}"
                )


def _resolve(path: Path, spec: ChecklistSpec, lookup: ArticleLookup, problems: list[str]) -> Checklist:
    steps: list[Step] = []
    for number, step_spec in enumerate(spec.steps, start=1):
        where = f"{path.name} (checklist {spec.id}) step {number} “{_short(step_spec)}”"
        step = _resolve_step(step_spec, lookup, where, problems)
        if step is not None:
            steps.append(step)
    return Checklist(
        id=spec.id, title=spec.title, aliases=tuple(spec.aliases), description=spec.description,
        order=spec.order, pointer_when=tuple(spec.pointer_when), steps=tuple(steps),
    )


def _resolve_step(spec: StepSpec, lookup: ArticleLookup, where: str, problems: list[str]) -> Step | None:
    cite = spec.citation
    try:
        article: Article | None = lookup(cite.doc, cite.label)
    except Exception as exc:  # a broken index must be reported, not crash the report
        problems.append(f"{where}: looking up {cite.doc} {cite.label} failed: {exc}")
        return None
    if article is None:
        problems.append(f"{where}: no article {cite.label} in document {cite.doc} (unknown document or label)")
        return None
    if cite.quote is not None:
        quote = find_quote(article.text, cite.quote)
        if quote is None:
            problems.append(f"{where}: quote “{cite.quote}” does not occur in {article.citation}")
            return None
    else:
        quote = article.text.strip()
    return Step(
        title=spec.title or _short(spec), text=spec.text.strip(), who=spec.who.strip(),
        deadline=(spec.deadline or "").strip() or None,
        meeting_type=(spec.meeting_type or "").strip() or None,
        doc_id=cite.doc, label=cite.label, citation=article.citation, quote=quote,
    )


def _short(spec: StepSpec, limit: int = 20) -> str:
    text = (spec.title or spec.text).strip()
    return text if len(text) <= limit else text[:limit] + "…"
