"""Optional LLM answer mode: a fluent answer from any OpenAI-compatible model, still grounded and cited.

Runs only after retrieval accepted a question. The model sees the top passages numbered
``[1]..[n]`` (best first) and must cite every claim with ``[n]``. Its output is then checked:

* markers ``[n]``, ``［n］``, ``【n】``, ``[1][2]``, ``[1,2]``, ``[1、2]``, ``[1-3]`` are parsed
  (1-3 digits only, so a bracketed year such as ``[2019]`` stays plain text);
* the answer is split into sentences (ending in 。！？!? or a line break; markers written just
  after the full stop belong to the sentence before);
* a sentence citing any number that was not given (e.g. ``[9]``) is removed, and so are the
  uncited sentences that directly follow it (they continue the removed claim);
* other uncited sentences (introductions, connectives, "the passages do not say") are kept,
  but only if at least one validly cited sentence remains; otherwise the extractive answer
  is used;
* kept citations are renumbered ``[1], [2], ...`` by first use; the citation list is rendered
  from passage metadata (``Citation.from_hit``), never from model text;
* if the answer does not name the article label of ``citations[0]``, ``（依据：<label>）`` is
  appended;
* an answer that echoes a long stretch (``ECHO_WINDOW`` characters) of the prompt templates is
  rejected as a prompt leak.

Any failure (timeout, HTTP error, refused connection, empty, malformed or rejected output)
returns the extractive answer unchanged and logs a warning (never the API key).
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path

import httpx
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from retrieval.config import LLMConfig
from retrieval.answer import cite
from retrieval.models import Answer, Hit

log = logging.getLogger(__name__)

#: How many of the ranked hits are shown to the model (and so the valid marker range).
MAX_PASSAGES = 5
#: Characters of one passage shown at most (articles are far shorter; this bounds the prompt).
MAX_PASSAGE_CHARS = 2000
#: Length of a prompt-template substring whose presence in the output counts as a leak.
ECHO_WINDOW = 20
#: Placeholder key for local servers that need none (the client refuses an empty key).
PLACEHOLDER_KEY = "EMPTY"

SYSTEM_FILE = "llm_system.txt"
USER_FILE = "llm_user.txt"
REWRITE_FILE = "llm_rewrite.txt"
#: A rewritten follow-up longer than this is not a question but an answer or an echo.
MAX_REWRITE_CHARS = 200

_MARKER_RE = re.compile(
    r"[\[［【]\s*(\d{1,3}(?:\s*[-–~～]\s*\d{1,3})?(?:\s*[,，、;；]\s*\d{1,3}(?:\s*[-–~～]\s*\d{1,3})?)*)\s*[\]］】]"
)
_MARKERS_PREFIX_RE = re.compile(r"\s*(?:" + _MARKER_RE.pattern + r"\s*)+")
_SENTENCE_RE = re.compile(r"[^。！？!?\n]*(?:[。！？!?]+[”’」』）)]*[ \t]*\n*|\n+|$)")
_THINK_RE = re.compile(r"<think>.*?</think>", re.S)
_PLACEHOLDER_RE = re.compile(r"\{(passages|question)\}")
_WS_RE = re.compile(r"\s+")
_TERMINATORS = "。！？!?”’」』）)"



class Prompts(BaseModel):
    """The two prompt templates: a system prompt and a user template with ``{passages}``/``{question}``."""

    system: str
    user: str
    rewrite: str = ""  # template for turning a follow-up into a standalone question

    @classmethod
    def load(cls, prompts_dir: Path) -> Prompts:
        """Read ``llm_system.txt`` and ``llm_user.txt`` from ``prompts_dir`` (ValueError if missing)."""
        if not (prompts_dir / SYSTEM_FILE).is_file() or not (prompts_dir / USER_FILE).is_file():
            raise ValueError(f"找不到 LLM 提示词模板 {prompts_dir / SYSTEM_FILE}（请检查 DANGJIAN_PROMPTS_DIR）")
        rewrite = prompts_dir / REWRITE_FILE
        return cls(
            system=(prompts_dir / SYSTEM_FILE).read_text(encoding="utf-8").strip(),
            user=(prompts_dir / USER_FILE).read_text(encoding="utf-8").strip(),
            rewrite=rewrite.read_text(encoding="utf-8").strip() if rewrite.is_file() else "",
        )


# Prompt building ---------------------------------------------------------------------------
def passages_for(hits: list[Hit]) -> list[Hit]:
    """The hits shown to the model, best first; passage ``[n]`` is ``passages_for(hits)[n-1]``."""
    return hits[:MAX_PASSAGES]


def _one_line(text: str) -> str:
    return _WS_RE.sub(" ", text).strip()


def format_passage(n: int, hit: Hit) -> str:
    """``[n] 《title》label text`` on one line (the label is not repeated if the text starts with it)."""
    a = hit.article
    text = _one_line(a.text)
    if a.label and text.startswith(a.label):
        text = text[len(a.label):].lstrip()
    if len(text) > MAX_PASSAGE_CHARS:
        text = text[:MAX_PASSAGE_CHARS] + "…"
    return f"[{n}] {a.citation} {text}"


def build_messages(question: str, hits: list[Hit], *, prompts: Prompts) -> list[BaseMessage]:
    """System prompt plus one user message listing the numbered passages ([1] = best) and the question.

    Each passage is one line, so text inside a document or the question cannot start a fake
    ``[n]`` passage line.
    """
    passages = "\n".join(format_passage(i, h) for i, h in enumerate(passages_for(hits), start=1))
    values = {"passages": passages, "question": _one_line(question)}
    # One pass, so a "{question}" inside a passage is never substituted.
    user = _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], prompts.user)
    return [SystemMessage(content=prompts.system), HumanMessage(content=user)]


# Output validation -------------------------------------------------------------------------
def _marker_numbers(group: str) -> list[int]:
    numbers: list[int] = []
    for token in re.split(r"[,，、;；]", group):
        bounds = [int(x) for x in re.split(r"[-–~～]", token.strip()) if x.strip()]
        if len(bounds) == 2 and bounds[0] <= bounds[1] and bounds[1] - bounds[0] < 10:
            numbers.extend(range(bounds[0], bounds[1] + 1))
        else:
            numbers.extend(bounds)
    return numbers


def split_sentences(text: str) -> list[str]:
    """Split after 。！？!? (plus closing quotes) and line breaks; "".join(result) == text.

    Markers written right after a full stop (``…召开1次。[1]``) are moved to the sentence before.
    """
    pieces = [p for p in _SENTENCE_RE.findall(text) if p]
    out: list[str] = []
    for piece in pieces:
        if out and out[-1].rstrip(" \t").endswith(tuple(_TERMINATORS)):
            m = _MARKERS_PREFIX_RE.match(piece)
            if m and m.group(0).strip():
                out[-1] += m.group(0)
                piece = piece[m.end():]
        if piece:
            out.append(piece)
    return out


def validate(text: str, hits: list[Hit]) -> tuple[str, list[Hit]] | None:
    """Keep the validly cited answer, renumbered; return (answer text, cited hits in order) or None.

    Rule: a sentence citing a number outside ``1..len(passages_for(hits))`` is dropped along with
    the uncited sentences directly after it; other uncited sentences stay only when at least one
    validly cited sentence remains (else None). Markers are renumbered by first use, so the n-th
    returned hit is ``[n]`` in the text and the first hit is the one the first marker refers to.
    If the text does not name that hit's article label, ``（依据：<label>）`` is appended.
    """
    passages = passages_for(hits)
    text = _THINK_RE.sub("", text or "")
    if "<think>" in text:  # unterminated reasoning: nothing usable
        return None
    kept: list[str] = []
    cited = False
    dropping = False
    for sentence in split_sentences(text):
        numbers = [n for m in _MARKER_RE.finditer(sentence) for n in _marker_numbers(m.group(1))]
        if numbers:
            dropping = any(not 1 <= n <= len(passages) for n in numbers)
            if not dropping:
                kept.append(sentence)
                cited = True
        elif not dropping:
            kept.append(sentence)
    if not cited:
        return None

    order: dict[int, int] = {}  # model number -> shown number

    def renumber(m: re.Match[str]) -> str:
        shown: list[int] = []
        for n in _marker_numbers(m.group(1)):
            new = order.setdefault(n, len(order) + 1)
            if new not in shown:
                shown.append(new)
        return "".join(f"[{k}]" for k in shown)

    answer = _MARKER_RE.sub(renumber, "".join(kept)).strip()
    used = [passages[n - 1] for n in order]  # dicts keep insertion (= first-use) order
    label = used[0].article.label
    if label and label not in answer:
        answer += f"（依据：{label}）"
    return answer, used


def leaks_prompt(text: str, prompts: Prompts, hits: list[Hit], window: int = ECHO_WINDOW) -> bool:
    """True if ``text`` contains ``window`` consecutive characters of a prompt template.

    Whitespace is ignored; stretches that also occur in a shown passage do not count, since
    quoting a regulation is expected.
    """
    out = _WS_RE.sub("", text)
    sources = [prompts.system, *_PLACEHOLDER_RE.split(prompts.user)[::2]]
    passages = [_WS_RE.sub("", h.article.text) for h in passages_for(hits)]
    for source in sources:
        src = _WS_RE.sub("", source)
        for i in range(len(src) - window + 1):
            chunk = src[i:i + window]
            if chunk in out and not any(chunk in p for p in passages):
                return True
    return False


def _bigrams(text: str) -> set[str]:
    return {text[i:i + 2] for i in range(len(text) - 1)}


def best_quote(article_text: str, answer: str) -> str:
    """The sentence of ``article_text`` sharing the most character bigrams with ``answer``."""
    sentences = [s.strip() for s in re.findall(r"[^。！？；\n]+[。！？；]?", article_text) if s.strip()]
    if not sentences:
        return ""
    grams = _bigrams(_MARKER_RE.sub("", answer))
    return max(sentences, key=lambda s: len(_bigrams(s) & grams))


# Calling the model -------------------------------------------------------------------------
async def _bounded(coro, seconds: float):
    async with asyncio.timeout(seconds):
        return await coro


class _LoopThread:
    """One event loop in one daemon thread, for the lifetime of the answerer.

    Calls are coroutines bounded by ``asyncio.timeout``: at the deadline the HTTP request is
    cancelled (the connection closed), so a hanging or trickling server leaves nothing running.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-loop", daemon=True)
        self._thread.start()

    def run(self, coro, seconds: float):
        future = asyncio.run_coroutine_threadsafe(_bounded(coro, seconds), self._loop)
        # The call is cancelled at the deadline; the margin only covers the cancellation.
        return future.result(timeout=seconds + 5)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


