"""A WebSocket server built from a plain socket and wsproto's server side, in a thread of its own,
whose connections follow a script: the misbehaviours a library server will not do on demand
(stop reading with a tiny receive buffer, then reset the connection)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)


@dataclass
class RawConn:
    """One accepted connection: what it received, and how it behaves."""

    behaviour: str  # "read" (record every message) | "stall" (upgrade, then read nothing)
    messages: list[bytes | str] = field(default_factory=list)
    upgraded: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    sock: socket.socket | None = None

    @property
    def binary(self) -> list[bytes]:
        return [m for m in self.messages if isinstance(m, bytes)]

    @property
    def texts(self) -> list[str]:
        return [m for m in self.messages if isinstance(m, str)]


class RawWSServer:
    """`behaviours` says what the 1st, 2nd, ... connection does; later ones `read`."""

    def __init__(self, behaviours: list[str], rcvbuf: int = 4096) -> None:
        self.behaviours = list(behaviours)
        self.conns: list[RawConn] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by accepted sockets: a stalled connection holds little in the kernel.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def reset(self, conn: RawConn) -> None:
        """Abort a connection with a TCP reset (SO_LINGER 0), unread data and all."""
        assert conn.sock is not None
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()

    def wait_conn(self, n: int, timeout: float = 5.0) -> RawConn:
        import gevent

        deadline = time.monotonic() + timeout
        while (len(self.conns) < n or not self.conns[n - 1].upgraded.is_set()) \
                and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert len(self.conns) >= n and self.conns[n - 1].upgraded.is_set(), "no connection"
        return self.conns[n - 1]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._listener.close()
        for c in self.conns:
            if c.sock is not None and c.sock.fileno() >= 0:
                c.sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            n = len(self.conns)
            conn = RawConn(self.behaviours[n] if n < len(self.behaviours) else "read", sock=sock)
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: RawConn) -> None:
        sock = conn.sock
        assert sock is not None
        ws = WSConnection(ConnectionType.SERVER)
        sock.settimeout(0.2)
        try:
            while not self._stop.is_set():
                if conn.behaviour == "stall" and conn.upgraded.is_set():
                    time.sleep(0.05)  # read nothing more: the client's sends back up
                    if sock.fileno() < 0:
                        return
                    continue
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        sock.sendall(ws.send(AcceptConnection()))
                        conn.upgraded.set()
                    elif isinstance(event, TextMessage | BytesMessage):
                        # the client never fragments; a message arrives whole or in parts
                        data = event.data if isinstance(event, TextMessage) \
                            else bytes(event.data)
                        if conn.messages and not getattr(conn, "_done", True):
                            conn.messages[-1] += data
                        else:
                            conn.messages.append(data)
                        conn._done = event.message_finished  # type: ignore[attr-defined]
                    elif isinstance(event, Ping):
                        sock.sendall(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        sock.sendall(ws.send(event.response()))
                        return
        except OSError:
            return
        finally:
            conn.closed.set()
