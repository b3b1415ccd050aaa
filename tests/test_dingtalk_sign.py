"""DingTalk callback signature: the published vectors and the one-hour window."""
from __future__ import annotations

import base64

import pytest

from bot.adapters.dingtalk.sign import MAX_SKEW_MS, SignatureError, check_sign, compute_sign, is_valid_sign

SECRET = "dangjianTestAppSecret0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
TS = "1735689600000"
SIGN = "fac+9lDQ7qR5/OdD/j/jNoYjQJRzJjaz9UX0At0BIAI="
NOW = int(TS)


def test_protocol_vector() -> None:
    assert compute_sign(TS, SECRET) == SIGN
    assert base64.b64decode(SIGN).hex() == "7da73ef650d0eea479fce743fe3fe33686234094732636b3f545f402dd012002"


def test_protocol_vector_doc_timestamp() -> None:
    assert compute_sign("1577262236757", SECRET) == "ifHuSahCxPtHZqyBGORqQCsek4n0FegYiork1YeaAtY="


def test_sign_is_plain_base64_not_url_encoded() -> None:
    assert "%" not in SIGN and "+" in SIGN  # the header carries '+' and '/' as they are


def test_accepts_the_vector_now() -> None:
    check_sign(TS, SIGN, SECRET, NOW)
    assert is_valid_sign(TS, SIGN, SECRET, NOW)


@pytest.mark.parametrize("offset", [MAX_SKEW_MS, -MAX_SKEW_MS, 59 * 60 * 1000, -1])
def test_accepts_within_one_hour(offset: int) -> None:
    assert is_valid_sign(TS, SIGN, SECRET, NOW + offset)


@pytest.mark.parametrize("offset", [MAX_SKEW_MS + 1, -MAX_SKEW_MS - 1, 24 * 3600 * 1000])
def test_rejects_more_than_one_hour_off(offset: int) -> None:
    with pytest.raises(SignatureError, match="hour"):
        check_sign(TS, SIGN, SECRET, NOW + offset)


def test_rejects_wrong_secret_and_tampered_sign() -> None:
    assert not is_valid_sign(TS, SIGN, SECRET + "x", NOW)
    assert not is_valid_sign(TS, SIGN[:-2] + "A=", SECRET, NOW)
    # a valid sign for another timestamp does not authenticate this one
    other = str(NOW + 1000)
    assert not is_valid_sign(other, SIGN, SECRET, NOW)


@pytest.mark.parametrize(
    ("timestamp", "sign"),
    [(None, SIGN), (TS, None), ("", SIGN), (TS, ""), ("17356896OOOOO", SIGN), ("-1735689600000", SIGN),
     ("9" * 40, SIGN), ("１７３５６８９６０００００", SIGN)],
)
def test_rejects_missing_or_malformed_headers(timestamp: str | None, sign: str | None) -> None:
    with pytest.raises(SignatureError):
        check_sign(timestamp, sign, SECRET, NOW)


def test_non_ascii_sign_is_rejected_not_crashing() -> None:
    assert not is_valid_sign(TS, "签名" + SIGN, SECRET, NOW)
