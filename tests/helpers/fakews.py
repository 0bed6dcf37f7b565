"""Scripted stand-ins for ws/connection.py's WebSocketConnection, for driving a Link where the
failure must happen at one exact point (inside a send, while congested): they record what is
sent, congest when the test says, and drop when the test (or their script) says."""

from __future__ import annotations

from typing import Any

import gevent.event


class FakeConnection:
    """Records messages in `sent`; `congested` and `drained` are the test's to set."""

    def __init__(self) -> None:
        self.sent: list[bytes | str] = []
        self.congested = False
        self.drained = gevent.event.Event()  # wait_writable returns when it is set
        self.drained.set()
        self.is_open = False
        self.last_error: Any = None
        self.on_close: Any = None
        self.on_blocked: Any = None

    def connect(self) -> None:
        self.is_open = True

    def send_binary(self, data: bytes) -> bool:
        if not self.is_open or self.congested:
            return False
        self.sent.append(data)
        return True

    def send_text(self, text: str) -> bool:
        return self.send_binary(text)  # type: ignore[arg-type]

    def flush(self) -> bool:
        return not self.congested

    def wait_writable(self, timeout: float) -> bool:
        return self.drained.wait(timeout)

    def drop(self, code: int = 1006, reason: str = "gone") -> None:
        """The connection dies (as ws/connection.py reports it: closed, then on_close)."""
        if self.is_open:
            self.is_open = False
            self.on_close(code, reason)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.drop(code, reason)

    def abort(self) -> None:
        self.drop(1006, "aborted")


class Script:
    """A Link's connection_factory: hands out `conns` in order, bound to the Link's callbacks;
    `made` lists what it handed out."""

    def __init__(self, *conns: FakeConnection) -> None:
        self.queue = list(conns)
        self.made: list[FakeConnection] = []

    def __call__(self, url: str, *, on_close: Any, on_blocked: Any = None,
                 **_options: Any) -> FakeConnection:
        conn = self.queue.pop(0)
        conn.on_close, conn.on_blocked = on_close, on_blocked
        self.made.append(conn)
        return conn
