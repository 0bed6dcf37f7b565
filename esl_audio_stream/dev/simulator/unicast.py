"""FreeSWITCH's side of one `unicast` connection: a bound IPv4 UDP socket and the write-back
reader (switch_ivr_activate_unicast / unicast_thread_run), as gevent objects.

The socket is bound when the channel parses the sendmsg; the reader starts only when the park
loop first uses the connection (unicast_thread_launch), exactly as in switch_ivr.c.
"""

from __future__ import annotations

import logging
import os
import socket as _std
from collections.abc import Callable

import gevent
from gevent import socket

log = logging.getLogger(__name__)


class SimUnicast:
    """One unicast connection. `close()` ends the reader and closes the socket; idempotent."""

    __slots__ = ("_reader", "_tx", "closed", "local", "remote", "sock")

    def __init__(self, local: tuple[str, int], remote: tuple[str, int]) -> None:
        self.local = local
        self.remote = remote
        self.closed = False
        self._reader: gevent.Greenlet | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(local)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.local = sock.getsockname()
        # The per-frame send skips gevent's wrapper: a plain socket on a dup of the same
        # (non-blocking) descriptor sends from the same bound address.
        self._tx = _std.socket(_std.AF_INET, _std.SOCK_DGRAM, fileno=os.dup(sock.fileno()))

    @classmethod
    def open(cls, local_ip: str, local_port: int, remote_ip: str, remote_port: int) -> SimUnicast:
        """Resolve both ends (IPv4, as FreeSWITCH always uses AF_INET) and bind local."""
        def v4(host: str, port: int) -> tuple[str, int]:
            try:  # a literal needs no resolver round trip (that would yield mid-tick)
                _std.inet_pton(_std.AF_INET, host)
                return host, port
            except OSError:
                pass
            info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
            return info[0][4][0], port

        return cls(v4(local_ip, local_port), v4(remote_ip, remote_port))

    def launch(self, on_data: Callable[[bytes], None]) -> None:
        """Start the write-back reader: every datagram, from any sender, goes to `on_data` at
        once; a zero-length datagram ends the reader (the stream itself keeps going)."""
        if self._reader is None and not self.closed:
            self._reader = gevent.spawn(self._read, on_data)

    def _read(self, on_data: Callable[[bytes], None]) -> None:
        sock = self.sock
        while not self.closed:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            on_data(data)

    def send(self, frame: bytes | memoryview) -> bool:
        """One frame to the remote; False when the socket is unusable (FreeSWITCH then
        deactivates the unicast)."""
        if self.closed:
            return False
        try:
            self._tx.sendto(frame, self.remote)
        except BlockingIOError:  # send buffer full: this frame is lost, the stream goes on
            return True
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        reader = self._reader
        self._reader = None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)
        self._tx.close()
        self.sock.close()
