"""Configuration of the retrieval package, built by the composition root from the bot's settings.

`retrieval/` never reads environment variables or imports the bot: whoever builds a
:class:`RetrievalService` passes one of these.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class LLMConfig(BaseModel):
    """An OpenAI-compatible chat-completions endpoint (optional answer mode)."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    model: str
    api_key: SecretStr = SecretStr("")
    timeout: float = 20.0  # seconds, bounds the whole wait


class RetrievalConfig(BaseModel):
    """Where the index lives, what is searched by default, and how questions are answered."""

    model_config = ConfigDict(frozen=True)

    index_dir: Path  # file pointer, manifests and (embedded mode) the Chroma store
    corpus_dir: Path = Path("corpus")  # what `ingest` reads when given no paths
    chroma_url: str | None = None  # a Chroma server instead of the embedded store
    prompts_dir: Path = Path("prompts")  # LLM prompt templates
    top_k: int = 5
    max_question_chars: int = 500
    llm: LLMConfig | None = Field(default=None)
