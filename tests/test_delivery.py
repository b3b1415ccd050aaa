"""The delivery machinery the adapters share (bot/adapters/delivery.py): the inbox, the one
policy when deduplication cannot reach the database, the access token, the log redaction."""
from __future__ import annotations

import asyncio
import logging

import pytest

from bot.adapters.delivery import AccessToken, Inbox, InboxOptions, first_delivery, protect, redact
from bot.core.errors import StorageUnavailable
from bot.store.db import Database


class Handled:
    """An inbox handler that records what it got; ``gate`` (if set) holds every call."""

    def __init__(self, gated: bool = False) -> None:
        self.items: list[str] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def __call__(self, item: str) -> None:
        await self.gate.wait()
        if item == "boom":
            raise RuntimeError("handler failed")
        self.items.append(item)


class Unreachable:
    def claim_message(self, platform: str, message_id: str) -> bool:
        raise StorageUnavailable("database unavailable: OperationalError")


async def test_one_senders_items_in_order_others_alongside_and_redeliveries_once(db: Database) -> None:
    handled = Handled(gated=True)
    inbox: Inbox[str] = Inbox("test", handled, db, InboxOptions(workers=4))
    for n, (sender, item) in enumerate([("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3"), ("b", "b2")]):
        assert inbox.offer(sender, f"m{n}", item)
    assert inbox.offer("a", "m0", "a1 again")  # a redelivery: queued, then recognised
    handled.gate.set()
    await inbox.join()
    assert [i for i in handled.items if i.startswith("a")] == ["a1", "a2", "a3"]
    assert [i for i in handled.items if i.startswith("b")] == ["b1", "b2"]
    assert inbox.size == 0
    await inbox.aclose()


async def test_a_full_inbox_refuses_without_claiming(db: Database) -> None:
    handled = Handled(gated=True)
    inbox: Inbox[str] = Inbox("test", handled, db, InboxOptions(workers=1, capacity=2))
    assert inbox.offer("a", "m1", "one") and inbox.offer("b", "m2", "two")
    assert not inbox.offer("c", "m3", "three")  # 503 for the platform
    assert db.claim_message("test", "m3")  # nothing was claimed: the retry will be new
    handled.gate.set()
    await inbox.join()
    assert handled.items == ["one", "two"]
    await inbox.aclose()


async def test_put_waits_for_room_instead_of_refusing(db: Database, caplog) -> None:
    """Stream mode acked the message already: it cannot be refused for a retry, so it waits."""
    handled = Handled(gated=True)
    inbox: Inbox[str] = Inbox("test", handled, db, InboxOptions(workers=1, capacity=2))
    await inbox.put("a", "m1", "one")
    await inbox.put("b", "m2", "two")
    third = asyncio.create_task(inbox.put("a", "m3", "three"))
    await asyncio.sleep(0.05)
    assert not third.done() and inbox.size == 2 and "waiting for room for m3" in caplog.text
    handled.gate.set()
    await asyncio.wait_for(third, 5)
    await inbox.join()
    assert handled.items == ["one", "two", "three"] and inbox.size == 0
    await inbox.aclose()


async def test_a_failing_handler_never_stops_a_worker(db: Database, caplog) -> None:
    handled = Handled()
    inbox: Inbox[str] = Inbox("test", handled, db, InboxOptions(workers=1))
    for n, item in enumerate(["boom", "after"]):
        inbox.offer("a", f"m{n}", item)
    await inbox.join()
    assert handled.items == ["after"] and "handling message m0 failed" in caplog.text
    await inbox.aclose()


async def test_shutdown_drains_what_is_queued_for_a_while(db: Database, caplog) -> None:
    handled = Handled(gated=True)
    inbox: Inbox[str] = Inbox("test", handled, db, InboxOptions(workers=1, drain_seconds=0.2))
    inbox.offer("a", "m1", "never")
    await inbox.aclose()  # the handler never finishes: given up after the drain time
    assert "1 queued message(s) left unanswered" in caplog.text


async def test_when_deduplication_cannot_reach_the_database_the_message_is_handled(caplog) -> None:
    assert await first_delivery(Unreachable(), "wecom", "m1") is True
    assert "handling it anyway" in caplog.text
    handled = Handled()
    inbox: Inbox[str] = Inbox("wecom", handled, Unreachable())
    inbox.offer("a", "m1", "question")
    await inbox.join()
    assert handled.items == ["question"]
    await inbox.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_access_token_cached_until_one_margin_before_expiry_and_fetched_once() -> None:
    clock, fetched = Clock(), []

    async def fetch() -> tuple[str, float]:
        await asyncio.sleep(0.01)
        fetched.append(1)
        return f"token-{len(fetched):04d}", 7200.0

    token = AccessToken(fetch, clock=clock)
    assert set(await asyncio.gather(*(token.get() for _ in range(10)))) == {"token-0001"}
    clock.now = 7200 - 301
    assert await token.get() == "token-0001"
    clock.now = 7200 - 299  # inside the 300 s margin: refreshed
    assert await token.get() == "token-0002"
    token.invalidate("token-0001")  # an old token: the current one stays
    assert await token.get() == "token-0002"
    token.invalidate("token-0002")
    assert await token.get() == "token-0003" and len(fetched) == 3


def test_one_redaction_filter_masks_registered_secrets_and_secret_query_values(caplog) -> None:
    protect("s3cret-app-key", None, "")
    caplog.set_level(logging.DEBUG)
    logging.getLogger("httpx").info("GET https://x/cgi-bin/gettoken?corpid=ww1&corpsecret=abc&x=1")
    logging.getLogger("httpx").info("POST https://x/send?access_token=%s", "tok123456")
    logging.getLogger("telegram.Bot").debug("params %s", {"secret": "s3cret-app-key"})
    assert "corpsecret=***" in caplog.text and "access_token=***" in caplog.text
    assert "abc" not in caplog.text and "tok123456" not in caplog.text and "s3cret-app-key" not in caplog.text
    assert redact("a=1&access_token=xyz", ["a=1"]) == "***&access_token=***"


@pytest.mark.parametrize("name", ["httpx", "telegram.Bot", "telegram.ext.ExtBot"])
def test_the_filter_sits_on_every_logger_that_prints_urls_or_call_parameters(name: str) -> None:
    protect()
    assert any(type(f).__name__ == "RedactSecrets" for f in logging.getLogger(name).filters)
