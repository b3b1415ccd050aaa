"""WeCom callback crypto against the published vectors (/work/shared/protocols/wecom.md §4)."""
from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bot.adapters.wecom.crypto import (
    DecryptError,
    InvalidSignature,
    ReceiveIdMismatch,
    WeComCrypto,
    check_signature,
    decode_aes_key,
    signature,
)

# Vector A: Tencent's official sample (callback/Sample.py).
A_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
A_AES = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
A_CORP = "ww1436e0e65a779aee"
A_VERIFY = {
    "msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
    "timestamp": "1476416373",
    "nonce": "47744683",
    "echostr": "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==",
}
A_ECHO_PLAIN = "1288432023552776189"
A_ECHO_PREFIX = b"8908d0ff052afda0"
A_MSG_SIGNATURE = "0c3914025cb4b4d68103f6bfc8db550f79dcf48e"
A_MSG_TIMESTAMP = "1476422779"
A_MSG_NONCE = "1597212914"
A_ENCRYPT = (
    "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2"
    "AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD2"
    "4YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJO"
    "pcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"
)
A_MSG_PLAIN = (
    "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>"
    "<CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>"
    "<MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
)
A_MSG_PREFIX = b"694ce5a83ae07fe3"

# Vector B: Chinese content, 29 bytes of padding.
B_TOKEN = "dangjianToken2024"
B_AES = "dbp7c9V13h6bbC3yZqVDYjhkiuHKnaz82yzsJMlIhBs"
B_KEY_HEX = "75ba7b73d575de1e9b6c2df266a5436238648ae1ca9dacfcdb2cec24c948841b"
B_CORP = "wwdangjian0000001"
B_PREFIX = b"0123456789abcdef"
B_TIMESTAMP = "1735689600"
B_NONCE = "1372623149"
B_MSG = (
    "<xml><ToUserName><![CDATA[wwdangjian0000001]]></ToUserName><FromUserName><![CDATA[zhangsanfeng]]></FromUserName>"
    "<CreateTime>1735689600</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[党组会议一般多久召开一次？]]></Content><MsgId>7450000000000000001</MsgId><AgentID>1000002</AgentID></xml>"
)
B_ENCRYPT = (
    "I78fcybxOUdhRjV5HhV9X45yR/sNc+jsXBJylgZb27CFZGTNu/kjEB8uVoMOjEbszCSH3M94zoSFlZkQVXJ2UHqDVw3ixyOoraZkOlzU21i5"
    "VBcrpC1lt4KLVaQMAkXR87ik0wtggLYzK+16XoLtKMgwHjLtWt9QX9E3fXKAglOr+ywms9BGrji+JjRaTZ6Gl5fZclMQOD0Tg0neLPDAw6FE"
    "Cq25r/8dsJIspY1IXSZAv36FHDLUzSVGA7HO98JYdMXdQDz7dkzUVxOjY3VkWKfZwJK1jcF/cKgmzZHTLZ/LSm0Tv3KF51YOxpOnWly4Ba5r"
    "eRlWHEgoA9349+qKoOtU2cnYNWabaqxd5tfC6H8IEtA6+nW8rsCS+1zDAWgnKmpfAcECxfaiW6DjPwK6G0eQ9+qELJLEy9OFt5X3qb/p3MIh"
    "bPS8O+No2YXSZLCMsphLFGga41a4s0w9Q9wtTysh8tQhTwO69RuO+fGWS8xZAjY7Ji3RlBoEW3fC6rad"
)
B_SIGNATURE = "3aee61b217255d80a32934eb451064d0bd1ec5d6"


@pytest.fixture
def crypto_a() -> WeComCrypto:
    return WeComCrypto(A_TOKEN, A_AES, A_CORP)


@pytest.fixture
def crypto_b() -> WeComCrypto:
    return WeComCrypto(B_TOKEN, B_AES, B_CORP)


def _raw_decrypt(aes: str, encrypt: str) -> bytes:
    key = decode_aes_key(aes)
    d = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    return d.update(base64.b64decode(encrypt)) + d.finalize()


def _raw_encrypt(aes: str, padded: bytes) -> str:
    key = decode_aes_key(aes)
    e = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(e.update(padded) + e.finalize()).decode()


# Vector A -------------------------------------------------------------------------
def test_vector_a_url_verification(crypto_a: WeComCrypto) -> None:
    v = A_VERIFY
    assert signature(A_TOKEN, v["timestamp"], v["nonce"], v["echostr"]) == v["msg_signature"]
    assert crypto_a.verify_url(v["msg_signature"], v["timestamp"], v["nonce"], v["echostr"]) == A_ECHO_PLAIN


def test_vector_a_echostr_reencrypts_exactly(crypto_a: WeComCrypto) -> None:
    assert crypto_a.encrypt(A_ECHO_PLAIN, random16=A_ECHO_PREFIX) == A_VERIFY["echostr"]


def test_vector_a_message(crypto_a: WeComCrypto) -> None:
    assert signature(A_TOKEN, A_MSG_TIMESTAMP, A_MSG_NONCE, A_ENCRYPT) == A_MSG_SIGNATURE
    plain = crypto_a.decrypt_message(A_MSG_SIGNATURE, A_MSG_TIMESTAMP, A_MSG_NONCE, A_ENCRYPT)
    assert plain == A_MSG_PLAIN
    assert crypto_a.encrypt(A_MSG_PLAIN, random16=A_MSG_PREFIX) == A_ENCRYPT


