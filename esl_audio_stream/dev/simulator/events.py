"""Events as FreeSWITCH builds, serializes and routes them (pure, no I/O).

Why this much detail: the daemon parses these bytes, so the simulator must produce what
switch_event.c produces -- header order, duplicate headers (an event is a list, not a dict),
FreeSWITCH's own url-encoding, the inner Content-Length and the subscription rules of
mod_event_socket -- or the daemon's tests would pass against something FreeSWITCH never sends.
"""

from __future__ import annotations

import json
import re
import time
import uuid as _uuid
from email.utils import formatdate

# switch_event.c EVENT_NAMES, in enum order; "ALL" is last.
EVENT_NAMES: tuple[str, ...] = (
    "CUSTOM", "CLONE", "CHANNEL_CREATE", "CHANNEL_DESTROY", "CHANNEL_STATE", "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_OUTGOING",
    "CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_APPLICATION", "CHANNEL_ORIGINATE", "CHANNEL_UUID",
    "API", "LOG", "INBOUND_CHAN", "OUTBOUND_CHAN", "STARTUP", "SHUTDOWN", "PUBLISH", "UNPUBLISH",
    "TALK", "NOTALK", "SESSION_CRASH", "MODULE_LOAD", "MODULE_UNLOAD", "DTMF", "MESSAGE",
    "PRESENCE_IN", "NOTIFY_IN", "PRESENCE_OUT", "PRESENCE_PROBE", "MESSAGE_WAITING",
    "MESSAGE_QUERY", "ROSTER", "CODEC", "BACKGROUND_JOB", "DETECTED_SPEECH", "DETECTED_TONE",
    "PRIVATE_COMMAND", "HEARTBEAT", "TRAP", "ADD_SCHEDULE", "DEL_SCHEDULE", "EXE_SCHEDULE",
    "RE_SCHEDULE", "RELOADXML", "NOTIFY", "PHONE_FEATURE", "PHONE_FEATURE_SUBSCRIBE",
    "SEND_MESSAGE", "RECV_MESSAGE", "REQUEST_PARAMS", "CHANNEL_DATA", "GENERAL", "COMMAND",
    "SESSION_HEARTBEAT", "CLIENT_DISCONNECTED", "SERVER_DISCONNECTED", "SEND_INFO", "RECV_INFO",
    "RECV_RTCP_MESSAGE", "SEND_RTCP_MESSAGE", "CALL_SECURE", "NAT", "RECORD_START", "RECORD_STOP",
    "PLAYBACK_START", "PLAYBACK_STOP", "CALL_UPDATE", "FAILURE", "SOCKET_DATA", "MEDIA_BUG_START",
    "MEDIA_BUG_STOP", "CONFERENCE_DATA_QUERY", "CONFERENCE_DATA", "CALL_SETUP_REQ",
    "CALL_SETUP_RESULT", "CALL_DETAIL", "DEVICE_STATE", "TEXT", "SHUTDOWN_REQUESTED",
    "CERT_RELOAD", "ALL",
)
_BY_UPPER = {n: n for n in EVENT_NAMES}


def name_event(name: str) -> str | None:
    """switch_name_event: case-insensitive, with or without the SWITCH_EVENT_ prefix."""
    up = name.upper()
    if len(up) > 13 and up[13:] in _BY_UPPER:
        return up[13:]
    return _BY_UPPER.get(up)


# SWITCH_URL_UNSAFE from switch_utils.h
_UNSAFE = frozenset(b"\r\n #%&+:;<=>?@[\\]^`{|}\"")
_HEX = b"0123456789ABCDEF"
_ENC = [(b"%%%02X" % i) if (i < 0x20 or i > 0x7E or i in _UNSAFE) else bytes([i])
        for i in range(256)]


def url_encode(value: str) -> str:
    """switch_url_encode: like FreeSWITCH, an existing %XX (uppercase hex) is NOT re-encoded."""
    raw = value.encode("utf-8", "surrogateescape")
    if not any(len(_ENC[b]) == 3 for b in raw):
        return value
    out = bytearray()
    n = len(raw)
    for i, b in enumerate(raw):
        if b == 0x25 and n - 1 - i > 1 and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(b)
        else:
            out += _ENC[b]
    return out.decode("ascii")


