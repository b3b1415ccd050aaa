"""A fake DingTalk Stream gateway on 127.0.0.1 for tests.

Two servers, one background thread (one event loop), like the real thing (``api.dingtalk.com``
hands out ``wss://wss-open-connection.dingtalk.com/connect``):

* HTTP (uvicorn): ``POST /v1.0/gateway/connections/open`` checks clientId/clientSecret and the
  subscriptions, issues a single-use ticket and answers ``{"endpoint": ws_url, "ticket": …}``;
  refused with 401 ``{"code", "message"}`` (``refusal_status`` to change it), or with
  ``fail_open_with`` when set. Every call is recorded in ``open_requests`` (the secret is not
  kept, only whether it matched). ``router()`` gives the same route to mount on another app (e.g.
  ``FakeDingTalk().app``) so one API base serves the OpenAPI and the gateway.
* WebSocket (the ``websockets`` server, so a test can also cut TCP or stop reading):
  ``ws_url`` = ``ws://127.0.0.1:PORT/connect?ticket=…``; an unknown or reused ticket gets HTTP 403
  before the upgrade. Everything a client sends is recorded (``acks``, ``ack_for(message_id)``).

Usage (in an async test)::

    with FakeStreamGateway() as gw:
        client = StreamClient(gw.base_url, gw.client_id, gw.client_secret, handler)
        ...
        await gw.wait_connections(1)
        mid = await gw.push_robot_message({"msgtype": "text", ...})
        await gw.wait_for(lambda: gw.ack_for(mid))
        await gw.ping(); await gw.request_disconnect(); await gw.drop(); await gw.freeze()

Frame shapes are written out here independently of ``bot.adapters.dingtalk.stream_frames``.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from tests.fakes.dingtalk_api import DEFAULT_APP_KEY, DEFAULT_APP_SECRET
from tests.fakes.loopback import HOST, LoopbackFake, LoopbackServer

T = TypeVar("T")

OPEN_PATH = "/v1.0/gateway/connections/open"
WS_PATH = "/connect"
ROBOT_TOPIC = "/v1.0/im/bot/messages/get"

_ids = itertools.count(1)


# ----------------------------------------------------------------------------------------------
# Frames as the gateway sends them (``data`` is a JSON-encoded string)
def frame(frame_type: str, topic: str, data: str, *, message_id: str | None = None) -> dict[str, Any]:
    """A gateway frame; ``message_id`` defaults to a fresh one."""
    return {
        "specVersion": "1.0",
        "type": frame_type,
        "headers": {
            "appId": "fake-app-id",
            "connectionId": "fake-connection",
            "contentType": "application/json",
            "messageId": message_id or f"fake_{next(_ids):06d}_msgid",
            "time": str(int(time.time() * 1000)),
            "topic": topic,
        },
        "data": data,
    }


def robot_frame(message: dict[str, Any], *, message_id: str | None = None, topic: str = ROBOT_TOPIC) -> dict[str, Any]:
    """A CALLBACK frame carrying a robot message (see ``tests.fakes.dingtalk_api.robot_message``)."""
    return frame("CALLBACK", topic, json.dumps(message, ensure_ascii=False), message_id=message_id)


def ping_frame(opaque: str | None = None) -> dict[str, Any]:
    """A SYSTEM ping; the client must echo its data in the ack."""
    return frame("SYSTEM", "ping", json.dumps({"opaque": opaque or f"opaque-{next(_ids)}"}))


def disconnect_frame(reason: str = "server is restarting") -> dict[str, Any]:
    """A SYSTEM disconnect: the client should open a new connection."""
    return frame("SYSTEM", "disconnect", json.dumps({"reason": reason}))


def message_id_of(sent: dict[str, Any]) -> str:
    return str(sent["headers"]["messageId"])


# ----------------------------------------------------------------------------------------------
# Records
@dataclass(frozen=True)
class OpenRequest:
    """One ``connections/open`` call (the secret itself is not kept)."""

    body: dict[str, Any]  # without clientSecret
    secret_ok: bool
    status: int
    ticket: str | None
    at: float  # time.monotonic()


@dataclass
class GatewayConnection:
    """One accepted WebSocket. ``received`` holds what the client sent (JSON decoded if it was)."""

    ticket: str
    ws: ServerConnection
    received: list[Any] = field(default_factory=list)
    closed: bool = False
    frozen: bool = False
    at: float = field(default_factory=time.monotonic)


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    open_requests: list[OpenRequest] = field(default_factory=list)
    unused_tickets: set[str] = field(default_factory=set)
    rejected_tickets: list[str] = field(default_factory=list)
    connections: list[GatewayConnection] = field(default_factory=list)
    received: list[tuple[str, Any]] = field(default_factory=list)  # (ticket, message)


# ----------------------------------------------------------------------------------------------
class FakeStreamGateway(LoopbackFake):
    """The fake gateway. ``start()`` it (or use ``with``); knobs are plain attributes."""

    def __init__(self, *, client_id: str = DEFAULT_APP_KEY, client_secret: str = DEFAULT_APP_SECRET) -> None:
        self.client_id = client_id
        #: change it while running to simulate revoked credentials
        self.client_secret = client_secret
        #: HTTP status of a refusal (wrong clientId/clientSecret)
        self.refusal_status = 401
        #: when set, every connections/open is answered with this (status, JSON body)
        self.fail_open_with: tuple[int, dict[str, Any]] | None = None
        self._state = _State()
        self._tickets = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws_sock: socket.socket | None = None
        self._ws_server: Server | None = None
        self._ws_ready = threading.Event()
        self.ws_port = 0
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        app.include_router(self.router())
        self.app = app
        self._server = LoopbackServer(app, "fake-dingtalk-stream", loop="asyncio", on_loop=self._on_loop)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> FakeStreamGateway:
        if self._server.running:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(64)  # connections queue up until the websockets server accepts them
        self._ws_sock, self.ws_port = sock, sock.getsockname()[1]
        self._ws_ready.clear()
        super().start(timeout)
        if not self._ws_ready.wait(timeout):
            self.stop()
            raise RuntimeError("fake Stream gateway: WebSocket server did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._ws_server
        if loop is not None and server is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._close_ws(server), loop).result(10)
        super().stop()
        if self._ws_sock is not None:
            self._ws_sock.close()
        self._ws_sock = self._ws_server = self._loop = None

    def _on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.create_task(self._serve_ws())

    async def _serve_ws(self) -> None:
        async with serve(self._handler, sock=self._ws_sock, process_request=self._check_ticket,
                         ping_interval=None, close_timeout=2) as server:
            self._ws_server = server
            self._ws_ready.set()
            await server.serve_forever()

    async def _close_ws(self, server: Server) -> None:
        for conn in self.connections:
            if conn.frozen and not conn.closed:  # it would never answer a close handshake
                conn.ws.transport.abort()
        server.close()
        await server.wait_closed()

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the API base (DANGJIAN_DINGTALK_API_BASE)."""
        return self._server.base_url

    @property
    def ws_url(self) -> str:
        """The endpoint ``connections/open`` hands out (``ws://127.0.0.1:PORT/connect``)."""
        return f"ws://{HOST}:{self.ws_port}{WS_PATH}"

    def router(self) -> APIRouter:
        """``POST /v1.0/gateway/connections/open``, to mount on another FastAPI app as well."""
        router = APIRouter()
        router.add_api_route(OPEN_PATH, self._open_connection, methods=["POST"])
        return router

    # -- records -----------------------------------------------------------------------------------
    @property
    def open_requests(self) -> list[OpenRequest]:
        with self._state.lock:
            return list(self._state.open_requests)

    @property
    def tickets_issued(self) -> list[str]:
        return [r.ticket for r in self.open_requests if r.ticket]

    @property
    def rejected_tickets(self) -> list[str]:
        """Tickets refused at the WebSocket handshake (unknown or already used)."""
        with self._state.lock:
            return list(self._state.rejected_tickets)

    @property
    def connections(self) -> list[GatewayConnection]:
        """Every accepted WebSocket, oldest first."""
        with self._state.lock:
            return list(self._state.connections)

    @property
    def live_connections(self) -> list[GatewayConnection]:
        return [c for c in self.connections if not c.closed]

    @property
    def acks(self) -> list[dict[str, Any]]:
        """Every JSON object clients sent, in arrival order (across connections)."""
        with self._state.lock:
            return [m for _, m in self._state.received if isinstance(m, dict)]

    def ack_for(self, message_id: str) -> dict[str, Any] | None:
        """The first ack whose ``headers.messageId`` is ``message_id``."""
        return next((a for a in self.acks if (a.get("headers") or {}).get("messageId") == message_id), None)

    def acks_for(self, message_id: str) -> list[dict[str, Any]]:
        return [a for a in self.acks if (a.get("headers") or {}).get("messageId") == message_id]

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Poll ``predicate`` until it returns something truthy (returned) or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time on the fake Stream gateway")
            await asyncio.sleep(0.01)

    async def wait_connections(self, count: int, timeout: float = 10.0) -> GatewayConnection:
        """Wait until ``count`` WebSockets were accepted in all; return the latest one."""
        await self.wait_for(lambda: len(self.connections) >= count, timeout)
        return self.connections[-1]

    # -- actions -----------------------------------------------------------------------------------
    async def send(self, message: dict[str, Any] | str | bytes, conn: GatewayConnection | None = None) -> None:
        """Send a frame (a dict is JSON-encoded; str/bytes go as they are) on ``conn`` (default:
        the newest live connection)."""
        target = conn or self._live()
        payload = json.dumps(message, ensure_ascii=False) if isinstance(message, dict) else message
        await self._in_loop(target.ws.send(payload))

    async def push_robot_message(self, message: dict[str, Any], *, message_id: str | None = None,
                                 conn: GatewayConnection | None = None) -> str:
        """Send a robot message CALLBACK frame; returns its messageId."""
        sent = robot_frame(message, message_id=message_id)
        await self.send(sent, conn)
        return message_id_of(sent)

    async def ping(self, opaque: str | None = None, conn: GatewayConnection | None = None) -> dict[str, Any]:
        """Send a SYSTEM ping; returns the frame (its ``data`` is what the ack must echo)."""
        sent = ping_frame(opaque)
        await self.send(sent, conn)
        return sent

    async def request_disconnect(self, conn: GatewayConnection | None = None) -> str:
        """Send a SYSTEM disconnect frame (the connection stays open); returns its messageId."""
        sent = disconnect_frame()
        await self.send(sent, conn)
        return message_id_of(sent)

    async def close(self, code: int = 1000, conn: GatewayConnection | None = None) -> None:
        """Close the connection with a close frame (``code``)."""
        target = conn or self._live()
        await self._in_loop(target.ws.close(code, "fake gateway closes"))

    async def drop(self, conn: GatewayConnection | None = None) -> None:
        """Cut the TCP connection without a close frame."""
        target = conn or self._live()

        async def abort() -> None:
            target.ws.transport.abort()

        await self._in_loop(abort())

    async def freeze(self, conn: GatewayConnection | None = None) -> None:
        """Stop reading from the connection: pings go unanswered, as on a half-open connection."""
        target = conn or self._live()

        async def pause() -> None:
            target.frozen = True
            target.ws.transport.pause_reading()

        await self._in_loop(pause())

    def _live(self) -> GatewayConnection:
        live = self.live_connections
        if not live:
            raise RuntimeError("fake Stream gateway: no live connection")
        return live[-1]

    async def _in_loop(self, coro: Any) -> Any:
        """Run ``coro`` on the gateway's event loop (its own thread) and wait for it here."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("fake Stream gateway is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    # -- the servers -------------------------------------------------------------------------------
    async def _open_connection(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        state = self._state
        if not isinstance(body, dict):
            return self._record_open({}, False, 400, {"code": "MissingParameter", "message": "body must be JSON"})
        kept = {k: v for k, v in body.items() if k != "clientSecret"}
        secret_ok = body.get("clientSecret") == self.client_secret
        if self.fail_open_with is not None:
            status, payload = self.fail_open_with
            return self._record_open(kept, secret_ok, status, payload)
        if body.get("clientId") != self.client_id or not secret_ok:
            return self._record_open(kept, secret_ok, self.refusal_status,
                                     {"code": "InvalidAuthentication", "message": "clientId或clientSecret无效",
                                      "requestid": "fake"})
        subs = body.get("subscriptions")
        if not isinstance(subs, list) or not subs or not all(
            isinstance(s, dict) and s.get("type") in {"EVENT", "CALLBACK"} and isinstance(s.get("topic"), str)
            for s in subs
        ):
            return self._record_open(kept, secret_ok, 400,
                                     {"code": "invalidParameter.subscriptions", "message": "subscriptions 不合法"})
        # base64-like, so a client that does not URL-encode it ("+" reads as a space) is refused
        ticket = f"fake+ticket/{next(self._tickets)}/{time.monotonic_ns()}=="
        with state.lock:
            state.unused_tickets.add(ticket)
        return self._record_open(kept, secret_ok, 200, {"endpoint": self.ws_url, "ticket": ticket}, ticket)

    def _record_open(self, body: dict[str, Any], secret_ok: bool, status: int, payload: dict[str, Any],
                     ticket: str | None = None) -> JSONResponse:
        with self._state.lock:
            self._state.open_requests.append(OpenRequest(body, secret_ok, status, ticket, time.monotonic()))
        return JSONResponse(payload, status_code=status)

    def _check_ticket(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        parts = urlsplit(request.path)
        if parts.path != WS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        ticket = parse_qs(parts.query).get("ticket", [""])[0]
        with self._state.lock:
            ok = ticket in self._state.unused_tickets
            self._state.unused_tickets.discard(ticket)  # single use
            if not ok:
                self._state.rejected_tickets.append(ticket)
        return None if ok else connection.respond(HTTPStatus.FORBIDDEN, "invalid or used ticket\n")

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        ticket = parse_qs(urlsplit(ws.request.path).query).get("ticket", [""])[0]
        conn = GatewayConnection(ticket, ws)
        with self._state.lock:
            self._state.connections.append(conn)
        try:
            async for raw in ws:
                try:
                    message: Any = json.loads(raw)
                except ValueError:
                    message = raw
                with self._state.lock:
                    conn.received.append(message)
                    self._state.received.append((ticket, message))
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
