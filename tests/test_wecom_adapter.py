"""The WeCom adapter in-process: its callback app called through httpx's ASGI transport, a real
:class:`Core` (the harness), and its server-API calls answered in-process by the fake WeCom."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from bot.adapters import wecom
from bot.adapters.delivery import InboxOptions
from bot.adapters.http_server import build_http_app
from bot.adapters.wecom import CAPABILITIES, PLATFORM, WeComAdapter, WeComApiError
from bot.core import texts
from bot.core.models import Button, ChatRef, OutgoingFile, OutgoingMessage
from bot.store.db import Database
from tests.fakes.wecom_api import AES_KEY, SECRET, TOKEN, CallbackBuilder, FakeWeCom
from tests.harness import ARTICLE, StubAnswerer, TestBot, make_settings


@dataclass
class Env:
    fake: FakeWeCom
    qa: StubAnswerer
    bot: TestBot
    db: Database
    adapter: WeComAdapter
    client: httpx.AsyncClient  # talks to the adapter's callback app in-process
    cb: CallbackBuilder

    async def post(self, params: dict[str, str], body: bytes) -> httpx.Response:
        return await self.client.post("/wecom/callback", params=params, content=body)

    async def post_text(self, from_user: str, content: str, msg_id: int) -> httpx.Response:
        return await self.post(*self.cb.message(self.cb.text_xml(from_user, content, msg_id)))


@pytest.fixture
def fake() -> FakeWeCom:
    return FakeWeCom()


@pytest.fixture
def qa() -> StubAnswerer:
    return StubAnswerer()


async def _env(fake: FakeWeCom, db: Database, qa: StubAnswerer, **options) -> AsyncIterator[Env]:
    bot = TestBot(qa=qa)
    api = fake.client()
    adapter = WeComAdapter(fake.settings(), bot.core, db, http=api, options=InboxOptions(**options))
    bot.core.outbound.register(PLATFORM, adapter)
    await adapter.start()
    transport = httpx.ASGITransport(app=build_http_app([adapter.router()]))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            yield Env(fake, qa, bot, db, adapter, client, fake.callbacks)
    finally:
        qa.release.set()
        await adapter.aclose()
        await api.aclose()


@pytest.fixture
async def env(fake: FakeWeCom, db: Database, qa: StubAnswerer) -> AsyncIterator[Env]:
    async for e in _env(fake, db, qa):
        yield e


def _nothing_happened(e: Env) -> None:
    assert e.qa.questions == []
    assert e.fake.attempts == []
    assert e.fake.gettoken_calls == 0


# URL verification -------------------------------------------------------------------
async def test_url_verification_returns_exactly_the_echostr(env: Env) -> None:
    resp = await env.client.get("/wecom/callback", params=env.cb.verification("5927782489013245981"))
    assert resp.status_code == 200
    assert resp.content == b"5927782489013245981"  # no JSON quotes, no newline
    assert resp.headers["content-type"].startswith("text/plain")


async def test_url_verification_official_vector(fake: FakeWeCom, db: Database) -> None:
    """Tencent's sample GET (echostr has + / =), both URL-encoded and with a raw '+'."""
    settings = fake.settings(
        wecom_token="hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
        wecom_aes_key="6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt", wecom_corp_id="ww1436e0e65a779aee",
    )
    adapter = WeComAdapter(settings, TestBot().core, db)
    echostr = "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
    params = {"msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "timestamp": "1476416373",
              "nonce": "47744683", "echostr": echostr}
    transport = httpx.ASGITransport(app=build_http_app([adapter.router()]))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            resp = await client.get("/wecom/callback", params=params)
            assert (resp.status_code, resp.content) == (200, b"1288432023552776189")
            raw_query = "&".join(f"{k}={v}" for k, v in params.items())  # '+' not encoded
            resp = await client.get(f"/wecom/callback?{raw_query}")
            assert (resp.status_code, resp.content) == (200, b"1288432023552776189")
            resp = await client.get("/wecom/callback", params={**params, "nonce": "47744684"})
            assert resp.status_code == 403
    finally:
        await adapter.aclose()


async def test_url_verification_bad_signature_or_missing_params(env: Env) -> None:
    params = env.cb.verification("123")
    resp = await env.client.get("/wecom/callback", params={**params, "msg_signature": "0" * 40})
    assert resp.status_code == 403 and b"123" not in resp.content
    for missing in ("msg_signature", "timestamp", "nonce", "echostr"):
        resp = await env.client.get("/wecom/callback", params={k: v for k, v in params.items() if k != missing})
        assert resp.status_code == 403
    other_corp = CallbackBuilder(corp_id="wwsomeoneelse00001")
    resp = await env.client.get("/wecom/callback", params=other_corp.verification("123"))
    assert resp.status_code == 403