# Vector B -------------------------------------------------------------------------
def test_vector_b_key_and_layout() -> None:
    assert decode_aes_key(B_AES).hex() == B_KEY_HEX
    raw = _raw_decrypt(B_AES, B_ENCRYPT)
    assert len(raw) == 384 and raw[-29:] == bytes([29]) * 29
    assert raw[:16] == B_PREFIX
    assert raw[16:20] == b"\x00\x00\x01\x3e"  # 318 UTF-8 bytes, not 292 characters
    assert raw[20 : 20 + 318].decode("utf-8") == B_MSG
    assert raw[20 + 318 : -29] == B_CORP.encode()


def test_vector_b_encrypt_and_sign(crypto_b: WeComCrypto) -> None:
    encrypt = crypto_b.encrypt(B_MSG, random16=B_PREFIX)
    assert encrypt == B_ENCRYPT
    assert crypto_b.sign(B_TIMESTAMP, B_NONCE, encrypt) == B_SIGNATURE
    # plain string order: digits < upper case < lower case
    assert sorted([B_TOKEN, B_TIMESTAMP, B_NONCE, B_ENCRYPT])[2] == B_ENCRYPT


def test_vector_b_decrypt(crypto_b: WeComCrypto) -> None:
    assert crypto_b.decrypt_message(B_SIGNATURE, B_TIMESTAMP, B_NONCE, B_ENCRYPT) == B_MSG


# Rejections -----------------------------------------------------------------------
def test_wrong_signature_rejected(crypto_b: WeComCrypto) -> None:
    forged = "0" * 40
    assert not check_signature(B_TOKEN, B_TIMESTAMP, B_NONCE, B_ENCRYPT, forged)
    with pytest.raises(InvalidSignature):
        crypto_b.decrypt_message(forged, B_TIMESTAMP, B_NONCE, B_ENCRYPT)
    with pytest.raises(InvalidSignature):  # signature of another timestamp
        crypto_b.decrypt_message(B_SIGNATURE, "1735689601", B_NONCE, B_ENCRYPT)
    with pytest.raises(InvalidSignature):  # right signature, wrong token
        WeComCrypto("otherToken", B_AES, B_CORP).decrypt_message(B_SIGNATURE, B_TIMESTAMP, B_NONCE, B_ENCRYPT)


def test_wrong_corp_id_rejected() -> None:
    other = WeComCrypto(B_TOKEN, B_AES, "wwsomeoneelse00001")
    with pytest.raises(ReceiveIdMismatch):
        other.decrypt_message(B_SIGNATURE, B_TIMESTAMP, B_NONCE, B_ENCRYPT)
    with pytest.raises(ReceiveIdMismatch):  # a prefix of the real one is not enough
        WeComCrypto(B_TOKEN, B_AES, B_CORP[:-1]).decrypt(B_ENCRYPT)


def test_wrong_key_or_garbage_rejected(crypto_b: WeComCrypto) -> None:
    wrong_key = WeComCrypto(B_TOKEN, A_AES, B_CORP)
    with pytest.raises((DecryptError, ReceiveIdMismatch)):
        wrong_key.decrypt(B_ENCRYPT)
    for garbage in ["not base64!!", "", base64.b64encode(b"x" * 31).decode(), "QUJD"]:
        with pytest.raises(DecryptError):
            crypto_b.decrypt(garbage)


def test_bad_padding_rejected(crypto_b: WeComCrypto) -> None:
    plain = B_PREFIX + struct.pack(">I", 2) + b"hi" + B_CORP.encode()
    n = 32 - len(plain) % 32
    bad_value = _raw_encrypt(B_AES, plain + bytes([n + 1]) * n)  # pad byte disagrees with length
    with pytest.raises(DecryptError):
        crypto_b.decrypt(bad_value)
    zero = _raw_encrypt(B_AES, plain + bytes(n))  # pad of 0
    with pytest.raises(DecryptError):
        crypto_b.decrypt(zero)


def test_length_field_beyond_plaintext_rejected(crypto_b: WeComCrypto) -> None:
    plain = B_PREFIX + struct.pack(">I", 10_000) + b"hi" + B_CORP.encode()
    n = 32 - len(plain) % 32
    with pytest.raises(DecryptError):
        crypto_b.decrypt(_raw_encrypt(B_AES, plain + bytes([n]) * n))


# Round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("length", range(0, 70))
def test_round_trip_every_padding_length(crypto_b: WeComCrypto, length: int) -> None:
    """Pads of 1..32 bytes all work, including a full block of 32 (cryptography's PKCS7(128) can't)."""
    text = "党" * (length // 3) + "x" * (length % 3)
    encrypt = crypto_b.encrypt(text)
    raw = _raw_decrypt(B_AES, encrypt)
    assert 1 <= raw[-1] <= 32 and len(raw) % 32 == 0
    assert crypto_b.decrypt(encrypt) == text


def test_random_prefix_differs(crypto_b: WeComCrypto) -> None:
    assert crypto_b.encrypt("same") != crypto_b.encrypt("same")


def test_bad_aes_key_and_repr_has_no_secrets() -> None:
    for bad in ["short", B_AES + "x", B_AES[:-1] + "+", ""]:
        with pytest.raises(ValueError):
            WeComCrypto(B_TOKEN, bad, B_CORP)
    with pytest.raises(ValueError):
        WeComCrypto("", B_AES, B_CORP)
    text = repr(WeComCrypto(B_TOKEN, B_AES, B_CORP))
    assert B_TOKEN not in text and B_AES not in text
