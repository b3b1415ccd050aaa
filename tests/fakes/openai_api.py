"""A fake OpenAI-compatible chat-completions server for tests (FastAPI + uvicorn on 127.0.0.1).

Start it, point ``Settings.llm_base_url`` at ``fake.base_url`` and choose a behaviour::

    fake = FakeOpenAI().start()
    fake.set_reply("党组会议一般每月召开1次[1]。")   # or a callable(body: dict) -> str
    fake.set_mode("hang", hang_seconds=30)  # or "ok", "error500", "error401", "malformed", "empty", "trickle"
    ...
    fake.requests[-1].headers["authorization"]      # "Bearer <key>"
    fake.stop()

It serves ``POST /v1/chat/completions`` (non-streaming, and SSE when the body asks for
``"stream": true``) and ``GET /v1/models``. Any other path (e.g. ``/v1/responses``) answers 404,
but is still recorded, so a test can tell which endpoint a client used.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from tests.fakes.loopback import LoopbackFake, LoopbackServer

Mode = Literal["ok", "hang", "error500", "error401", "malformed", "empty", "trickle"]
Reply = str | Callable[[dict[str, Any]], str]


class RecordedRequest(BaseModel):
    """One request as the fake received it. Header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None  # parsed JSON body, None if absent or not JSON
    raw_body: str = ""
    received_at: float = Field(default_factory=time.monotonic)

    def messages(self, role: str | None = None) -> list[dict[str, Any]]:
        """The chat ``messages`` of the body, optionally only those of one role."""
        msgs = list((self.body or {}).get("messages") or [])
        return [m for m in msgs if role is None or m.get("role") == role]


class FakeOpenAI(LoopbackFake):
    """A background OpenAI-compatible server bound to a free loopback port."""

    def __init__(self, reply: Reply = "（未设置回复）", *, model_name: str = "fake-model") -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._reply: Reply = reply
        self._mode: Mode = "ok"
        self._hang_seconds = 30.0
        self._model_name = model_name
        self._stopping = threading.Event()
        self.app = self._build_app()
        self._server = LoopbackServer(self.app, "fake-openai", graceful_shutdown=1, join_timeout=5)

    # Lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> FakeOpenAI:
        """Bind 127.0.0.1 on a free port, serve in a daemon thread, return once accepting."""
        self._stopping.clear()
        return super().start(timeout)

    def stop(self) -> None:
        """Release hanging requests, shut the server down and wait for its thread."""
        self._stopping.set()
        super().stop()

    # Configuration -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"{self._server.base_url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    def set_reply(self, reply: Reply) -> None:
        """Answer with fixed text, or with ``reply(body)`` computed from the request JSON."""
        with self._lock:
            self._reply = reply

    def set_mode(self, mode: Mode, *, hang_seconds: float = 30.0) -> None:
        """Choose the behaviour for following requests.

        ``ok``: 200 with the reply; ``hang``: wait ``hang_seconds`` (or until stop) and then
        answer normally; ``error500``: HTTP 500 with an OpenAI-style error body; ``error401``:
        HTTP 401 whose message echoes the bearer token (as careless proxies do); ``malformed``:
        200 with a body that is not JSON; ``empty``: 200 with an empty assistant message;
        ``trickle``: 200 at once, then one byte of whitespace every 0.2 s for ``hang_seconds``
        before the JSON body (a per-read client timeout never fires; only a wall-clock one does).
        """
        if mode not in ("ok", "hang", "error500", "error401", "malformed", "empty", "trickle"):
            raise ValueError(f"unknown mode {mode!r}")
        with self._lock:
            self._mode = mode
            self._hang_seconds = hang_seconds

    # App ---------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/v1/models")
        async def models() -> JSONResponse:
            return JSONResponse({"object": "list", "data": [
                {"id": self._model_name, "object": "model", "created": 0, "owned_by": "fake"},
            ]})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await self._record(request)
            with self._lock:
                mode, hang, reply = self._mode, self._hang_seconds, self._reply
            if mode == "hang":
                end = time.monotonic() + hang
                while time.monotonic() < end and not self._stopping.is_set():
                    await asyncio.sleep(0.05)
            if mode == "error500":
                return JSONResponse(status_code=500, content={"error": {
                    "message": "internal error (fake)", "type": "server_error", "code": None,
                }})
            if mode == "error401":
                token = request.headers.get("authorization", "").removeprefix("Bearer ")
                return JSONResponse(status_code=401, content={"error": {
                    "message": f"Incorrect API key provided: {token}", "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }})
            if mode == "malformed":
                return Response(content='{"id": "chatcmpl-x", "choices": [', media_type="application/json")
            text = "" if mode == "empty" else (reply(body or {}) if callable(reply) else reply)
            model = (body or {}).get("model") or self._model_name
            if mode == "trickle":
                return StreamingResponse(
                    self._trickle(json.dumps(_completion(text, model), ensure_ascii=False), hang),
                    media_type="application/json",
                )
            if (body or {}).get("stream"):
                return StreamingResponse(_sse(text, model), media_type="text/event-stream")
            return JSONResponse(_completion(text, model))

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        async def other(request: Request, path: str) -> JSONResponse:
            await self._record(request)
            return JSONResponse(status_code=404, content={"error": {
                "message": f"no route /{path} in the fake", "type": "invalid_request_error",
            }})

        return app

    async def _trickle(self, payload: str, seconds: float):  # noqa: ANN202 - async generator
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping.is_set():
            yield " "
            await asyncio.sleep(0.2)
        yield payload

    async def _record(self, request: Request) -> dict[str, Any] | None:
        raw = (await request.body()).decode("utf-8", errors="replace")
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        rec = RecordedRequest(
            method=request.method, path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body if isinstance(body, dict) else None, raw_body=raw,
        )
        with self._lock:
            self._requests.append(rec)
        return rec.body


def _completion(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text},
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


async def _sse(text: str, model: str):  # noqa: ANN202 - async generator of SSE lines
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": None}]}
    yield f"data: {json.dumps(first, ensure_ascii=False)}\n\n"
    for i in range(0, len(text), 8):
        chunk = {**base, "choices": [{"index": 0, "delta": {"content": text[i:i + 8]},
                                      "finish_reason": None}]}
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield f"data: {json.dumps(last, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
