"""DingTalk Stream mode client: robot messages over an outbound WebSocket, no public URL needed.

Protocol (frame shapes in :mod:`bot.adapters.dingtalk.stream_frames`):

1. ``POST {api_base}/v1.0/gateway/connections/open`` with clientId (AppKey), clientSecret
   (AppSecret) and one subscription, CALLBACK ``/v1.0/im/bot/messages/get``; DingTalk answers
   ``{"endpoint": "wss://…", "ticket": "…"}`` (a 4xx with ``{"code", "message"}`` when refused).
2. Connect to ``endpoint?ticket=…``. Every frame is acked at once with its ``messageId``; a robot
   message is handed to ``on_robot_message`` only after its ack was sent, one at a time and in
   arrival order, by a dispatcher task, so a slow handler never delays acks or pings.
3. SYSTEM ``ping`` frames are acked with their data echoed; a SYSTEM ``disconnect`` frame, a closed
   connection or a failed keepalive (WebSocket pings, so half-open connections are noticed) ends
   the connection. We then wait (``backoff_first`` seconds, doubling up to ``backoff_max``, with
   a little jitter; back to ``backoff_first`` after a disconnect frame or a connection that lasted
   ``backoff_max``) and start again at step 1: every connection gets a new ticket. A refused
   ``connections/open`` while running (credentials revoked) is logged and retried the same way;
   nothing here exits.

Why our own client over ``websockets`` rather than the official ``dingtalk-stream`` package
(0.24.3, read before deciding): its ``DingTalkStreamClient.open_connection`` posts with blocking
``requests`` on the event loop; the gateway URL is a class attribute built from the
``DINGTALK_OPENAPI_ENDPOINT`` environment variable at import time, not from our
``DANGJIAN_DINGTALK_API_BASE``; ``start()`` catches ``CancelledError`` and sleeps 10 s, so it cannot
be shut down cleanly; a refused ``connections/open`` is only logged (no way to fail at start with
DingTalk's message) and retried every 10 s with no backoff; acks are sent from untracked
background tasks; and it pulls in ``requests`` and ``aiohttp``. The protocol itself is small, so
implementing it here costs less than working around all of those.

Never logged: the client secret (it is only ever in the request body) and tickets.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import platform
import random
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.version import version as websockets_version

from bot.adapters.dingtalk.stream_frames import (
    OPEN_PATH,
    ROBOT_TOPIC,
    TOPIC_DISCONNECT,
    TOPIC_PING,
    TYPE_CALLBACK,
    TYPE_EVENT,
    TYPE_SYSTEM,
    FrameError,
    ack_for,
    open_request_body,
    parse_frame,
)

log = logging.getLogger(__name__)

#: what an operator must check when DingTalk refuses the connection
SETTINGS_HINT = "check DANGJIAN_DINGTALK_APP_KEY (Client ID) and DANGJIAN_DINGTALK_APP_SECRET (Client Secret)"

RobotMessageHandler = Callable[[dict[str, Any]], Awaitable[None]]

_HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
_WS_OPEN_TIMEOUT = 15.0
_WS_CLOSE_TIMEOUT = 2.0
_MAX_FRAME_BYTES = 8 * 1024 * 1024
_BACKLOG_WARNING = 100  # warn every this many robot messages waiting for the handler
_RETRYABLE_4XX = {408, 429}
_SYSTEM_TOPICS = {TOPIC_PING, TOPIC_DISCONNECT}
_TICKET = re.compile(r"ticket=[^&\s'\"]*")


class StreamAuthError(RuntimeError):
    """DingTalk refused ``connections/open`` (HTTP 4xx): wrong or revoked credentials.

    ``str()`` carries DingTalk's status, code and message and names the settings to check;
    ``message`` is DingTalk's message alone.
    """

    def __init__(self, status: int, code: str | None, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        detail = f"HTTP {status}" + (f" {code}" if code else "") + f": {message or 'no message'}"
        super().__init__(f"DingTalk refused the Stream connection ({detail}); {SETTINGS_HINT}")


class StreamConnectError(RuntimeError):
    """``connections/open`` failed for a reason worth retrying (network, 5xx, odd answer)."""


class StreamClient:
    """Keeps one Stream connection to DingTalk and hands robot messages to ``on_robot_message``.

    Args:
        api_base: DingTalk's API base (``https://api.dingtalk.com``; a loopback URL in tests).
        client_id / client_secret: the app's AppKey (Client ID) and AppSecret (Client Secret).
        on_robot_message: awaited with each robot message's decoded JSON (the same object DingTalk
            POSTs in HTTP mode), after the frame was acked, one call at a time in arrival order.
            It should be quick (check, claim, enqueue); an exception is logged and skipped.
            Redeliveries are passed on too: deduplicate by ``msgId``.
        backoff_first / backoff_max: seconds to wait before the first reconnect / at most.
        http: an httpx client to post ``connections/open`` with (the caller closes it); by
            default a short-lived one per call.
        ping_interval: seconds between WebSocket keepalive pings; a connection whose pong does
            not come within as many seconds is dropped and replaced. None disables them.
        drain_timeout: at shutdown, how long acked messages still queued may take to be handed
            over before the dispatcher is cancelled.

    All methods must be called on the event loop that runs :meth:`run_forever`.
    """

    def __init__(
        self,
        api_base: str,
        client_id: str,
        client_secret: str,
        on_robot_message: RobotMessageHandler,
        *,
        backoff_first: float = 1.0,
        backoff_max: float = 30.0,
        http: httpx.AsyncClient | None = None,
        ping_interval: float | None = 20.0,
        drain_timeout: float = 5.0,
    ) -> None:
        if not api_base.startswith(("http://", "https://")):
            raise ValueError(f"DingTalk API base must be an http(s) URL, got {api_base!r}")
        if not 0 < backoff_first <= backoff_max:
            raise ValueError("need 0 < backoff_first <= backoff_max")
        self._api_base = api_base.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._on_robot_message = on_robot_message
        self._backoff_first = backoff_first
        self._backoff_max = backoff_max
        self._http = http
        self._ping_interval = ping_interval
        self._drain_timeout = drain_timeout
        self._ua = _user_agent()
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[Any] | None = None
        self._stopping = False
        self._ws: ClientConnection | None = None
        self._connected_at: float | None = None

    def __repr__(self) -> str:  # no secret in reprs either
        return f"StreamClient(api_base={self._api_base!r}, client_id={self._client_id!r})"

    @property
    def connected(self) -> bool:
        """True while a WebSocket to the gateway is open (for health checks)."""
        return self._ws is not None

    # -- connections/open --------------------------------------------------------------------------
    async def open_connection(self) -> tuple[str, str]:
        """Ask DingTalk for a Stream endpoint and a fresh ticket: ``(endpoint, ticket)``.

        Raises StreamAuthError when DingTalk refuses (4xx other than 408/429) and
        StreamConnectError for anything worth retrying (network error, 5xx, malformed answer).
        """
        body = open_request_body(self._client_id, self._client_secret, ua=self._ua, local_ip=await self._local_ip())
        url = self._api_base + OPEN_PATH
        headers = {"Accept": "application/json", "User-Agent": self._ua}
        try:
            if self._http is not None:
                response = await self._http.post(url, json=body, headers=headers, timeout=_HTTP_TIMEOUT)
            else:
                async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT) as client:
                    response = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise StreamConnectError(f"connections/open failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        data = _json_or_none(response)
        status = response.status_code
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise StreamAuthError(status, _field(data, "code", 100), _field(data, "message", 300) or "")
        if status != 200 or not isinstance(data, dict):
            raise StreamConnectError(f"connections/open answered HTTP {status}: {_field(data, 'message', 300)}")
        endpoint, ticket = data.get("endpoint"), data.get("ticket")
        if not isinstance(ticket, str) or not ticket or not isinstance(endpoint, str) \
                or urlsplit(endpoint).scheme not in {"ws", "wss"}:
            raise StreamConnectError("connections/open answered without a ws(s) endpoint and a ticket")
        return endpoint, ticket

    async def check_credentials(self) -> None:
        """One ``connections/open`` call to fail fast at start-up.

        Raises StreamAuthError (DingTalk's message and the names DANGJIAN_DINGTALK_APP_KEY /
        DANGJIAN_DINGTALK_APP_SECRET) if refused, StreamConnectError if DingTalk was not reachable
        (the caller decides whether that is fatal; :meth:`run_forever` keeps retrying it).
        """
        await self.open_connection()

    async def _local_ip(self) -> str:
        """Our address on the route to the API host ("" if unknown); DingTalk wants ``localIp``."""
        parts = urlsplit(self._api_base)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(5.0):  # not wait_for: on 3.11 it can lose a cancellation (SIGTERM)
                infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_DGRAM)
            family, _, _, _, address = infos[0]
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(address)  # UDP: picks the route, sends nothing
                return str(sock.getsockname()[0])
        except (OSError, TimeoutError, IndexError):
            return ""

    # -- running -----------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        """Connect, ack, hand over and reconnect until cancelled or :meth:`stop` is called.

        Cancelling the task closes the connection, hands over the messages already acked (for
        up to ``drain_timeout`` seconds), stops the dispatcher and re-raises CancelledError, as
        asyncio expects; after :meth:`stop` it does the same and returns None. No task of ours
        is left running either way.
        """
        if self._task is not None:
            raise RuntimeError("run_forever is already running")
        task = asyncio.current_task()
        assert task is not None
        self._task, self._stopping = task, False
        dispatcher = asyncio.create_task(self._dispatch(), name="dingtalk-stream-dispatch")
        try:
            await self._reconnect_forever()
        except asyncio.CancelledError:
            if not self._stopping or task.uncancel() > 0:
                raise
        finally:
            self._task = None
            await self._stop_dispatcher(dispatcher)

    def stop(self) -> None:
        """Make a running :meth:`run_forever` clean up and return (no-op when not running)."""
        if self._task is not None and not self._stopping:
            self._stopping = True
            self._task.cancel()

    async def _reconnect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff_first
        while True:
            self._connected_at = None
            problem: BaseException | None = None
            asked = False
            try:
                asked = await self._session()
            except (StreamAuthError, StreamConnectError, OSError, WebSocketException, TimeoutError) as exc:
                problem = exc
            except Exception:  # a bug must not end the bot's only DingTalk connection
                log.exception("dingtalk stream: unexpected error")
            if asked or (self._connected_at is not None and loop.time() - self._connected_at >= self._backoff_max):
                delay = self._backoff_first  # not a failure: DingTalk asked, or the connection was healthy
            wait = delay * random.uniform(0.75, 1.0)
            if isinstance(problem, StreamAuthError):
                log.error("dingtalk stream: %s; retrying in %.3g s", problem, wait)
            elif problem is not None:
                log.warning("dingtalk stream: %s; reconnecting in %.3g s", _describe(problem), wait)
            else:
                log.info("dingtalk stream: reconnecting in %.3g s", wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self._backoff_max)

    async def _session(self) -> bool:
        """One connection: open, connect, ack and hand over until it ends; True if DingTalk asked."""
        endpoint, ticket = await self.open_connection()
        async with connect(
            _with_ticket(endpoint, ticket),
            open_timeout=_WS_OPEN_TIMEOUT,
            close_timeout=_WS_CLOSE_TIMEOUT,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_interval,
            max_size=_MAX_FRAME_BYTES,
            user_agent_header=self._ua,
        ) as ws:
            self._connected_at = asyncio.get_running_loop().time()
            self._ws = ws
            log.info("dingtalk stream: connected to %s", endpoint)
            try:
                async for raw in ws:
                    if await self._on_frame(ws, raw):
                        log.info("dingtalk stream: the gateway asked us to reconnect (disconnect frame)")
                        return True
            finally:
                self._ws = None
        log.info("dingtalk stream: the gateway closed the connection (code %s)", ws.close_code)
        return False

    async def _on_frame(self, ws: ClientConnection, raw: str | bytes) -> bool:
        """Ack one frame and queue its robot message; True for a disconnect request."""
        try:
            frame = parse_frame(raw)
        except FrameError as exc:
            log.warning("dingtalk stream: ignored a frame: %s", exc)
            return False
        reply = ack_for(frame)
        if frame.type not in (TYPE_CALLBACK, TYPE_EVENT, TYPE_SYSTEM):
            log.warning("dingtalk stream: acked and ignored a frame of unknown type %r", frame.type[:40])
        message: dict[str, Any] | None = None
        if frame.type == TYPE_CALLBACK and frame.topic == ROBOT_TOPIC:
            try:
                message = frame.data_object()
            except FrameError as exc:
                log.warning("dingtalk stream: acked and ignored a robot frame: %s", exc)
        elif frame.type == TYPE_CALLBACK or (frame.type == TYPE_SYSTEM and frame.topic not in _SYSTEM_TOPICS):
            log.info("dingtalk stream: acked and ignored %s topic %r", frame.type, frame.topic[:100])
        elif frame.type == TYPE_EVENT:
            log.debug("dingtalk stream: acked and ignored event %r", frame.topic[:100])
        try:
            await ws.send(reply)
        finally:  # even if the ack could not be sent: DingTalk redelivers, the handler dedupes
            if message is not None:
                self._hand_over(message)
        return frame.type == TYPE_SYSTEM and frame.topic == TOPIC_DISCONNECT

    # -- handing over ------------------------------------------------------------------------------
    def _hand_over(self, message: dict[str, Any]) -> None:
        self._pending.put_nowait(message)
        backlog = self._pending.qsize()
        if backlog % _BACKLOG_WARNING == 0:
            log.warning("dingtalk stream: %d robot messages waiting for the handler", backlog)

    async def _dispatch(self) -> None:
        """Await the handler for each queued message in turn; its errors never end this loop."""
        me = asyncio.current_task()
        while True:
            message = await self._pending.get()
            msg_id = str(message.get("msgId"))[:100]
            try:
                await self._on_robot_message(message)
            except asyncio.CancelledError:
                if me is not None and me.cancelling():
                    raise  # we are being stopped
                log.error("dingtalk stream: robot message handler was cancelled for %s", msg_id)
            except Exception:
                log.exception("dingtalk stream: robot message handler failed for %s", msg_id)
            finally:
                self._pending.task_done()

    async def _stop_dispatcher(self, dispatcher: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(self._pending.join(), self._drain_timeout)
        except TimeoutError:
            log.warning("dingtalk stream: handler still busy at shutdown; %d acked robot message(s) not handed over",
                        self._pending.qsize())
        finally:
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)


def _with_ticket(endpoint: str, ticket: str) -> str:
    return f"{endpoint}{'&' if '?' in endpoint else '?'}ticket={quote_plus(ticket)}"


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("dangjian-bot")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    python = platform.python_version()
    return f"dangjian-bot/{version} (DingTalk Stream; websockets/{websockets_version}; Python/{python})"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _field(data: Any, name: str, limit: int) -> str | None:
    """``data[name]`` as a short string (None when absent), e.g. DingTalk's error code/message."""
    if isinstance(data, dict) and data.get(name) is not None:
        return str(data[name])[:limit]
    return None


def _describe(exc: BaseException) -> str:
    """A log line for a connection problem: the exception's type and message, tickets masked."""
    text = _TICKET.sub("ticket=***", str(exc))[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
