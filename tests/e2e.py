"""Helpers for end-to-end tests: run `dangjian run` as a real process against loopback fakes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DANGJIAN = str(Path(sys.executable).parent / "dangjian")


class BotProcess:
    """`dangjian run --adapter X` in a subprocess; stderr goes to a log file for diagnosis."""

    def __init__(self, adapter: str, env: dict[str, str], log: Path) -> None:
        self.adapter = adapter
        self.env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", **env}
        for key in ("DANGJIAN_LLM_BASE_URL", "DANGJIAN_CHROMA_URL", "DANGJIAN_DATABASE_URL"):
            if key not in env:
                self.env.pop(key, None)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> BotProcess:
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [DANGJIAN, "run", "--adapter", self.adapter], env=self.env, stdout=fh, stderr=fh,
            stdin=subprocess.DEVNULL, cwd=REPO,
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
