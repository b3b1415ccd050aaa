"""Reminder delivery inside ``dangjian run``: claim due reminders in the database, send, mark sent.

Guarantees (any number of processes/replicas on one SQLite file or PostgreSQL database):

* **At most one sender per reminder.** A reminder is claimed with one conditional UPDATE before
  it is sent (see :mod:`bot.meetings.repo`); a process that loses the race skips it.
* **No loss on a crash.** A claim is a lease (``lease``, 60 s by default). If the holder dies
  (kill -9) before marking the reminder sent, the lease runs out and another process (or the
  restarted one) claims and sends it. A reminder already marked ``sent`` is never claimed again.
* **The duplicate window is as small as we can make it.** The only way to send a reminder twice
  is a crash (or a database outage) *after* the platform accepted the message and *before* the
  ``UPDATE … SET status='sent'`` that follows it immediately, or a send that outlives the lease.
  The send is bounded by ``send_timeout`` (half the lease) and the mark-sent is retried a few
  times, so neither happens in normal operation; we prefer that rare duplicate to a lost reminder.
* **Late and missed.** After a restart, reminders that fell due while the bot was down are sent
  with a 补发 (late) notice (and ``late=True`` in the row) if they are more than
  ``max(60 s, 3 polls)`` but at most ``settings.grace`` (6 h by default) overdue, and
  recorded as ``missed`` (never sent) beyond that. Late is judged against the reminder's own
  time, so a 2-hour reminder sent late may arrive after the meeting started; the text then says
  so. A reminder for a platform that no adapter in this process serves stays pending (another
  replica may serve it) until it is beyond the grace period.
* **Clocks.** Leases are compared with each process's own clock, so replicas need clocks in
  sync (NTP) to well under the lease; a replica running a minute fast could take over a live
  claim.
* **Cancelled meetings** are never reminded: cancelling closes their pending reminders and a
  claim requires the meeting to be live.

Database calls run in a worker thread (``asyncio.to_thread``) so a busy database never blocks the
adapters sharing the event loop; an in-memory SQLite database (one connection per thread) is
used inline instead.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.core.models import OutgoingMessage
from bot.core.outbound import NoAdapter, OutboundRegistry
from bot.meetings.feature import horizon_for
from bot.meetings.parse import format_local, format_offset
from bot.meetings.repo import DueReminder, MeetingRepo, as_utc
from bot.meetings.rules import MeetingRules
from bot.meetings.tables import MISSED
from bot.settings import Settings
from bot.store.db import Database, utcnow

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(seconds=60)
MARK_SENT_ATTEMPTS = 3


def reminder_text(due: DueReminder, rules: MeetingRules, *, late: bool, now: datetime) -> str:
    """The Chinese reminder: type, date, HH:MM, place, topic, the rule and its citation."""
    m, r = due.meeting, due.reminder
    tz = m.tz
    lines: list[str] = []
    if late:
        lines.append(
            f"【补发提醒】这条提醒原定 {format_local(r.remind_at, tz)} 发送，因服务中断延迟送达。"
        )
        if now >= r.occurs_at:
            lines.append(f"注意：会议已于 {format_local(r.occurs_at, tz)} 开始。")
    elif r.offset_seconds <= 0:
        lines.append("【会议提醒】会议现在开始：")
    else:
        lines.append(f"【会议提醒】{format_offset(timedelta(seconds=r.offset_seconds))}后召开：")
    lines.append(f"类型：{m.meeting_type}")
    lines.append(f"时间：{format_local(r.occurs_at, tz)}")
    lines.append(f"地点：{m.place}")
    lines.append(f"议题：{m.topic}")
    rule = rules.for_type(m.meeting_type)
    if rule is not None:
        lines.append(f"规定：{rule.rule.summary}（{rule.citation}）")
    lines.append(f"会议编号 #{m.id}；取消请发送 /meeting cancel {m.id}")
    return "\n".join(lines)


class ReminderScheduler:
    """Polls the database and sends due meeting reminders through the outbound registry."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        outbound: OutboundRegistry,
        rules: MeetingRules,
        clock: Callable[[], datetime] = utcnow,
        *,
        lease: timedelta = DEFAULT_LEASE,
        instance_id: str | None = None,
        batch: int = 50,
    ) -> None:
        """``clock`` returns an aware UTC datetime; ``instance_id`` names this process's claims."""
        self.repo = MeetingRepo(db)
        self.settings = settings
        self.outbound = outbound
        self.rules = rules
        self.clock = clock
        self.lease = lease
        self.send_timeout = lease.total_seconds() / 2
        self.batch = batch
        self.instance_id = instance_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.offsets = settings.offsets
        self.grace = settings.grace
        self.horizon = horizon_for(self.offsets)
        self.poll_seconds = max(0.05, float(settings.reminder_poll_seconds))
        # A reminder sent more than this after its time gets the 补发 (late) notice.
        self.late_after = max(timedelta(seconds=60), timedelta(seconds=3 * self.poll_seconds))
        url = db.engine.url
        self._inline = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        ZoneInfo(settings.timezone)  # fail fast on a bad timezone name

    def _now(self) -> datetime:
        now = as_utc(self.clock())
        assert now is not None
        return now

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._inline:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ------------------------------------------------------------------ one pass
    async def tick(self) -> int:
        """One pass: extend recurring meetings, record missed ones, claim and send what is due.

        Returns the number of reminders sent.
        """
        now = self._now()
        created = await self._db(self.repo.materialise, now, self.offsets, self.horizon)
        if created:
            log.info("created %d reminders for recurring meetings", created)
        for missed in await self._db(self.repo.sweep_missed, now, self.grace):
            log.warning(
                "reminder %s of meeting %s was due at %s and is beyond the grace period: recorded as missed",
                missed.id, missed.meeting_id, missed.remind_at.isoformat(),
            )
        sent = 0
        for reminder_id in await self._db(self.repo.due_ids, now, self.grace, self.outbound.platforms(), self.batch):
            if await self._deliver(reminder_id):
                sent += 1
        return sent

    async def _deliver(self, reminder_id: int) -> bool:
        now = self._now()
        due: DueReminder | None = await self._db(self.repo.claim, reminder_id, self.instance_id, now, self.lease)
        if due is None:
            return False  # another process has it, it was sent, or its meeting was cancelled
        r = due.reminder
        overdue = now - r.remind_at
        if overdue > self.grace:
            await self._db(self.repo.close_claimed, r.id, self.instance_id, MISSED, now)
            log.warning("reminder %s of meeting %s is beyond the grace period: missed", r.id, r.meeting_id)
            return False
        late = overdue > self.late_after
        message = OutgoingMessage(text=reminder_text(due, self.rules, late=late, now=now))
        try:
            # Not wait_for: on Python 3.11 it loses a cancellation that arrives as the send completes,
            # and this loop would then never stop (shutdown hangs).
            async with asyncio.timeout(self.send_timeout):
                await self.outbound.send(due.meeting.ref, [message])
        except NoAdapter:
            # Not ours to send (the adapter may have stopped): free the claim for another replica.
            await self._db(self.repo.release, r.id, self.instance_id, error=None, retry_at=None)
            return False
        except Exception as exc:  # noqa: BLE001 - any send failure: retry after the lease
            # Keep the claim until it expires: a natural back-off, and any replica may retry then.
            log.warning(
                "sending reminder %s of meeting %s to %s failed (attempt %d): %s",
                r.id, r.meeting_id, due.meeting.ref.platform, r.attempts, type(exc).__name__,
            )
            await self._db(
                self.repo.release, r.id, self.instance_id,
                # Only the exception type: messages of HTTP errors can contain URLs with tokens.
                error=type(exc).__name__, retry_at=self._now() + self.lease,
            )
            return False
        await self._mark_sent(due, late)
        return True

    async def _mark_sent(self, due: DueReminder, late: bool) -> None:
        r = due.reminder
        for attempt in range(1, MARK_SENT_ATTEMPTS + 1):
            try:
                if not await self._db(self.repo.mark_sent, r.id, self._now(), late):
                    log.warning("reminder %s was sent but was no longer pending (cancelled meanwhile?)", r.id)
                log.info("reminder %s of meeting %s sent%s", r.id, r.meeting_id, " late" if late else "")
                return
            except Exception:  # noqa: BLE001 - the database may be briefly unavailable
                log.exception("marking reminder %s sent failed (attempt %d)", r.id, attempt)
                await asyncio.sleep(0.2 * attempt)
        log.error("reminder %s was sent but could not be marked sent; it may be sent again", r.id)

    # ------------------------------------------------------------------ loop
    async def run_forever(self) -> None:
        """Tick every ``settings.reminder_poll_seconds``; log errors and keep going until cancelled."""
        log.info("reminder scheduler %s started (poll %.1fs)", self.instance_id, self.poll_seconds)
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must survive database hiccups
                log.exception("reminder tick failed")
            await asyncio.sleep(self.poll_seconds)
