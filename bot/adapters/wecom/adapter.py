"""WeCom (企业微信) self-built app adapter: encrypted callback in, ``message/send`` out.

Flow (see /work/shared/protocols/wecom.md): WeCom POSTs an encrypted XML envelope to
``/wecom/callback``; we verify ``msg_signature``, decrypt, check the CorpID, queue the message in
the :class:`~bot.adapters.delivery.Inbox` and answer 200 with an empty body at once (503 when the
inbox is full, so WeCom retries). Workers claim the ``MsgId`` (redeliveries become no-ops), run
the core and send the replies through the server API (:mod:`bot.adapters.wecom.client`).
Self-built apps show plain text only: no buttons, no files, 2048 UTF-8 bytes per message.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from bot.adapters.delivery import InboxOptions, SeenMessages, protect
from bot.adapters.http_server import InboxLifecycle, serve_adapter
from bot.adapters.wecom.client import WeComApi
from bot.adapters.wecom.crypto import WeComCrypto, WeComCryptoError, decode_aes_key
from bot.core.engine import Core
from bot.core.models import Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingMessage, Problem
from bot.core.split import split_text
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "wecom"
CAPABILITIES = Capabilities(buttons=False, files=False, max_bytes=2048)
CALLBACK_PATH = "/wecom/callback"

_REQUIRED_SETTINGS: dict[str, str] = {
    "wecom_corp_id": "DANGJIAN_WECOM_CORP_ID",
    "wecom_agent_id": "DANGJIAN_WECOM_AGENT_ID",
    "wecom_secret": "DANGJIAN_WECOM_SECRET",
    "wecom_token": "DANGJIAN_WECOM_TOKEN",
    "wecom_aes_key": "DANGJIAN_WECOM_AES_KEY",
}


def check_settings(settings: Settings) -> None:
    """Raise ValueError (Chinese + English) naming each missing or malformed DANGJIAN_WECOM_* value."""
    missing = [env for field, env in _REQUIRED_SETTINGS.items() if not (getattr(settings, field) or "").strip()]
    if missing:
        names = ", ".join(missing)
        raise ValueError(
            f"企业微信适配器缺少配置：{names}。请在环境变量或 .env 中设置后重试。"
            f" / WeCom adapter is not configured: missing {names}."
        )
    if not (settings.wecom_agent_id or "").strip().isdigit():
        raise ValueError(
            "DANGJIAN_WECOM_AGENT_ID 必须是应用的 AgentId（整数）。"
            " / DANGJIAN_WECOM_AGENT_ID must be the app's integer AgentId."
        )
    try:
        decode_aes_key(settings.wecom_aes_key or "")
    except ValueError:
        raise ValueError(
            "DANGJIAN_WECOM_AES_KEY 必须是企业微信后台给出的 43 位 EncodingAESKey。"
            " / DANGJIAN_WECOM_AES_KEY must be the 43-character EncodingAESKey from the WeCom console."
        ) from None


# ---------------------------------------------------------------------------
# Callback payloads
class MalformedCallback(ValueError):
    """The body or the decrypted message is not the XML WeCom sends."""


class WeComMessage(BaseModel):
    """The fields of a decrypted callback message that the bot uses."""

    to_user: str = ""
    from_user: str
    create_time: str = ""
    msg_type: str
    content: str = ""
    msg_id: str | None = None
    event: str | None = None
    agent_id: str | None = None

    @property
    def is_event(self) -> bool:
        return self.msg_type == "event"

    @property
    def dedupe_key(self) -> str:
        """MsgId; events have none, so FromUserName + CreateTime."""
        return self.msg_id or f"{self.from_user}:{self.create_time}"

    def to_incoming(self) -> IncomingMessage:
        """The core's view: a private text, or a message it cannot read (image, voice…)."""
        text = self.msg_type == "text"
        return IncomingMessage(
            platform=PLATFORM, chat_id=self.from_user, chat_type=ChatType.PRIVATE, user_id=self.from_user,
            text=self.content if text else "", message_id=self.msg_id, addressed=True,
            problem=None if text else Problem.NOT_TEXT,
        )


def _parse_xml(data: bytes | str) -> ET.Element:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if b"<!doctype" in raw.lower() or b"<!entity" in raw.lower():
        raise MalformedCallback("DTDs and entities are not accepted")
    try:
        return ET.fromstring(raw)
    except ET.ParseError:
        raise MalformedCallback("not well-formed XML") from None


def parse_envelope(body: bytes) -> str:
    """The ``Encrypt`` text of a callback body; :class:`MalformedCallback` otherwise."""
    encrypt = (_parse_xml(body).findtext("Encrypt") or "").strip()
    if not encrypt:
        raise MalformedCallback("no Encrypt element")
    return encrypt


