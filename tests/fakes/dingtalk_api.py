"""A fake DingTalk server for tests, plus builders of signed robot callbacks.

It serves, in-process (``client()``: an httpx client on its ASGI app) or over real HTTP on
127.0.0.1 in a background thread (``start()``, for process-level tests):

* ``POST /v1.0/oauth2/accessToken`` — checks appKey/appSecret, issues ``fake-token-N``
  (``token_calls`` counts the calls);
* ``POST /v1.0/robot/oToMessages/batchSend`` and ``POST /v1.0/robot/groupMessages/send`` — check
  the ``x-acs-dingtalk-access-token`` header against the issued tokens (401 otherwise), that
  ``robotCode`` is the robot's code and that ``msgParam`` is a JSON-encoded *string*; accepted
  calls are recorded in ``batch_sends`` / ``group_sends``, refused ones in ``rejected``;
* ``POST /robot/sendBySession?session=NAME`` — a sessionWebhook; replies land in ``replies``.

Usage::

    fake = FakeDingTalk()
    adapter = DingTalkAdapter(fake.settings(), core, db, http=fake.client())
    cb = fake.callback("党组会议一般多久召开一次？", session="s1")      # signed private message
    await client.post(url, content=cb.body, headers=cb.headers)
    reply = await fake.wait_for(lambda: fake.replies_to("s1"))

The signature here is computed independently of ``bot.adapters.dingtalk.sign`` on purpose.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.settings import Settings
from tests.fakes.loopback import LoopbackFake, LoopbackServer

T = TypeVar("T")

DEFAULT_APP_KEY = "dingfakeappkey0001"
DEFAULT_APP_SECRET = "dangjianTestAppSecret0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
DEFAULT_ROBOT_CODE = "dingfakerobotcode0001"  # deliberately different from the AppKey
IN_PROCESS_BASE = "http://dingtalk.fake"

#: a robot OpenAPI handler: (request body, access token, decoded msgParam) -> response
RobotHandler = Callable[[dict[str, Any], str, dict[str, Any]], JSONResponse]


# ----------------------------------------------------------------------------------------------
# Signed callbacks
def sign(timestamp: str, app_secret: str) -> str:
    """DingTalk's callback sign: base64(HmacSHA256(app_secret, timestamp + "\\n" + app_secret))."""
    mac = hmac.new(app_secret.encode(), f"{timestamp}\n{app_secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


_ids = itertools.count(1)


def robot_message(
    text: str,
    *,
    session_webhook: str,
    group: bool = False,
    at_bot: bool | None = None,
    msg_id: str | None = None,
    conversation_id: str | None = None,
    staff_id: str = "user123",
    nick: str = "张书记",
    robot_code: str = DEFAULT_ROBOT_CODE,
    created_ms: int | None = None,
    expires_ms: int | None = None,
) -> dict[str, Any]:
    """A robot message JSON as DingTalk posts it.

    For a group message DingTalk removes the @mention and leaves a leading space; this builder
    does the same (``" " + text``). ``at_bot`` defaults to True in groups (DingTalk only delivers
    @-messages there). ``expires_ms`` defaults to ``created_ms`` + 90 minutes.
    """
    created = int(time.time() * 1000) if created_ms is None else created_ms
    n = next(_ids)
    return {
        "msgtype": "text",
        "text": {"content": (" " + text) if group else text},
        "msgId": msg_id or f"msgFake{n:06d}",
        "createAt": created,
        "conversationType": "2" if group else "1",
        "conversationId": conversation_id or (f"cidGroup{n}" if group else f"cidPrivate{n}"),
        "conversationTitle": "第一党支部" if group else "",
        "senderId": f"$:LWCP_v1:${staff_id}",
        "senderNick": nick,
        "senderStaffId": staff_id,
        "senderCorpId": "dingcorpfake",
        "chatbotUserId": "$:LWCP_v1:$robot",
        "chatbotCorpId": "dingcorpfake",
        "robotCode": robot_code,
        "isAdmin": False,
        "isInAtList": (group if at_bot is None else at_bot),
        "atUsers": [{"dingtalkId": "$:LWCP_v1:$robot"}] if group else [],
        "sessionWebhook": session_webhook,
        "sessionWebhookExpiredTime": created + 90 * 60 * 1000 if expires_ms is None else expires_ms,
    }


@dataclass(frozen=True)
class SignedCallback:
    """What DingTalk would POST: ``headers`` (timestamp, sign, content type) and raw ``body``."""

    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] | None

    @property
    def msg_id(self) -> str | None:
        return None if self.payload is None else self.payload.get("msgId")