# Messages ---------------------------------------------------------------------------
async def test_question_is_answered_with_citation_via_message_send(env: Env) -> None:
    resp = await env.post_text("zhangsan", "党组会议多久召开一次？", 7450000000000000001)
    assert resp.status_code == 200 and resp.content == b""
    [payload] = await env.fake.wait_for_sends(1)
    assert payload["touser"] == "zhangsan"
    assert payload["msgtype"] == "text"
    assert payload["agentid"] == 1000002 and isinstance(payload["agentid"], int)
    content = payload["text"]["content"]
    assert "每月" in content and "第十八条" in content and "《中国共产党党组工作条例》" in content
    assert "**" not in content  # plain text, no markdown
    assert env.qa.questions == ["党组会议多久召开一次？"]
    assert env.fake.gettoken_calls == 1


async def test_callback_returns_fast_while_the_answerer_is_slow(
    fake: FakeWeCom, db: Database
) -> None:
    qa = StubAnswerer(gated=True)  # blocks until released: slower than any callback deadline
    async for e in _env(fake, db, qa):
        started = time.monotonic()
        resp = await e.post_text("zhangsan", "党组会议多久召开一次？", 101)
        elapsed = time.monotonic() - started
        assert resp.status_code == 200 and resp.content == b""
        assert elapsed < 1.0
        assert await asyncio.to_thread(qa.started.wait, 5)  # the work runs in the background…
        assert fake.sent == []  # …and has not been answered yet
        qa.release.set()
        [payload] = await fake.wait_for_sends(1)
        assert "第十八条" in payload["text"]["content"]


async def test_forged_signature_is_rejected_and_nothing_happens(env: Env) -> None:
    params, body = env.cb.message(env.cb.text_xml("zhangsan", "你好", 202))
    forged = await env.post({**params, "msg_signature": "f" * 40}, body)
    wrong_ts = await env.post({**params, "timestamp": str(int(params["timestamp"]) + 1)}, body)
    missing = await env.post({k: v for k, v in params.items() if k != "msg_signature"}, body)
    assert [forged.status_code, wrong_ts.status_code, missing.status_code] == [403, 403, 403]
    attacker = CallbackBuilder(token="attackerToken", aes_key=AES_KEY)  # knows the key, not the token
    assert (await env.post(*attacker.message(attacker.text_xml("zhangsan", "你好", 203)))).status_code == 403
    await env.adapter.join()
    _nothing_happened(env)
    # the forged deliveries did not consume the MsgId: the genuine one is still answered
    assert (await env.post(params, body)).status_code == 200
    await env.fake.wait_for_sends(1)


async def test_wrong_corp_id_is_rejected(env: Env) -> None:
    params, body = env.cb.message(env.cb.text_xml("zhangsan", "你好", 303), receive_id="wwsomeoneelse00001")
    resp = await env.post(params, body)
    assert resp.status_code == 403
    await env.adapter.join()
    _nothing_happened(env)


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><Encrypt>abc",  # not well-formed
        b"not xml at all",
        b"",
        b"<xml><ToUserName>x</ToUserName></xml>",  # no Encrypt
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>',
    ],
)
async def test_malformed_xml_is_400(env: Env, body: bytes) -> None:
    params, _ = env.cb.message("<xml/>")
    resp = await env.post(params, body)
    assert resp.status_code == 400
    await env.adapter.join()
    _nothing_happened(env)


async def test_correctly_signed_but_undecodable_message_is_400(env: Env) -> None:
    params, body = env.cb.message("this is not xml <<<")
    assert (await env.post(params, body)).status_code == 400
    params, body = env.cb.message("<xml><MsgType>text</MsgType><Content>no sender</Content></xml>")
    assert (await env.post(params, body)).status_code == 400
    await env.adapter.join()
    _nothing_happened(env)


async def test_oversize_body_is_413(env: Env) -> None:
    params, _ = env.cb.message("<xml/>")
    resp = await env.post(params, b"<xml><Encrypt>" + b"A" * (300 * 1024) + b"</Encrypt></xml>")
    assert resp.status_code == 413
    # the server is still up
    assert (await env.client.get("/healthz")).status_code == 200
    _nothing_happened(env)


