"""DingTalk (钉钉) enterprise-internal app robot, HTTP callback mode, and the adapter's entry
points (:func:`preflight`, :func:`run`) for both modes.

Flow of one message: DingTalk POSTs the robot message JSON to ``/dingtalk/callback`` with
``timestamp``/``sign`` headers → we check the sign (403 otherwise), parse the body (400 when
malformed), queue it in the :class:`~bot.adapters.delivery.Inbox` and answer 200 at once — or
503 when the inbox is full, so that DingTalk retries. A worker claims ``msgId`` (a redelivery is
dropped), asks the core and posts the replies to *that* message's ``sessionWebhook``
(:class:`~bot.adapters.dingtalk.robot.DingTalkRobot`, shared with Stream mode). Pushes without a
message to answer (reminders, reports) go through the robot OpenAPI
(:mod:`bot.adapters.dingtalk.client`).

``DANGJIAN_DINGTALK_MODE=stream`` receives the same messages over an outbound WebSocket instead
(:mod:`bot.adapters.dingtalk.stream_adapter`).

See /work/shared/protocols/dingtalk.md for the wire formats.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from bot.adapters.delivery import InboxOptions, SeenMessages, protect
from bot.adapters.dingtalk.robot import PLATFORM, DingTalkRobot, RobotMessage, check_required_settings
from bot.adapters.dingtalk.sign import SignatureError, check_sign
from bot.adapters.dingtalk.stream_adapter import check_stream_credentials, run_stream
from bot.adapters.http_server import serve_adapter
from bot.core.engine import Core
from bot.settings import Settings

log = logging.getLogger(__name__)

CALLBACK_PATH = "/dingtalk/callback"


class DingTalkAdapter(DingTalkRobot):
    """Receives robot callbacks, answers through sessionWebhook, pushes through the OpenAPI."""

    def __init__(self, settings: Settings, core: Core, seen: SeenMessages, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, options: InboxOptions = InboxOptions()) -> None:
        """``clock`` (seconds since the epoch) judges sign timestamps, webhook and token expiry."""
        self._secret = settings.dingtalk_app_secret or ""
        protect(self._secret)
        super().__init__(settings, core, seen, http, clock, options)

    def router(self) -> APIRouter:
        """``POST /dingtalk/callback`` for :func:`bot.adapters.http_server.build_http_app`."""
        router = APIRouter()
        router.add_api_route(CALLBACK_PATH, self._callback, methods=["POST"])
        return router

    async def _callback(self, request: Request) -> Response:
        if not self._secret:  # an empty key would make every sign forgeable
            log.error("dingtalk: DANGJIAN_DINGTALK_APP_SECRET is not set; refusing callbacks")
            return PlainTextResponse("forbidden", status_code=403)
        try:
            check_sign(request.headers.get("timestamp"), request.headers.get("sign"), self._secret, self._now_ms())
        except SignatureError as exc:
            client = request.client.host if request.client else "?"
            log.warning("dingtalk: rejected callback from %s: %s", client, exc)
            return PlainTextResponse("forbidden", status_code=403)
        try:
            data = json.loads(await request.body())
            if not isinstance(data, dict):
                raise ValueError("body is not a JSON object")
            message = RobotMessage.model_validate(data)
        except (ValueError, ValidationError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            log.warning("dingtalk: malformed callback body: %s", type(exc).__name__)
            return PlainTextResponse("bad request", status_code=400)
        if not self.inbox.offer(message.user_id, message.msg_id, message):
            return PlainTextResponse("busy", status_code=503)  # not claimed: DingTalk's retry is answered
        return JSONResponse({})


async def preflight(settings: Settings) -> None:
    """Checks before the bot loads its index, so a misconfigured bot fails in seconds: the
    required settings, and in Stream mode whether DingTalk accepts the credentials (ValueError
    with DingTalk's message and the setting names when it refuses them)."""
    check_required_settings(settings)
    if settings.dingtalk_mode == "stream":
        await check_stream_credentials(settings)


async def run(settings: Settings, core: Core, db: SeenMessages) -> None:
    """Run until cancelled: HTTP mode serves callbacks on ``settings.http_host:http_port``;
    Stream mode keeps a connection to DingTalk (see :func:`run_stream`)."""
    check_required_settings(settings)
    if settings.dingtalk_mode == "stream":
        await run_stream(settings, core, db)
        return
    adapter = DingTalkAdapter(settings, core, db)
    core.outbound.register(PLATFORM, adapter)
    log.info("dingtalk: HTTP mode, callback endpoint %s", CALLBACK_PATH)
    await serve_adapter(adapter, settings.http_host, settings.http_port)