def signed_callback(
    app_secret: str,
    payload: dict[str, Any] | bytes,
    *,
    timestamp_ms: int | None = None,
    sign_with: str | None = None,
) -> SignedCallback:
    """Sign a callback. ``payload`` may be raw bytes (to send malformed JSON).

    ``sign_with`` signs with another secret (a forgery); ``timestamp_ms`` defaults to now.
    """
    ts = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "timestamp": ts,
        "sign": sign(ts, sign_with if sign_with is not None else app_secret),
    }
    return SignedCallback(headers=headers, body=body, payload=None if isinstance(payload, bytes) else payload)


# ----------------------------------------------------------------------------------------------
# Records
@dataclass(frozen=True)
class SessionReply:
    """One POST to a sessionWebhook."""

    session: str
    payload: dict[str, Any]

    @property
    def msgtype(self) -> str | None:
        return self.payload.get("msgtype")

    @property
    def text(self) -> str:
        """The shown text: ``text.content`` or ``markdown.text`` (``markdown.title`` prepended)."""
        if self.msgtype == "markdown":
            md = self.payload.get("markdown") or {}
            return f"{md.get('title', '')}\n{md.get('text', '')}"
        return (self.payload.get("text") or {}).get("content", "")


@dataclass(frozen=True)
class BatchSend:
    """One accepted ``oToMessages/batchSend`` call (``msg_param`` already decoded)."""

    robot_code: str
    user_ids: list[str]
    msg_key: str
    msg_param: dict[str, Any]
    msg_param_raw: str
    token: str

    @property
    def text(self) -> str:
        return str(self.msg_param.get("content") or self.msg_param.get("text") or "")


@dataclass(frozen=True)
class GroupSend:
    """One accepted ``groupMessages/send`` call (``msg_param`` already decoded)."""

    robot_code: str
    open_conversation_id: str
    msg_key: str
    msg_param: dict[str, Any]
    token: str

    @property
    def text(self) -> str:
        return str(self.msg_param.get("content") or self.msg_param.get("text") or "")


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    token_calls: int = 0
    tokens_issued: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    replies: list[SessionReply] = field(default_factory=list)
    batch_sends: list[BatchSend] = field(default_factory=list)
    group_sends: list[GroupSend] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
