"""Telegram adapter: python-telegram-bot v22 ↔ the platform-neutral core.

Long polling by default; a webhook (PTB's built-in server, secret header checked) when
``DANGJIAN_TELEGRAM_WEBHOOK_URL`` is set. Updates of one chat are handled in order, different
chats concurrently. Replies are sent as plain text (no parse mode, so Chinese citations never
fail with "can't parse entities"), split to Telegram's 4096 characters, buttons on the last chunk.
Flood control (429 with ``retry_after``) is PTB's :class:`~telegram.ext.AIORateLimiter`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatMemberStatus, ChatType as TgChatType
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import BaseRequest

from bot.adapters.delivery import SeenMessages, first_delivery, protect
from bot.adapters.telegram.addressing import addressing
from bot.core.engine import Core
from bot.core.models import Button, Capabilities, ChatRef, ChatType, IncomingFile, IncomingMessage, OutgoingMessage, Problem
from bot.core.split import split_text
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "telegram"
CAPABILITIES = Capabilities(buttons=True, files=True, max_chars=4096)

MAX_DOWNLOAD_BYTES = 5 * 1024 * 1024
MAX_CAPTION_CHARS = 1024
MAX_TOAST_CHARS = 200
MAX_CONCURRENT_UPDATES = 64
ALLOWED_UPDATES = ["message", "callback_query"]  # edited messages and channel posts: not wanted

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_ADMIN_STATUSES = {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR}


def derive_base_file_url(base_url: str) -> str:
    """``…/bot`` → ``…/file/bot`` (Telegram's layout; also the fake server's)."""
    base = base_url.rstrip("/")
    if base.endswith("/bot"):
        return base[: -len("/bot")] + "/file/bot"
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}/file/bot"


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
    """Runs one PTB :class:`Application` and implements the core's ``Outbound`` for pushes.

    ``request`` replaces PTB's HTTP client (tests pass a recording one)."""

    capabilities = CAPABILITIES

    def __init__(self, settings: Settings, core: Core, seen: SeenMessages, *, poll_timeout: float = 10.0,
                 request: BaseRequest | None = None) -> None:
        if not settings.telegram_token:
            raise ValueError("DANGJIAN_TELEGRAM_TOKEN is not set")
        secret = settings.telegram_webhook_secret
        if secret is not None and not _SECRET_RE.match(secret):
            raise ValueError("DANGJIAN_TELEGRAM_WEBHOOK_SECRET: use 1–256 characters of A-Z a-z 0-9 _ -")
        self._settings = settings
        self._core = core
        self._seen = seen
        self._token = settings.telegram_token
        self._poll_timeout = poll_timeout
        self._request = request
        self._webhook_secret = secret or secrets.token_urlsafe(32)
        protect(self._token, self._webhook_secret)
        self._app: Application | None = None
        self._username = ""
        self._bot_id = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def webhook_mode(self) -> bool:
        return bool(self._settings.telegram_webhook_url)

    @property
    def username(self) -> str:
        """The bot's username from getMe (empty before :meth:`initialize`)."""
        return self._username

    @property
    def application(self) -> Application:
        if self._app is None:
            raise RuntimeError("Telegram adapter is not running")
        return self._app

    def _build(self) -> Application:
        s = self._settings
        builder = (
            Application.builder()
            .token(self._token)
            .base_url(s.telegram_base_url)
            .base_file_url(s.telegram_base_file_url or derive_base_file_url(s.telegram_base_url))
            .concurrent_updates(PerChatUpdateProcessor())
            .rate_limiter(AIORateLimiter(max_retries=1))
        )
        if self._request is not None:
            builder = builder.request(self._request).get_updates_request(self._request)
        app = builder.build()
        if self.webhook_mode:
            app.add_handler(TypeHandler(Update, self._claim_update), group=-1)
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        app.add_handler(CallbackQueryHandler(self._on_callback))
        app.add_error_handler(self._on_error)
        return app

    async def initialize(self) -> Application:
        """Connect (getMe) and register the command menu; updates can then be processed."""
        if self._app is not None:
            raise RuntimeError("Telegram adapter already started")
        app = self._build()
        try:
            await app.initialize()
            self._username = app.bot.username or ""
            self._bot_id = app.bot.id
            await self._register_commands(app)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await app.shutdown()
            if isinstance(exc, InvalidToken):
                raise RuntimeError("Telegram rejected the bot token (DANGJIAN_TELEGRAM_TOKEN)") from None
            raise
        self._app = app
        return app

    async def start(self) -> None:
        """:meth:`initialize`, then start polling or the webhook."""
        app = await self.initialize()
        try:
            await app.start()
            assert app.updater is not None
            if self.webhook_mode:
                url = self._settings.telegram_webhook_url or ""
                await app.updater.start_webhook(
                    listen=self._settings.telegram_webhook_listen, port=self._settings.telegram_webhook_port,
                    url_path=urlsplit(url).path.lstrip("/"), webhook_url=url,
                    secret_token=self._webhook_secret, allowed_updates=ALLOWED_UPDATES,
                )
                log.info("Telegram bot @%s receiving updates by webhook", self._username)
            else:
                await app.updater.start_polling(timeout=timedelta(seconds=self._poll_timeout),
                                                allowed_updates=ALLOWED_UPDATES)
                log.info("Telegram bot @%s polling for updates", self._username)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop receiving, finish the updates in progress, close the HTTP clients."""
        app, self._app = self._app, None
        if app is None:
            return
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
        log.info("Telegram adapter stopped")

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
        if not await first_delivery(self._seen, PLATFORM, str(update.update_id)):
            log.info("Telegram update %s already handled; skipped", update.update_id)
            raise ApplicationHandlerStop

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A new message (not edited, not a channel post)."""
        message = update.message
        if message is None or message.from_user is None or message.chat.type == TgChatType.CHANNEL:
            return
        chat, user = message.chat, message.from_user
        private = chat.type == TgChatType.PRIVATE
        found = addressing(message, private=private, username=self._username, bot_id=self._bot_id)
        if found is None or not found.addressed:
            return  # group chatter, or a command for another bot
        incoming_file, problem = None, None
        if message.document is not None:
            incoming_file, problem = await self._download(message)
        elif message.text is None and not message.caption:
            problem = Problem.NOT_TEXT
        is_chat_admin = False
        if not private and found.command in self._core.feature_commands():
            if message.sender_chat is not None and message.sender_chat.id == chat.id:
                is_chat_admin = True  # an anonymous group admin posting as the group
            else:
                is_chat_admin = await self._is_chat_admin(chat.id, user.id)
        if problem is None:
            await self._typing(chat.id)
        msg = IncomingMessage(
            platform=PLATFORM, chat_id=str(chat.id), chat_type=ChatType.PRIVATE if private else ChatType.GROUP,
            user_id=str(user.id), user_name=user.full_name or user.username, text=found.text,
            message_id=str(message.message_id), addressed=True, sender_is_chat_admin=is_chat_admin,
            file=incoming_file, problem=problem,
        )
        replies = await self._core.handle(msg, CAPABILITIES)
        await self._deliver(chat.id, replies, reply_to=None if private else message.message_id)

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
                platform=PLATFORM, chat_id=str(chat.id),
                chat_type=ChatType.PRIVATE if chat.type == TgChatType.PRIVATE else ChatType.GROUP,
                user_id=str(query.from_user.id), user_name=query.from_user.full_name or query.from_user.username,
                text="", message_id=str(pressed.message_id), addressed=True, callback_data=query.data,
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

    async def _download(self, message: Message) -> tuple[IncomingFile | None, Problem | None]:
        """The document of ``message`` as an :class:`IncomingFile`, or why it cannot be had."""
        document = message.document
        assert document is not None
        if document.file_size is not None and document.file_size > MAX_DOWNLOAD_BYTES:
            return None, Problem.FILE_TOO_BIG
        try:
            tg_file = await document.get_file()
            if tg_file.file_size is not None and tg_file.file_size > MAX_DOWNLOAD_BYTES:
                return None, Problem.FILE_TOO_BIG
            content = bytes(await tg_file.download_as_bytearray())
        except TelegramError as exc:
            log.warning("document download failed: %s", exc)
            return None, Problem.FILE_UNREADABLE
        if len(content) > MAX_DOWNLOAD_BYTES:
            return None, Problem.FILE_TOO_BIG
        filename = document.file_name or f"{document.file_unique_id}.bin"
        return IncomingFile(filename=filename, content=content), None

    # ------------------------------------------------------------------ outgoing
    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        """Outbound: push ``messages`` to ``ref.chat_id``; raises if Telegram refuses."""
        chat_id: int | str = int(ref.chat_id) if ref.chat_id.lstrip("-").isdigit() else ref.chat_id
        await self._deliver(chat_id, messages, raise_errors=True)

    async def _deliver(self, chat_id: int | str, messages: list[OutgoingMessage], *,
                       reply_to: int | None = None, raise_errors: bool = False) -> None:
        """Send each message: text chunks ≤ 4096, keyboard on the last chunk, files as documents.
        Only the first message quotes the question (``reply_to``, groups)."""
        bot = self.application.bot
        try:
            for message in messages:
                markup = _keyboard(message.buttons)
                text, caption = message.text.strip("\n"), None
                if message.file is not None and len(text) <= MAX_CAPTION_CHARS:
                    caption, text = text or None, ""
                chunks = split_text(text, max_chars=CAPABILITIES.max_chars)
                for i, chunk in enumerate(chunks):
                    last = i == len(chunks) - 1 and message.file is None
                    await bot.send_message(chat_id, chunk, reply_markup=markup if last else None,
                                           reply_parameters=_quote(reply_to))
                    reply_to = None
                if message.file is not None:
                    document = InputFile(message.file.content, filename=message.file.filename)
                    await bot.send_document(chat_id, document, caption=caption, reply_markup=markup,
                                            reply_parameters=_quote(reply_to))
                    reply_to = None
                elif not chunks and markup is not None:
                    log.warning("dropping buttons without text for chat %s", chat_id)
        except TelegramError as exc:
            if raise_errors:
                raise
            log.warning("sending to Telegram chat %s failed: %s", chat_id, exc)


def _quote(message_id: int | None) -> ReplyParameters | None:
    return None if message_id is None else ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def _keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    keyboard = [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows if row]
    return InlineKeyboardMarkup(keyboard) if keyboard else None


async def run(settings: Settings, core: Core, db: SeenMessages) -> None:
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