async def test_redelivered_msgid_is_answered_once(env: Env) -> None:
    params, body = env.cb.message(env.cb.text_xml("zhangsan", "党组会议多久召开一次？", 404))
    first, second = await asyncio.gather(env.post(params, body), env.post(params, body))
    assert first.status_code == second.status_code == 200
    # WeCom retries re-sign the same message with a new nonce and timestamp
    retry = env.cb.message(env.cb.text_xml("zhangsan", "党组会议多久召开一次？", 404))
    assert (await env.post(*retry)).status_code == 200
    await env.adapter.join()
    assert len(env.fake.sent) == 1
    assert env.qa.questions == ["党组会议多久召开一次？"]


async def test_expired_token_is_refetched_and_the_same_send_retried(env: Env) -> None:
    await env.post_text("zhangsan", "第一个问题", 501)
    await env.fake.wait_for_sends(1)
    assert env.fake.gettoken_calls == 1
    env.fake.expire_tokens()  # next send with the cached token gets errcode 42001
    await env.post_text("zhangsan", "第二个问题", 502)
    await env.fake.wait_for_sends(2)
    await env.adapter.join()
    assert env.fake.gettoken_calls == 2
    first, rejected, retried = env.fake.attempts
    assert (first.errcode, rejected.errcode, retried.errcode) == (0, 42001, 0)
    assert rejected.payload == retried.payload
    assert rejected.access_token == first.access_token != retried.access_token


async def test_invalid_token_40014_is_refetched_too(env: Env) -> None:
    ref = ChatRef(platform=PLATFORM, chat_id="lisi", user_id="lisi")
    await env.adapter.send(ref, [OutgoingMessage(text="一")])
    env.fake.expire_tokens(errcode=40014)
    await env.adapter.send(ref, [OutgoingMessage(text="二")])
    assert env.fake.texts("lisi") == ["一", "二"]
    assert [a.errcode for a in env.fake.attempts] == [0, 40014, 0]
    assert env.fake.gettoken_calls == 2


async def test_other_errcode_raises_and_the_worker_survives(env: Env) -> None:
    ref = ChatRef(platform=PLATFORM, chat_id="lisi", user_id="lisi")
    env.fake.fail_next_sends(60020, "not allow to access from your ip")
    with pytest.raises(WeComApiError) as info:
        await env.bot.core.outbound.send(ref, [OutgoingMessage(text="会议提醒")])
    assert info.value.errcode == 60020
    assert env.fake.gettoken_calls == 1  # not a token problem: no refetch, no retry
    env.fake.fail_next_sends(60020)
    await env.post_text("zhangsan", "问题一", 601)  # this answer fails to send…
    await env.adapter.join()
    await env.post_text("zhangsan", "问题二", 602)  # …and the next one still goes out
    [payload] = await env.fake.wait_for_sends(1)
    assert "第十八条" in payload["text"]["content"]


async def test_long_answer_is_split_within_2048_bytes(fake: FakeWeCom, db: Database) -> None:
    paragraphs = [f"第{i}段：" + "党组会议应当严格按照规定程序召开并形成纪要。" * 25 for i in range(1, 7)]
    qa = StubAnswerer(answer="\n\n".join(paragraphs))
    async for e in _env(fake, db, qa):
        await e.post_text("zhangsan", "请详细介绍党组会议", 701)
        await e.adapter.join()
        texts = fake.texts("zhangsan")
        assert len(texts) >= 3
        assert all(len(t.encode("utf-8")) <= 2048 for t in texts)
        joined = "\n\n".join(texts)
        for paragraph in paragraphs:
            assert paragraph in joined  # split between paragraphs, nothing lost
        assert "第十八条" in texts[-1] and ARTICLE in texts[-1]  # the citation block is whole


async def test_outbound_push_reaches_touser(env: Env) -> None:
    ref = ChatRef(platform=PLATFORM, chat_id="zhangsan", user_id="lisi")  # lisi registered the meeting
    await env.bot.core.outbound.send(ref, [OutgoingMessage(text="提醒：明天 9:00 召开支部委员会会议。")])
    assert env.fake.sent[0]["touser"] == "lisi"
    assert env.fake.texts() == ["提醒：明天 9:00 召开支部委员会会议。"]
    assert env.adapter.capabilities == CAPABILITIES
    assert CAPABILITIES.buttons is False and CAPABILITIES.files is False and CAPABILITIES.max_bytes == 2048


async def test_pushed_buttons_become_typed_replies_and_files_a_note(env: Env) -> None:
    ref = ChatRef(platform=PLATFORM, chat_id="lisi", user_id="lisi")
    await env.bot.core.outbound.send(ref, [
        OutgoingMessage(
            text="第1步：确定会议主题",
            buttons=[[Button(label="完成", data="chk:1"), Button(label="跳过", data="chk:2")]],
        ),
        OutgoingMessage(text="会议日程已生成", file=OutgoingFile(filename="m.ics", content=b"BEGIN:VCALENDAR")),
        OutgoingMessage(text=""),  # nothing to send
    ])
    first, second = env.fake.texts("lisi")
    assert first.startswith("第1步：确定会议主题\n") and "完成" in first and "跳过" in first
    assert "chk:" not in first
    assert second.startswith("会议日程已生成\n") and "m.ics" in second and "BEGIN:VCALENDAR" not in second