class LLMAnswerer:
    """Rewrites an accepted question's answer with an OpenAI-compatible chat model, keeping citations.

    Uses the chat-completions endpoint (``{base_url}/chat/completions``), temperature 0, no
    retries, and bounds the whole wait by ``config.timeout`` seconds.
    """

    def __init__(self, config: LLMConfig, prompts_dir: Path) -> None:
        """Load the prompt templates from ``prompts_dir`` and build the chat client."""
        self._timeout = float(config.timeout)
        self._secret = config.api_key  # SecretStr: masked in any repr
        self._prompts = Prompts.load(prompts_dir)
        self._loop = _LoopThread()
        self._chat = ChatOpenAI(
            base_url=config.base_url,
            api_key=config.api_key.get_secret_value() or PLACEHOLDER_KEY,
            model=config.model,
            # A client of our own: LangChain's shared default would be bound to another loop.
            http_async_client=httpx.AsyncClient(timeout=self._timeout),
            temperature=0,
            timeout=self._timeout,
            max_retries=0,
            streaming=False,
            stream_usage=False,
            use_responses_api=False,
        )

    def answer(self, question: str, hits: list[Hit], extractive: Answer) -> Answer:
        """Return an Answer with mode="llm", or ``extractive`` unchanged if anything goes wrong.

        Synchronous (blocks up to ``llm_timeout`` seconds); from async code call it through
        ``asyncio.to_thread``.
        """
        if extractive.refused or not hits:
            return extractive
        try:
            messages = build_messages(question, hits, prompts=self._prompts)
            reply = self._loop.run(self._chat.ainvoke(messages), self._timeout)
            text = str(reply.text).strip()
        except Exception as exc:  # noqa: BLE001 - any failure falls back
            self._warn("LLM call failed (%s: %s); using the extractive answer",
                       type(exc).__name__, str(exc))
            return extractive
        if not text:
            self._warn("LLM returned an empty answer; using the extractive answer")
            return extractive
        if leaks_prompt(text, self._prompts, hits):
            self._warn("LLM output echoes the prompt; using the extractive answer")
            return extractive
        checked = validate(text, hits)
        if checked is None:
            self._warn("LLM answer has no valid citation; using the extractive answer")
            return extractive
        answer_text, used = checked
        citations = [cite(question, h) for h in used]
        first = citations[0]
        if extractive.citations and extractive.quote and extractive.citations[0].citation == first.citation:
            quote = extractive.quote
        else:
            quote = best_quote(first.text, answer_text)
        return Answer(
            question=extractive.question or question, answer=answer_text, refused=False,
            citations=citations, quote=quote, mode="llm",
        )

    def rewrite(self, previous: str, label: str, follow_up: str) -> str | None:
        """The follow-up as a standalone question (one call, the usual timeout), or None on any
        failure or an output that is not a single short question."""
        if not self._prompts.rewrite:
            return None
        values = {"previous": _one_line(previous), "label": _one_line(label), "question": _one_line(follow_up)}
        prompt = re.sub(r"\{(previous|label|question)\}", lambda m: values[m.group(1)], self._prompts.rewrite)
        try:
            reply = self._loop.run(self._chat.ainvoke([HumanMessage(content=prompt)]), self._timeout)
            text = _THINK_RE.sub("", str(reply.text)).strip().strip("<>「」“”\"")
        except Exception as exc:  # noqa: BLE001 - any failure: the caller merges without the model
            self._warn("LLM rewrite failed (%s: %s); merging without it", type(exc).__name__, str(exc))
            return None
        if not text or "\n" in text or len(text) > MAX_REWRITE_CHARS:
            self._warn("LLM rewrite unusable; merging without it")
            return None
        return text

    def close(self) -> None:
        """Stop the answerer's event-loop thread."""
        self._loop.close()

    def _warn(self, message: str, *args: object) -> None:
        """Log a warning with the API key masked in (and length-capped) every argument."""
        safe = tuple(self._redact(str(a))[:300] for a in args)
        log.warning(message, *safe)

    def _redact(self, text: str) -> str:
        secret = self._secret.get_secret_value()
        return text.replace(secret, "***") if secret else text
