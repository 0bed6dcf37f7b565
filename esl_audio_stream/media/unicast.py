"""The daemon's end of FreeSWITCH's `unicast`: one UDP socket per call, and FreeSWITCH's ports.

FreeSWITCH binds `local-ip:local-port` itself and sends each 20 ms read frame from there to
`remote-ip:remote-port`; datagrams sent back to its local-port are written into the call. Each
channel needs its own local-port, so the daemon hands them out (`PortPool`). The daemon's socket is
`connect()`ed to FreeSWITCH's address, so the kernel drops datagrams from anyone else before
Python sees them: the per-frame path does no address check at all.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections import deque

from gevent.socket import wait_read

RCVBUF = 256 * 1024


class PortPool:
    """FreeSWITCH-side unicast ports. Released ports go to the back of the line, so a port that
    FreeSWITCH may still be closing is the last one handed out again."""

    def __init__(self, low: int, high: int) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad port range {low}-{high}")
        self._free: deque[int] = deque(range(low, high + 1))
        self._used: set[int] = set()

    def take(self) -> int:
        if not self._free:
            raise RuntimeError("no free FreeSWITCH unicast port left")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def give(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        return len(self._used)


def unicast_headers(fs_host: str, fs_port: int, host: str, port: int) -> dict[str, str]:
    """The `sendmsg` headers that make FreeSWITCH stream a parked call to (host, port)."""
    return {
        "call-command": "unicast",
        "local-ip": fs_host,
        "local-port": str(fs_port),
        "remote-ip": host,
        "remote-port": str(port),
        "transport": "udp",
    }


class UnicastEndpoint:
    """One call's UDP socket: receives FreeSWITCH's frames, sends frames to be written back."""

    def __init__(self, host: str, fs_host: str, fs_port: int) -> None:
        self.fs_address = (fs_host, fs_port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # A plain non-blocking socket: the stream reads it from an event-loop callback, which
        # must never wait (a gevent socket would try to).
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.bind((host, 0))
            # FreeSWITCH's unicast socket is always IPv4 (facts file).
            if family == socket.AF_INET:
                self.sock.connect(self.fs_address)
        except OSError:
            self.sock.close()
            raise
        self.host, self.port = self.sock.getsockname()[:2]

    def headers(self) -> dict[str, str]:
        return unicast_headers(self.fs_address[0], self.fs_address[1], self.host, self.port)

    def recv(self, size: int = 8192, timeout: float | None = None) -> bytes:
        """Next datagram, waiting in this greenlet (the stream itself reads from a callback).
        An ICMP error from an earlier send is skipped."""
        while True:
            try:
                return self.sock.recv(size)
            except BlockingIOError:
                wait_read(self.sock.fileno(), timeout)
            except OSError as exc:
                if exc.errno != errno.ECONNREFUSED:
                    raise

    def send(self, data: bytes) -> bool:
        """Write one frame back into the call (FreeSWITCH plays each datagram at once).
        False when it was lost (a full buffer, or no one listening yet), as UDP loses."""
        try:
            self.sock.send(data)
        except (BlockingIOError, ConnectionRefusedError):
            return False
        return True

    def end_write_back(self) -> None:
        """A zero-length datagram ends FreeSWITCH's write-back thread for this call."""
        with contextlib.suppress(OSError):
            self.sock.send(b"")

    def close(self) -> None:
        self.sock.close()
