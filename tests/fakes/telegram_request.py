"""PTB's HTTP layer replaced for unit tests: every Bot API call (and file download) the adapter's
application makes is answered in-process by a :class:`~tests.fakes.telegram_api.FakeTelegram`,
which records it. No server, no socket::

    fake = FakeTelegram()
    adapter = TelegramAdapter(settings, core, db, request=FakeTelegramRequest(fake))
    app = await adapter.initialize()                       # getMe, setMyCommands
    fake.push_text(42, 42, "党组会议多久召开一次？")
    for update in fake.take_updates():
        await app.process_update(Update.de_json(update, app.bot))
    assert "第十八条" in fake.sent[-1].text
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit

from telegram.request import BaseRequest, RequestData

from tests.fakes.telegram_api import FakeTelegram


class FakeTelegramRequest(BaseRequest):
    """A ``telegram.request.BaseRequest`` whose every request goes to ``fake``."""

    def __init__(self, fake: FakeTelegram) -> None:
        super().__init__()
        self.fake = fake

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    @property
    def read_timeout(self) -> float:
        return 5.0

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        path = unquote(urlsplit(url).path)
        if path.startswith("/file/bot"):
            token, _, file_path = path[len("/file/bot"):].partition("/")
            return self.fake.download(token, file_path)
        token, _, api_method = path[len("/bot"):].partition("/")
        params = dict(request_data.json_parameters) if request_data else {}
        files: dict[str, tuple[str, bytes, str | None]] = {}
        for name, upload in (request_data.multipart_data if request_data else {}).items():
            filename, content, mime = upload if len(upload) == 3 else (*upload, None)  # type: ignore[misc]
            files[name] = (filename, content if isinstance(content, bytes) else content.read(), mime)
        status, body = await self.fake.call(token, api_method, params, files)
        return status, json.dumps(body).encode("utf-8")
