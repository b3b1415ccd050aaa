"""DingTalk (钉钉) enterprise-internal app robot, HTTP callback mode.

Flow of one message: DingTalk POSTs the robot message JSON to ``/dingtalk/callback`` with
``timestamp``/``sign`` headers → we check the sign (403 otherwise), parse the body (400 when
malformed), claim ``msgId`` in the database (a redelivery is acknowledged and dropped), queue it
and answer 200 at once. A background worker asks the core and posts the replies to *that*
message's ``sessionWebhook``. Pushes without a message to answer (reminders, reports) go through
the robot OpenAPI: ``oToMessages/batchSend`` to the user, with a cached access token.

See /work/shared/protocols/dingtalk.md for the wire formats.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.adapters.dingtalk_sign import SignatureError, check_sign
from bot.adapters.http_server import build_http_app, serve_http
from bot.core.engine import Core
from bot.core.models import Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingMessage
from bot.core.split import split_text
from bot.settings import Settings
from bot.store.db import Database

log = logging.getLogger(__name__)

PLATFORM = "dingtalk"
#: Per-message limit we cut to. DingTalk documents 15 000 bytes for a group msgParam and nothing
#: for sessionWebhook texts; 5 000 UTF-8 bytes keeps every message comfortably readable and safe.
MAX_BYTES = 5000
CAPABILITIES = Capabilities(buttons=False, files=False, max_bytes=MAX_BYTES, markdown=True)

CALLBACK_PATH = "/dingtalk/callback"
TOKEN_PATH = "/v1.0/oauth2/accessToken"
BATCH_SEND_PATH = "/v1.0/robot/oToMessages/batchSend"
GROUP_SEND_PATH = "/v1.0/robot/groupMessages/send"
TOKEN_HEADER = "x-acs-dingtalk-access-token"

UNSUPPORTED_MESSAGE = "我目前只能阅读文字消息，请直接用文字提问，例如：党组会议一般多久召开一次？"
BUTTONS_HINT = "请直接回复以下文字之一："
FILE_OMITTED = "（附件 {filename} 无法在钉钉中发送）"

_WORKERS = 4
_QUEUE_SIZE = 1000
_DRAIN_SECONDS = 5.0
_TOKEN_MARGIN_SECONDS = 300  # refresh this long before DingTalk says the token expires
_HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class DingTalkError(RuntimeError):
    """A DingTalk OpenAPI call failed. Carries the HTTP status and DingTalk's error code only."""

    def __init__(self, operation: str, status: int | None, code: str | None = None, detail: str = "") -> None:
        self.operation = operation
        self.status = status
        self.code = code
        super().__init__(f"DingTalk {operation} failed (HTTP {status}, code {code or '-'}) {detail}".strip())


# ----------------------------------------------------------------------------------------------
# The callback body
class _TextBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str = ""


class RobotMessage(BaseModel):
    """The robot message JSON DingTalk posts (only the fields the bot uses)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    msg_id: str = Field(alias="msgId", min_length=1, max_length=128)
    msgtype: str = "text"
    conversation_type: str = Field(default="1", alias="conversationType")
    conversation_id: str = Field(alias="conversationId", min_length=1, max_length=256)
    sender_staff_id: str | None = Field(default=None, alias="senderStaffId")
    sender_id: str | None = Field(default=None, alias="senderId")
    sender_nick: str | None = Field(default=None, alias="senderNick")
    text: _TextBody | None = None
    content: Any = None  # richText / picture / audio carry a ``content`` object instead of text
    is_in_at_list: bool = Field(default=False, alias="isInAtList")
    session_webhook: str | None = Field(default=None, alias="sessionWebhook")
    session_webhook_expired_time: int | None = Field(default=None, alias="sessionWebhookExpiredTime")
    robot_code: str | None = Field(default=None, alias="robotCode")

    @field_validator("conversation_type", mode="before")
    @classmethod
    def _type_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _has_sender(self) -> RobotMessage:
        if not (self.sender_staff_id or self.sender_id):
            raise ValueError("message has neither senderStaffId nor senderId")
        return self

    @property
    def chat_type(self) -> ChatType:
        return ChatType.PRIVATE if self.conversation_type == "1" else ChatType.GROUP

    @property
    def user_id(self) -> str:
        return self.sender_staff_id or self.sender_id or ""

    @property
    def addressed(self) -> bool:
        return self.chat_type == ChatType.PRIVATE or self.is_in_at_list

    def plain_text(self) -> str | None:
        """The user's text (mention already removed by DingTalk, spaces stripped); None = not text."""
        if self.msgtype == "text":
            return (self.text.content if self.text else "").strip()
        if self.msgtype == "richText" and isinstance(self.content, dict):
            parts = self.content.get("richText")
            if isinstance(parts, list):
                words = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
                if words:
                    return "".join(words).strip()
        return None


