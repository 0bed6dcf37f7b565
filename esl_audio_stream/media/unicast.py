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
from collections.abc import Callable
from time import monotonic

from gevent.socket import wait_read

RCVBUF = 256 * 1024


#: How long a port given up on is left alone before it is probed again (FreeSWITCH may hold it
#: until the channel it was asked for ends); where FreeSWITCH is on another host, and nothing can
#: be probed, how long before it is handed out again anyway.
HOLD_RECHECK = 5.0
HOLD_REMOTE = 3600.0


class PortPool:
    """FreeSWITCH-side unicast ports.

    Released ports go to the back of the line, so a port that FreeSWITCH may still be closing is
    the last one handed out again. FreeSWITCH binds `local-ip:local-port` itself and answers the
    sendmsg +OK even when that bind fails (facts file), so a port someone else holds (another
    FreeSWITCH, another daemon, a test) shows only as silence. Where FreeSWITCH is on this host
    (`probe_host` is an address here), each port is probed with a bind of our own before it is
    handed out: one that is taken is skipped and held back (`skipped`). A port the daemon asked
    FreeSWITCH to use and then gave up on (`hold`) may still be bound by FreeSWITCH until that
    channel ends: it is held back until a probe finds it free (or, where FreeSWITCH is remote
    and nothing can be probed, for HOLD_REMOTE seconds).
    """

    def __init__(self, low: int, high: int, probe_host: str | None = None,
                 clock: Callable[[], float] = monotonic) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad port range {low}-{high}")
        self._free: deque[int] = deque(range(low, high + 1))
        self._used: set[int] = set()
        self._held: dict[int, float] = {}  # port -> when it was last found (or left) bound
        self._clock = clock
        self._probe_host = probe_host if probe_host and _is_local(probe_host) else None
        self.skipped = 0  # ports found bound by someone else when their turn came

    def take(self) -> int:
        if self._held:
            self._release_held()
        free = self._free
        while free:
            port = free.popleft()
            if self._probe_host is not None and not _bindable(self._probe_host, port):
                self._held[port] = self._clock()
                self.skipped += 1
                continue
            self._used.add(port)
            return port
        raise RuntimeError("no free FreeSWITCH unicast port left"
                           + (f" ({len(self._held)} held back: in use)" if self._held else ""))

    def claim(self, port: int) -> bool:
        """Take this very port (a stream carried on from another process asked FreeSWITCH for
        it); False when it is outside the range or already the daemon's."""
        if port in self._used:
            return False
        if port in self._held:
            del self._held[port]
        else:
            try:
                self._free.remove(port)
            except ValueError:
                return False
        self._used.add(port)
        return True

    def give(self, port: int) -> None:
        """A port the daemon is done with, FreeSWITCH's side closed (or never opened)."""
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    def hold(self, port: int) -> None:
        """A port the daemon gave up on that FreeSWITCH may still have bound: out of the line
        until it is known unused."""
        if port in self._used:
            self._used.remove(port)
            self._held[port] = self._clock()

    def _release_held(self) -> None:
        now = self._clock()
        host = self._probe_host
        for port, since in list(self._held.items()):
            if host is None:
                if now - since >= HOLD_REMOTE:
                    del self._held[port]
                    self._free.append(port)
            elif now - since >= HOLD_RECHECK:
                if _bindable(host, port):
                    del self._held[port]
                    self._free.append(port)
                else:
                    self._held[port] = now

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def held(self) -> int:
        """Ports held back because someone (maybe FreeSWITCH) still has them bound."""
        return len(self._held)


def _is_local(host: str) -> bool:
    """Whether `host` is an address of this machine (a bind to it works)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


def _bindable(host: str, port: int) -> bool:
    """Whether nobody holds (host, port) for UDP: our own bind, closed at once, says so."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, port))
    except OSError as exc:
        return exc.errno != errno.EADDRINUSE
    return True


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

    def __init__(self, host: str, fs_host: str, fs_port: int, port: int = 0) -> None:
        """`port`: the daemon's own port to bind (0: any; a stream carried on from another
        process binds the one FreeSWITCH streams to)."""
        self.fs_address = (fs_host, fs_port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # A plain non-blocking socket: the stream reads it from an event-loop callback, which
        # must never wait (a gevent socket would try to).
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.bind((host, port))
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
