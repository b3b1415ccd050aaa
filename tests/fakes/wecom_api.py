"""A fake WeCom (企业微信) server API on 127.0.0.1, and builders for signed, encrypted callbacks.

In-process (unit tests: the adapter's HTTP client talks to the fake's ASGI app directly)::

    fake = FakeWeCom()
    adapter = WeComAdapter(fake.settings(), core, db, http=fake.client())
    await adapter.send(ChatRef(platform="wecom", chat_id="lisi", user_id="lisi"), [...])
    assert fake.texts("lisi") == ["…"]

On loopback (process-level end-to-end tests: ``dangjian run`` in a subprocess)::

    fake = FakeWeCom().start()                    # uvicorn in a background thread, free port
    env = {"DANGJIAN_WECOM_API_BASE": fake.base_url, ...}
    fake.stop()

``FakeWeCom`` implements ``GET /cgi-bin/gettoken`` (checks corpid/corpsecret, counts calls) and
``POST /cgi-bin/message/send`` (checks the access token, agentid, msgtype and the 2048-byte limit;
records every attempt and every accepted payload). ``expire_tokens()`` makes every token issued so
far answer errcode 42001 (or 40014), like WeCom invalidating a token early.

``CallbackBuilder`` (also ``fake.callbacks``) builds what WeCom POSTs to the bot: the query
parameters (``msg_signature``, ``timestamp``, ``nonce``) and the XML envelope with ``Encrypt``.
"""
from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.adapters.wecom.crypto import WeComCrypto
from bot.settings import Settings
from tests.fakes.loopback import LoopbackFake, LoopbackServer

IN_PROCESS_BASE = "http://wecom.fake"

# Credentials of the fake app (vector B of the protocol notes for token/key/corp id).
CORP_ID = "wwdangjian0000001"
AGENT_ID = 1000002
SECRET = "fakeCorpSecret-9f8e7d6c5b4a39281706"
TOKEN = "dangjianToken2024"
AES_KEY = "dbp7c9V13h6bbC3yZqVDYjhkiuHKnaz82yzsJMlIhBs"

MAX_CONTENT_BYTES = 2048


