"""A fake Telegram Bot API for tests: the methods the adapter calls, and nothing else.

In-process (unit tests): :class:`FakeTelegramRequest` replaces PTB's HTTP layer and answers every
call from the fake's state; tests push updates and the adapter's application processes them.
On loopback (process-level tests, ``dangjian run`` in a subprocess): ``start()`` serves it with
uvicorn on 127.0.0.1 in a background thread; point python-telegram-bot at it with
``base_url=fake.base_url``; PTB then calls ``http://127.0.0.1:PORT/bot<TOKEN>/<method>``. Tests push
updates (``push_text``, ``push_callback``, ``push_document``, …), the bot long-polls them with
``getUpdates``, and everything the bot sends is recorded in :attr:`FakeTelegram.sent`.

Typical use on loopback::

    async with FakeTelegram() as tg:
        settings = Settings(telegram_token=tg.token, telegram_base_url=tg.base_url, _env_file=None)
        ...start the adapter...
        tg.push_text(chat_id=42, user_id=42, text="党组会议多久召开一次？")
        [reply] = await tg.wait_for_messages(1)
        assert "第十八条" in reply.text

Checking that the bot does *not* answer, without sleeping: the dangjian adapter handles the
updates of one chat in order, so push the ignored message, then a message in the same chat that
is answered (e.g. ``/help``), wait for that answer and assert it is the only new one::

    mark = tg.mark()
    tg.push_text(-100, 7, "闲聊", chat_type="supergroup")
    tg.push_text(-100, 7, "/help", chat_type="supergroup")
    new = await tg.wait_for_messages(1, since=mark)
    assert len(tg.sent) - mark == 1 and "可用命令" in new[0].text

The server behaves like Telegram where it matters to a bot: ``{"ok": true, "result": …}`` in
the real Bot API shapes, 400 for a text over 4096 characters, an empty text, a caption over
1024 characters, callback data over 64 bytes, malformed ``Markdown``/``MarkdownV2`` ("can't parse
entities"), 401 for a wrong token, 409 for ``getUpdates`` while a webhook is set.
``allowed_updates`` is recorded (:attr:`FakeTelegram.allowed_updates`) but not enforced, so tests
exercise the adapter's own filtering of edited messages and channel posts.

All public methods are thread-safe; ``push_*`` and the ``sent``-style lists may be used from
sync or async tests. Nothing here talks to the internet.
"""
from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

IN_PROCESS_ORIGIN = "http://telegram.fake"
DEFAULT_TOKEN = "123456789:AAFakeTokenForTests_abcdefghijklmnop"
DEFAULT_USERNAME = "dangjian_test_bot"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER = 200

_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_@/])@[A-Za-z0-9_]{5,32}")
_BOT_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class ApiError(Exception):
    """An error answer ``{"ok": false, ...}`` with an HTTP status, like Telegram sends."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


@dataclass
class SentDocument:
    filename: str
    content: bytes
    mime_type: str | None = None


@dataclass
class SentMessage:
    """One message the bot sent (``sendMessage`` or ``sendDocument``)."""

    method: str
    chat_id: int | str
    message_id: int
    text: str | None  # the text, or the caption of a document
    reply_markup: dict | None = None
    parse_mode: str | None = None
    reply_to_message_id: int | None = None
    document: SentDocument | None = None
    params: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)  # the Message object returned to the bot

    @property
    def buttons(self) -> list[list[tuple[str, str | None]]]:
        """Inline keyboard rows as ``(label, callback_data)`` pairs ([] without a keyboard)."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [[(b.get("text", ""), b.get("callback_data")) for b in row] for row in rows]

    @property
    def callback_data(self) -> list[str]:
        """All callback data of the inline keyboard, flattened."""
        return [data for row in self.buttons for _, data in row if data is not None]


@dataclass
class _Failure:
    status: int
    description: str
    retry_after: int | None
    remaining: int


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def auto_entities(text: str) -> list[dict]:
    """Entities Telegram would attach: a leading ``bot_command`` and ``mention``s (UTF-16 offsets)."""
    entities: list[dict] = []
    command = _COMMAND_RE.match(text)
    covered_until = 0
    if command:
        entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command.group(0))})
        covered_until = command.end()
    for match in _MENTION_RE.finditer(text):
        if match.start() < covered_until:
            continue
        entities.append({
            "type": "mention",
            "offset": _utf16_len(text[: match.start()]),
            "length": _utf16_len(match.group(0)),
        })
    return entities


