"""Signature check of DingTalk robot callbacks (HTTP mode).

DingTalk sends two headers with every callback: ``timestamp`` (milliseconds) and
``sign = base64(HmacSHA256(key=appSecret, msg=timestamp + "\\n" + appSecret))``. A request is
genuine only when the sign matches (compared in constant time) and the timestamp is at most one
hour away from now. The header value is plain base64 (not URL-encoded, unlike the custom group
webhook robot). Note that the sign covers the timestamp only, not the body.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

MAX_SKEW_MS = 3600 * 1000  # more than one hour apart → illegal request
_MAX_TIMESTAMP_DIGITS = 15  # ms since 1970 has 13 digits until the year 2286


class SignatureError(ValueError):
    """The callback is not authentic; the message says why (never contains secrets)."""


def compute_sign(timestamp: str, app_secret: str) -> str:
    """``base64(HmacSHA256(app_secret, f"{timestamp}\\n{app_secret}"))`` as ASCII text."""
    digest = hmac.new(
        app_secret.encode("utf-8"),
        f"{timestamp}\n{app_secret}".encode("utf-8"),
        hashlib.sha256,
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def check_sign(
    timestamp: str | None,
    sign: str | None,
    app_secret: str,
    now_ms: int,
    *,
    max_skew_ms: int = MAX_SKEW_MS,
) -> None:
    """Raise :class:`SignatureError` unless ``timestamp``/``sign`` authenticate a callback now."""
    if not timestamp or not sign:
        raise SignatureError("missing timestamp or sign header")
    timestamp = timestamp.strip()
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError("malformed timestamp header")
    if abs(now_ms - int(timestamp)) > max_skew_ms:
        raise SignatureError("timestamp more than one hour from now")
    expected = compute_sign(timestamp, app_secret).encode("ascii")
    if not hmac.compare_digest(expected, sign.strip().encode("utf-8")):
        raise SignatureError("sign does not match")


def is_valid_sign(
    timestamp: str | None, sign: str | None, app_secret: str, now_ms: int, *, max_skew_ms: int = MAX_SKEW_MS
) -> bool:
    """True when :func:`check_sign` would accept the headers."""
    try:
        check_sign(timestamp, sign, app_secret, now_ms, max_skew_ms=max_skew_ms)
    except SignatureError:
        return False
    return True
