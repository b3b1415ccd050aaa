"""Is a Telegram message for this bot, and what is its text without the bot's mention?

In groups (privacy mode on) the bot answers when @-mentioned (by username or a text mention),
when replied to, or when given a command for it; a command for another bot (``/help@other``) is
not addressed to it. Entity offsets are UTF-16 code units, as Telegram counts them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Message, MessageEntity

from bot.core.engine import parse_command

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


def addressing(message: Message, *, private: bool, username: str, bot_id: int) -> Addressing | None:
    """Is ``message`` for this bot? None for a command addressed to another bot."""
    text = message.text if message.text is not None else (message.caption or "")
    entities = message.parse_entities() if message.text is not None else message.parse_caption_entities()
    username = username.lower()
    command = parse_command(text)
    if text.lstrip().startswith("/"):
        head = text.strip().split(maxsplit=1)[0]
        if "@" in head and head.split("@", 1)[1].lower() != username:
            return None
    spans: list[tuple[int, int]] = []
    for entity, entity_text in entities.items():
        if entity.type == MessageEntity.MENTION and entity_text.lower() == f"@{username}":
            spans.append((entity.offset, entity.length))
        elif entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            spans.append((entity.offset, entity.length))
    if not spans and not entities and username:
        # a client that sent no entities: fall back to the plain text
        for match in re.finditer(rf"(?<![A-Za-z0-9_])@{re.escape(username)}(?![A-Za-z0-9_])", text, re.I):
            start = len(text[: match.start()].encode("utf-16-le")) // 2
            spans.append((start, len(match.group(0).encode("utf-16-le")) // 2))
    reply = message.reply_to_message
    is_reply = bool(reply and reply.from_user and reply.from_user.id == bot_id)
    clean = strip_spans(text, spans) if spans else text.strip()
    addressed = private or command is not None or bool(spans) or is_reply
    return Addressing(addressed=addressed, text=clean, command=command[0] if command else None)
