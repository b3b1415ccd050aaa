"""The HTTP server that callback platforms (WeCom, DingTalk) post to: FastAPI + uvicorn.

Adapters contribute an ``APIRouter``; this module adds ``/healthz`` and a request-size limit
(413 before any adapter code runs) and serves them on ``DANGJIAN_HTTP_HOST:DANGJIAN_HTTP_PORT``.
:class:`InboxLifecycle` is the start/join/close the callback adapters share, :func:`serve_adapter`
their whole ``run``.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from bot.adapters.delivery import Inbox, InboxOptions, SeenMessages

log = logging.getLogger(__name__)


class CallbackAdapter(Protocol):
    """What a callback adapter offers :func:`serve_adapter`."""

    def router(self) -> APIRouter: ...

    def health(self) -> dict: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class InboxLifecycle:
    """Start, join, health and close of a callback adapter: its :class:`Inbox` of received
    messages and the HTTP client it may own (closed with it)."""

    inbox: Inbox
    _http: httpx.AsyncClient
    _own_http: bool

    def _open_inbox(self, platform: str, handle: Callable[[Any], Awaitable[None]], seen: SeenMessages,
                    options: InboxOptions, http: httpx.AsyncClient | None, timeout: httpx.Timeout) -> None:
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self.inbox = Inbox(platform, handle, seen, options)

    async def start(self) -> None:
        self.inbox.start()

    async def join(self) -> None:
        """Wait until every accepted message has been handled (tests and shutdown)."""
        await self.inbox.join()

    async def aclose(self) -> None:
        """Finish queued work (for a few seconds), stop the workers, close our HTTP client."""
        await self.inbox.aclose()
        if self._own_http:
            await self._http.aclose()

    def health(self) -> dict:
        return {f"{self.inbox.platform}_queue": self.inbox.size}

MAX_BODY_BYTES = 256 * 1024  # callbacks are small; anything larger is refused with 413


def build_http_app(
    routers: list[APIRouter],
    *,
    health: Callable[[], dict] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """A FastAPI app with the given routers, ``GET /healthz`` and a body-size limit."""
    app = FastAPI(title="dangjian-bot", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return PlainTextResponse("request body too large", status_code=413)
        if request.method in {"POST", "PUT", "PATCH"}:
            body = await request.body()  # cached by Starlette for the handler
            if len(body) > max_body_bytes:
                return PlainTextResponse("request body too large", status_code=413)
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", **(health() if health else {})})

    for router in routers:
        app.include_router(router)
    return app


async def serve_http(app: FastAPI, host: str, port: int, *, sock: socket.socket | None = None) -> None:
    """Serve until cancelled (on ``sock`` when given, already bound). Logs go through the
    standard logging setup."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    log.info("HTTP server listening on %s:%d", host, port)
    task = asyncio.create_task(server.serve(sockets=[sock] if sock is not None else None))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True  # graceful: close the listening socket, finish requests
        await task
        raise


async def serve_adapter(adapter: CallbackAdapter, host: str, port: int) -> None:
    """Start ``adapter``, serve its callback route (plus /healthz) until cancelled, then close it
    (its queued messages are drained first)."""
    await adapter.start()
    try:
        await serve_http(build_http_app([adapter.router()], health=adapter.health), host, port)
    finally:
        await adapter.aclose()


async def serve_health(health: Callable[[], dict], host: str, port: int) -> None:
    """Serve only ``GET /healthz`` until cancelled, for adapters that need no inbound port (the
    platform is reached over an outbound connection). Unlike a callback server it is optional:
    when the port cannot be bound, a warning is logged and this returns."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        log.warning("health endpoint not served: cannot listen on %s:%d (%s)", host, port, exc)
        return
    with sock:
        await serve_http(build_http_app([], health=health), host, port, sock=sock)
