"""The server side of ESL framing: client bytes -> command packets (pure, no I/O).

Follows mod_event_socket's read_packet(): leading CR/LF are skipped, a packet ends at two LFs
(CRs do not count, so CRLF CRLF works), the first line is the command, the other lines are
`Name: value` headers (lines without a colon are ignored, an empty value adds nothing), and a
`Content-Length` header makes the server read that many body bytes right after the blank line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .events import first_header

MAX_PACKET = 10 * 1024 * 1024  # read_packet's max_len
MAX_CONTENT_LENGTH = 10 * 1024 * 1024
_END = re.compile(rb"\n\r*\n")


class PacketError(Exception):
    """The client sent something FreeSWITCH would drop the connection for."""


@dataclass(slots=True)
class Packet:
    command: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None

    def get(self, name: str) -> str | None:
        return first_header(self.headers, name)


def _first_line(s: str) -> str:
    """strip_cr(): cut at the first CR or LF."""
    for i, ch in enumerate(s):
        if ch in "\r\n":
            return s[:i]
    return s


class PacketReader:
    """Feed bytes with `feed()`, then drain complete packets with `next_packet()`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: Packet | None = None
        self._need = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> Packet | None:
        if self._pending is not None:
            return self._take_body()
        buf = self._buf
        # read_packet drops CR/LF that arrive while its buffer is empty
        i = 0
        while i < len(buf) and buf[i] in (13, 10):
            i += 1
        if i:
            del buf[:i]
        end = self._find_end(buf)
        if end < 0:
            if len(buf) >= MAX_PACKET:
                raise PacketError("header block too long")
            return None
        text = bytes(buf[:end]).decode("utf-8", "surrogateescape")
        del buf[:end]
        lines = text.replace("\r", "").split("\n")
        pkt = Packet(command=_first_line(lines[0]))
        clen = None
        for line in lines[1:]:
            if not line or ":" not in line:
                continue
            name, _, value = line.partition(":")
            value = value.lstrip(" ")
            if not value:
                continue
            pkt.headers.append((name, value))
            if clen is None and name.lower() == "content-length":
                try:
                    clen = int(value.strip() or "0")
                except ValueError:
                    clen = 0
                if clen < 0 or clen > MAX_CONTENT_LENGTH:
                    raise PacketError(f"Content-Length {value!r} out of range")
        if clen:
            self._pending = pkt
            self._need = clen
            return self._take_body()
        return pkt

    def _take_body(self) -> Packet | None:
        if len(self._buf) < self._need:
            return None
        pkt = self._pending
        assert pkt is not None
        pkt.body = bytes(self._buf[: self._need]).decode("utf-8", "surrogateescape")
        del self._buf[: self._need]
        self._pending = None
        self._need = 0
        return pkt

    @staticmethod
    def _find_end(buf: bytearray) -> int:
        """Index just past the LF that brings the count of LFs (CRs ignored) to two."""
        m = _END.search(buf)
        return m.end() if m else -1
