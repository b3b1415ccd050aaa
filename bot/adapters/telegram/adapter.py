"""Telegram adapter: python-telegram-bot v22 ↔ the platform-neutral core.

Long polling by default; a webhook (PTB's built-in tornado server, secret header checked) when
``DANGJIAN_TELEGRAM_WEBHOOK_URL`` is set. Updates of one chat are handled in order, different
chats concurrently. Replies are sent as plain text (no parse mode, so Chinese citations never
fail with "can't parse entities"), split to Telegram's 4096 characters, buttons on the last chunk.
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatMemberStatus, ChatType as TgChatType
from telegram.error import InvalidToken, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.core.engine import Core, parse_command
from bot.core.models import (
    Button,
    Capabilities,
    ChatRef,
    ChatType,
    IncomingFile,
    IncomingMessage,
    OutgoingMessage,
)
from bot.core.split import split_text
from bot.settings import Settings
from bot.store.db import Database

log = logging.getLogger(__name__)

PLATFORM = "telegram"
CAPABILITIES = Capabilities(buttons=True, files=True, max_chars=4096)

MAX_DOWNLOAD_BYTES = 5 * 1024 * 1024
MAX_CAPTION_CHARS = 1024
MAX_TOAST_CHARS = 200
MAX_RETRY_AFTER_SECONDS = 30.0
MAX_CONCURRENT_UPDATES = 64
ALLOWED_UPDATES = ["message", "callback_query"]  # edited messages and channel posts: not wanted

NON_TEXT_HINT = "目前只能回答文字问题，请用文字描述您的问题。"
FILE_TOO_BIG = "文件太大了（上限 5 MB），无法处理。"
FILE_DOWNLOAD_FAILED = "文件下载失败，请稍后再试。"

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
#: loggers that may print the token (request URLs) or the webhook secret (call parameters)
_SENSITIVE_LOGGERS = ("httpx", "telegram.Bot", "telegram.ext.ExtBot")
_ADMIN_STATUSES = {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR}

T = TypeVar("T")


def derive_base_file_url(base_url: str) -> str:
    """``…/bot`` → ``…/file/bot`` (Telegram's layout; also the fake server's)."""
    base = base_url.rstrip("/")
    if base.endswith("/bot"):
        return base[: -len("/bot")] + "/file/bot"
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}/file/bot"


_MARK = "\x00"


def strip_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """Remove (offset, length) spans, given in UTF-16 code units like Telegram entities, together
    with the punctuation a mention leaves behind (``请问@bot，党组…`` → ``请问党组…``)."""
    raw = text.encode("utf-16-le")
    mark = _MARK.encode("utf-16-le")
    for offset, length in sorted(spans, reverse=True):
        raw = raw[: offset * 2] + mark + raw[(offset + length) * 2 :]
    cleaned = raw.decode("utf-16-le", errors="ignore")

    def join(match: re.Match[str]) -> str:
        before = cleaned[match.start() - 1] if match.start() > 0 else ""
        after = cleaned[match.end()] if match.end() < len(cleaned) else ""
        cjk = before > "\u2e7f" and after > "\u2e7f"  # no space between Chinese characters
        return "" if cjk or not before or not after else " "

    cleaned = re.sub(rf"[ \t]*{_MARK}[\s,，:：、]*", join, cleaned)
    return cleaned.strip()


@dataclass(frozen=True)
class Addressing:
    """Whether a message is for the bot, and its text without the bot's mention."""

    addressed: bool
    text: str
    command: str | None  # the command word when the text is a command for this bot


