"""The console adapter: scripted stdin in, printed replies out."""
from __future__ import annotations

import asyncio
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.adapters import console
from bot.core import texts
from bot.core.feature import Context
from bot.core.models import Button, ChatRef, OutgoingFile, OutgoingMessage
from bot.settings import Settings
from tests.harness import StubAnswerer, TestBot, make_settings


@dataclass
class StepFeature:
    commands: tuple[str, ...] = ("steps", "ics")
    callback_prefix: str | None = "st"
    help_lines: list[tuple[str, str]] = field(default_factory=lambda: [("/steps", "分步清单"), ("/ics", "日程文件")])
    pressed: list[str] = field(default_factory=list)

    async def on_command(self, ctx: Context, command: str, args: str) -> list[OutgoingMessage]:
        if command == "ics":
            file = OutgoingFile(filename="../meeting.ics", content=b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
            return [OutgoingMessage(text="会议日程已生成。", file=file)]
        return [OutgoingMessage(text="第1步：确定会议主题。", buttons=[[Button(label="完成", data="st:done"),
                                                                   Button(label="跳过", data="st:skip")]])]

    async def on_callback(self, ctx: Context, data: str) -> list[OutgoingMessage]:
        self.pressed.append(data)
        return [OutgoingMessage(text=f"已处理：{data}", toast="已记录")]

    async def on_text(self, ctx: Context) -> list[OutgoingMessage] | None:
        return None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(data_dir=tmp_path)


async def chat(settings: Settings, script: str, feature: StepFeature | None = None) -> tuple[str, StubAnswerer]:
    bot = TestBot(feature or StepFeature())
    out = io.StringIO()
    await asyncio.wait_for(console.run(settings, bot.core, stdin=io.StringIO(script), stdout=out), 10)
    return out.getvalue(), bot.qa


async def test_scripted_chat_and_eof(settings: Settings) -> None:
    output, qa = await chat(settings, "/help\n\n党组会议多久召开一次？\n")
    assert output.startswith(texts.CONSOLE_GREETING)
    assert texts.HELP_HEADER in output and "/steps" in output
    assert "每月" in output and "《中国共产党党组工作条例》第十八条" in output
    assert qa.questions == ["党组会议多久召开一次？"]  # the blank line was skipped
    assert output.rstrip().endswith(texts.CONSOLE_GOODBYE)


@pytest.mark.parametrize("word", ["exit", "quit", "/quit", "QUIT"])
async def test_exit_words_stop_reading(settings: Settings, word: str) -> None:
    output, qa = await chat(settings, f"{word}\n党组会议多久召开一次？\n")
    assert qa.questions == []
    assert texts.CONSOLE_GOODBYE in output


async def test_buttons_by_number_and_label(settings: Settings) -> None:
    feature = StepFeature()
    output, qa = await chat(settings, "/steps\n1\n/steps\n跳过\n2\n", feature)
    assert "  [1] 完成\n  [2] 跳过\n" in output and texts.CONSOLE_BUTTON_HINT in output
    assert "（已记录）" in output and "已处理：st:done" in output
    # after a reply without buttons, "2" is an ordinary question again
    assert feature.pressed == ["st:done", "st:skip"]
    assert qa.questions == ["2"]


async def test_files_are_saved_in_outbox(settings: Settings, tmp_path: Path) -> None:
    output, _ = await chat(settings, "/ics\n/ics\n")
    first, second = tmp_path / "outbox" / "meeting.ics", tmp_path / "outbox" / "meeting-1.ics"
    assert first.read_bytes().startswith(b"BEGIN:VCALENDAR") and second.exists()
    assert f"已保存文件：{first.resolve()}" in output and "会议日程已生成。" in output


async def test_ctrl_c_exits_cleanly(settings: Settings) -> None:
    class CtrlC(io.StringIO):
        def readline(self, *args: object) -> str:  # type: ignore[override]
            raise KeyboardInterrupt

    out = io.StringIO()
    await asyncio.wait_for(console.run(settings, TestBot().core, stdin=CtrlC(), stdout=out), 5)
    assert out.getvalue().rstrip().endswith(texts.CONSOLE_GOODBYE)


async def _wait_for_output(out: io.StringIO, needle: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in out.getvalue():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} not printed; got {out.getvalue()!r}")
        await asyncio.sleep(0.01)


async def test_pushes_are_printed_while_waiting_for_input(settings: Settings) -> None:
    read_fd, write_fd = os.pipe()
    stdin = os.fdopen(read_fd, "r", encoding="utf-8")
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    out = io.StringIO()
    core = TestBot(StepFeature()).core
    task = asyncio.create_task(console.run(settings, core, stdin=stdin, stdout=out))
    try:
        await _wait_for_output(out, texts.CONSOLE_GREETING)
        assert core.outbound.serves("console")
        ref = ChatRef(platform="console", chat_id="console", user_id="console")
        await core.outbound.send(ref, [OutgoingMessage(text="提醒：明天上午9点召开支部党员大会。",
                                                       buttons=[[Button(label="知道了", data="st:ack")]])])
        await _wait_for_output(out, "  [1] 知道了")
        writer.write("1\n")
        writer.flush()
        await _wait_for_output(out, "已处理：st:ack")
        writer.write("quit\n")
        writer.flush()
        await asyncio.wait_for(task, 5)
    finally:
        writer.close()
        if not task.done():
            task.cancel()
    assert "提醒：明天上午9点召开支部党员大会。" in out.getvalue()


async def test_cancel_while_waiting_for_input(settings: Settings) -> None:
    read_fd, write_fd = os.pipe()
    stdin = os.fdopen(read_fd, "r", encoding="utf-8")
    out = io.StringIO()
    task = asyncio.create_task(console.run(settings, TestBot().core, stdin=stdin, stdout=out))
    await _wait_for_output(out, texts.CONSOLE_GREETING)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert texts.CONSOLE_GOODBYE in out.getvalue()
    os.close(write_fd)  # releases the reader thread
