"""The WeCom server API the adapter calls: ``/cgi-bin/gettoken`` and ``/cgi-bin/message/send``.

The access token is cached (:class:`bot.adapters.delivery.AccessToken`); on errcode 40014/42001
it is dropped, refetched and the same send retried once. Error messages never contain the
secret or a token.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx

from bot.adapters.delivery import AccessToken, redact
from bot.settings import Settings

log = logging.getLogger(__name__)

#: errcodes meaning "this access_token is no longer valid": refetch once and retry.
TOKEN_INVALID_ERRCODES = frozenset({40014, 42001})


class WeComApiError(RuntimeError):
    """A server API call failed (non-zero errcode, HTTP error or transport error)."""

    def __init__(self, operation: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeCom {operation} failed: errcode={errcode} errmsg={errmsg}")
        self.operation = operation
        self.errcode = errcode
        self.errmsg = errmsg


class WeComApi:
    """``gettoken`` and ``message/send`` of one self-built app."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        """``settings`` must have passed :func:`bot.adapters.wecom.adapter.check_settings`."""
        self._http = http
        self._base = settings.wecom_api_base.rstrip("/")
        self._corp_id = (settings.wecom_corp_id or "").strip()
        self._secret = settings.wecom_secret or ""
        self.agent_id = int((settings.wecom_agent_id or "").strip())
        self.token = AccessToken(self._fetch_token, clock=clock)

    def __repr__(self) -> str:  # never show the secret or the token
        return f"WeComApi(api_base={self._base!r}, corp_id={self._corp_id!r}, agent_id={self.agent_id})"

    def _redact(self, text: str) -> str:
        return redact(text, [self._secret])

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

    async def _fetch_token(self) -> tuple[str, float]:
        data = await self._call("gettoken", "GET", "/cgi-bin/gettoken",
                                params={"corpid": self._corp_id, "corpsecret": self._secret})
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
        log.info("wecom access token refreshed (valid %ds)", int(expires_in))
        return token, expires_in

    async def send_text(self, touser: str, content: str) -> None:
        """``message/send`` of one text; raises WeComApiError unless errcode is 0."""
        payload = {"touser": touser, "msgtype": "text", "agentid": self.agent_id, "text": {"content": content}}
        token = await self.token.get()
        data = await self._post_send(token, payload)
        errcode = self._errcode(data)
        if errcode in TOKEN_INVALID_ERRCODES:
            log.info("wecom access token rejected (errcode=%s); refetching once", errcode)
            self.token.invalidate(token)
            data = await self._post_send(await self.token.get(), payload)
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
