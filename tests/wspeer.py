"""An independent WebSocket peer for the tests: the `websockets` library's asyncio server, run in a
thread of its own (the daemon under test runs on gevent in the main thread, unpatched)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from websockets.asyncio.server import serve


@dataclass
class PeerConnection:
    path: str
    headers: dict[str, str]
    messages: list[bytes | str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    closed: threading.Event = field(default_factory=threading.Event)
    ws: object = None

    @property
    def audio(self) -> bytes:
        return b"".join(m for m in self.messages if isinstance(m, bytes))

    @property
    def binary(self) -> list[bytes]:
        return [m for m in self.messages if isinstance(m, bytes)]

    @property
    def texts(self) -> list[str]:
        return [m for m in self.messages if isinstance(m, str)]


def _gevent_wait(future, timeout: float = 5.0):
    """Wait for the peer thread without blocking the gevent hub (the daemon must keep running)."""
    import gevent

    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError("websockets peer did not finish in time")
        gevent.sleep(0.005)
    return future.result()


class WSPeer:
    """Records every connection; can send text to and close a connection from the test thread."""

    def __init__(self, host: str = "127.0.0.1", *, compression: str | None = "deflate",
                 on_connect_text: list[str] | None = None, port: int = 0) -> None:
        self.host = host
        self.want_port = port
        self.compression = compression
        self.on_connect_text = on_connect_text or []
        self.connections: list[PeerConnection] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"ws://{self.host}:{self.port}{path}"

    def start(self) -> WSPeer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("websockets peer did not start")
        return self

    def kill(self) -> None:
        """Drop every connection at the TCP level (no close frame: the client sees 1006), then
        stop the server, as a crashed endpoint would."""
        assert self._loop is not None
        if not self._thread.is_alive():
            return

        def abort() -> None:
            for conn in self.connections:
                if conn.ws is not None and conn.ws.transport is not None:
                    conn.ws.transport.abort()

        self._loop.call_soon_threadsafe(abort)
        self.stop()

    def stop(self) -> None:
        """Stop the server; wait without blocking the gevent hub, so the daemon under test can
        answer the closing handshakes meanwhile."""
        import gevent

        if not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        deadline = time.monotonic() + 10
        while self._thread.is_alive() and time.monotonic() < deadline:
            gevent.sleep(0.01)

    def wait_connection(self, n: int = 1, timeout: float = 5.0) -> PeerConnection:
        import gevent

        deadline = time.monotonic() + timeout
        while len(self.connections) < n and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert len(self.connections) >= n, "no WebSocket connection arrived"
        return self.connections[n - 1]

    def send_text(self, conn: PeerConnection, text: str) -> None:
        assert self._loop is not None
        _gevent_wait(asyncio.run_coroutine_threadsafe(conn.ws.send(text), self._loop))

    def send_binary(self, conn: PeerConnection, data: bytes) -> None:
        assert self._loop is not None
        _gevent_wait(asyncio.run_coroutine_threadsafe(conn.ws.send(data), self._loop))

    def close(self, conn: PeerConnection, code: int = 1000, reason: str = "") -> None:
        assert self._loop is not None
        _gevent_wait(asyncio.run_coroutine_threadsafe(conn.ws.close(code, reason), self._loop))

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self.want_port, compression=self.compression,
                         max_size=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handler(self, ws) -> None:
        conn = PeerConnection(ws.request.path, dict(ws.request.headers), ws=ws)
        self.connections.append(conn)
        for text in self.on_connect_text:
            await ws.send(text)
        try:
            async for message in ws:
                conn.times.append(time.monotonic())
                conn.messages.append(message)
        except Exception:
            pass
        finally:
            if ws.close_code is not None:
                conn.close_code = ws.close_code
                conn.close_reason = ws.close_reason or ""
            else:
                conn.close_code = 1006
            conn.closed.set()
