"""Sans-IO client side of FreeSWITCH's event socket (ESL) protocol.

Why our own: python-ESL does not build with SWIG >= 4 and blocks the gevent hub; greenswitch
merges event bodies into headers. This module only turns bytes into messages and commands into
bytes (h11/wsproto style): feed ``ESLParser.receive_data()`` and drain ``next_message()``.

Wire format (mod_event_socket): a message is ``Name: value`` lines ended by a blank line, then
``Content-Length`` bytes of body if that header is present. A ``text/event-plain`` body is itself
an event: url-encoded header lines, a blank line, and -- when the event has a body -- an inner
``Content-Length`` header whose body (not url-encoded) follows that blank line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "CommandInjectionError",
    "ESLParser",
    "ESLProtocolError",
    "Event",
    "Message",
    "cmd_api",
    "cmd_auth",
    "cmd_bgapi",
    "cmd_event_plain",
    "cmd_exit",
    "cmd_filter",
    "cmd_sendevent",
    "cmd_sendmsg",
]

# A peer that never ends its header block, or announces a huge body, must not make us buffer
# without limit. 16 MiB is mod_event_socket's own MAX_CONTENT_LENGTH.
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class ESLProtocolError(Exception):
    """The peer sent bytes that cannot be framed as ESL; the connection must be dropped."""


class CommandInjectionError(ValueError):
    """An argument would change the command's framing (CR/LF, or a header it may not set)."""