async def test_non_text_messages_get_a_hint_and_events_are_ignored(env: Env) -> None:
    assert (await env.post(*env.cb.message(env.cb.image_xml("zhangsan", 801)))).status_code == 200
    assert (await env.post(*env.cb.message(env.cb.event_xml("zhangsan", "enter_agent")))).status_code == 200
    assert (await env.post(*env.cb.message(env.cb.event_xml("wangwu", "subscribe")))).status_code == 200
    await env.adapter.join()
    assert env.fake.texts() == [texts.NOT_TEXT]
    assert env.fake.sent[0]["touser"] == "zhangsan"
    assert env.qa.questions == []


async def test_gettoken_is_called_far_less_than_sends(env: Env) -> None:
    posts = [env.post_text(f"user{i}", f"问题{i}", 900 + i) for i in range(12)]
    assert all(r.status_code == 200 for r in await asyncio.gather(*posts))
    ref = ChatRef(platform=PLATFORM, chat_id="lisi", user_id="lisi")
    await asyncio.gather(*(env.adapter.send(ref, [OutgoingMessage(text=f"提醒{i}")]) for i in range(8)))
    await env.fake.wait_for_sends(20)
    await env.adapter.join()
    assert len(env.fake.sent) == 20
    assert env.fake.gettoken_calls == 1


async def test_one_members_messages_are_answered_in_order(fake: FakeWeCom, db: Database) -> None:
    qa = StubAnswerer(gated=True)
    async for e in _env(fake, db, qa):
        await e.post_text("zhangsan", "/ask 第一个问题", 1001)
        assert await asyncio.to_thread(qa.started.wait, 5)
        await e.post_text("zhangsan", "/help", 1002)  # needs no answerer: would overtake if allowed
        await asyncio.sleep(0.3)
        assert fake.sent == []
        qa.release.set()
        await fake.wait_for_sends(2)
        first, second = fake.texts("zhangsan")
        assert "第十八条" in first and "/help" in second


async def test_secrets_never_reach_the_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await env.client.get("/wecom/callback", params=env.cb.verification("42"))
    await env.post_text("zhangsan", "党组会议多久召开一次？", 1101)
    await env.fake.wait_for_sends(1)
    env.fake.expire_tokens()
    await env.post_text("zhangsan", "第二个问题", 1102)
    await env.fake.wait_for_sends(2)
    env.fake.fail_next_sends(48002, "api forbidden")
    with pytest.raises(WeComApiError):
        await env.adapter.send(ChatRef(platform=PLATFORM, chat_id="x", user_id="x"), [OutgoingMessage(text="x")])
    await env.post({"msg_signature": "0" * 40, "timestamp": "1", "nonce": "2"}, b"<xml><Encrypt>QUJD</Encrypt></xml>")
    await env.adapter.join()
    text = caplog.text
    assert "HTTP Request" in text and "access_token=***" in text  # httpx did log, redacted
    for secret in [SECRET, TOKEN, AES_KEY, *env.fake.issued_tokens]:
        assert secret not in text
    assert SECRET not in repr(env.adapter) and SECRET not in repr(env.adapter.api)


# Configuration and run() ----------------------------------------------------------------
def test_missing_settings_are_named(fake: FakeWeCom) -> None:
    settings = make_settings(wecom_corp_id="ww1", wecom_agent_id="1000002")
    with pytest.raises(ValueError) as info:
        wecom.check_settings(settings)
    message = str(info.value)
    for name in ("DANGJIAN_WECOM_SECRET", "DANGJIAN_WECOM_TOKEN", "DANGJIAN_WECOM_AES_KEY"):
        assert name in message
    assert "DANGJIAN_WECOM_CORP_ID" not in message and "缺少" in message and "missing" in message
    with pytest.raises(ValueError, match="DANGJIAN_WECOM_AGENT_ID"):
        wecom.check_settings(fake.settings(wecom_agent_id="abc"))
    with pytest.raises(ValueError, match="DANGJIAN_WECOM_AES_KEY"):
        wecom.check_settings(fake.settings(wecom_aes_key="tooshort"))


async def test_run_validates_settings(db: Database) -> None:
    with pytest.raises(ValueError, match="DANGJIAN_WECOM_CORP_ID"):
        await wecom.run(make_settings(), TestBot().core, db)
