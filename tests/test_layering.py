"""The one-way direction through the code, read from its own imports, and other things that must
not creep back: files over 450 lines, tests that read a developer's ``.env``, dead code."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 450
FEATURES = ("bot.meetings", "bot.checklists", "bot.admin", "bot.feedback")
RULES = {
    "retrieval": ("bot",),
    "bot/core": ("sqlalchemy", "telegram", "fastapi", "starlette", "httpx", "chromadb", "langchain_core",
                 "langchain_openai", "langchain_chroma", "openai", "bot.store", "bot.adapters", *FEATURES),
    "bot/store": (*FEATURES, "bot.adapters", "retrieval.service"),
    "bot/adapters": FEATURES,
}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(RULES))
def test_imports_point_one_way(folder: str) -> None:
    banned = RULES[folder]
    found = [f"{path.relative_to(REPO)} imports {name}"
             for path in sorted((REPO / folder).rglob("*.py"))
             for name in imported_modules(path)
             if any(name == b or name.startswith(b + ".") for b in banned)]
    assert found == []


def test_no_source_file_is_over_450_lines() -> None:
    long = {str(p.relative_to(REPO)): n for folder in ("bot", "retrieval") for p in sorted((REPO / folder).rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_tests_never_read_a_developers_env_file() -> None:
    """Defect 7: every Settings a test builds passes ``_env_file=None`` (tests.harness.make_settings)."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local_names = {alias.asname or alias.name for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and node.module == "bot.settings"
                       for alias in node.names if alias.name == "Settings"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in local_names:
                env_file = [k for k in node.keywords if k.arg == "_env_file"]
                if not env_file or not (isinstance(env_file[0].value, ast.Constant) and env_file[0].value.value is None):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_dead_code_is_gone() -> None:
    """Defect 8: code nothing used, and second copies of what exists once."""
    from bot.adapters import delivery
    from bot.core import texts
    from bot.core.engine import Core
    from bot.core.models import Capabilities
    from bot.meetings import feature, parse

    assert "markdown" not in Capabilities.model_fields  # no adapter rendered markdown
    assert not hasattr(texts, "REFUSAL")  # refusals are worded by retrieval
    assert "caps" not in inspect.signature(Core.answer).parameters  # no unused caps
    assert not hasattr(feature, "safe_error") and feature.no_hash_digits is parse.no_hash_digits
    filters = [name for path in sorted((REPO / "bot").rglob("*.py"))
               for name in [n.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                            if isinstance(n, ast.ClassDef) and any(getattr(b, "attr", getattr(b, "id", "")) == "Filter"
                                                                   for b in n.bases)]]
    assert filters == ["RedactSecrets"] and delivery.RedactSecrets.__name__ == "RedactSecrets"
