"""The `uuid_audio_stream` command grammar and its answers, as mod_audio_stream has them.

Operators script against the exact words (`start`, `stop`, `+OK Success`, `-USAGE: ...`), so the
grammar is kept here, pure, and every transport (control endpoint, CUSTOM events, the CLI) parses
the same argument string through `parse_command`.

One extension, for several streams on one call: the first word may be `<uuid>@<name>`, naming
the stream every verb is about (`abc@asr start ...`, `abc@asr stop`). `@` is in no uuid this
grammar takes, so nothing mod_audio_stream accepts changes meaning; without a name a command is
about the call's unnamed stream, as with mod_audio_stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

API = "uuid_audio_stream"
SYNTAX = (
    "<uuid> [start | stop | send_text | pause | resume ] [wss-url | path] [mono | mixed | stereo] "
    "[8k | 16k | <rate>] [metadata]"
)
OK = "+OK Success\n"
USAGE = f"-USAGE: {SYNTAX}\n"

MIX_TYPES = ("mono", "mixed", "stereo")
#: Any integer rate in this range (mod_audio_stream takes only multiples of 8000).
MIN_RATE, MAX_RATE = 8000, 48000

_UUID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.:-]{0,127}$")
#: A stream's name (after the uuid's `@`; mod_audio_fork's bugnames are held to it too where
#: they name a stream in events and records): a word of a few safe characters.
NAME_RE = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")


class CommandError(Exception):
    """A command that cannot be carried out; `answer` is the exact text to send back."""

    def __init__(self, reason: str, *, usage: bool = False) -> None:
        super().__init__(reason)
        self.answer = USAGE if usage else f"-ERR {reason}\n"


@dataclass(frozen=True, slots=True)
class Start:
    uuid: str
    url: str
    mix: str
    rate: int
    metadata: str | None
    #: The wire protocol when the command says (uuid_audio_fork: "audio_fork"), else None:
    #: STREAM_PROTOCOL's; and its own start options, in the shape its record keeps them.
    protocol: str | None = None
    options: dict | None = None
    #: The stream's name on its call ("": the unnamed one; uuid_audio_fork: the bugname).
    name: str = ""


@dataclass(frozen=True, slots=True)
class Stop:
    uuid: str
    text: str | None
    name: str = ""


@dataclass(frozen=True, slots=True)
class SendText:
    uuid: str
    text: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Pause:
    uuid: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Resume:
    uuid: str
    name: str = ""


Command = Start | Stop | SendText | Pause | Resume


def err(reason: str) -> str:
    """The answer text for a failed command."""
    return f"-ERR {reason}\n"


def parse_rate(word: str) -> int:
    """`8k`/`16k` or an integer rate in Hz; raises CommandError otherwise."""
    low = word.lower()
    if low == "8k":
        return 8000
    if low == "16k":
        return 16000
    if not word.isdigit():
        raise CommandError(f"invalid sample rate: {word}")
    return int(word)


def validate_ws_url(url: str) -> str:
    """Accept only ws:// and wss:// URLs with a host; raise CommandError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise CommandError(f"invalid websocket uri: {url} ({exc})") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise CommandError(f"invalid websocket uri: {url}")
    return url


def _check_text(text: str | bytes, what: str) -> str:
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError(f"{what} contains invalid utf8 characters") from None
    # A str that came through surrogateescape decoding still carries the invalid bytes.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"{what} contains invalid utf8 characters") from None
    return text


def parse_command(args: str | bytes) -> Command:
    """Parse a `uuid_audio_stream` argument string (everything after the API name).

    Words are separated by single spaces as FreeSWITCH's `switch_separate_string` does; the
    metadata (start) and the text (stop, send_text) are the rest of the line, spaces included.
    """
    if isinstance(args, bytes):
        args = args.decode("utf-8", "surrogateescape")
    args = args.strip(" \t\r\n")
    words = args.split(None, 2)
    if len(words) < 2:
        raise CommandError("", usage=True)
    uuid, verb = words[0], words[1].lower()
    rest = words[2] if len(words) > 2 else ""
    uuid, at, name = uuid.partition("@")
    if not _UUID_RE.match(uuid):
        raise CommandError(f"invalid uuid: {uuid!r}")
    if at and not NAME_RE.match(name):
        raise CommandError(f"invalid stream name: {name!r} (1-64 of A-Z a-z 0-9 _ . -)")
    if verb == "start":
        parts = rest.split(None, 3)
        if len(parts) < 2:
            raise CommandError("", usage=True)
        url, mix = parts[0], parts[1]
        validate_ws_url(url)
        if mix not in MIX_TYPES:
            raise CommandError(f"invalid mix type: {mix}, must be mono, mixed, or stereo")
        rate = parse_rate(parts[2]) if len(parts) > 2 else 8000
        metadata = _check_text(parts[3], "metadata") if len(parts) > 3 else None
        if not MIN_RATE <= rate <= MAX_RATE:
            raise CommandError(
                f"invalid sample rate: {rate} (8k, 16k, or {MIN_RATE}-{MAX_RATE} Hz)")
        return Start(uuid, url, mix, rate, metadata, name=name)
    if verb == "stop":
        return Stop(uuid, _check_text(rest, "stop text") if rest else None, name)
    if verb == "send_text":
        if not rest:
            raise CommandError("send_text requires an argument specifying text to send")
        return SendText(uuid, _check_text(rest, "text"), name)
    if verb == "pause":
        return Pause(uuid, name)
    if verb == "resume":
        return Resume(uuid, name)
    raise CommandError(f"unsupported mod_audio_stream cmd: {words[1]}")