def to_incoming(m: RobotMessage) -> IncomingMessage | None:
    """The core's view of a robot message; None for message types without text (pictures…)."""
    text = m.plain_text()
    if text is None:
        return None
    return IncomingMessage(
        platform=PLATFORM,
        chat_id=m.conversation_id,
        chat_type=m.chat_type,
        user_id=m.user_id,
        user_name=m.sender_nick,
        text=text,
        message_id=m.msg_id,
        addressed=m.addressed,
    )


def render_texts(messages: list[OutgoingMessage], max_bytes: int = MAX_BYTES) -> list[str]:
    """Plain-text chunks for DingTalk: buttons become typed replies, files a note; split to size."""
    chunks: list[str] = []
    for message in messages:
        text = message.text or message.toast or ""
        labels = [b.label for row in message.buttons for b in row]
        if labels:
            text = (text + "\n\n" if text else "") + BUTTONS_HINT + "\n" + "\n".join(f"· {x}" for x in labels)
        if message.file is not None:
            text = (text + "\n\n" if text else "") + FILE_OMITTED.format(filename=message.file.filename)
        chunks.extend(split_text(text, max_bytes=max_bytes))
    return chunks


def _text_payload(text: str) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": text}}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------
class DingTalkAdapter:
    """Receives robot callbacks, answers through sessionWebhook, pushes through the OpenAPI."""

    capabilities: Capabilities = CAPABILITIES

    def __init__(
        self,
        settings: Settings,
        core: Core,
        db: Database,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.core = core
        self.db = db
        self._clock = clock
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=_HTTP_TIMEOUT)
        self._api_base = settings.dingtalk_api_base.rstrip("/")
        self._api_host = (urlsplit(self._api_base).hostname or "").lower()
        self._queue: asyncio.Queue[RobotMessage] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._workers: list[asyncio.Task[None]] = []
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background workers that answer queued messages (idempotent)."""
        self._ensure_workers()

    def _ensure_workers(self) -> None:
        if self._workers:
            return
        self._workers = [asyncio.create_task(self._worker(), name=f"dingtalk-worker-{i}") for i in range(_WORKERS)]

    async def join(self) -> None:
        """Wait until every accepted message has been answered (used by tests and shutdown)."""
        await self._queue.join()

    async def aclose(self) -> None:
        """Finish queued work (for a few seconds), stop the workers, close our HTTP client."""
        if self._workers:
            try:
                await asyncio.wait_for(self._queue.join(), _DRAIN_SECONDS)
            except asyncio.TimeoutError:
                log.warning("dingtalk: %d queued message(s) left unanswered at shutdown", self._queue.qsize())
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        if self._own_http:
            await self._http.aclose()

    def health(self) -> dict[str, Any]:
        return {"dingtalk_queue": self._queue.qsize()}

    # -- receiving -------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        """``POST /dingtalk/callback`` for :func:`bot.adapters.http_server.build_http_app`."""
        router = APIRouter()
        router.add_api_route(CALLBACK_PATH, self._callback, methods=["POST"])
        return router

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _callback(self, request: Request) -> Response:
        if not self.settings.dingtalk_app_secret:  # an empty key would make every sign forgeable
            log.error("dingtalk: DANGJIAN_DINGTALK_APP_SECRET is not set; refusing callbacks")
            return PlainTextResponse("forbidden", status_code=403)
        try:
            check_sign(
                request.headers.get("timestamp"),
                request.headers.get("sign"),
                self.settings.dingtalk_app_secret,
                self._now_ms(),
            )
        except SignatureError as exc:
            client = request.client.host if request.client else "?"
            log.warning("dingtalk: rejected callback from %s: %s", client, exc)
            return PlainTextResponse("forbidden", status_code=403)
        body = await request.body()
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("body is not a JSON object")
            message = RobotMessage.model_validate(data)
        except (ValueError, ValidationError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            log.warning("dingtalk: malformed callback body: %s", type(exc).__name__)
            return PlainTextResponse("bad request", status_code=400)
        if self._queue.full():
            log.error("dingtalk: queue full, asking DingTalk to retry %s later", message.msg_id)
            return PlainTextResponse("busy", status_code=503)
        try:
            first = await asyncio.to_thread(self.db.claim_message, PLATFORM, message.msg_id)
        except Exception:
            log.exception("dingtalk: cannot record message id")
            return PlainTextResponse("storage unavailable", status_code=503)
        if not first:
            log.info("dingtalk: duplicate delivery of %s ignored", message.msg_id)
            return JSONResponse({})
        self._ensure_workers()
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            log.error("dingtalk: queue full, message %s dropped", message.msg_id)
        return JSONResponse({})

    async def _worker(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._process(message)
            except Exception:
                log.exception("dingtalk: failed to answer %s", message.msg_id)
            finally:
                self._queue.task_done()

    async def _process(self, message: RobotMessage) -> None:
        incoming = to_incoming(message)
        if incoming is None:
            replies = [OutgoingMessage(text=UNSUPPORTED_MESSAGE)] if message.addressed else []
        else:
            replies = await self.core.handle(incoming, CAPABILITIES)
        chunks = render_texts(replies)
        if chunks:
            await self._reply(message, chunks)

    async def _reply(self, message: RobotMessage, chunks: list[str]) -> None:
        """Post to the message's sessionWebhook; when it is unusable, push through the OpenAPI."""
        remaining = list(chunks)
        url = message.session_webhook
        if url and self._webhook_usable(message):
            while remaining:
                try:
                    await self._post_session(url, remaining[0])
                except (httpx.HTTPError, DingTalkError) as exc:
                    log.warning("dingtalk: sessionWebhook reply failed (%s); using the OpenAPI", _describe(exc))
                    break
                remaining.pop(0)
        if not remaining:
            return
        ref = ChatRef(
            platform=PLATFORM, chat_id=message.conversation_id, chat_type=message.chat_type, user_id=message.user_id
        )
        outgoing = [OutgoingMessage(text=c) for c in remaining]
        try:
            if message.chat_type == ChatType.GROUP:
                await self.send_group(message.conversation_id, outgoing)
            else:
                await self.send(ref, outgoing)
        except (httpx.HTTPError, DingTalkError) as exc:
            log.error("dingtalk: could not deliver the answer to %s: %s", message.msg_id, _describe(exc))

    def _webhook_usable(self, message: RobotMessage) -> bool:
        expires = message.session_webhook_expired_time
        if expires is not None and expires <= self._now_ms():
            log.info("dingtalk: sessionWebhook of %s expired", message.msg_id)
            return False
        parts = urlsplit(message.session_webhook or "")
        host = (parts.hostname or "").lower()
        allowed = (
            host == "dingtalk.com"
            or host.endswith(".dingtalk.com")
            or (host and host == self._api_host)
            or (_is_loopback(host) and _is_loopback(self._api_host))
        )
        if parts.scheme not in {"http", "https"} or not allowed:
            # The sign covers only the timestamp, so never post to a host a body merely names.
            log.warning("dingtalk: sessionWebhook host %r not allowed", host)
            return False
        return True

    async def _post_session(self, url: str, text: str) -> None:
        response = await self._http.post(url, json=_text_payload(text))
        data = _json_or_none(response)
        errcode = data.get("errcode", 0) if isinstance(data, dict) else None
        if response.status_code >= 400 or errcode not in (0, None):
            # The URL carries a session credential: keep it out of errors and logs.
            raise DingTalkError("sessionWebhook reply", response.status_code, str(errcode))

    # -- pushing ---------------------------------------------------------------------------------
    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        """Push to ``ref.user_id`` through ``oToMessages/batchSend``; raise when DingTalk refuses.

        This is the :class:`bot.core.models.Outbound` entry point: reminders go to the user who
        registered the meeting, privately, whatever chat the meeting was registered in.
        """
        for text in render_texts(messages):
            body = {
                "robotCode": self._robot_code(),
                "userIds": [ref.user_id],
                "msgKey": "sampleText",
                "msgParam": json.dumps({"content": text}, ensure_ascii=False),
            }
            data = await self._api_post(BATCH_SEND_PATH, body, "batchSend")
            for field in ("invalidStaffIdList", "flowControlledStaffIdList"):
                missed = data.get(field) or []
                if missed:
                    log.warning("dingtalk: batchSend %s: %s", field, missed)
                    if ref.user_id in missed:
                        raise DingTalkError("batchSend", 200, field, f"user {ref.user_id} not reached")

    async def send_group(self, conversation_id: str, messages: list[OutgoingMessage]) -> None:
        """Post to a group (``openConversationId`` = the callback's conversationId)."""
        for text in render_texts(messages):
            body = {
                "robotCode": self._robot_code(),
                "openConversationId": conversation_id,
                "msgKey": "sampleText",
                "msgParam": json.dumps({"content": text}, ensure_ascii=False),
            }
            await self._api_post(GROUP_SEND_PATH, body, "groupMessages/send")

    def _robot_code(self) -> str:
        """The robot's code; for an enterprise-internal app robot it is normally the AppKey."""
        code = self.settings.dingtalk_robot_code or self.settings.dingtalk_app_key
        if not code:
            raise ValueError("DANGJIAN_DINGTALK_ROBOT_CODE is not set")
        return code

    async def _api_post(self, path: str, body: dict[str, Any], operation: str) -> dict[str, Any]:
        """POST to the OpenAPI with the access token; on an auth error refetch it once and retry."""
        for attempt in range(2):
            token = await self._access_token()
            response = await self._http.post(self._api_base + path, json=body, headers={TOKEN_HEADER: token})
            data = _json_or_none(response)
            if _is_auth_error(response.status_code, data) and attempt == 0:
                log.info("dingtalk: access token rejected by %s; fetching a new one", operation)
                self._drop_token(token)
                continue
            if response.status_code >= 400 or not isinstance(data, dict):
                raise DingTalkError(operation, response.status_code, _code(data), _message(data))
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    async def _access_token(self) -> str:
        """The cached token, or a new one (one fetch at a time, whoever asks concurrently)."""
        async with self._token_lock:
            if self._token and self._clock() < self._token_expires_at:
                return self._token
            key, secret = self.settings.dingtalk_app_key, self.settings.dingtalk_app_secret
            if not key or not secret:
                raise ValueError("DANGJIAN_DINGTALK_APP_KEY and DANGJIAN_DINGTALK_APP_SECRET must be set")
            response = await self._http.post(self._api_base + TOKEN_PATH, json={"appKey": key, "appSecret": secret})
            data = _json_or_none(response)
            token = data.get("accessToken") if isinstance(data, dict) else None
            if response.status_code >= 400 or not isinstance(token, str) or not token:
                raise DingTalkError("accessToken", response.status_code, _code(data), _message(data))
            try:
                expire_in = float(data.get("expireIn", 7200))
            except (TypeError, ValueError):
                expire_in = 7200.0
            self._token = token
            self._token_expires_at = self._clock() + expire_in - min(_TOKEN_MARGIN_SECONDS, expire_in / 2)
            return token

    def _drop_token(self, token: str) -> None:
        if self._token == token:
            self._token = None
            self._token_expires_at = 0.0


