"""End to end: `dangjian run --adapter wecom|dingtalk` as processes, against loopback fakes."""
from __future__ import annotations

import re
import time

import httpx

from tests.e2e import BotProcess, ReminderClock, wait_until
from tests.fakes.dingtalk_api import FakeDingTalk
from tests.fakes.wecom_api import FakeWeCom
from tests.servers import free_port

#: Seconds from process start until the first reminder may fall due: start-up, then the meeting.
REMINDER_DELAY = 20


def _wait_http(url: str, bot: BotProcess) -> None:
    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 120, "the HTTP port", bot)


def test_wecom_process(data_copy, tmp_path):
    fake = FakeWeCom().start()
    port = free_port()
    clock = ReminderClock.start(REMINDER_DELAY)
    env = {
        "DANGJIAN_DATA_DIR": str(data_copy),
        "DANGJIAN_WECOM_CORP_ID": fake.corp_id, "DANGJIAN_WECOM_AGENT_ID": str(fake.agent_id),
        "DANGJIAN_WECOM_SECRET": fake.secret, "DANGJIAN_WECOM_TOKEN": fake.callbacks.token,
        "DANGJIAN_WECOM_AES_KEY": fake.callbacks.aes_key, "DANGJIAN_WECOM_API_BASE": fake.base_url,
        "DANGJIAN_HTTP_HOST": "127.0.0.1", "DANGJIAN_HTTP_PORT": str(port), **clock.env,
    }
    bot = BotProcess("wecom", env, tmp_path / "wecom.log").start()
    base = f"http://127.0.0.1:{port}"
    cb = fake.callbacks
    try:
        _wait_http(base + "/healthz", bot)

        def post(xml: str, **kw) -> httpx.Response:
            params, body = cb.message(xml, **kw)
            return httpx.post(base + "/wecom/callback", params=params, content=body, timeout=5)

        # A meeting first (its reminder comes while the rest is tried), confirmed with its number.
        at = clock.meeting()
        post(cb.text_xml("zhangsan", clock.command(at), 10004))
        wait_until(lambda: fake.texts("zhangsan"), 20, "the confirmation", bot)
        assert re.search(r"#\d+", fake.texts("zhangsan")[0])

        # URL verification: the plain echostr.
        r = httpx.get(base + "/wecom/callback", params=cb.verification("1616140317555161061"))
        assert r.status_code == 200 and r.text == "1616140317555161061"

        # A question: the callback returns at once, the answer goes through message/send.
        started = time.monotonic()
        r = post(cb.text_xml("lisi", "党组会议一般多久召开一次？", 10001))
        assert r.status_code == 200 and time.monotonic() - started < 1.0
        wait_until(lambda: fake.texts("lisi"), 20, "the answer", bot)
        answer = fake.texts("lisi")[0]
        assert "第十八条" in answer and "每月" in answer
        assert all(m["agentid"] == fake.agent_id for m in fake.sent)

        # The same MsgId again: answered once.
        assert post(cb.text_xml("lisi", "党组会议一般多久召开一次？", 10001)).status_code == 200
        # Forged signature: 403, nothing sent.
        params, body = cb.message(cb.text_xml("zhaosi", "党组会议纪要由谁签发？", 10002))
        params["msg_signature"] = "0" * 40
        assert httpx.post(base + "/wecom/callback", params=params, content=body).status_code == 403

        # Expired token: refetched, the same send retried.
        calls = fake.gettoken_calls
        fake.expire_tokens()
        assert post(cb.text_xml("wangwu", "党组会议纪要由谁签发？", 10003)).status_code == 200
        wait_until(lambda: fake.texts("wangwu"), 20, "the answer after token expiry", bot)
        assert fake.gettoken_calls == calls + 1 and "第二十五条" in fake.texts("wangwu")[0]
        assert len(fake.texts("lisi")) == 1 and not fake.texts("zhaosi")

        # A checklist by typed replies.
        post(cb.text_xml("zhaoliu", "/checklist 民主生活会", 10005))
        wait_until(lambda: fake.texts("zhaoliu"), 20, "step 1", bot)
        step1 = fake.texts("zhaoliu")[0]
        assert "《" in step1 and "完成" in step1
        post(cb.text_xml("zhaoliu", "完成", 10006))
        wait_until(lambda: len(fake.texts("zhaoliu")) >= 2, 20, "step 2", bot)
        assert "《" in fake.texts("zhaoliu")[1] and fake.texts("zhaoliu")[1] != step1

        def reminders() -> list[str]:
            return [t for t in fake.texts("zhangsan") if "提醒】" in t]

        wait_until(reminders, 90, "the reminder", bot)
        time.sleep(3)  # a duplicate would follow within a couple of polls
        assert len(reminders()) == 1 and "三楼会议室" in reminders()[0] and f"{at:%H:%M}" in reminders()[0]
        assert bot.alive
        assert bot.stop() == 0  # SIGTERM: queued work drained, a clean exit
    finally:
        bot.stop()
        fake.stop()