@dataclass(slots=True)
class Message:
    """One framed message from FreeSWITCH (outer headers are not url-encoded)."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")


@dataclass(slots=True)
class Event:
    """A ``text/event-plain`` message: url-decoded headers and the event's own raw body.

    The inner ``Content-Length`` is framing, not event data, so it is not kept in ``headers``.
    """

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    @property
    def uuid(self) -> str:
        return self.headers.get("Unique-ID", "")

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.headers.get(key, default)


def _parse_length(value: str) -> int:
    """Content-Length as a bounded int; anything else is a framing error."""
    v = value.strip()
    if not v.isdigit():
        raise ESLProtocolError(f"bad Content-Length {value[:40]!r}")
    n = int(v)
    if n > MAX_BODY_BYTES:
        raise ESLProtocolError(f"Content-Length {n} exceeds {MAX_BODY_BYTES}")
    return n


def _parse_outer_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue  # mod_event_socket ignores such lines too
        headers[name.strip().decode("utf-8", "replace")] = value.strip(b" \t\r").decode(
            "utf-8", "replace"
        )
    return headers


def _decode_event(payload: bytes) -> Event:
    """Split an event-plain payload into url-decoded headers and the raw event body."""
    end = payload.find(b"\n\n")
    if end < 0:
        head, rest = payload, b""
    else:
        head, rest = payload[:end], payload[end + 2 :]
    headers: dict[str, str] = {}
    for line in head.split(b"\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        value = value.lstrip(b" ").rstrip(b"\r")
        if b"%" in value:
            value = unquote_to_bytes(value)
        headers[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    # Last one wins: a sendevent'ed event can carry its own Content-Length header before the
    # serializer's framing one, which is always last.
    length = headers.pop("Content-Length", None)
    if length is None:
        return Event(headers, rest)
    return Event(headers, rest[: _parse_length(length)])


class ESLParser:
    """Incremental framer: bytes in (any split), ``Message``/``Event`` out, in order."""

    __slots__ = ("_buf", "_headers", "_need", "_pos", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed bytes in _buf
        self._scan = 0  # where the search for the end of the header block resumes
        self._headers: dict[str, str] | None = None  # headers whose body is still arriving
        self._need = 0

    def receive_data(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data

    def next_message(self) -> Message | Event | None:
        """The next complete message, or None until more bytes arrive."""
        buf = self._buf
        if self._headers is None:
            pos = self._pos
            n = len(buf)
            # Stray blank lines between messages are skipped, as FreeSWITCH itself does.
            while pos < n and buf[pos] in (10, 13):
                pos += 1
            self._pos = pos
            scan = max(self._scan, pos)
            end = buf.find(b"\n\n", scan)
            if end < 0:
                if n - pos > MAX_HEADER_BYTES:
                    raise ESLProtocolError(f"header block exceeds {MAX_HEADER_BYTES} bytes")
                self._scan = max(pos, n - 1)
                return None
            if end - pos > MAX_HEADER_BYTES:
                raise ESLProtocolError(f"header block exceeds {MAX_HEADER_BYTES} bytes")
            headers = _parse_outer_headers(bytes(buf[pos:end]))
            self._pos = self._scan = end + 2
            length = headers.get("Content-Length")
            if length is None:
                return self._finish(headers, b"")
            self._need = _parse_length(length)
            self._headers = headers
        need = self._need
        start = self._pos
        if len(buf) - start < need:
            return None
        body = bytes(buf[start : start + need])
        self._pos = self._scan = start + need
        headers = self._headers
        self._headers = None
        return self._finish(headers, body)

    @staticmethod
    def _finish(headers: dict[str, str], body: bytes) -> Message | Event:
        if headers.get("Content-Type") == "text/event-plain":
            return _decode_event(body)
        return Message(headers, body)

    def __iter__(self):
        """Drain every complete message (``for msg in parser``)."""
        while (msg := self.next_message()) is not None:
            yield msg

    events = __iter__


# --- command builders -------------------------------------------------------------------------


def _check(what: str, value: str) -> None:
    # The value itself is never put in the message: it may be a password.
    if "\n" in value or "\r" in value:
        raise CommandInjectionError(f"CR/LF not allowed in ESL {what}")


def _header_lines(headers: dict[str, str]) -> list[str]:
    lines = []
    for name, value in headers.items():
        _check("header name", name)
        _check("header value", value)
        if not name or ":" in name or name != name.strip():
            raise CommandInjectionError(f"invalid ESL header name {name!r}")
        if name.lower() == "content-length":
            raise CommandInjectionError("Content-Length is set from the body, not by the caller")
        lines.append(f"{name}: {value}\n")
    return lines


def cmd_auth(password: str) -> bytes:
    _check("password", password)
    return f"auth {password}\n\n".encode()


def cmd_api(command: str) -> bytes:
    _check("api command", command)
    return f"api {command}\n\n".encode()


def cmd_bgapi(command: str, job_uuid: str | None = None) -> bytes:
    """``bgapi``; a client-chosen Job-UUID lets the caller match BACKGROUND_JOB without a race."""
    _check("bgapi command", command)
    if job_uuid is None:
        return f"bgapi {command}\n\n".encode()
    _check("Job-UUID", job_uuid)
    return f"bgapi {command}\nJob-UUID: {job_uuid}\n\n".encode()


def cmd_filter(header: str, value: str) -> bytes:
    """``filter <header> <value>``: the connection gets only events that some filter matches (a
    value in slashes is a regular expression)."""
    _check("filter header", header)
    _check("filter value", value)
    if not header or " " in header:
        raise CommandInjectionError("an ESL filter header is one word")
    return f"filter {header} {value}\n\n".encode()


def cmd_event_plain(*names: str) -> bytes:
    """``event plain A B CUSTOM x::y``: the subscription is additive on the server."""
    if not names:
        raise ValueError("event plain needs at least one event name")
    for name in names:
        _check("event name", name)
    return ("event plain " + " ".join(names) + "\n\n").encode()


def cmd_sendmsg(uuid: str, headers: dict[str, str]) -> bytes:
    _check("uuid", uuid)
    return "".join([f"sendmsg {uuid}\n", *_header_lines(headers), "\n"]).encode()


def cmd_sendevent(name: str, headers: dict[str, str], body: bytes | str | None = None) -> bytes:
    """``sendevent NAME``; the body is length-framed, so it may contain newlines.

    FreeSWITCH stores the body as a C string: it is cut at the first NUL byte.
    """
    _check("event name", name)
    head = "".join([f"sendevent {name}\n", *_header_lines(headers)])
    if body is None or len(body) == 0:
        return (head + "\n").encode()
    if isinstance(body, str):
        body = body.encode()
    return (head + f"Content-Length: {len(body)}\n\n").encode() + body


def cmd_exit() -> bytes:
    return b"exit\n\n"
