"""Shape replies to what a platform can show, from its declared capabilities.

Features and the core write one reply for every platform; before it reaches an adapter, buttons
become a line of typed replies, files a note, and a toast plain text where the platform has no
buttons (hence no button presses to toast). Splitting to the size limits is the adapter's
(see :mod:`bot.core.split`), as only it knows where a keyboard or a caption goes.
"""
from __future__ import annotations

from bot.core import texts
from bot.core.models import Capabilities, OutgoingMessage


def _append(text: str, line: str, sep: str = "\n") -> str:
    return f"{text.rstrip()}{sep}{line}" if text.strip() else line


def fit(messages: list[OutgoingMessage], caps: Capabilities) -> list[OutgoingMessage]:
    """The same messages, with what ``caps`` cannot show turned into text."""
    fitted: list[OutgoingMessage] = []
    for message in messages:
        update: dict[str, object] = {}
        text = message.text
        if not caps.buttons:
            if not text.strip() and message.toast:
                text = message.toast
            labels = [button.label for row in message.buttons for button in row]
            if labels:
                text = _append(text, texts.BUTTONS_AS_TYPED.format(labels=" / ".join(labels)))
            update.update(buttons=[], toast=None)
        if message.file is not None and not caps.files:
            text = _append(text, texts.FILE_NOT_SENT.format(filename=message.file.filename), "\n\n")
            update["file"] = None
        if update:
            message = message.model_copy(update={**update, "text": text})
        fitted.append(message)
    return fitted