class FakeDingTalk(LoopbackFake):
    """The fake server. ``start()`` it (or use ``with``); everything else is thread-safe."""

    def __init__(
        self,
        *,
        app_key: str = DEFAULT_APP_KEY,
        app_secret: str = DEFAULT_APP_SECRET,
        robot_code: str = DEFAULT_ROBOT_CODE,
        expire_in: int = 7200,
    ) -> None:
        self.app_key = app_key
        self.app_secret = app_secret
        self.robot_code = robot_code
        self.expire_in = expire_in
        #: staff ids batchSend reports in ``invalidStaffIdList`` (not reached)
        self.invalid_user_ids: set[str] = set()
        #: session names whose webhook answers ``errcode`` 300001 (expired session)
        self.broken_sessions: set[str] = set()
        self._state = _State()
        self.app = self._build_app()
        self._server = LoopbackServer(self.app, "fake-dingtalk")

    # -- lifecycle: start(timeout=10.0), stop() and ``with`` come from LoopbackFake -------------

    # -- addresses and callbacks -----------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """DANGJIAN_DINGTALK_API_BASE: ``http://127.0.0.1:PORT`` once started, else the in-process name."""
        return self._server.base_url if self._server.running else IN_PROCESS_BASE

    def client(self) -> httpx.AsyncClient:
        """An HTTP client whose requests reach this fake in-process (no server, no socket)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), timeout=5)

    def settings(self, **values: Any) -> Settings:
        """Settings with every DANGJIAN_DINGTALK_* value pointing at this fake (no .env read)."""
        return Settings(_env_file=None, **{  # type: ignore[arg-type]
            "dingtalk_app_key": self.app_key, "dingtalk_app_secret": self.app_secret,
            "dingtalk_robot_code": self.robot_code, "dingtalk_api_base": self.base_url, **values})

    def webhook_url(self, name: str) -> str:
        """A sessionWebhook URL on this fake; replies to it are recorded under ``name``."""
        return f"{self.base_url}/robot/sendBySession?session={name}"

    def callback(
        self,
        text: str,
        *,
        session: str = "s1",
        timestamp_ms: int | None = None,
        sign_with: str | None = None,
        **message: Any,
    ) -> SignedCallback:
        """A signed robot callback whose sessionWebhook is ``webhook_url(session)``.

        ``message`` goes to :func:`robot_message` (group=True, msg_id=…, staff_id=…,
        created_ms=…, expires_ms=…). ``created_ms`` defaults to ``timestamp_ms``.
        """
        message.setdefault("created_ms", timestamp_ms)
        message.setdefault("robot_code", self.robot_code)
        payload = robot_message(text, session_webhook=self.webhook_url(session), **message)
        return signed_callback(self.app_secret, payload, timestamp_ms=timestamp_ms, sign_with=sign_with)

    # -- records ---------------------------------------------------------------------------------
    @property
    def token_calls(self) -> int:
        """How many times ``oauth2/accessToken`` was called (successfully or not)."""
        with self._state.lock:
            return self._state.token_calls

    @property
    def replies(self) -> list[SessionReply]:
        with self._state.lock:
            return list(self._state.replies)

    def replies_to(self, session: str) -> list[SessionReply]:
        return [r for r in self.replies if r.session == session]

    @property
    def batch_sends(self) -> list[BatchSend]:
        with self._state.lock:
            return list(self._state.batch_sends)

    @property
    def group_sends(self) -> list[GroupSend]:
        with self._state.lock:
            return list(self._state.group_sends)

    @property
    def rejected(self) -> list[tuple[str, str]]:
        """(path, reason) of OpenAPI calls the fake refused."""
        with self._state.lock:
            return list(self._state.rejected)

    def reset(self) -> None:
        """Forget every record, issued token and failure knob (to reuse one server across tests)."""
        with self._state.lock:
            self._state.token_calls = 0
            self._state.tokens_issued = 0
            self._state.valid_tokens.clear()
            self._state.replies.clear()
            self._state.batch_sends.clear()
            self._state.group_sends.clear()
            self._state.rejected.clear()
        self.invalid_user_ids.clear()
        self.broken_sessions.clear()

    def expire_tokens(self) -> None:
        """Invalidate every issued token (the next OpenAPI call gets 401)."""
        with self._state.lock:
            self._state.valid_tokens.clear()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Poll ``predicate`` until it returns something truthy (returned) or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time on the fake DingTalk server")
            await asyncio.sleep(0.01)

    # -- the app ---------------------------------------------------------------------------------
    def _reject(self, path: str, status: int, code: str, message: str) -> JSONResponse:
        with self._state.lock:
            self._state.rejected.append((path, code))
        return JSONResponse({"code": code, "message": message, "requestid": "fake"}, status_code=status)

    def _check_call(self, request: Request, body: Any, path: str) -> JSONResponse | tuple[str, dict[str, Any]]:
        token = request.headers.get("x-acs-dingtalk-access-token", "")
        with self._state.lock:
            token_ok = token in self._state.valid_tokens
        if not token_ok:
            return self._reject(path, 401, "InvalidAuthentication", "不合法的access_token")
        if not isinstance(body, dict):
            return self._reject(path, 400, "MissingParameter", "body must be a JSON object")
        if body.get("robotCode") != self.robot_code:
            return self._reject(path, 400, "invalidParameter.robotCode", "robot 不存在")
        raw = body.get("msgParam")
        if not isinstance(raw, str):
            return self._reject(path, 400, "invalidParameter.msgParam", "msgParam must be a JSON string")
        try:
            param = json.loads(raw)
        except ValueError:
            return self._reject(path, 400, "invalidParameter.msgParam", "msgParam is not JSON")
        if not isinstance(param, dict) or body.get("msgKey") not in {"sampleText", "sampleMarkdown"}:
            return self._reject(path, 400, "invalidParameter.msgKey", "unknown msgKey or msgParam")
        return token, param

    def _build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        state = self._state

        @app.post("/v1.0/oauth2/accessToken")
        async def access_token(request: Request) -> JSONResponse:
            body = await _json(request)
            with state.lock:
                state.token_calls += 1
            if not isinstance(body, dict) or body.get("appKey") != self.app_key or body.get("appSecret") != self.app_secret:
                return self._reject("accessToken", 400, "invalidClientIdOrSecret", "无效的appKey或appSecret")
            with state.lock:
                state.tokens_issued += 1
                token = f"fake-token-{state.tokens_issued}"
                state.valid_tokens.add(token)
            return JSONResponse({"accessToken": token, "expireIn": self.expire_in})

        def robot_api(path: str, name: str) -> Callable[[RobotHandler], RobotHandler]:
            """Serve ``handler(body, token, param)`` at ``path`` once :meth:`_check_call` passed."""

            def register(handler: RobotHandler) -> RobotHandler:
                @app.post(path, name=name)
                async def endpoint(request: Request) -> JSONResponse:
                    body = await _json(request)
                    checked = self._check_call(request, body, name)
                    if isinstance(checked, JSONResponse):
                        return checked
                    token, param = checked
                    return handler(body, token, param)

                return handler

            return register

        @robot_api("/v1.0/robot/oToMessages/batchSend", "batchSend")
        def batch_send(body: dict[str, Any], token: str, param: dict[str, Any]) -> JSONResponse:
            user_ids = body.get("userIds")
            if not isinstance(user_ids, list) or not user_ids or len(user_ids) > 20:
                return self._reject("batchSend", 400, "invalidParameter.userIds", "1..20 userIds")
            invalid = [u for u in user_ids if u in self.invalid_user_ids]
            with state.lock:
                state.batch_sends.append(
                    BatchSend(body["robotCode"], list(user_ids), body["msgKey"], param, body["msgParam"], token)
                )
            return JSONResponse(
                {"processQueryKey": f"pqk{len(state.batch_sends)}", "invalidStaffIdList": invalid,
                 "flowControlledStaffIdList": []}
            )

        @robot_api("/v1.0/robot/groupMessages/send", "groupMessages/send")
        def group_send(body: dict[str, Any], token: str, param: dict[str, Any]) -> JSONResponse:
            cid = body.get("openConversationId")
            if not isinstance(cid, str) or not cid:
                return self._reject("groupMessages/send", 400, "invalidParameter.openConversationId", "missing")
            with state.lock:
                state.group_sends.append(GroupSend(body["robotCode"], cid, body["msgKey"], param, token))
            return JSONResponse({"processQueryKey": f"gpqk{len(state.group_sends)}"})

        @app.post("/robot/sendBySession")
        async def send_by_session(request: Request) -> JSONResponse:
            session = request.query_params.get("session", "")
            body = await _json(request)
            if session in self.broken_sessions:
                return JSONResponse({"errcode": 300001, "errmsg": "session 不存在或已过期"})
            if not isinstance(body, dict) or body.get("msgtype") not in {"text", "markdown"}:
                return JSONResponse({"errcode": 40035, "errmsg": "缺少参数 msgtype"})
            with state.lock:
                state.replies.append(SessionReply(session, body))
            return JSONResponse({"errcode": 0, "errmsg": "ok"})

        return app


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None
