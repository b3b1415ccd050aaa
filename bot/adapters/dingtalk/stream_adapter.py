"""DingTalk Stream mode (``DANGJIAN_DINGTALK_MODE=stream``): robot messages over an outbound
WebSocket, so the bot needs no public URL, certificate, reverse proxy or inbound port.

The connection itself (connections/open, acks, pings, reconnects with backoff) is
:class:`~bot.adapters.dingtalk.stream.StreamClient`; it hands every robot message over after
acking it. From there a message takes the same way as in HTTP mode
(:class:`~bot.adapters.dingtalk.robot.DingTalkRobot`): queued per sender, ``msgId`` claimed in
the database when handled (a redelivery, on this replica or another, is answered once), answered
through its ``sessionWebhook`` (the OpenAPI when that has expired). What is dropped before the
queue: a message for another robot code, a malformed one, and one without text (voice, video, a
rich text of pictures only, an empty @-mention); pictures and files get the short "text only"
hint, as in HTTP mode.

Start: :func:`check_stream_credentials` (called by ``preflight`` before the index loads) turns a
refused ``connections/open`` into a ValueError naming the settings, so ``dangjian run`` exits
non-zero in seconds. Later refusals (credentials revoked while running) are logged and retried
with backoff by the client: the process stays up and keeps sending reminders.

Shutdown (the task is cancelled): the client closes the connection and hands the messages it
already acked to the inbox, then the inbox is drained, then the health endpoint stops.

No HTTP port is needed. ``GET /healthz`` is still served on ``DANGJIAN_HTTP_HOST:_PORT`` for
container health checks (``DANGJIAN_HTTP_PORT=0``: not served; a port that cannot be bound is
logged and skipped), reporting whether the Stream connection is up.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from bot.adapters.delivery import InboxOptions, SeenMessages, protect
from bot.adapters.dingtalk.robot import PLATFORM, DingTalkRobot, RobotMessage
from bot.adapters.dingtalk.stream import StreamAuthError, StreamClient, StreamConnectError
from bot.adapters.http_server import serve_health
from bot.core.engine import Core
from bot.settings import Settings

log = logging.getLogger(__name__)

#: Message kinds answered with the "text only" hint although they carry no text (as in HTTP mode).
HINTED_KINDS = frozenset({"picture", "file"})


def _stream_client(settings: Settings, handler: Callable[[dict[str, Any]], Any], **options: Any) -> StreamClient:
    protect(settings.dingtalk_app_secret)
    return StreamClient(settings.dingtalk_api_base, settings.dingtalk_app_key or "",
                        settings.dingtalk_app_secret or "", handler, **options)


async def check_stream_credentials(settings: Settings) -> None:
    """One ``connections/open`` call. DingTalk refuses → ValueError with its message and the
    names of the settings to check. DingTalk unreachable → a warning only: the bot starts and
    the client keeps trying (a network hiccup at boot must not become a crash loop)."""

    async def nothing(message: dict[str, Any]) -> None:  # pragma: no cover - never connected
        return None

    try:
        await _stream_client(settings, nothing).check_credentials()
    except StreamAuthError as exc:
        raise ValueError(str(exc)) from exc
    except StreamConnectError as exc:
        log.warning("dingtalk stream: DingTalk not reachable at start (%s); starting anyway and retrying", exc)


class DingTalkStreamAdapter(DingTalkRobot):
    """Receives robot messages from the Stream client, answers and pushes like HTTP mode.

    ``stream_options`` go to :class:`StreamClient` (``backoff_first``, ``backoff_max``,
    ``ping_interval``, ``drain_timeout``); its ``connections/open`` calls share our HTTP client.
    """

    def __init__(self, settings: Settings, core: Core, seen: SeenMessages, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, options: InboxOptions = InboxOptions(),
                 **stream_options: Any) -> None:
        super().__init__(settings, core, seen, http, clock, options)
        self.client = _stream_client(settings, self._receive, http=self._http, **stream_options)
        self._foreign_codes: set[str] = set()

    async def _receive(self, data: dict[str, Any]) -> None:
        """One acked robot message → the inbox. It cannot be refused for a retry (DingTalk has
        its ack), so this waits while the inbox is full; the client keeps acking meanwhile."""
        try:
            message = RobotMessage.model_validate(data)
        except ValidationError as exc:
            log.warning("dingtalk stream: ignored a malformed robot message (%d problem(s): %s)",
                        exc.error_count(), ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])[:200])
            return
        if message.robot_code and message.robot_code != self.api.robot_code:
            if message.robot_code not in self._foreign_codes:  # warn once per code, then quietly
                self._foreign_codes.add(message.robot_code)
                log.warning("dingtalk stream: ignoring messages for robotCode %r (ours is %r; set "
                            "DANGJIAN_DINGTALK_ROBOT_CODE if that robot is this bot)",
                            message.robot_code[:64], self.api.robot_code)
            return
        if message.msgtype not in HINTED_KINDS and not message.plain_text():
            log.info("dingtalk stream: ignored %s message %s without text", message.msgtype[:32], message.msg_id)
            return
        await self.inbox.put(message.user_id, message.msg_id, message)

    def health(self) -> dict:
        return {**super().health(), "dingtalk_stream": "connected" if self.client.connected else "connecting"}


async def run_stream(settings: Settings, core: Core, db: SeenMessages, **stream_options: Any) -> None:
    """Keep the Stream connection and answer what it delivers, until cancelled.

    Does not check the credentials first (``preflight`` did, before the index was loaded): a
    refusal here is logged and retried like a revocation while running.
    """
    adapter = DingTalkStreamAdapter(settings, core, db, **stream_options)
    core.outbound.register(PLATFORM, adapter)
    await adapter.start()
    health = (asyncio.create_task(serve_health(adapter.health, settings.http_host, settings.http_port))
              if settings.http_port else None)
    log.info("dingtalk: Stream mode (no callback URL), robot code %s", adapter.api.robot_code)
    try:
        await adapter.client.run_forever()  # cancelled: hands the acked messages to the inbox first
    finally:
        await adapter.aclose()  # then answers what is queued (for a few seconds)
        if health is not None:
            health.cancel()
            await asyncio.gather(health, return_exceptions=True)