class _RedactSecrets(logging.Filter):
    """Replace the bot token and webhook secret in log records of chatty HTTP loggers."""

    def __init__(self, secrets_: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets_ if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - malformed record, leave it alone
            return True
        if any(s in message for s in self._secrets):
            for s in self._secrets:
                message = message.replace(s, "<redacted>")
            record.msg, record.args = message, ()
        return True


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Process updates concurrently, but those of one chat one after another, in order."""

    def __init__(self, max_concurrent_updates: int = MAX_CONCURRENT_UPDATES) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        lock, users = self._locks.get(chat.id, (asyncio.Lock(), 0))
        self._locks[chat.id] = (lock, users + 1)
        try:
            async with lock:
                await coroutine
        finally:
            lock, users = self._locks[chat.id]
            if users <= 1:
                del self._locks[chat.id]
            else:
                self._locks[chat.id] = (lock, users - 1)

    async def initialize(self) -> None:
        """Nothing to allocate."""

    async def shutdown(self) -> None:
        """Nothing to free."""


class TelegramAdapter:
    """Runs one PTB :class:`Application` and implements the core's ``Outbound`` for pushes."""

    capabilities = CAPABILITIES

    def __init__(self, settings: Settings, core: Core, db: Database, *, poll_timeout: float = 10.0) -> None:
        if not settings.telegram_token:
            raise ValueError("DANGJIAN_TELEGRAM_TOKEN is not set")
        secret = settings.telegram_webhook_secret
        if secret is not None and not _SECRET_RE.match(secret):
            raise ValueError("DANGJIAN_TELEGRAM_WEBHOOK_SECRET: use 1–256 characters of A-Z a-z 0-9 _ -")
        self._settings = settings
        self._core = core
        self._db = db
        self._token = settings.telegram_token
        self._poll_timeout = poll_timeout
        self._webhook_secret = secret or secrets.token_urlsafe(32)
        self._app: Application | None = None
        self._redactor = _RedactSecrets([self._token, self._webhook_secret])
        self._username = ""
        self._bot_id = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def webhook_mode(self) -> bool:
        return bool(self._settings.telegram_webhook_url)

    @property
    def username(self) -> str:
        """The bot's username from getMe (empty before :meth:`start`)."""
        return self._username

    @property
    def application(self) -> Application:
        if self._app is None:
            raise RuntimeError("Telegram adapter is not running")
        return self._app

    def _build(self) -> Application:
        s = self._settings
        app = (
            Application.builder()
            .token(self._token)
            .base_url(s.telegram_base_url)
            .base_file_url(s.telegram_base_file_url or derive_base_file_url(s.telegram_base_url))
            .concurrent_updates(PerChatUpdateProcessor())
            .build()
        )
        if self.webhook_mode:
            app.add_handler(TypeHandler(Update, self._claim_update), group=-1)
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        app.add_handler(CallbackQueryHandler(self._on_callback))
        app.add_error_handler(self._on_error)
        return app

    async def start(self) -> None:
        """Connect (getMe), register the command menu, and start polling or the webhook."""
        if self._app is not None:
            raise RuntimeError("Telegram adapter already started")
        for name in _SENSITIVE_LOGGERS:
            logging.getLogger(name).addFilter(self._redactor)
        app = self._build()
        try:
            try:
                await app.initialize()
            except InvalidToken:
                raise RuntimeError("Telegram rejected the bot token (DANGJIAN_TELEGRAM_TOKEN)") from None
            self._username = app.bot.username or ""
            self._bot_id = app.bot.id
            await self._register_commands(app)
            await app.start()
            assert app.updater is not None
            if self.webhook_mode:
                url = self._settings.telegram_webhook_url or ""
                await app.updater.start_webhook(
                    listen=self._settings.telegram_webhook_listen,
                    port=self._settings.telegram_webhook_port,
                    url_path=urlsplit(url).path.lstrip("/"),
                    webhook_url=url,
                    secret_token=self._webhook_secret,
                    allowed_updates=ALLOWED_UPDATES,
                )
                log.info("Telegram bot @%s receiving updates by webhook", self._username)
            else:
                await app.updater.start_polling(timeout=timedelta(seconds=self._poll_timeout), allowed_updates=ALLOWED_UPDATES)
                log.info("Telegram bot @%s polling for updates", self._username)
        except BaseException:
            await _stop_application(app)
            self._remove_redactor()
            raise
        self._app = app

    async def stop(self) -> None:
        """Stop receiving, finish the updates in progress, close the HTTP clients."""
        app, self._app = self._app, None
        if app is None:
            return
        try:
            await _stop_application(app)
        finally:
            self._remove_redactor()
            log.info("Telegram adapter stopped")

    def _remove_redactor(self) -> None:
        for name in _SENSITIVE_LOGGERS:
            logging.getLogger(name).removeFilter(self._redactor)

    async def _register_commands(self, app: Application) -> None:
        commands = [
            BotCommand(word, description[:256])
            for word, description in self._core.commands_for_menu()
            if _COMMAND_NAME_RE.match(word) and description.strip()
        ]
        try:
            await app.bot.set_my_commands(commands[:100])
        except TelegramError as exc:
            log.warning("setMyCommands failed: %s", exc)

    # ------------------------------------------------------------------ incoming
    async def _claim_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Webhook mode: each update id is handled by one replica, once."""
        try:
            first = await asyncio.to_thread(self._db.claim_message, PLATFORM, str(update.update_id))
        except Exception:
            log.exception("could not record Telegram update %s; handling it anyway", update.update_id)
            return
        if not first:
            log.info("Telegram update %s already handled; skipped", update.update_id)
            raise ApplicationHandlerStop

    def addressing(self, message: Message, private: bool) -> Addressing | None:
        """Is ``message`` for this bot? None for a command addressed to another bot."""
        text = message.text if message.text is not None else (message.caption or "")
        entities = message.parse_entities() if message.text is not None else message.parse_caption_entities()
        username = self._username.lower()
        command = parse_command(text)
        if text.lstrip().startswith("/"):
            head = text.strip().split(maxsplit=1)[0]
            if "@" in head and head.split("@", 1)[1].lower() != username:
                return None
        spans: list[tuple[int, int]] = []
        for entity, entity_text in entities.items():
            if entity.type == MessageEntity.MENTION and entity_text.lower() == f"@{username}":
                spans.append((entity.offset, entity.length))
            elif entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == self._bot_id:
                spans.append((entity.offset, entity.length))
        if not spans and not entities and username:
            # a client that sent no entities: fall back to the plain text
            for match in re.finditer(rf"(?<![A-Za-z0-9_])@{re.escape(username)}(?![A-Za-z0-9_])", text, re.I):
                start = len(text[: match.start()].encode("utf-16-le")) // 2
                spans.append((start, len(match.group(0).encode("utf-16-le")) // 2))
        reply = message.reply_to_message
        is_reply = bool(reply and reply.from_user and reply.from_user.id == self._bot_id)
        clean = strip_spans(text, spans) if spans else text.strip()
        addressed = private or command is not None or bool(spans) or is_reply
        return Addressing(addressed=addressed, text=clean, command=command[0] if command else None)

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A new message (not edited, not a channel post)."""
        message = update.message
        if message is None or message.from_user is None or message.chat.type == TgChatType.CHANNEL:
            return
        chat, user = message.chat, message.from_user
        private = chat.type == TgChatType.PRIVATE
        addressing = self.addressing(message, private)
        if addressing is None or not addressing.addressed:
            return  # group chatter, or a command for another bot
        reply_to = None if private else message.message_id
        raw_text = message.text if message.text is not None else message.caption
        incoming_file: IncomingFile | None = None
        if message.document is not None:
            incoming_file, problem = await self._download(message)
            if problem is not None:
                await self._deliver(chat.id, [OutgoingMessage(text=problem)], reply_to=reply_to)
                return
        elif not raw_text:
            await self._deliver(chat.id, [OutgoingMessage(text=NON_TEXT_HINT)], reply_to=reply_to)
            return
        is_chat_admin = False
        if not private and addressing.command in self._managing_commands():
            if message.sender_chat is not None and message.sender_chat.id == chat.id:
                is_chat_admin = True  # an anonymous group admin posting as the group
            else:
                is_chat_admin = await self._is_chat_admin(chat.id, user.id)
        await self._typing(chat.id)
        msg = IncomingMessage(
            platform=PLATFORM,
            chat_id=str(chat.id),
            chat_type=ChatType.PRIVATE if private else ChatType.GROUP,
            user_id=str(user.id),
            user_name=user.full_name or user.username,
            text=addressing.text,
            message_id=str(message.message_id),
            addressed=True,
            sender_is_chat_admin=is_chat_admin,
            file=incoming_file,
        )
        replies = await self._core.handle(msg, CAPABILITIES)
        await self._deliver(chat.id, replies, reply_to=reply_to)

    async def _on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An inline button press: answer the query (always), then send the replies."""
        query = update.callback_query
        if query is None:
            return
        replies: list[OutgoingMessage] = []
        try:
            pressed = query.message
            if query.data is None or pressed is None:
                return
            chat = pressed.chat
            msg = IncomingMessage(
                platform=PLATFORM,
                chat_id=str(chat.id),
                chat_type=ChatType.PRIVATE if chat.type == TgChatType.PRIVATE else ChatType.GROUP,
                user_id=str(query.from_user.id),
                user_name=query.from_user.full_name or query.from_user.username,
                text="",
                message_id=str(pressed.message_id),
                addressed=True,
                callback_data=query.data,
            )
            replies = await self._core.handle(msg, CAPABILITIES)
        finally:
            toast = replies[0].toast if replies and replies[0].toast else None
            try:
                await query.answer(text=toast[:MAX_TOAST_CHARS] if toast else None)
            except TelegramError as exc:
                log.warning("answerCallbackQuery failed: %s", exc)
        visible = [m for m in replies if m.text.strip() or m.file is not None]
        if visible and query.message is not None:
            await self._deliver(query.message.chat.id, visible)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("error while handling Telegram update %s", update_id, exc_info=context.error)

    def _managing_commands(self) -> set[str]:
        """Feature commands (meetings, checklists, admin): the ones that may need group rights."""
        return {word for feature in self._core.features for word in feature.commands}

    async def _is_chat_admin(self, chat_id: int, user_id: int) -> bool:
        try:
            member = await self.application.bot.get_chat_member(chat_id, user_id)
        except TelegramError as exc:
            log.warning("getChatMember failed: %s", exc)
            return False
        return member.status in _ADMIN_STATUSES

    async def _typing(self, chat_id: int) -> None:
        try:
            await self.application.bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            log.debug("sendChatAction failed: %s", exc)

    async def _download(self, message: Message) -> tuple[IncomingFile | None, str | None]:
        """The document of ``message`` as an :class:`IncomingFile`, or a problem to tell the user."""
        document = message.document
        assert document is not None
        if document.file_size is not None and document.file_size > MAX_DOWNLOAD_BYTES:
            return None, FILE_TOO_BIG
        try:
            tg_file = await document.get_file()
            if tg_file.file_size is not None and tg_file.file_size > MAX_DOWNLOAD_BYTES:
                return None, FILE_TOO_BIG
            content = bytes(await tg_file.download_as_bytearray())
        except TelegramError as exc:
            log.warning("document download failed: %s", exc)
            return None, FILE_DOWNLOAD_FAILED
        if len(content) > MAX_DOWNLOAD_BYTES:
            return None, FILE_TOO_BIG
        filename = document.file_name or f"{document.file_unique_id}.bin"
        return IncomingFile(filename=filename, content=content), None

    # ------------------------------------------------------------------ outgoing
    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        """Outbound: push ``messages`` to ``ref.chat_id``; raises if Telegram refuses."""
        chat_id: int | str = int(ref.chat_id) if ref.chat_id.lstrip("-").isdigit() else ref.chat_id
        await self._deliver(chat_id, messages, raise_errors=True)

    async def _deliver(
        self,
        chat_id: int | str,
        messages: list[OutgoingMessage],
        *,
        reply_to: int | None = None,
        raise_errors: bool = False,
    ) -> None:
        """Send each message: text chunks ≤ 4096, keyboard on the last chunk, files as documents."""
        bot = self.application.bot
        for message in messages:
            markup = _keyboard(message.buttons)
            sends: list[Callable[[], Awaitable[object]]] = []
            text = message.text.strip("\n")
            caption: str | None = None
            if message.file is not None and len(text) <= MAX_CAPTION_CHARS:
                caption = text or None
                text = ""
            chunks = split_text(text, max_chars=CAPABILITIES.max_chars)
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1 and message.file is None
                sends.append(_bind(bot.send_message, chat_id=chat_id, text=chunk,
                                   reply_markup=markup if last else None))
            if message.file is not None:
                document = InputFile(message.file.content, filename=message.file.filename)
                sends.append(_bind(bot.send_document, chat_id=chat_id, document=document,
                                   caption=caption, reply_markup=markup))
            elif not chunks and markup is not None:
                log.warning("dropping buttons without text for chat %s", chat_id)
            for send in sends:
                try:
                    await self._with_retry(send, reply_to)
                except TelegramError as exc:
                    if raise_errors:
                        raise
                    log.warning("sending to Telegram chat %s failed: %s", chat_id, exc)
                    return
                reply_to = None  # only the first message quotes the question

    async def _with_retry(self, send: Callable[..., Awaitable[T]], reply_to: int | None) -> T:
        kwargs: dict[str, Any] = {}
        if reply_to is not None:
            kwargs["reply_parameters"] = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
        try:
            return await send(**kwargs)
        except RetryAfter as exc:
            delay = _retry_seconds(exc)
            if delay > MAX_RETRY_AFTER_SECONDS:
                raise
            log.info("Telegram flood control: retrying in %.0f s", delay)
            await asyncio.sleep(delay)
            return await send(**kwargs)


def _retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns about the int/timedelta transition
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _bind(func: Callable[..., Awaitable[T]], **bound: Any) -> Callable[..., Awaitable[T]]:
    async def call(**extra: Any) -> T:
        return await func(**bound, **extra)

    return call


def _keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    keyboard = [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows if row]
    return InlineKeyboardMarkup(keyboard) if keyboard else None


async def _stop_application(app: Application) -> None:
    try:
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
    finally:
        try:
            await app.shutdown()
        except Exception:  # pragma: no cover - best effort on the way out
            log.exception("error while shutting down the Telegram application")


async def run(settings: Settings, core: Core, db: Database) -> None:
    """Serve Telegram until cancelled; registers the adapter for pushes (reminders)."""
    if not settings.telegram_token:
        raise ValueError("DANGJIAN_TELEGRAM_TOKEN is not set")
    adapter = TelegramAdapter(settings, core, db)
    await adapter.start()
    core.outbound.register(PLATFORM, adapter)
    try:
        await asyncio.Event().wait()
    finally:
        await adapter.stop()