def first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first header of that name, case-insensitively, as FreeSWITCH looks headers up."""
    low = name.lower()
    for k, v in headers:
        if k.lower() == low:
            return v
    return None


class Event:
    """One FreeSWITCH event: ordered (name, value) headers -- duplicates allowed -- and a body.

    `name` is the event id used for subscription matching; it is NOT necessarily present as an
    `Event-Name` header (an event a parked channel fires for `sendevent` has none).
    """

    __slots__ = ("_json", "_plain", "body", "headers", "name", "subclass")

    def __init__(self, name: str, subclass: str | None = None) -> None:
        self.name = name
        self.subclass = subclass
        self.headers: list[tuple[str, str]] = []
        self.body = ""
        self._plain: bytes | None = None
        self._json: bytes | None = None

    def add(self, name: str, value: str) -> None:
        """switch_event_add_header_string: an empty value deletes the header instead."""
        if value == "":
            self.delete(name)
            return
        self.headers.append((name, value))

    def delete(self, name: str) -> None:
        low = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != low]

    def get(self, name: str) -> str | None:
        """First header of that name, case-insensitively (switch_event_get_header)."""
        return first_header(self.headers, name)

    def set_subclass(self, subclass: str) -> None:
        """switch_event_set_subclass_name: moves Event-Subclass to the bottom."""
        self.subclass = subclass
        self.delete("Event-Subclass")
        self.headers.append(("Event-Subclass", subclass))

    def delivered_headers(self) -> list[tuple[str, str]]:
        """The headers of the per-listener copy (switch_event_dup): Event-Subclass comes first."""
        if not self.subclass:
            return self.headers
        return [("Event-Subclass", self.subclass)] + [
            (k, v) for k, v in self.headers if k != "Event-Subclass"
        ]

    def serialize_plain(self) -> bytes:
        """switch_event_serialize(encode=TRUE), computed once and shared by every listener."""
        if self._plain is None:
            lines = [f"{k}: {url_encode(v) or '_undef_'}\n" for k, v in self.delivered_headers()]
            if self.body:
                blen = len(self.body.encode("utf-8", "surrogateescape"))
                lines.append(f"Content-Length: {blen}\n\n")
                lines.append(self.body)
            else:
                lines.append("\n")
            self._plain = "".join(lines).encode("utf-8", "surrogateescape")
        return self._plain

    def serialize_json(self) -> bytes:
        """switch_event_serialize_json: duplicate headers become arrays, body is `_body`."""
        if self._json is None:
            obj: dict[str, object] = {}
            for k, v in self.delivered_headers():
                if k in obj:
                    prev = obj[k]
                    obj[k] = [*prev, v] if isinstance(prev, list) else [prev, v]
                else:
                    obj[k] = v
            if self.body:
                obj["Content-Length"] = str(len(self.body.encode("utf-8", "surrogateescape")))
                obj["_body"] = self.body
            self._json = json.dumps(obj).encode("utf-8")
        return self._json

    def framed(self, fmt: str) -> bytes:
        """The bytes mod_event_socket writes for this event to a listener in format `fmt`."""
        data = self.serialize_json() if fmt == "json" else self.serialize_plain()
        head = f"Content-Length: {len(data)}\nContent-Type: text/event-{fmt}\n\n"
        return head.encode("ascii") + data


class CoreInfo:
    """What switch_event_prep_for_delivery stamps on every fired event."""

    def __init__(self, hostname: str = "sim-freeswitch", ipv4: str = "127.0.0.1") -> None:
        self.core_uuid = str(_uuid.uuid4())
        self.hostname = hostname
        self.ipv4 = ipv4
        self.sequence = 0

    def prep(self, ev: Event, func: str = "sim") -> None:
        self.sequence += 1
        ts = time.time()
        ev.add("Event-Name", ev.name)
        ev.add("Core-UUID", self.core_uuid)
        ev.add("FreeSWITCH-Hostname", self.hostname)
        ev.add("FreeSWITCH-Switchname", self.hostname)
        ev.add("FreeSWITCH-IPv4", self.ipv4)
        ev.add("FreeSWITCH-IPv6", "::1")
        ev.add("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)))
        ev.add("Event-Date-GMT", formatdate(ts, usegmt=True))
        ev.add("Event-Date-Timestamp", str(int(ts * 1_000_000)))
        ev.add("Event-Calling-File", "simulator.py")
        ev.add("Event-Calling-Function", func)
        ev.add("Event-Calling-Line-Number", "1")
        ev.add("Event-Sequence", str(self.sequence))

    def create(self, name: str, subclass: str | None = None, func: str = "sim") -> Event:
        """switch_event_create(_subclass): prep headers first, then Event-Subclass."""
        ev = Event(name, subclass)
        self.prep(ev, func)
        if subclass:
            ev.add("Event-Subclass", subclass)
        return ev


def _filter_match(value: str, comp: str, raw: str) -> bool:
    """A filter value starting with '/' is a regex (switch_regex), else a case-insensitive
    comparison."""
    if raw.startswith("/"):
        pat = comp[1:] if comp.startswith("/") else comp
        if "/" in pat:
            pat = pat[: pat.rindex("/")]
        try:
            return re.search(pat, value) is not None
        except re.error:
            return False
    return value.lower() == comp.lower()


class Subscription:
    """One listener's `event` / `nixevent` / `noevents` / `filter` state, matched as
    mod_event_socket's event_handler does."""

    __slots__ = ("all", "custom", "enabled", "filters", "fmt", "names")

    def __init__(self) -> None:
        self.enabled = False
        self.fmt = "plain"
        self.names: set[str] = set()
        self.custom: set[str] = set()
        self.all = False
        self.filters: list[tuple[str, str]] = []

    def filter(self, arg: str) -> str:
        """`filter <header> <value>`, `filter delete <header> [<value>]`, `filter delete all`."""
        arg = arg.lstrip(" ")
        name, sp, value = arg.partition(" ")
        if name.lower() == "delete" and sp:
            name, _, value = value.partition(" ")
            if name.lower() == "all":
                self.filters.clear()
            else:
                self.filters = [(k, v) for k, v in self.filters
                                if not (k.lower() == name.lower() and (not value or v == value))]
            return f"+OK filter deleted. [{name}][{value}]"
        if sp:
            if name.lower() == "add":
                name, _, value = value.partition(" ")
            self.filters.append((name, value))
            return f"+OK filter added. [{name}]=[{value}]"
        return "-ERR invalid syntax"

    def _filtered(self, ev: Event) -> bool:
        send = False
        for name, raw in self.filters:
            hval = ev.get(name)
            if hval is None:
                continue
            comp = raw
            pos = True
            while comp and comp[0] in "+- ":
                if comp[0] != " ":
                    pos = comp[0] == "+"
                comp = comp[1:]
            if send and pos:
                continue
            if _filter_match(hval, comp, raw):
                if not pos:
                    return False
                send = True
        return send

    def event(self, words: list[str]) -> str:
        """`event <fmt> <names...>`; returns the Reply-Text."""
        keys = 0
        custom = False
        for i, w in enumerate(words):
            if i == 0 and w.lower() in ("plain", "json"):
                self.fmt = w.lower()
                continue
            if custom:
                self.custom.add(w)
                continue
            name = name_event(w)
            if name is None:
                continue
            keys += 1
            if name == "ALL":
                self.all = True
            else:
                self.names.add(name)
            if name == "CUSTOM":
                custom = True
        if not keys:
            return "-ERR no keywords supplied"
        self.enabled = True
        return f"+OK event listener enabled {self.fmt}"

    def nixevent(self, words: list[str]) -> str:
        keys = 0
        custom = False
        for w in words:
            if custom:
                self.custom.discard(w)
                continue
            name = name_event(w)
            if name is None:
                continue
            keys += 1
            if name == "CUSTOM":
                custom = True
            elif name == "ALL":
                self.all = False
                self.names.clear()
            else:
                if self.all:
                    self.all = False
                    self.names.update(n for n in EVENT_NAMES if n != "ALL")
                self.names.discard(name)
        if not keys:
            return "-ERR no keywords supplied"
        self.enabled = True
        return "+OK events nixed"

    def noevents(self) -> str:
        if not self.enabled:
            return "-ERR not listening for events"
        self.enabled = False
        self.all = False
        self.names.clear()
        self.custom.clear()
        return "+OK no longer listening for events"

    def wants(self, ev: Event) -> bool:
        if not self.enabled:
            return False
        if not self.all:
            if ev.name not in self.names:
                return False
            if ev.name == "CUSTOM" and ev.subclass and ev.subclass not in self.custom:
                return False
        return not self.filters or self._filtered(ev)
