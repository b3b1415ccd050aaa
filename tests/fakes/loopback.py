"""Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) for tests.

:class:`LoopbackServer` runs it in a background daemon thread with its own event loop. The fakes
of platform APIs (``FakeWeCom``, ``FakeDingTalk``, ``FakeOpenAI``, ``FakeTelegram``) use it when a
test needs them over real HTTP (process-level tests), so sync and async tests alike can start
them::

    server = LoopbackServer(app, "fake-thing").start()   # returns once it accepts connections
    httpx.get(server.base_url + "/ping")
    server.stop()                                         # or: with LoopbackServer(...) as server

:class:`LoopbackFake` gives such a fake its ``start()``/``stop()``/``with`` in one line. Unit
tests reach the same fakes in-process instead (``httpx.ASGITransport``, no socket).

Nothing here talks to anything but 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Self

import uvicorn

HOST = "127.0.0.1"


def _bind_free_port() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a port the OS picks (not yet listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


def _server(app: Any, **options: Any) -> uvicorn.Server:
    """A quiet uvicorn server for ``app`` (no access log, no lifespan); ``options`` go to Config."""
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **options))


class LoopbackServer:
    """An ASGI app served by uvicorn on 127.0.0.1 (free port) in a background daemon thread.

    Args:
        app: the ASGI application.
        name: the thread's name (also used in the start-up error).
        graceful_shutdown: uvicorn's ``timeout_graceful_shutdown`` in seconds (None: wait for
            open requests, uvicorn's default); set it when requests may hang (long polls).
        join_timeout: how long :meth:`stop` waits for the thread.
        loop: uvicorn's event-loop choice (``"auto"``: uvloop if installed; ``"asyncio"``).
        on_loop: called with the server's event loop, inside it, before serving (to create
            loop-bound objects such as an ``asyncio.Event``); :meth:`start` returns after it ran.

    :attr:`port` is 0 before the first :meth:`start` and keeps the last port after :meth:`stop`.
    """

    def __init__(
        self,
        app: Any,
        name: str,
        *,
        graceful_shutdown: int | None = None,
        join_timeout: float = 10.0,
        loop: str = "auto",
        on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self._graceful_shutdown = graceful_shutdown
        self._join_timeout = join_timeout
        self._loop = loop
        self._on_loop = on_loop
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> LoopbackServer:
        """Bind a free port, serve in a daemon thread and return self once accepting connections.

        Does nothing if already running. Raises RuntimeError if the server is not up within
        ``timeout`` seconds (or its thread dies).
        """
        if self.running:
            return self
        sock = _bind_free_port()
        self._sock = sock
        self.port = sock.getsockname()[1]
        server = _server(self.app, loop=self._loop, timeout_graceful_shutdown=self._graceful_shutdown)
        self._server = server
        self._thread = threading.Thread(target=self._run, args=(server, sock), name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"{self.name} server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Ask the server to exit, wait for its thread (``join_timeout``) and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self._join_timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        """The thread: what ``uvicorn.Server.run`` does, plus the ``on_loop`` hook."""

        async def serve() -> None:
            if self._on_loop is not None:
                self._on_loop(asyncio.get_running_loop())
            await server.serve(sockets=[sock])

        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(serve())


class LoopbackFake:
    """Mixin for a fake served by a :class:`LoopbackServer` kept in ``self._server``.

    Gives it ``start(timeout=10.0) -> self``, ``stop()`` and ``with fake: ...``; a fake that must
    do more on start or stop overrides them and calls ``super()``.
    """

    _server: LoopbackServer

    def start(self, timeout: float = 10.0) -> Self:
        """Serve on 127.0.0.1 (free port) in a daemon thread; return self once listening."""
        self._server.start(timeout)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server's thread."""
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