def _describe(exc: Exception) -> str:
    """An error for the log: our own messages are clean; httpx ones may carry a session URL."""
    return str(exc) if isinstance(exc, DingTalkError) else type(exc).__name__


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _code(data: Any) -> str | None:
    if isinstance(data, dict):
        code = data.get("code", data.get("errcode"))
        return None if code is None else str(code)[:100]
    return None


def _message(data: Any) -> str:
    if isinstance(data, dict):
        text = data.get("message", data.get("errmsg"))
        return str(text)[:200] if text else ""
    return ""


def _is_auth_error(status: int, data: Any) -> bool:
    """401, or DingTalk's token error codes (InvalidAuthentication, …accessToken…)."""
    if status == 401:
        return True
    code = (_code(data) or "").lower()
    return status >= 400 and ("invalidauthentication" in code or "accesstoken" in code)


# ----------------------------------------------------------------------------------------------
async def run(settings: Settings, core: Core, db: Database) -> None:
    """Serve DingTalk callbacks on ``settings.http_host:http_port`` until cancelled."""
    if settings.dingtalk_mode == "stream":
        raise ValueError(
            "DANGJIAN_DINGTALK_MODE=stream needs the optional `dingtalk-stream` package, which is not "
            "installed (stream mode is not implemented yet); use DANGJIAN_DINGTALK_MODE=http."
        )
    required = {
        "DANGJIAN_DINGTALK_APP_KEY": settings.dingtalk_app_key,
        "DANGJIAN_DINGTALK_APP_SECRET": settings.dingtalk_app_secret,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise ValueError("DingTalk adapter needs these settings: " + ", ".join(missing))
    adapter = DingTalkAdapter(settings, core, db)
    core.outbound.register(PLATFORM, adapter)
    await adapter.start()
    try:
        app = build_http_app([adapter.router()], health=adapter.health)
        log.info("dingtalk: callback endpoint %s", CALLBACK_PATH)
        await serve_http(app, settings.http_host, settings.http_port)
    finally:
        await adapter.aclose()
