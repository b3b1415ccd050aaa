"""Delivery machinery shared by the adapters, in one place.

* :class:`Inbox` — received messages wait in a bounded queue; a few workers handle them, one
  sender's messages one at a time in arrival order, different senders concurrently. Each message
  id is claimed in the database just before it is handled (after it was queued), so a redelivery
  is handled once and a message refused for a full queue (HTTP 503) is still answered when the
  platform retries it; a source that cannot ask for a retry (Stream mode acks first) waits for
  room instead. On shutdown the queue is drained for a few seconds.
* :func:`first_delivery` — the one policy when deduplication cannot reach the database: the
  message is handled (a rare duplicate answer beats a lost question).
* :class:`AccessToken` — a platform access token cached until one refresh margin before it
  expires, fetched once however many senders ask at the same time, dropped when rejected.
* :func:`protect` / :class:`RedactSecrets` — the one log filter that keeps secrets, tokens and
  ``access_token=``-style query values out of the logs of the HTTP and Telegram libraries.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_WORKERS = 4
DEFAULT_CAPACITY = 1000
DRAIN_SECONDS = 10.0
REFRESH_MARGIN_SECONDS = 300.0


class SeenMessages(Protocol):
    """Where message ids are claimed (``bot.store.db.Database``): True the first time only."""

    def claim_message(self, platform: str, message_id: str) -> bool: ...


async def first_delivery(seen: SeenMessages, platform: str, message_id: str) -> bool:
    """False for a message id already claimed (by any replica); True otherwise.

    When the database cannot be reached the message counts as new and is handled: the platform's
    retry would meet the same outage, and an answer sent twice beats a question never answered.
    """
    try:
        return await asyncio.to_thread(seen.claim_message, platform, message_id)
    except Exception as exc:  # StorageUnavailable, or anything the driver raised
        log.warning("%s: cannot record message %s (%s); handling it anyway", platform, message_id, type(exc).__name__)
        return True


@dataclass(frozen=True)
class InboxOptions:
    """How many workers an :class:`Inbox` runs, how many messages it holds, how long it drains."""

    workers: int = DEFAULT_WORKERS
    capacity: int = DEFAULT_CAPACITY
    drain_seconds: float = DRAIN_SECONDS


@dataclass
class _Item(Generic[T]):
    message_id: str | None
    payload: T


class Inbox(Generic[T]):
    """A bounded, per-sender-ordered work queue with deduplication by message id.

    ``handle`` is awaited for every new message; its exceptions are logged and never stop a
    worker. ``capacity`` counts the messages accepted and not yet handled.
    """

    def __init__(self, platform: str, handle: Callable[[T], Awaitable[None]], seen: SeenMessages,
                 options: InboxOptions = InboxOptions()) -> None:
        self.platform = platform
        self._handle = handle
        self._seen = seen
        self._worker_count = max(1, options.workers)
        self.capacity = options.capacity
        self._drain_seconds = options.drain_seconds
        self._waiting: dict[str, deque[_Item[T]]] = {}  # sender → messages, the first one in hand
        self._ready: asyncio.Queue[str] = asyncio.Queue()  # senders whose messages nobody handles yet
        self._size = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()  # set whenever a handled message made room
        self._workers: list[asyncio.Task[None]] = []

    @property
    def size(self) -> int:
        """Messages accepted and not handled yet."""
        return self._size

    def offer(self, sender: str, message_id: str | None, payload: T) -> bool:
        """Queue a message; False (nothing queued, nothing claimed) when the inbox is full."""
        if self._size >= self.capacity:
            log.warning("%s: inbox full (%d); message %s refused for a retry", self.platform, self._size, message_id)
            return False
        self._size += 1
        self._idle.clear()
        item = _Item(message_id, payload)
        if sender in self._waiting:
            self._waiting[sender].append(item)  # a worker has this sender: it takes it in order
        else:
            self._waiting[sender] = deque([item])
            self._ready.put_nowait(sender)
        self.start()
        return True

    async def put(self, sender: str, message_id: str | None, payload: T) -> None:
        """Queue a message, waiting while the inbox is full: for messages the platform will not
        send again (already acknowledged), which must not be refused."""
        if self._size >= self.capacity:
            log.warning("%s: inbox full (%d); waiting for room for %s", self.platform, self._size, message_id)
            while self._size >= self.capacity:
                self._room.clear()
                await self._room.wait()
        self.offer(sender, message_id, payload)

    def start(self) -> None:
        """Start the workers (idempotent; :meth:`offer` calls it too)."""
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"{self.platform}-worker-{i}")
                             for i in range(self._worker_count)]

    async def join(self) -> None:
        """Wait until every accepted message has been handled."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Drain for up to ``drain_seconds``, then stop the workers."""
        if not self._workers:
            return
        try:
            await asyncio.wait_for(self.join(), self._drain_seconds)
        except TimeoutError:
            log.warning("%s: %d queued message(s) left unanswered at shutdown", self.platform, self._size)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def _work(self) -> None:
        while True:
            sender = await self._ready.get()
            queue = self._waiting[sender]
            while queue:
                item = queue[0]
                try:
                    if item.message_id is None or await first_delivery(self._seen, self.platform, item.message_id):
                        await self._handle(item.payload)
                    else:
                        log.info("%s: redelivery of %s ignored", self.platform, item.message_id)
                except Exception:
                    log.exception("%s: handling message %s failed", self.platform, item.message_id)
                finally:
                    queue.popleft()
                    self._size -= 1
                    self._room.set()
            del self._waiting[sender]
            if self._size == 0:
                self._idle.set()


class AccessToken:
    """A cached access token. ``fetch`` returns (token, lifetime in seconds).

    The token is reused until ``margin`` seconds (at most a tenth of its lifetime) before it
    expires; concurrent callers wait for one fetch. Every token fetched is registered with the
    log redaction (:func:`protect`).
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]],
        *,
        margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin = margin
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    async def get(self) -> str:
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            token, lifetime = await self._fetch()
            protect(token)
            self._token = token
            self._expires_at = self._clock() + lifetime - min(self._margin, lifetime / 10)
            return token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the cached one (another call may have refreshed it)."""
        if self._token == token:
            self._token = None
            self._expires_at = 0.0


# ---------------------------------------------------------------------------------------------
_SECRET_QUERY = re.compile(r"(access_token|corpsecret|appsecret|secret)=[^&\s\"'<>]+", re.IGNORECASE)
#: Loggers that may print request URLs (httpx) or Bot API call parameters (python-telegram-bot).
SENSITIVE_LOGGERS = ("httpx", "telegram.Bot", "telegram.ext.ExtBot")
_MAX_SECRETS = 64  # tokens are rotated every two hours: keep the recent ones


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``access_token=…``-style values and each of ``secrets`` replaced by ``***``."""
    text = _SECRET_QUERY.sub(r"\1=***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    """Rewrites log records that contain a registered secret or a secret query value."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: deque[str] = deque(maxlen=_MAX_SECRETS)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        redacted = redact(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = RedactSecrets()


def protect(*secrets: str | None) -> None:
    """Keep these secrets (and any ``access_token=`` value) out of the sensitive loggers' output."""
    for secret in secrets:
        if secret and len(secret) >= 6 and secret not in _FILTER.secrets:
            _FILTER.secrets.append(secret)
    for name in SENSITIVE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
