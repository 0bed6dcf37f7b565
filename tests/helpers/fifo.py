"""A FIFO read as a test reads it: made in a directory, its read end opened first and without
blocking (FreeSWITCH's open for writing waits for a reader), read in the reads the kernel gives."""

from __future__ import annotations

import os

import gevent
from gevent.socket import wait_read


class Fifo:
    def __init__(self, directory, name: str = "rec.r8", open_now: bool = True) -> None:
        self.path = str(directory / name)
        os.mkfifo(self.path, 0o600)
        self.fd = -1
        self.reads: list[bytes] = []  # every read that returned data, in order
        self.eof = False
        if open_now:
            self.open()

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    @property
    def data(self) -> bytes:
        return b"".join(self.reads)

    def read_now(self) -> int:
        """Read what is there now; how many bytes."""
        got = 0
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return got
            if not chunk:
                self.eof = True
                return got
            self.reads.append(chunk)
            got += len(chunk)

    def read_until(self, nbytes: int, timeout: float = 5.0) -> bool:
        """Read until `nbytes` in all (or EOF); False when they did not come in time."""
        with gevent.Timeout(timeout, False):
            while len(self.data) < nbytes and not self.eof:
                wait_read(self.fd)
                self.read_now()
            return len(self.data) >= nbytes
        return False

    def read_to_eof(self, timeout: float = 5.0) -> bool:
        with gevent.Timeout(timeout, False):
            while not self.eof:
                wait_read(self.fd)
                self.read_now()
            return True
        return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
