"""Console adapter: chat with the bot in a terminal (platform "console", one private chat).

Buttons are shown as a numbered list; typing the number (or the label) presses the button.
Files are saved into ``<data_dir>/outbox`` and their path printed. Reminders and other pushes
for the console chat are printed as they arrive. stdin/stdout are injectable for tests.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from pathlib import Path
from typing import TextIO

from bot.core import texts
from bot.core.engine import Core
from bot.core.models import Capabilities, ChatRef, ChatType, IncomingMessage, OutgoingFile, OutgoingMessage
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "console"
CHAT_ID = "console"
USER_ID = "console"
CAPABILITIES = Capabilities(buttons=True, files=True)
EXIT_WORDS = frozenset({"exit", "quit", "/quit"})

PROMPT = "> "


class ConsoleSession:
    """Prints replies and remembers the buttons on screen so a typed number can press one."""

    def __init__(self, stdout: TextIO, outbox: Path) -> None:
        self._out = stdout
        self._outbox = outbox
        self._buttons: dict[str, str] = {}  # "1" or label → callback data

    def write(self, text: str = "") -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def show(self, messages: list[OutgoingMessage], *, push: bool = False) -> None:
        """Print ``messages``; a reply without buttons clears the pressable ones (pushes don't)."""
        buttons: dict[str, str] = {}
        number = 0
        for message in messages:
            if message.toast:
                self.write(f"（{message.toast}）")
            if message.text.strip():
                self.write(message.text.strip("\n"))
            if message.file is not None:
                self.write(texts.CONSOLE_FILE_SAVED.format(path=self._save(message.file)))
            for row in message.buttons:
                for button in row:
                    number += 1
                    self.write(f"  [{number}] {button.label}")
                    buttons[str(number)] = button.data
                    buttons.setdefault(button.label.strip(), button.data)
            if message.buttons:
                self.write(texts.CONSOLE_BUTTON_HINT)
            self.write()
        if buttons or not push:
            self._buttons = buttons

    def press(self, line: str) -> str | None:
        """The callback data of the button the user typed (number or label), else None."""
        return self._buttons.get(line.strip())

    def _save(self, file: OutgoingFile) -> Path:
        self._outbox.mkdir(parents=True, exist_ok=True)
        name = Path(file.filename).name or "file"
        stem, suffix = Path(name).stem, Path(name).suffix
        path = self._outbox / name
        for n in itertools.count(1):
            if not path.exists():
                break
            path = self._outbox / f"{stem}-{n}{suffix}"
        path.write_bytes(file.content)
        return path.resolve()


class ConsoleOutbound:
    """Outbound for the console chat: pushes (reminders) are printed."""

    capabilities = CAPABILITIES

    def __init__(self, session: ConsoleSession) -> None:
        self._session = session

    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        self._session.show(messages, push=True)


_INTERRUPTED = object()


async def _read_line(stdin: TextIO) -> str | object:
    """One line from ``stdin`` without blocking the loop; "" at EOF, ``_INTERRUPTED`` on Ctrl-C.

    A daemon thread (not ``asyncio.to_thread``): a thread stuck in ``readline`` after Ctrl-C
    must not keep the process alive, and the default executor's threads are joined at exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | object] = loop.create_future()

    def deliver(value: str | object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        value: str | object
        error: BaseException | None = None
        try:
            value = stdin.readline()
        except (KeyboardInterrupt, EOFError) as exc:
            value = _INTERRUPTED if isinstance(exc, KeyboardInterrupt) else ""
        except Exception as exc:  # e.g. stdin closed
            value, error = "", exc
        try:
            loop.call_soon_threadsafe(deliver, value, error)
        except RuntimeError:  # the loop is gone: nobody is waiting any more
            pass

    threading.Thread(target=work, name="console-stdin", daemon=True).start()
    return await future


async def run(
    settings: Settings,
    core: Core,
    db: object = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> None:
    """Chat in the terminal until EOF, ``exit``/``quit``/``/quit`` or Ctrl-C (``db`` is unused:
    one console user never needs deduplication)."""
    session = ConsoleSession(stdout, settings.data_dir / "outbox")
    core.outbound.register(PLATFORM, ConsoleOutbound(session))
    interactive = _isatty(stdin)
    ids = itertools.count(1)
    session.write(texts.CONSOLE_GREETING)
    session.write()
    try:
        while True:
            if interactive:
                stdout.write(PROMPT)
                stdout.flush()
            try:
                line = await _read_line(stdin)
            except OSError as exc:
                log.warning("console input failed: %s", exc)
                break
            if line is _INTERRUPTED or line == "":
                break
            assert isinstance(line, str)
            text = line.strip()
            if not text:
                continue
            if text.lower() in EXIT_WORDS:
                break
            data = session.press(text)
            msg = IncomingMessage(
                platform=PLATFORM,
                chat_id=CHAT_ID,
                chat_type=ChatType.PRIVATE,
                user_id=USER_ID,
                user_name="控制台用户",
                text="" if data is not None else text,
                message_id=str(next(ids)),
                addressed=True,
                callback_data=data,
            )
            session.show(await core.handle(msg, CAPABILITIES))
    except KeyboardInterrupt:
        pass
    finally:
        session.write(texts.CONSOLE_GOODBYE)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