# ---------------------------------------------------------------------------
# Callbacks (what WeCom sends to the bot)
@dataclass
class CallbackBuilder:
    """Builds signed + encrypted callbacks for an app with this token, AES key and CorpID."""

    token: str = TOKEN
    aes_key: str = AES_KEY
    corp_id: str = CORP_ID
    agent_id: int = AGENT_ID

    def crypto(self, receive_id: str | None = None) -> WeComCrypto:
        """The crypto of this app; ``receive_id`` overrides the CorpID (to forge a wrong one)."""
        return WeComCrypto(self.token, self.aes_key, receive_id or self.corp_id)

    # Plain message XML -------------------------------------------------------
    def text_xml(self, from_user: str, content: str, msg_id: str | int, create_time: int | None = None) -> str:
        """The decrypted XML of a text message from ``from_user``."""
        return (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<FromUserName><![CDATA[{from_user}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
            f"<MsgId>{msg_id}</MsgId><AgentID>{self.agent_id}</AgentID></xml>"
        )

    def image_xml(self, from_user: str, msg_id: str | int, create_time: int | None = None) -> str:
        """The decrypted XML of an image message."""
        return (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<FromUserName><![CDATA[{from_user}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://127.0.0.1/x.jpg]]></PicUrl>"
            f"<MediaId><![CDATA[media1]]></MediaId><MsgId>{msg_id}</MsgId><AgentID>{self.agent_id}</AgentID></xml>"
        )

    def event_xml(self, from_user: str, event: str = "enter_agent", create_time: int | None = None) -> str:
        """The decrypted XML of an event (``enter_agent``, ``subscribe``…): no MsgId."""
        return (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<FromUserName><![CDATA[{from_user}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>"
            f"<EventKey><![CDATA[]]></EventKey><AgentID>{self.agent_id}</AgentID></xml>"
        )

    # Signed requests -----------------------------------------------------------
    def message(
        self,
        plain_xml: str,
        *,
        timestamp: str | None = None,
        nonce: str | None = None,
        receive_id: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """(query params, body) of a message POST, signed and encrypted like WeCom does."""
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        encrypt = self.crypto(receive_id).encrypt(plain_xml)
        params = {
            "msg_signature": self.crypto().sign(timestamp, nonce, encrypt),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        body = (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<AgentID><![CDATA[{self.agent_id}]]></AgentID></xml>"
        ).encode("utf-8")
        return params, body

    def verification(
        self, echo_plain: str, *, timestamp: str | None = None, nonce: str | None = None
    ) -> dict[str, str]:
        """Query params of the URL-verification GET whose decrypted echostr is ``echo_plain``."""
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        echostr = self.crypto().encrypt(echo_plain)
        return {
            "msg_signature": self.crypto().sign(timestamp, nonce, echostr),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }


# ---------------------------------------------------------------------------
# Server API (what the bot calls)
@dataclass
class SendAttempt:
    """One ``message/send`` request as received, with the errcode the fake answered."""

    access_token: str
    payload: dict[str, Any]
    errcode: int


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    gettoken_calls: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    expired_tokens: dict[str, int] = field(default_factory=dict)  # token -> errcode to answer
    attempts: list[SendAttempt] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    forced_errors: list[tuple[int, str]] = field(default_factory=list)


class FakeWeCom(LoopbackFake):
    """A loopback WeCom server API: gettoken + message/send. Thread-safe; see the module docstring."""

    def __init__(
        self,
        *,
        corp_id: str = CORP_ID,
        secret: str = SECRET,
        agent_id: int = AGENT_ID,
        token: str = TOKEN,
        aes_key: str = AES_KEY,
        expires_in: int = 7200,
    ) -> None:
        self.corp_id = corp_id
        self.secret = secret
        self.agent_id = agent_id
        self.expires_in = expires_in
        self.callbacks = CallbackBuilder(token=token, aes_key=aes_key, corp_id=corp_id, agent_id=agent_id)
        self._state = _State()
        self.app = self._build_app()
        self._server = LoopbackServer(self.app, "fake-wecom")

    # Lifecycle: start(), stop() and ``with`` come from LoopbackFake ----------------
    @property
    def base_url(self) -> str:
        """DANGJIAN_WECOM_API_BASE: ``http://127.0.0.1:PORT`` once started, else the in-process name."""
        return self._server.base_url if self._server.running else IN_PROCESS_BASE

    def client(self) -> httpx.AsyncClient:
        """An HTTP client whose requests reach this fake in-process (no server, no socket)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), timeout=10)

    def settings(self, **overrides: Any) -> Settings:
        """Settings with every DANGJIAN_WECOM_* value pointing at this fake (no .env file read)."""
        values: dict[str, Any] = {
            "wecom_corp_id": self.corp_id,
            "wecom_agent_id": str(self.agent_id),
            "wecom_secret": self.secret,
            "wecom_token": self.callbacks.token,
            "wecom_aes_key": self.callbacks.aes_key,
            "wecom_api_base": self.base_url,
            "http_host": "127.0.0.1",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    # Inspection and control ------------------------------------------------------
    @property
    def gettoken_calls(self) -> int:
        """How many times ``/cgi-bin/gettoken`` was called (successful or not)."""
        with self._state.lock:
            return self._state.gettoken_calls

    @property
    def sent(self) -> list[dict[str, Any]]:
        """A copy of every accepted ``message/send`` JSON payload, in order."""
        with self._state.lock:
            return list(self._state.sent)

    @property
    def attempts(self) -> list[SendAttempt]:
        """A copy of every ``message/send`` request, accepted or not, in order."""
        with self._state.lock:
            return list(self._state.attempts)

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token handed out so far (to check none of them reached the logs)."""
        with self._state.lock:
            return sorted(self._state.valid_tokens | set(self._state.expired_tokens))

    def texts(self, touser: str | None = None) -> list[str]:
        """The ``text.content`` of accepted sends (to ``touser`` only, if given)."""
        return [p["text"]["content"] for p in self.sent if touser is None or p["touser"] == touser]

    def expire_tokens(self, errcode: int = 42001) -> None:
        """Make every token issued so far answer ``errcode`` (42001 expired, 40014 invalid)."""
        with self._state.lock:
            for token in self._state.valid_tokens:
                self._state.expired_tokens[token] = errcode
            self._state.valid_tokens.clear()

    def fail_next_sends(self, errcode: int, errmsg: str = "fake failure", count: int = 1) -> None:
        """Answer the next ``count`` sends that carry a valid token with ``errcode``."""
        with self._state.lock:
            self._state.forced_errors.extend([(errcode, errmsg)] * count)

    def reset(self) -> None:
        """Forget sends, attempts, counters and tokens."""
        with self._state.lock:
            lock = self._state.lock
            self._state = _State(lock=lock)

    async def wait_for_sends(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` sends were accepted; return them (TimeoutError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            sent = self.sent
            if len(sent) >= n:
                return sent
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} message/send call(s), got {len(sent)}: {sent!r}")
            await asyncio.sleep(0.01)

    # The app -----------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/cgi-bin/gettoken")
        async def gettoken(corpid: str = "", corpsecret: str = "") -> JSONResponse:
            with self._state.lock:
                self._state.gettoken_calls += 1
                if corpid != self.corp_id:
                    return JSONResponse({"errcode": 40013, "errmsg": "invalid corpid"})
                if corpsecret != self.secret:
                    return JSONResponse({"errcode": 40001, "errmsg": "invalid credential"})
                token = "fake-access-token-" + secrets.token_hex(24)
                self._state.valid_tokens.add(token)
            return JSONResponse(
                {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in}
            )

        @app.post("/cgi-bin/message/send")
        async def message_send(request: Request, access_token: str = "") -> JSONResponse:
            try:
                payload = await request.json()
            except ValueError:
                return JSONResponse({"errcode": 47001, "errmsg": "data format error"})
            with self._state.lock:
                errcode, errmsg = self._check_send(access_token, payload)
                self._state.attempts.append(SendAttempt(access_token=access_token, payload=payload, errcode=errcode))
                if errcode == 0:
                    self._state.sent.append(payload)
            return JSONResponse({"errcode": errcode, "errmsg": errmsg, "invaliduser": "", "msgid": "fake"})

        return app

    def _check_send(self, access_token: str, payload: Any) -> tuple[int, str]:
        """(errcode, errmsg) for one send; called with the state lock held."""
        state = self._state
        if access_token in state.expired_tokens:
            return state.expired_tokens[access_token], "access_token expired"
        if access_token not in state.valid_tokens:
            return 40014, "invalid access_token"
        if state.forced_errors:
            return state.forced_errors.pop(0)
        if not isinstance(payload, dict):
            return 47001, "data format error"
        if payload.get("agentid") != self.agent_id or not isinstance(payload.get("agentid"), int):
            return 40056, "invalid agentid"
        if payload.get("msgtype") != "text":
            return 40008, "invalid message type"
        touser = payload.get("touser")
        if not isinstance(touser, str) or not touser:
            return 40031, "invalid touser"
        text = payload.get("text")
        content = text.get("content") if isinstance(text, dict) else None
        if not isinstance(content, str) or not content:
            return 44004, "empty content"
        if len(content.encode("utf-8")) > MAX_CONTENT_BYTES:
            return 45002, "content size out of limit"
        return 0, "ok"