def _markdown_error(text: str, parse_mode: str) -> str | None:
    """A Telegram-like "can't parse entities" message for badly escaped Markdown, else None."""
    mode = parse_mode.lower()
    if mode == "markdownv2":
        escaped = False
        for i, ch in enumerate(text):
            if escaped:
                escaped = False
                continue
            if ch == "\\":
                escaped = True
                continue
            if ch in _MDV2_RESERVED and ch not in "*_~`|[]()":
                return (f"Bad Request: can't parse entities: Character '{ch}' is reserved and must be "
                        f"escaped with the preceding '\\' (offset {i})")
        for marker in ("*", "_", "~", "`", "||"):
            if _count_unescaped(text, marker) % 2:
                return "Bad Request: can't parse entities: Can't find end of the entity"
    elif mode == "markdown":
        for marker in ("*", "_", "`"):
            if text.count(marker) % 2:
                return "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 0"
    return None


def _count_unescaped(text: str, marker: str) -> int:
    count, i = 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(marker, i):
            count += 1
            i += len(marker)
            continue
        i += 1
    return count


class _Awaitable:
    """Lets ``fake.start()`` be used with or without ``await``."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        return self._value


class FakeTelegram:
    """A fake Bot API: start it, point PTB at :attr:`base_url`, push updates, inspect :attr:`sent`.

    Args:
        token: the bot token the server accepts (others get 401 like Telegram).
        username: the bot's username returned by ``getMe``.
        first_name: the bot's display name.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        username: str = DEFAULT_USERNAME,
        first_name: str = "党建助手",
    ) -> None:
        self.token = token
        self.username = username
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456789
        self.first_name = first_name
        self._lock = threading.RLock()
        self._ids = itertools.count(1)  # message ids
        self._update_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self._updates: list[dict] = []
        self._chats: dict[int | str, dict] = {}
        self._messages: dict[tuple[int | str, int], dict] = {}  # (chat_id, message_id) -> Message
        self._files: dict[str, tuple[str, bytes, str | None]] = {}  # file_id -> (path, content, name)
        self._failures: dict[str, list[_Failure]] = {}
        self._admins: dict[int | str, dict[int, str]] = {}
        #: every message the bot sent, in order (sendMessage and sendDocument)
        self.sent: list[SentMessage] = []
        #: sendChatAction calls as (chat_id, action)
        self.chat_actions: list[tuple[int | str, str]] = []
        #: answerCallbackQuery calls: dicts with callback_query_id, text, show_alert
        self.callback_answers: list[dict] = []
        #: the commands of the last setMyCommands: dicts with command and description
        self.my_commands: list[dict] = []
        #: every API call as (method, params), in order
        self.requests: list[tuple[str, dict]] = []
        #: the webhook set with setWebhook (url, secret_token, allowed_updates), or None
        self.webhook: dict | None = None
        #: the allowed_updates of the last getUpdates that gave one
        self.allowed_updates: list[str] | None = None
        #: file ids the bot downloaded through /file/bot<token>/<path>
        self.downloads: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._closing = False
        # plain asyncio loop (not uvloop); 1 s graceful shutdown so pending long polls cannot stall stop()
        self._server = LoopbackServer(
            self._build_app(), "fake-telegram", graceful_shutdown=1, loop="asyncio", on_loop=self._on_loop
        )

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if port := self._server.port:  # 0 until the first start(); kept after stop()
            return port
        raise RuntimeError("FakeTelegram is not started")

    @property
    def _origin(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self._server.running else IN_PROCESS_ORIGIN

    @property
    def base_url(self) -> str:
        """PTB's ``base_url`` (the token is appended): ``http://127.0.0.1:PORT/bot`` once started."""
        return f"{self._origin}/bot"

    @property
    def base_file_url(self) -> str:
        """PTB's ``base_file_url`` for downloads."""
        return f"{self._origin}/file/bot"

    def start(self) -> _Awaitable:
        """Start the server on a free loopback port; returns at once (``await`` optional)."""
        if not self._server.running:
            self._closing = False
            self._server.start()
        return _Awaitable(self)

    def stop(self) -> _Awaitable:
        """Stop the server (releases pending long polls); returns at once (``await`` optional)."""
        if self._server.running:
            self._closing = True
            self._notify()
            self._server.stop()
        return _Awaitable(None)

    def _on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the server's loop, before it serves: the loop and event that wake long polls."""
        self._loop = loop
        self._changed = asyncio.Event()

    async def __aenter__(self) -> FakeTelegram:
        return self.start()._value

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def __enter__(self) -> FakeTelegram:
        return self.start()._value

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all updates, recorded calls, files, chat members, failures and the webhook, so
        one started server can serve several tests (e.g. a module-scoped fixture)."""
        with self._lock:
            self._updates.clear()
            self._chats.clear()
            self._messages.clear()
            self._files.clear()
            self._failures.clear()
            self._admins.clear()
            self.sent.clear()
            self.chat_actions.clear()
            self.callback_answers.clear()
            self.my_commands = []
            self.requests.clear()
            self.webhook = None
            self.allowed_updates = None
            self.downloads.clear()

    # ------------------------------------------------------------------ configuration
    def set_chat_member_status(self, chat_id: int, user_id: int, status: str) -> None:
        """What ``getChatMember`` answers: "creator", "administrator", "member", "left", "kicked"."""
        with self._lock:
            self._admins.setdefault(chat_id, {})[user_id] = status

    def add_admin(self, chat_id: int, user_id: int, creator: bool = False) -> None:
        """Make ``user_id`` an administrator (or the creator) of ``chat_id`` for getChatMember."""
        self.set_chat_member_status(chat_id, user_id, "creator" if creator else "administrator")

    def fail_next(
        self,
        method: str,
        status: int = 500,
        description: str = "Internal Server Error",
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail (e.g. 500, or 429 with retry_after)."""
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(status, description, retry_after, times))

    def mark(self) -> int:
        """The current number of sent messages, for ``wait_for_messages(..., since=mark)``."""
        with self._lock:
            return len(self.sent)

    def calls(self, method: str) -> list[dict]:
        """Parameters of every call of ``method`` so far."""
        with self._lock:
            return [params for m, params in self.requests if m == method]

    @property
    def texts(self) -> list[str]:
        """The text (or caption, "" for none) of every sent message, in order."""
        with self._lock:
            return [m.text or "" for m in self.sent]

    def messages_to(self, chat_id: int | str) -> list[SentMessage]:
        """Messages the bot sent to one chat."""
        with self._lock:
            return [m for m in self.sent if m.chat_id == chat_id]

    def take_updates(self) -> list[dict]:
        """Remove and return the queued updates (in-process delivery, instead of getUpdates)."""
        with self._lock:
            updates, self._updates = self._updates, []
        return updates

    @property
    def pending_updates(self) -> int:
        """Updates pushed but not yet confirmed by a getUpdates offset."""
        with self._lock:
            return len(self._updates)

    # ------------------------------------------------------------------ pushing updates
    def push_update(self, update: dict) -> int:
        """Queue a raw Update dict (``update_id`` is assigned if missing); returns its update_id."""
        with self._lock:
            if "update_id" not in update:
                update = {"update_id": next(self._update_ids), **update}
            self._updates.append(update)
        self._notify()
        return update["update_id"]

    def text_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        chat_type: str = "private",
        entities: list[dict] | None = None,
        reply_to_bot: bool = False,
        reply_to_message_id: int | None = None,
        first_name: str = "测试用户",
        username: str | None = None,
    ) -> dict:
        """A Message dict as a user would send it (not queued; e.g. for :meth:`post_webhook` or
        :meth:`push_update`; :meth:`push_text` queues one).

        ``chat_type``: "private", "group" or "supergroup". Without ``entities`` they are computed
        like Telegram does: a ``bot_command`` for a leading ``/cmd[@bot]`` and a ``mention`` for
        each ``@username`` (e.g. ``@dangjian_test_bot``). ``reply_to_bot=True`` makes it a reply to
        the bot's last message in that chat (or to a synthetic bot message if there is none);
        ``reply_to_message_id`` replies to a given message.
        """
        message = self._user_message(chat_id, user_id, chat_type, first_name, username)
        message["text"] = text
        ents = auto_entities(text) if entities is None else entities
        if ents:
            message["entities"] = ents
        reply = self._reply_target(chat_id, chat_type, reply_to_bot, reply_to_message_id)
        if reply is not None:
            message["reply_to_message"] = reply
        return message

    def push_text(self, chat_id: int, user_id: int, text: str, *args: Any, **kwargs: Any) -> int:
        """Queue a text message; returns the update_id. The further arguments (``chat_type``,
        ``entities``, ``reply_to_bot``, ``reply_to_message_id``, ``first_name``, ``username``) are
        those of :meth:`text_message`."""
        return self.push_update({"message": self.text_message(chat_id, user_id, text, *args, **kwargs)})

    def push_callback(
        self,
        chat_id: int,
        user_id: int,
        data: str,
        message_id: int | None = None,
        chat_type: str | None = None,
        first_name: str = "测试用户",
    ) -> int:
        """Queue a button press on the bot's message ``message_id`` (default: its last message
        with a keyboard in that chat). Returns the update_id; the callback query id is
        ``str(update_id)`` (see :attr:`callback_answers`)."""
        with self._lock:
            if message_id is None:
                with_keyboard = [m for m in self.sent if m.chat_id == chat_id and m.reply_markup]
                message_id = with_keyboard[-1].message_id if with_keyboard else None
            message = self._messages.get((chat_id, message_id)) if message_id is not None else None
            if message is None:
                message = self._bot_message(chat_id, chat_type or self._chat_type(chat_id), "…", message_id)
            update_id = next(self._update_ids)
            update = {
                "update_id": update_id,
                "callback_query": {
                    "id": str(update_id),
                    "from": self._user(user_id, first_name, None),
                    "message": message,
                    "chat_instance": f"ci{chat_id}",
                    "data": data,
                },
            }
        return self.push_update(update)

    def push_document(
        self,
        chat_id: int,
        user_id: int,
        filename: str,
        content: bytes,
        caption: str | None = None,
        chat_type: str = "private",
        mime_type: str = "application/octet-stream",
        declared_size: int | None = None,
    ) -> int:
        """Queue a document message; the bot can getFile and download ``content``.

        ``declared_size`` overrides the ``file_size`` Telegram reports (to test size limits
        without a big payload)."""
        file_id, unique = self._store_file(content, f"documents/{filename}", filename)
        message = self._user_message(chat_id, user_id, chat_type, "测试用户", None)
        message["document"] = {
            "file_id": file_id, "file_unique_id": unique, "file_name": filename,
            "mime_type": mime_type, "file_size": len(content) if declared_size is None else declared_size,
        }
        if caption:
            message["caption"] = caption
            ents = auto_entities(caption)
            if ents:
                message["caption_entities"] = ents
        return self.push_update({"message": message})

    def push_photo(
        self,
        chat_id: int,
        user_id: int,
        caption: str | None = None,
        chat_type: str = "private",
        content: bytes = b"\x89PNG fake",
        reply_to_bot: bool = False,
    ) -> int:
        """Queue a photo (optionally with a caption, mentions in it get entities)."""
        file_id, unique = self._store_file(content, "photos/photo.jpg", None)
        message = self._user_message(chat_id, user_id, chat_type, "测试用户", None)
        message["photo"] = [{"file_id": file_id, "file_unique_id": unique, "width": 90, "height": 90,
                             "file_size": len(content)}]
        if caption:
            message["caption"] = caption
            ents = auto_entities(caption)
            if ents:
                message["caption_entities"] = ents
        reply = self._reply_target(chat_id, chat_type, reply_to_bot, None)
        if reply is not None:
            message["reply_to_message"] = reply
        return self.push_update({"message": message})

    def push_sticker(self, chat_id: int, user_id: int, chat_type: str = "private") -> int:
        """Queue a sticker (no text at all)."""
        file_id, unique = self._store_file(b"RIFF fake webp", "stickers/s.webp", None)
        message = self._user_message(chat_id, user_id, chat_type, "测试用户", None)
        message["sticker"] = {"file_id": file_id, "file_unique_id": unique, "type": "regular", "width": 512,
                              "height": 512, "is_animated": False, "is_video": False, "emoji": "👍"}
        return self.push_update({"message": message})

    def push_edited(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        message_id: int | None = None,
        chat_type: str = "private",
    ) -> int:
        """Queue an ``edited_message`` update (a user edited an earlier message)."""
        message = self.text_message(chat_id, user_id, text, chat_type)
        if message_id is not None:
            message["message_id"] = message_id
        message["edit_date"] = int(time.time())
        return self.push_update({"edited_message": message})

    def push_channel_post(self, chat_id: int, text: str) -> int:
        """Queue a ``channel_post`` update."""
        with self._lock:
            self._chats[chat_id] = {"id": chat_id, "type": "channel", "title": "测试频道"}
            message = {"message_id": next(self._ids), "date": int(time.time()), "chat": self._chats[chat_id],
                       "sender_chat": self._chats[chat_id], "text": text}
        return self.push_update({"channel_post": message})

    # ------------------------------------------------------------------ waiting
    def _check(
        self, want: int | Callable[[list[SentMessage]], bool], since: int, deadline: float
    ) -> list[SentMessage] | None:
        """The awaited messages, or None to keep waiting; TimeoutError once past ``deadline``."""
        with self._lock:
            new = list(self.sent[since:])
        if isinstance(want, int):
            result = new[:want] if len(new) >= want else None
        else:
            result = new if want(new) else None
        if result is None and time.monotonic() > deadline:
            raise TimeoutError(self._timeout_message(want, since))
        return result

    async def wait_for_messages(
        self,
        want: int | Callable[[list[SentMessage]], bool] = 1,
        timeout: float = 5.0,
        since: int = 0,
    ) -> list[SentMessage]:
        """Wait until the bot has sent messages; return them.

        ``want`` is a count (returns the first ``want`` messages sent after index ``since``) or a
        predicate over the list of messages sent after ``since`` (returns that whole list once it
        is true). Raises ``TimeoutError`` listing what was sent.
        """
        deadline = time.monotonic() + timeout
        while (result := self._check(want, since, deadline)) is None:
            await asyncio.sleep(0.01)
        return result

    def wait_for_messages_sync(
        self,
        want: int | Callable[[list[SentMessage]], bool] = 1,
        timeout: float = 5.0,
        since: int = 0,
    ) -> list[SentMessage]:
        """Blocking variant of :meth:`wait_for_messages` for sync tests."""
        deadline = time.monotonic() + timeout
        while (result := self._check(want, since, deadline)) is None:
            time.sleep(0.01)
        return result

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true (e.g. ``lambda: fake.callback_answers``)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.01)

    def _timeout_message(self, want: object, since: int) -> str:
        with self._lock:
            sent = [(m.chat_id, (m.text or "")[:80]) for m in self.sent[since:]]
        return f"bot did not send the expected messages ({want!r}); sent since {since}: {sent}"

    # ------------------------------------------------------------------ webhook delivery
    async def post_webhook(
        self, update: dict, secret_token: str | None = None, url: str | None = None
    ) -> httpx.Response:
        """POST an Update to the bot's webhook like Telegram does (default: the URL and secret
        given in setWebhook). ``update_id`` is assigned if missing."""
        with self._lock:
            if "update_id" not in update:
                update = {"update_id": next(self._update_ids), **update}
            webhook = dict(self.webhook or {})
        target = url or webhook.get("url")
        if not target:
            raise RuntimeError("no webhook set")
        secret = secret_token if secret_token is not None else webhook.get("secret_token")
        headers = {_SECRET_HEADER: secret} if secret else {}
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.post(target, json=update, headers=headers)

    # ------------------------------------------------------------------ internals: state
    def _notify(self) -> None:
        loop, event = self._loop, self._changed
        if loop is None or event is None:
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # loop already closed
            pass

    def _chat(self, chat_id: int | str, chat_type: str) -> dict:
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None or chat["type"] != chat_type:
                chat = {"id": chat_id, "type": chat_type}
                if chat_type == "private":
                    chat["first_name"] = "测试用户"
                else:
                    chat["title"] = "测试群" if chat_type != "channel" else "测试频道"
                self._chats[chat_id] = chat
            return chat

    def _chat_type(self, chat_id: int | str) -> str:
        with self._lock:
            chat = self._chats.get(chat_id)
        if chat is not None:
            return chat["type"]
        return "supergroup" if isinstance(chat_id, int) and chat_id < 0 else "private"

    @staticmethod
    def _user(user_id: int, first_name: str, username: str | None) -> dict:
        user = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        return user

    def _bot_user(self) -> dict:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.first_name, "username": self.username}

    def _user_message(
        self, chat_id: int, user_id: int, chat_type: str, first_name: str, username: str | None
    ) -> dict:
        if chat_type not in {"private", "group", "supergroup"}:
            raise ValueError("chat_type must be private, group or supergroup (see push_channel_post)")
        with self._lock:
            message = {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "chat": self._chat(chat_id, chat_type),
                "from": self._user(user_id, first_name, username),
            }
            self._messages[(chat_id, message["message_id"])] = message  # a possible reply target
            return message

    def _bot_message(self, chat_id: int | str, chat_type: str, text: str, message_id: int | None = None) -> dict:
        with self._lock:
            message = {
                "message_id": message_id if message_id is not None else next(self._ids),
                "date": int(time.time()),
                "chat": self._chat(chat_id, chat_type),
                "from": self._bot_user(),
                "text": text,
            }
            self._messages[(chat_id, message["message_id"])] = message
            return message

    def _reply_target(
        self, chat_id: int, chat_type: str, reply_to_bot: bool, reply_to_message_id: int | None
    ) -> dict | None:
        with self._lock:
            if reply_to_message_id is not None:
                target = self._messages.get((chat_id, reply_to_message_id)) or self._bot_message(
                    chat_id, chat_type, "…", reply_to_message_id
                )
            elif not reply_to_bot:
                return None
            else:
                mine = [m for m in self.sent if m.chat_id == chat_id]
                if mine:
                    target = self._messages[(chat_id, mine[-1].message_id)]
                else:
                    target = self._bot_message(chat_id, chat_type, "您好！我是党建助手。")
            return {k: v for k, v in target.items() if k != "reply_to_message"}  # Telegram nests one level

    def _store_file(self, content: bytes, path: str, name: str | None) -> tuple[str, str]:
        with self._lock:
            n = next(self._file_ids)
            file_id = f"FILE{n:04d}"
            # Telegram's file_path never contains the user's file name (which may hold "../").
            folder = path.split("/", 1)[0]
            suffix = "." + name.rsplit(".", 1)[-1] if name and "." in name and "/" not in name.rsplit(".", 1)[-1] else ""
            stored_path = f"{folder}/file_{n}{suffix}"
            self._files[file_id] = (stored_path, content, name)
        return file_id, f"U{n:04d}"

    # ------------------------------------------------------------------ internals: HTTP
    def _build_app(self) -> Starlette:
        return Starlette(routes=[
            Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"]),
            Route("/file/bot{token}/{path:path}", self._download, methods=["GET"]),
        ])

    async def _download(self, request: Request) -> Response:
        status, content = self.download(request.path_params["token"], request.path_params["path"])
        if status != 200:
            return JSONResponse({"ok": False, "error_code": status, "description": "Not Found"}, status)
        return Response(content, media_type="application/octet-stream")

    async def _endpoint(self, request: Request) -> Response:
        params, files = await _read_params(request)
        status, body = await self.call(request.path_params["token"], request.path_params["method"], params, files)
        return JSONResponse(body, status)

    def download(self, token: str, path: str) -> tuple[int, bytes]:
        """(HTTP status, content) of ``/file/bot<token>/<path>``."""
        if token != self.token:
            return 401, b""
        with self._lock:
            for file_id, (stored_path, content, _name) in self._files.items():
                if stored_path == path:
                    self.downloads.append(file_id)
                    return 200, content
        return 404, b""

    async def call(self, token: str, method: str, params: dict[str, str],
                   files: dict[str, tuple[str, bytes, str | None]]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of one Bot API call, as Telegram would answer it."""
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        with self._lock:
            self.requests.append((method, params))
        try:
            self._maybe_fail(method)
            handler = getattr(self, f"_api_{method.lower()}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = handler(params, files)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as err:
            body: dict[str, Any] = {"ok": False, "error_code": err.status, "description": err.description}
            if err.retry_after is not None:
                body["parameters"] = {"retry_after": err.retry_after}
            return err.status, body
        return 200, {"ok": True, "result": result}

    def _maybe_fail(self, method: str) -> None:
        with self._lock:
            queue = self._failures.get(method)
            if not queue:
                return
            failure = queue[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                queue.pop(0)
        raise ApiError(failure.status, failure.description, failure.retry_after)

    # ------------------------------------------------------------------ API methods
    def _api_getme(self, params: dict, files: dict) -> dict:
        return {**self._bot_user(), "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    async def _api_getupdates(self, params: dict, files: dict) -> list[dict]:
        if self.webhook:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                "use deleteWebhook to delete the webhook first")
        offset = _int(params.get("offset"), 0)
        limit = _int(params.get("limit"), 100) or 100
        timeout = float(params.get("timeout") or 0)
        if "allowed_updates" in params:
            self.allowed_updates = _json(params["allowed_updates"])
        assert self._changed is not None
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            with self._lock:
                if offset:
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                pending = self._updates[:limit]
            remaining = deadline - time.monotonic()
            if pending or self._closing or remaining <= 0:
                return pending
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _api_deletewebhook(self, params: dict, files: dict) -> bool:
        # As in the Bot API, deleting is setting an empty URL.
        return self._api_setwebhook({"drop_pending_updates": params.get("drop_pending_updates", "")}, files)

    def _api_setwebhook(self, params: dict, files: dict) -> bool:
        with self._lock:
            self.webhook = {
                "url": params.get("url", ""),
                "secret_token": params.get("secret_token"),
                "allowed_updates": _json(params["allowed_updates"]) if "allowed_updates" in params else None,
            }
            if not self.webhook["url"]:
                self.webhook = None
            if _bool(params.get("drop_pending_updates")):
                self._updates.clear()
        return True

    def _api_setmycommands(self, params: dict, files: dict) -> bool:
        commands = _json(params.get("commands", "[]"))
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: commands must be a list of at most 100 commands")
        for c in commands:
            if not _BOT_COMMAND_NAME_RE.match(str(c.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(c.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        with self._lock:
            self.my_commands = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    def _api_sendchataction(self, params: dict, files: dict) -> bool:
        chat_id = _chat_id(params.get("chat_id"))
        with self._lock:
            self.chat_actions.append((chat_id, params.get("action", "")))
        return True

    def _api_sendmessage(self, params: dict, files: dict) -> dict:
        chat_id = _chat_id(params.get("chat_id"))
        text, parse_mode, markup = _check_text(params, too_long="Bad Request: message is too long")
        return self._record(
            "sendMessage", chat_id, text, markup, parse_mode, _reply_to(params), None, params
        )

    def _api_senddocument(self, params: dict, files: dict) -> dict:
        chat_id = _chat_id(params.get("chat_id"))
        upload = files.get("document")
        if upload is None:
            raise ApiError(400, "Bad Request: there is no document in the request")
        caption = params.get("caption")
        if caption is not None and len(caption) > MAX_CAPTION:
            raise ApiError(400, "Bad Request: message caption is too long")
        parse_mode = params.get("parse_mode")
        if caption and parse_mode and (error := _markdown_error(caption, parse_mode)):
            raise ApiError(400, error)
        markup = _check_markup(params.get("reply_markup"))
        filename, content, mime = upload
        document = SentDocument(filename=filename, content=content, mime_type=mime)
        return self._record(
            "sendDocument", chat_id, caption, markup, parse_mode, _reply_to(params), document, params
        )

    def _record(
        self,
        method: str,
        chat_id: int | str,
        text: str | None,
        markup: dict | None,
        parse_mode: str | None,
        reply_to: int | None,
        document: SentDocument | None,
        params: dict,
    ) -> dict:
        with self._lock:
            message = self._bot_message(chat_id, self._chat_type(chat_id), text or "")
            if document is not None:
                message.pop("text")
                file_id, unique = self._store_file(document.content, f"documents/{document.filename}",
                                                   document.filename)
                message["document"] = {"file_id": file_id, "file_unique_id": unique,
                                       "file_name": document.filename, "file_size": len(document.content)}
                if text:
                    message["caption"] = text
            if markup:
                message["reply_markup"] = markup
            if reply_to is not None:
                target = self._messages.get((chat_id, reply_to))
                if target is not None:
                    message["reply_to_message"] = {k: v for k, v in target.items() if k != "reply_to_message"}
            self.sent.append(SentMessage(
                method=method, chat_id=chat_id, message_id=message["message_id"], text=text,
                reply_markup=markup, parse_mode=parse_mode, reply_to_message_id=reply_to,
                document=document, params=params, payload=message,
            ))
            return message

    def _api_answercallbackquery(self, params: dict, files: dict) -> bool:
        text = params.get("text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        with self._lock:
            self.callback_answers.append({
                "callback_query_id": params.get("callback_query_id"),
                "text": text,
                "show_alert": _bool(params.get("show_alert")),
            })
        return True

    def _api_getchatmember(self, params: dict, files: dict) -> dict:
        chat_id = _chat_id(params.get("chat_id"))
        user_id = _int(params.get("user_id"), 0)
        with self._lock:
            status = self._admins.get(chat_id, {}).get(user_id, "member")
        user = self._user(user_id, "测试用户", None)
        if status == "creator":
            return {"status": "creator", "user": user, "is_anonymous": False}
        if status == "administrator":
            rights = dict.fromkeys((
                "can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages",
                "can_manage_video_chats", "can_restrict_members", "can_promote_members",
                "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
                "can_delete_stories",
            ), False)
            rights.update(can_manage_chat=True, can_delete_messages=True, can_invite_users=True)
            return {"status": "administrator", "user": user, **rights}
        if status == "kicked":
            return {"status": "kicked", "user": user, "until_date": 0}
        return {"status": status, "user": user}

    def _api_getfile(self, params: dict, files: dict) -> dict:
        file_id = params.get("file_id", "")
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, content, _name = stored
        return {"file_id": file_id, "file_unique_id": "U" + file_id[4:], "file_size": len(content),
                "file_path": path}

# ---------------------------------------------------------------------- request parsing
async def _read_params(request: Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str | None]]]:
    """Parameters as strings (PTB JSON-encodes non-string values) and uploaded files."""
    params: dict[str, str] = dict(request.query_params)
    files: dict[str, tuple[str, bytes, str | None]] = {}
    if request.method != "POST":
        return params, files
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        data = json.loads(body or b"{}")
        params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})
    elif ctype.startswith("multipart/form-data"):
        parser = email.parser.BytesParser(policy=email.policy.HTTP)
        message = parser.parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if filename is not None:
                files[str(name)] = (filename, payload, part.get_content_type())
            else:
                params[str(name)] = payload.decode("utf-8")
    elif body:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return params, files


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _int(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    return int(value)


def _bool(value: Any) -> bool:
    return str(value).lower() in {"true", "1"}


def _chat_id(value: Any) -> int | str:
    if value is None:
        raise ApiError(400, "Bad Request: chat_id is empty")
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def _reply_to(params: dict) -> int | None:
    if "reply_parameters" in params:
        reply = _json(params["reply_parameters"])
        if isinstance(reply, dict) and "message_id" in reply:
            return int(reply["message_id"])
    if "reply_to_message_id" in params:
        return _int(params["reply_to_message_id"], 0) or None
    return None


def _check_text(params: dict, too_long: str) -> tuple[str, str | None, dict | None]:
    """(text, parse_mode, reply_markup) of a sendMessage/editMessageText call, checked like Telegram:
    400 for an empty text, one over 4096 characters (``too_long``: each method words it its own
    way), malformed Markdown or a bad keyboard."""
    text = params.get("text", "")
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if len(text) > MAX_TEXT:
        raise ApiError(400, too_long)
    parse_mode = params.get("parse_mode")
    if parse_mode and (error := _markdown_error(text, parse_mode)):
        raise ApiError(400, error)
    return text, parse_mode, _check_markup(params.get("reply_markup"))


def _check_markup(raw: str | None) -> dict | None:
    if raw is None:
        return None
    markup = _json(raw)
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard", []):
        for button in row:
            if not str(button.get("text", "")).strip():
                raise ApiError(400, "Bad Request: BUTTON_TEXT_INVALID")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup
