"""Helpers for end-to-end tests: run `dangjian` as a real process against loopback fakes.

Processes get a clean environment (no DANGJIAN_* variable of the developer's shell) and run in a
directory of their own, so a developer's ``.env`` in the checkout never reaches them; the
checkout's ``prompts/`` and ``corpus/`` are passed explicitly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
DANGJIAN = str(Path(sys.executable).parent / "dangjian")


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a `dangjian` process: the shell's minus every DANGJIAN_* variable,
    the checkout's prompts and corpus, then ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DANGJIAN_")}
    return {**clean, "ANONYMIZED_TELEMETRY": "False", "DANGJIAN_PROMPTS_DIR": str(REPO / "prompts"),
            "DANGJIAN_CORPUS_DIR": str(REPO / "corpus"), **env}


def work_dir(tmp_path: Path) -> Path:
    """A working directory without a ``.env`` file."""
    folder = tmp_path / "cwd"
    folder.mkdir(exist_ok=True)
    return folder


class BotProcess:
    """`dangjian run --adapter X` in a subprocess; stderr goes to a log file for diagnosis."""

    def __init__(self, adapter: str, env: dict[str, str], log: Path) -> None:
        self.adapter = adapter
        self.env = process_env(env)
        self.cwd = work_dir(log.parent)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> BotProcess:
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [DANGJIAN, "run", "--adapter", self.adapter], env=self.env, stdout=fh, stderr=fh,
            stdin=subprocess.DEVNULL, cwd=self.cwd,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like a crash."""
        if self.proc and self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc and self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def wait_until(predicate, timeout: float, what: str, proc: BotProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and not proc.alive:
            raise AssertionError(f"bot exited while waiting for {what}:\n{proc.logs()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{proc.logs()[-3000:]}" if proc else ""))


TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class ReminderClock:
    """Reminder timing for a process test, short but safe on a slow machine.

    The process starts with ``DANGJIAN_REMINDER_OFFSETS=f"{offset}s"``. Meetings are typed to the
    minute, so their reminders can fall due only at ``due`` + whole minutes; :meth:`meeting`
    picks, at the moment the test registers one, the first meeting whose reminder is still at
    least ``margin`` seconds away: on a fast machine ``due`` itself, on a slow one a minute later.
    """

    offset: int  # seconds before the meeting
    due: datetime  # the earliest reminder time

    @classmethod
    def start(cls, delay: float) -> ReminderClock:
        """Reminders falling due ``delay`` seconds from now (then every minute after)."""
        due = datetime.now(TZ) + timedelta(seconds=delay)
        meeting = due.replace(second=0, microsecond=0) + timedelta(minutes=1)
        return cls(offset=int((meeting - due).total_seconds()) + 1, due=due)

    @property
    def env(self) -> dict[str, str]:
        return {"DANGJIAN_REMINDER_OFFSETS": f"{self.offset}s", "DANGJIAN_REMINDER_POLL_SECONDS": "1",
                "DANGJIAN_TIMEZONE": "Asia/Shanghai"}

    def meeting(self, margin: float = 3.0) -> datetime:
        """The meeting time to register now (its reminder is ``margin`` s away or more)."""
        at = (self.due + timedelta(seconds=self.offset)).replace(second=0, microsecond=0)
        while at - timedelta(seconds=self.offset) < datetime.now(TZ) + timedelta(seconds=margin):
            at += timedelta(minutes=1)
        return at

    def command(self, at: datetime, meeting_type: str = "支委会", place: str = "三楼会议室") -> str:
        return f"/meeting add {meeting_type} {at:%Y-%m-%d} {at:%H:%M} {place} 研究发展党员工作"
