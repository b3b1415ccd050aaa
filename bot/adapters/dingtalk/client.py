"""The DingTalk APIs the adapter calls: a message's ``sessionWebhook`` (replies) and the robot
OpenAPI (``oToMessages/batchSend``, ``groupMessages/send``) with a cached access token.

Errors carry the HTTP status and DingTalk's error code only: never a URL (a sessionWebhook URL
is a credential) and never the app secret or a token.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from bot.adapters.delivery import AccessToken
from bot.settings import Settings

log = logging.getLogger(__name__)

TOKEN_PATH = "/v1.0/oauth2/accessToken"
BATCH_SEND_PATH = "/v1.0/robot/oToMessages/batchSend"
GROUP_SEND_PATH = "/v1.0/robot/groupMessages/send"
TOKEN_HEADER = "x-acs-dingtalk-access-token"
HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class DingTalkError(RuntimeError):
    """A DingTalk call failed. Carries the HTTP status and DingTalk's error code only."""

    def __init__(self, operation: str, status: int | None, code: str | None = None, detail: str = "") -> None:
        self.operation = operation
        self.status = status
        self.code = code
        super().__init__(f"DingTalk {operation} failed (HTTP {status}, code {code or '-'}) {detail}".strip())


def describe(exc: Exception) -> str:
    """An error for the log: our own messages are clean; httpx ones may carry a session URL."""
    return str(exc) if isinstance(exc, DingTalkError) else type(exc).__name__


class DingTalkApi:
    """One enterprise-internal app robot: its token, its pushes, and replies to session webhooks."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        """The robot code defaults to the AppKey (as for every enterprise-internal app robot)."""
        self._http = http
        self.api_base = settings.dingtalk_api_base.rstrip("/")
        self._credentials = {"appKey": settings.dingtalk_app_key or "", "appSecret": settings.dingtalk_app_secret or ""}
        self.robot_code = settings.dingtalk_robot_code or settings.dingtalk_app_key or ""
        self.token = AccessToken(self._fetch_token, clock=clock)

    async def reply(self, session_webhook: str, text: str) -> None:
        """Post one text to a message's sessionWebhook (no token needed)."""
        response = await self._http.post(session_webhook, json={"msgtype": "text", "text": {"content": text}})
        data = _json_or_none(response)
        errcode = data.get("errcode", 0) if isinstance(data, dict) else None
        if response.status_code >= 400 or errcode not in (0, None):
            raise DingTalkError("sessionWebhook reply", response.status_code, str(errcode))

    async def send_to_user(self, user_id: str, text: str) -> None:
        """``oToMessages/batchSend`` to one user; raises when DingTalk did not reach them."""
        data = await self._post(BATCH_SEND_PATH, {**self._message(text), "userIds": [user_id]}, "batchSend")
        for field in ("invalidStaffIdList", "flowControlledStaffIdList"):
            missed = data.get(field) or []
            if missed:
                log.warning("dingtalk: batchSend %s: %s", field, missed)
                if user_id in missed:
                    raise DingTalkError("batchSend", 200, field, f"user {user_id} not reached")

    async def send_to_group(self, conversation_id: str, text: str) -> None:
        """``groupMessages/send`` (``openConversationId`` = the callback's conversationId)."""
        await self._post(GROUP_SEND_PATH, {**self._message(text), "openConversationId": conversation_id},
                         "groupMessages/send")

    def _message(self, text: str) -> dict[str, Any]:
        return {"robotCode": self.robot_code, "msgKey": "sampleText",
                "msgParam": json.dumps({"content": text}, ensure_ascii=False)}

    async def _post(self, path: str, body: dict[str, Any], operation: str) -> dict[str, Any]:
        """POST to the OpenAPI with the access token; on an auth error refetch it once and retry."""
        for attempt in range(2):
            token = await self.token.get()
            response = await self._http.post(self.api_base + path, json=body, headers={TOKEN_HEADER: token})
            data = _json_or_none(response)
            if _is_auth_error(response.status_code, data) and attempt == 0:
                log.info("dingtalk: access token rejected by %s; fetching a new one", operation)
                self.token.invalidate(token)
                continue
            if response.status_code >= 400 or not isinstance(data, dict):
                raise DingTalkError(operation, response.status_code, _code(data), _message(data))
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_token(self) -> tuple[str, float]:
        response = await self._http.post(self.api_base + TOKEN_PATH, json=self._credentials)
        data = _json_or_none(response)
        token = data.get("accessToken") if isinstance(data, dict) else None
        if response.status_code >= 400 or not isinstance(token, str) or not token:
            raise DingTalkError("accessToken", response.status_code, _code(data), _message(data))
        try:
            return token, float(data.get("expireIn", 7200))
        except (TypeError, ValueError):
            return token, 7200.0


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
