"""Telegram through python-telegram-bot: ``addressing`` (is a message for the bot, without its
mention) and ``adapter`` (the PTB application ↔ the core, polling or webhook)."""
from bot.adapters.telegram.adapter import CAPABILITIES, PLATFORM, TelegramAdapter, derive_base_file_url, run
from bot.adapters.telegram.addressing import Addressing, addressing, strip_spans

__all__ = ["CAPABILITIES", "PLATFORM", "Addressing", "TelegramAdapter", "addressing", "derive_base_file_url",
           "run", "strip_spans"]
