"""WeCom (企业微信) self-built app adapter: encrypted callback in, ``message/send`` out.

Flow (see /work/shared/protocols/wecom.md): WeCom POSTs an encrypted XML envelope to
``/wecom/callback``; we verify ``msg_signature``, decrypt, check the CorpID, claim the ``MsgId`` in
the database (redeliveries become no-ops), queue the message and answer 200 with an empty body at
once. Background workers run the core and send the replies actively through the server API with
a cached access token. Self-built apps show plain text only: no buttons, no files, 2048 UTF-8 bytes
per message.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from bot.adapters.http_server import build_http_app, serve_http
from bot.adapters.wecom_crypto import WeComCrypto, WeComCryptoError, decode_aes_key
from bot.core.engine import Core
from bot.core.models import Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingMessage
from bot.core.split import split_text
from bot.settings import Settings
from bot.store.db import Database

log = logging.getLogger(__name__)

PLATFORM = "wecom"
CAPABILITIES = Capabilities(buttons=False, files=False, max_bytes=2048)
CALLBACK_PATH = "/wecom/callback"

#: Reply to images, voice, files…: the bot only reads text.
ONLY_TEXT_HINT = "目前只支持文字消息，请直接用文字输入您的问题，例如：党组会议一般多久召开一次？"
#: Line appended when a reply carries buttons (WeCom self-built apps cannot show them).
BUTTONS_HINT = "请直接回复以下选项之一：{labels}"

#: errcodes meaning "this access_token is no longer valid": refetch once and retry.
TOKEN_INVALID_ERRCODES = frozenset({40014, 42001})

_REQUIRED_SETTINGS: dict[str, str] = {
    "wecom_corp_id": "DANGJIAN_WECOM_CORP_ID",
    "wecom_agent_id": "DANGJIAN_WECOM_AGENT_ID",
    "wecom_secret": "DANGJIAN_WECOM_SECRET",
    "wecom_token": "DANGJIAN_WECOM_TOKEN",
    "wecom_aes_key": "DANGJIAN_WECOM_AES_KEY",
}


# ---------------------------------------------------------------------------
# Configuration
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
# Keeping secrets out of logs
_SECRET_QUERY = re.compile(r"(access_token|corpsecret)=[^&\s\"'<>]+", re.IGNORECASE)


def redact_query_secrets(text: str) -> str:
    """Mask ``access_token=…`` and ``corpsecret=…`` values in a URL or log line."""
    return _SECRET_QUERY.sub(r"\1=***", text)


class RedactSecretsFilter(logging.Filter):
    """Masks access tokens and secrets in URLs that httpx logs at INFO ("HTTP Request: GET …")."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        redacted = redact_query_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction() -> None:
    """Attach :class:`RedactSecretsFilter` to the ``httpx`` logger once (idempotent)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
        logger.addFilter(RedactSecretsFilter())


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
    root = _parse_xml(body)
    encrypt = (root.findtext("Encrypt") or "").strip()
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
        to_user=text("ToUserName") or "",
        from_user=text("FromUserName") or "",
        create_time=text("CreateTime") or "",
        msg_type=(text("MsgType") or "").lower(),
        content=text("Content") or "",
        msg_id=text("MsgId") or None,
        event=text("Event") or None,
        agent_id=text("AgentID") or None,
    )
    if not msg.from_user or not msg.msg_type:
        raise MalformedCallback("FromUserName and MsgType are required")
    return msg


# ---------------------------------------------------------------------------
# Server API: access token + message/send
class WeComApiError(RuntimeError):
    """A server API call failed (non-zero errcode, HTTP error or transport error)."""

    def __init__(self, operation: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeCom {operation} failed: errcode={errcode} errmsg={errmsg}")
        self.operation = operation
        self.errcode = errcode
        self.errmsg = errmsg


class WeComApi:
    """Calls ``/cgi-bin/gettoken`` and ``/cgi-bin/message/send`` with a cached access token.

    The token is cached until ``refresh_margin`` seconds before ``expires_in`` (at most a tenth of
    its lifetime), behind an asyncio lock so concurrent sends fetch it once. On errcode 40014/42001
    the token is dropped, refetched and the same send is retried once.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_base: str,
        corp_id: str,
        secret: str,
        agent_id: int,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._base = api_base.rstrip("/")
        self._corp_id = corp_id
        self._secret = secret
        self.agent_id = agent_id
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:  # never show the secret or the token
        return f"WeComApi(api_base={self._base!r}, corp_id={self._corp_id!r}, agent_id={self.agent_id})"

    def _redact(self, text: str) -> str:
        text = redact_query_secrets(text)
        for secret in (self._secret, self._token):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def _call(self, operation: str, method: str, path: str, **kwargs: object) -> dict:
        """One HTTP call; the JSON body, or WeComApiError with a message free of secrets."""
        try:
            response = await self._http.request(method, f"{self._base}{path}", **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise WeComApiError(operation, -1, self._redact(f"{type(exc).__name__}: {exc}")) from None
        if response.status_code != 200:
            raise WeComApiError(operation, -1, f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise WeComApiError(operation, -1, "response is not JSON") from None
        if not isinstance(data, dict):
            raise WeComApiError(operation, -1, "response is not a JSON object")
        return data

    @staticmethod
    def _errcode(data: dict) -> int:
        try:
            return int(data.get("errcode", 0) or 0)
        except (TypeError, ValueError):
            return -1

    async def access_token(self) -> str:
        """A valid access token, fetched only when the cached one is missing or about to expire."""
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            data = await self._call(
                "gettoken", "GET", "/cgi-bin/gettoken",
                params={"corpid": self._corp_id, "corpsecret": self._secret},
            )
            errcode = self._errcode(data)
            token = data.get("access_token")
            if errcode != 0 or not isinstance(token, str) or not token:
                errmsg = self._redact(str(data.get("errmsg", "no access_token in reply")))
                log.error("wecom gettoken failed: errcode=%s errmsg=%s", errcode, errmsg)
                raise WeComApiError("gettoken", errcode, errmsg)
            try:
                expires_in = float(data.get("expires_in", 7200))
            except (TypeError, ValueError):
                expires_in = 7200.0
            self._token = token
            self._expires_at = self._clock() + expires_in - min(self._refresh_margin, expires_in / 10)
            log.info("wecom access token refreshed (valid %ds)", int(expires_in))
            return token

    async def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the cached one (another send may have refreshed it)."""
        async with self._lock:
            if self._token == token:
                self._token = None

    async def send_text(self, touser: str, content: str) -> None:
        """``message/send`` of one text; raises WeComApiError unless errcode is 0."""
        payload = {"touser": touser, "msgtype": "text", "agentid": self.agent_id, "text": {"content": content}}
        token = await self.access_token()
        data = await self._post_send(token, payload)
        errcode = self._errcode(data)
        if errcode in TOKEN_INVALID_ERRCODES:
            log.info("wecom access token rejected (errcode=%s); refetching once", errcode)
            await self.invalidate(token)
            token = await self.access_token()
            data = await self._post_send(token, payload)
            errcode = self._errcode(data)
        if errcode != 0:
            errmsg = self._redact(str(data.get("errmsg", "")))
            log.error("wecom message/send to %s failed: errcode=%s errmsg=%s", touser, errcode, errmsg)
            raise WeComApiError("message/send", errcode, errmsg)
        if data.get("invaliduser"):
            log.warning("wecom message/send: invalid user(s) %s", data.get("invaliduser"))

    async def _post_send(self, token: str, payload: dict) -> dict:
        return await self._call(
            "message/send", "POST", "/cgi-bin/message/send", params={"access_token": token}, json=payload,
        )


# ---------------------------------------------------------------------------
# Rendering
def render_text(message: OutgoingMessage) -> str:
    """Plain text for WeCom: the text (or toast), button labels as typed replies; files dropped."""
    text = message.text or message.toast or ""
    labels = [button.label for row in message.buttons for button in row]
    if labels:
        hint = BUTTONS_HINT.format(labels=" / ".join(labels))
        text = f"{text.rstrip()}\n{hint}" if text.strip() else hint
    return text


def render_chunks(message: OutgoingMessage) -> list[str]:
    """The texts to send for one message, each within CAPABILITIES.max_bytes UTF-8 bytes."""
    return split_text(render_text(message), max_bytes=CAPABILITIES.max_bytes)


# ---------------------------------------------------------------------------
# The adapter
def _forbidden() -> Response:
    return PlainTextResponse("forbidden", status_code=403)


def _bad_request() -> Response:
    return PlainTextResponse("bad request", status_code=400)


class _MemberSlot:
    """Serialises one member's messages; dropped when no worker holds or awaits it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holders = 0


class WeComAdapter:
    """Callback router + background workers + the Outbound used for pushes (reminders)."""

    capabilities: Capabilities = CAPABILITIES

    def __init__(
        self,
        settings: Settings,
        core: Core,
        db: Database,
        http: httpx.AsyncClient | None = None,
        *,
        workers: int = 4,
    ) -> None:
        check_settings(settings)
        install_log_redaction()
        self._core = core
        self._db = db
        self._crypto = WeComCrypto(
            settings.wecom_token or "", settings.wecom_aes_key or "", (settings.wecom_corp_id or "").strip()
        )
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        self.api = WeComApi(
            self._http,
            api_base=settings.wecom_api_base,
            corp_id=(settings.wecom_corp_id or "").strip(),
            secret=settings.wecom_secret or "",
            agent_id=int((settings.wecom_agent_id or "").strip()),
        )
        self._worker_count = max(1, workers)
        self._queue: asyncio.Queue[WeComMessage] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        # One lock per member while their message is handled, so replies keep the order asked.
        self._member_slots: dict[str, _MemberSlot] = {}

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
            return _forbidden()
        # base64 never contains spaces: a space is a "+" that was sent unencoded.
        echostr = echostr.replace(" ", "+")
        try:
            plaintext = self._crypto.verify_url(signature, timestamp, nonce, echostr)
        except WeComCryptoError as exc:
            log.warning("wecom URL verification rejected: %s", type(exc).__name__)
            return _forbidden()
        return Response(content=plaintext.encode("utf-8"), media_type="text/plain; charset=utf-8")

    async def _receive(self, request: Request) -> Response:
        """A message callback: verify, decrypt, dedupe, queue; 200 with an empty body at once."""
        body = await request.body()
        try:
            encrypt = parse_envelope(body)
        except MalformedCallback as exc:
            log.warning("wecom callback rejected (400): %s", exc)
            return _bad_request()
        q = request.query_params
        signature, timestamp, nonce = q.get("msg_signature"), q.get("timestamp"), q.get("nonce")
        if not (signature and timestamp and nonce):
            log.warning("wecom callback rejected (403): missing signature parameters")
            return _forbidden()
        try:
            plaintext = self._crypto.decrypt_message(signature, timestamp, nonce, encrypt)
        except WeComCryptoError as exc:
            log.warning("wecom callback rejected (403): %s", type(exc).__name__)
            return _forbidden()
        try:
            msg = parse_message(plaintext)
        except MalformedCallback as exc:
            log.warning("wecom callback rejected (400): decrypted message: %s", exc)
            return _bad_request()
        if msg.is_event:
            log.debug("wecom event %s from %s ignored", msg.event, msg.from_user)
            return Response(status_code=200)
        if not await asyncio.to_thread(self._db.claim_message, PLATFORM, msg.dedupe_key):
            log.info("wecom redelivery of %s ignored", msg.dedupe_key)
            return Response(status_code=200)
        self._queue.put_nowait(msg)
        return Response(status_code=200)

    # Work --------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background workers (idempotent)."""
        if self._workers:
            return
        self._workers = [
            asyncio.create_task(self._work(), name=f"wecom-worker-{i}") for i in range(self._worker_count)
        ]

    async def drain(self) -> None:
        """Wait until every queued message has been handled (workers must be started)."""
        await self._queue.join()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Let queued work finish (up to ``timeout`` s), stop the workers, close our HTTP client."""
        if self._workers:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                log.warning("wecom: %d queued message(s) dropped at shutdown", self._queue.qsize())
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        if self._own_http:
            await self._http.aclose()

    async def _work(self) -> None:
        while True:
            msg = await self._queue.get()
            slot = self._member_slots.setdefault(msg.from_user, _MemberSlot())
            slot.holders += 1
            try:
                async with slot.lock:
                    await self._process(msg)
            except WeComApiError as exc:
                log.error("wecom: reply to %s not sent: %s", msg.from_user, exc)
            except Exception:
                log.exception("wecom: handling %s failed", msg.dedupe_key)
            finally:
                slot.holders -= 1
                if slot.holders == 0:
                    del self._member_slots[msg.from_user]
                self._queue.task_done()

    async def _process(self, msg: WeComMessage) -> None:
        if msg.msg_type != "text":
            await self._deliver(msg.from_user, [OutgoingMessage(text=ONLY_TEXT_HINT)])
            return
        incoming = IncomingMessage(
            platform=PLATFORM,
            chat_id=msg.from_user,
            chat_type=ChatType.PRIVATE,
            user_id=msg.from_user,
            text=msg.content,
            message_id=msg.msg_id,
            addressed=True,
        )
        replies = await self._core.handle(incoming, CAPABILITIES)
        await self._deliver(msg.from_user, replies)

    async def _deliver(self, touser: str, messages: list[OutgoingMessage]) -> None:
        for message in messages:
            for chunk in render_chunks(message):
                await self.api.send_text(touser, chunk)

    # Outbound ----------------------------------------------------------------
    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        """Push to ``ref.user_id`` (the member who registered the meeting); raises on failure."""
        await self._deliver(ref.user_id, messages)


async def run(settings: Settings, core: Core, db: Database) -> None:
    """Serve the WeCom callback on ``settings.http_host:http_port`` until cancelled."""
    check_settings(settings)
    adapter = WeComAdapter(settings, core, db)
    core.outbound.register(PLATFORM, adapter)
    await adapter.start()
    log.info("WeCom adapter ready: callback %s on %s:%d", CALLBACK_PATH, settings.http_host, settings.http_port)
    try:
        await serve_http(build_http_app([adapter.router()]), settings.http_host, settings.http_port)
    finally:
        await adapter.aclose()
