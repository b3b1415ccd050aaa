"""WeCom (企业微信) callback crypto: ``msg_signature`` and the AES-256-CBC message envelope.

Implements Tencent's 加解密方案 (see /work/shared/protocols/wecom.md, section 4)::

    key    = base64decode(EncodingAESKey + "=")     # 32 bytes
    iv     = key[:16]
    plain  = random16 + uint32_be(len(msg_bytes)) + msg_bytes + receiveid_bytes
    padded = PKCS#7 to a multiple of 32 bytes (pad 1..32)
    Encrypt = base64(AES-256-CBC(key, iv).encrypt(padded))
    msg_signature = sha1("".join(sorted([token, timestamp, nonce, Encrypt])))

Nothing here logs, and no exception message contains the token or the key.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_SIZE = 32  # WeCom pads to 32-byte blocks, not AES's 16
AES_KEY_CHARS = 43


class WeComCryptoError(Exception):
    """A callback could not be authenticated or decrypted."""


class InvalidSignature(WeComCryptoError):
    """``msg_signature`` does not match token/timestamp/nonce/Encrypt."""


class DecryptError(WeComCryptoError):
    """The ciphertext is not valid base64/AES/padding/layout for this key."""


class ReceiveIdMismatch(WeComCryptoError):
    """The decrypted receiveid is not our CorpID (a message for another corp or app)."""


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """``sha1`` hex digest of the four strings sorted in plain string order and concatenated."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode("utf-8")).hexdigest()


def check_signature(token: str, timestamp: str, nonce: str, encrypt: str, msg_signature: str) -> bool:
    """Constant-time comparison of ``msg_signature`` with the expected signature."""
    expected = signature(token, timestamp, nonce, encrypt)
    return hmac.compare_digest(expected.encode("ascii"), msg_signature.strip().lower().encode("utf-8"))


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of a 43-character EncodingAESKey; ValueError if it is not one."""
    text = encoding_aes_key.strip()
    if len(text) != AES_KEY_CHARS or not text.isalnum() or not text.isascii():
        raise ValueError("EncodingAESKey must be 43 characters from a-z, A-Z, 0-9")
    try:
        key = base64.b64decode(text + "=", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("EncodingAESKey is not valid base64") from None
    if len(key) != 32:  # pragma: no cover - 43 base64 chars always give 32 bytes
        raise ValueError("EncodingAESKey does not decode to 32 bytes")
    return key


def _pad(data: bytes) -> bytes:
    n = BLOCK_SIZE - len(data) % BLOCK_SIZE  # 1..32
    return data + bytes([n]) * n


def _unpad(data: bytes) -> bytes:
    if not data:
        raise DecryptError("empty plaintext")
    n = data[-1]
    if not 1 <= n <= BLOCK_SIZE or n > len(data) or data[-n:] != bytes([n]) * n:
        raise DecryptError("bad padding")
    return data[:-n]


class WeComCrypto:
    """Sign, verify, encrypt and decrypt WeCom callbacks for one app.

    ``receive_id`` is the CorpID for a self-built app (自建应用).
    """

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not token:
            raise ValueError("WeCom token must not be empty")
        if not receive_id:
            raise ValueError("WeCom receive id (CorpID) must not be empty")
        self._token = token
        self._key = decode_aes_key(encoding_aes_key)
        self.receive_id = receive_id

    def __repr__(self) -> str:  # never show the token or the key
        return f"WeComCrypto(receive_id={self.receive_id!r})"

    # Signatures ------------------------------------------------------------
    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return signature(self._token, timestamp, nonce, encrypt)

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise :class:`InvalidSignature` unless ``msg_signature`` is right."""
        if not check_signature(self._token, timestamp, nonce, encrypt, msg_signature):
            raise InvalidSignature("msg_signature mismatch")

    # AES ---------------------------------------------------------------------
    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, plaintext: str, random16: bytes | None = None) -> str:
        """Base64 ``Encrypt`` of ``plaintext`` (random prefix unless given, for test vectors)."""
        prefix = os.urandom(16) if random16 is None else random16
        if len(prefix) != 16:
            raise ValueError("random prefix must be 16 bytes")
        msg = plaintext.encode("utf-8")
        plain = prefix + struct.pack(">I", len(msg)) + msg + self.receive_id.encode("utf-8")
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(_pad(plain)) + encryptor.finalize()).decode("ascii")

    def decrypt(self, encrypt: str) -> str:
        """Plaintext of ``encrypt``; :class:`DecryptError` or :class:`ReceiveIdMismatch` otherwise."""
        try:
            raw = base64.b64decode(encrypt.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("Encrypt is not valid base64") from None
        if not raw or len(raw) % BLOCK_SIZE:
            raise DecryptError("ciphertext length is not a multiple of 32")
        decryptor = self._cipher().decryptor()
        plain = _unpad(decryptor.update(raw) + decryptor.finalize())
        if len(plain) < 20:
            raise DecryptError("plaintext too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise DecryptError("message length field exceeds the plaintext")
        msg, receive_id = plain[20 : 20 + length], plain[20 + length :]
        if not hmac.compare_digest(receive_id, self.receive_id.encode("utf-8")):
            raise ReceiveIdMismatch("receiveid does not match the configured CorpID")
        try:
            return msg.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError("message is not UTF-8") from None

    # Whole operations ----------------------------------------------------------
    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """URL verification (GET): check the signature over ``echostr``, return its plaintext."""
        self.verify(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def decrypt_message(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> str:
        """A POSTed message: check the signature over ``Encrypt``, return the plaintext XML."""
        self.verify(msg_signature, timestamp, nonce, encrypt)
        return self.decrypt(encrypt)
