"""Routing of pushes (messages that answer nothing) to whichever adapter serves a platform."""
from __future__ import annotations

import logging

from bot.core.fit import fit
from bot.core.models import ChatRef, Outbound, OutgoingMessage

log = logging.getLogger(__name__)


class NoAdapter(RuntimeError):
    """No running adapter serves the chat's platform."""


class OutboundRegistry:
    """Adapters register themselves at start; reminders and reports send through it."""

    def __init__(self) -> None:
        self._by_platform: dict[str, Outbound] = {}

    def register(self, platform: str, outbound: Outbound) -> None:
        self._by_platform[platform] = outbound

    def platforms(self) -> list[str]:
        return sorted(self._by_platform)

    def serves(self, platform: str) -> bool:
        return platform in self._by_platform

    async def send(self, ref: ChatRef, messages: list[OutgoingMessage]) -> None:
        """Send or raise: callers that must not lose a message (reminders) see the failure.

        The messages are shaped to the adapter's capabilities first (see :mod:`bot.core.fit`)."""
        outbound = self._by_platform.get(ref.platform)
        if outbound is None:
            raise NoAdapter(f"no adapter running for platform {ref.platform!r}")
        await outbound.send(ref, fit(messages, outbound.capabilities))
