"""libwsc's error numbering, the one table of it: mod_audio_stream puts these codes in its error
events, so endpoints and dial plans written for it read ours the same way."""

from __future__ import annotations

import enum


class WSErrorCode(enum.IntEnum):
    """libwsc's error numbering (used in mod_audio_stream's error events)."""

    IO = 1
    INVALID_HEADER = 2  # also: the server refused the upgrade (see WSError.http_status)
    SERVER_MASKED = 3
    NOT_SUPPORTED = 4
    PING_TIMEOUT = 5
    CONNECT_FAILED = 6  # TCP or DNS
    TLS_INIT_FAILED = 7
    SSL_HANDSHAKE_FAILED = 8
    SSL_ERROR = 9  # certificate verification
    TIMEOUT = 10
    PROTOCOL = 11


class WSError(Exception):
    """A connection failure, with libwsc's code and, for a refused upgrade, the HTTP status."""

    def __init__(self, code: int, message: str, http_status: int | None = None) -> None:
        super().__init__(f"[{int(code)}] {message}")
        self.code = int(code)
        self.message = message
        self.http_status = http_status