def parse_message(plaintext: str) -> WeComMessage:
    """The decrypted message XML as a :class:`WeComMessage`; :class:`MalformedCallback` otherwise."""
    root = _parse_xml(plaintext)

    def text(tag: str) -> str | None:
        value = root.findtext(tag)
        return value.strip() if value is not None and tag != "Content" else value

    msg = WeComMessage(
        to_user=text("ToUserName") or "", from_user=text("FromUserName") or "",
        create_time=text("CreateTime") or "", msg_type=(text("MsgType") or "").lower(),
        content=text("Content") or "", msg_id=text("MsgId") or None, event=text("Event") or None,
        agent_id=text("AgentID") or None,
    )
    if not msg.from_user or not msg.msg_type:
        raise MalformedCallback("FromUserName and MsgType are required")
    return msg


def _status(code: int, text: str) -> Response:
    return PlainTextResponse(text, status_code=code)


# ---------------------------------------------------------------------------
class WeComAdapter(InboxLifecycle):
    """Callback router + inbox workers + the Outbound used for pushes (reminders)."""

    capabilities: Capabilities = CAPABILITIES

    def __init__(self, settings: Settings, core: Core, seen: SeenMessages, http: httpx.AsyncClient | None = None,
                 options: InboxOptions = InboxOptions()) -> None:
        check_settings(settings)
        protect(settings.wecom_secret, settings.wecom_token, settings.wecom_aes_key)
        self._core = core
        corp_id = (settings.wecom_corp_id or "").strip()
        self._crypto = WeComCrypto(settings.wecom_token or "", settings.wecom_aes_key or "", corp_id)
        self._open_inbox(PLATFORM, self._process, seen, options, http, httpx.Timeout(10.0))
        self.api = WeComApi(self._http, settings)

    def __repr__(self) -> str:
        return f"WeComAdapter({self.api!r})"

    # HTTP ------------------------------------------------------------------
    def router(self) -> APIRouter:
        """``GET``/``POST {CALLBACK_PATH}``: URL verification and message callbacks."""
        router = APIRouter()
        router.add_api_route(CALLBACK_PATH, self._verify_url, methods=["GET"], include_in_schema=False)
        router.add_api_route(CALLBACK_PATH, self._receive, methods=["POST"], include_in_schema=False)
        return router

    async def _verify_url(self, request: Request) -> Response:
        """URL verification: 200 with the decrypted echostr as the whole body, else 403."""
        q = request.query_params
        signature, timestamp, nonce = q.get("msg_signature"), q.get("timestamp"), q.get("nonce")
        echostr = q.get("echostr")
        if not (signature and timestamp and nonce and echostr):
            return _status(403, "forbidden")
        # base64 never contains spaces: a space is a "+" that was sent unencoded.
        echostr = echostr.replace(" ", "+")
        try:
            plaintext = self._crypto.verify_url(signature, timestamp, nonce, echostr)
        except WeComCryptoError as exc:
            log.warning("wecom URL verification rejected: %s", type(exc).__name__)
            return _status(403, "forbidden")
        return Response(content=plaintext.encode("utf-8"), media_type="text/plain; charset=utf-8")

    async def _receive(self, request: Request) -> Response:
        """A message callback: verify, decrypt, queue; 200 with an empty body at once."""
        try:
            encrypt = parse_envelope(await request.body())
        except MalformedCallback as exc:
            log.warning("wecom callback rejected (400): %s", exc)
            return _status(400, "bad request")
        q = request.query_params
        signature, timestamp, nonce = q.get("msg_signature"), q.get("timestamp"), q.get("nonce")
        if not (signature and timestamp and nonce):
            log.warning("wecom callback rejected (403): missing signature parameters")
            return _status(403, "forbidden")
        try:
            msg = parse_message(self._crypto.decrypt_message(signature, timestamp, nonce, encrypt))
        except WeComCryptoError as exc:
            log.warning("wecom callback rejected (403): %s", type(exc).__name__)
            return _status(403, "forbidden")
        except MalformedCallback as exc:
            log.warning("wecom callback rejected (400): decrypted message: %s", exc)
            return _status(400, "bad request")
        if msg.is_event:
            log.debug("wecom event %s from %s ignored", msg.event, msg.from_user)
            return Response(status_code=200)
        if not self.inbox.offer(msg.from_user, msg.dedupe_key, msg):
            return _status(503, "busy")
        return Response(status_code=200)

    # Work --------------------------------------------------------------------
    async def _process(self, msg: WeComMessage) -> None:
        replies = await self._core.handle(msg.to_incoming(), CAPABILITIES)
        await self._deliver(msg.from_user, replies)

    async def _deliver(self, touser: str, messages: list[OutgoingMessage]) -> None:
        for message in messages:
            for chunk in split_text(message.text, max_bytes=CAPABILITIES.max_bytes):
                await self.api.send_text(touser, chunk)

    # Outbound ----------------------------------------------------------------
    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        """Push to ``ref.user_id`` (the member who registered the meeting); raises on failure."""
        await self._deliver(ref.user_id, messages)


async def run(settings: Settings, core: Core, db: SeenMessages) -> None:
    """Serve the WeCom callback on ``settings.http_host:http_port`` until cancelled."""
    adapter = WeComAdapter(settings, core, db)
    core.outbound.register(PLATFORM, adapter)
    log.info("WeCom adapter ready: callback %s on %s:%d", CALLBACK_PATH, settings.http_host, settings.http_port)
    await serve_adapter(adapter, settings.http_host, settings.http_port)