def test_dingtalk_process(data_copy, tmp_path):
    fake = FakeDingTalk().start()
    port = free_port()
    clock = ReminderClock.start(REMINDER_DELAY)
    env = {
        "DANGJIAN_DATA_DIR": str(data_copy),
        "DANGJIAN_DINGTALK_APP_KEY": fake.app_key, "DANGJIAN_DINGTALK_APP_SECRET": fake.app_secret,
        "DANGJIAN_DINGTALK_ROBOT_CODE": fake.robot_code, "DANGJIAN_DINGTALK_API_BASE": fake.base_url,
        "DANGJIAN_HTTP_HOST": "127.0.0.1", "DANGJIAN_HTTP_PORT": str(port), **clock.env,
    }
    bot = BotProcess("dingtalk", env, tmp_path / "dingtalk.log").start()
    url = f"http://127.0.0.1:{port}/dingtalk/callback"
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", bot)

        def post(cb) -> httpx.Response:
            return httpx.post(url, content=cb.body, headers=cb.headers, timeout=5)

        at = clock.meeting()
        assert post(fake.callback(clock.command(at), session="s4", staff_id="secretary1")).status_code == 200
        wait_until(lambda: fake.replies_to("s4"), 20, "the confirmation", bot)
        assert re.search(r"#\d+", fake.replies_to("s4")[0].text)

        cb = fake.callback("党组会议一般多久召开一次？", session="s1", msg_id="m1", staff_id="staff1")
        assert post(cb).status_code == 200
        assert post(cb).status_code == 200  # redelivery
        wait_until(lambda: fake.replies_to("s1"), 20, "the answer", bot)
        assert "第十八条" in fake.replies_to("s1")[0].text and "每月" in fake.replies_to("s1")[0].text

        bad = fake.callback("党组会议纪要由谁签发？", session="s2", sign_with="forged-secret")
        assert post(bad).status_code == 403
        stale = fake.callback("党组会议纪要由谁签发？", session="s3", timestamp_ms=int((time.time() - 7200) * 1000))
        assert post(stale).status_code == 403

        group = fake.callback("党组会议纪要由谁签发？", session="g1", group=True, staff_id="staff2")
        assert post(group).status_code == 200
        wait_until(lambda: fake.replies_to("g1"), 20, "the group answer", bot)
        assert "第二十五条" in fake.replies_to("g1")[0].text

        def reminders() -> list:
            return [b for b in fake.batch_sends if "提醒】" in b.text]

        wait_until(reminders, 90, "the reminder", bot)
        time.sleep(3)
        [reminder] = reminders()
        assert reminder.user_ids == ["secretary1"] and reminder.robot_code == fake.robot_code
        assert "三楼会议室" in reminder.text and f"{at:%H:%M}" in reminder.text
        assert len(fake.replies_to("s1")) == 1 and not fake.replies_to("s2") and not fake.replies_to("s3")
        assert bot.alive
        assert bot.stop() == 0
    finally:
        bot.stop()
        fake.stop()
