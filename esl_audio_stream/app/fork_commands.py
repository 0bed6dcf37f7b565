"""The `uuid_audio_fork` command grammar and its answers, as jambonz's mod_audio_fork has them.

Why a grammar of its own: applications written for jambonz/drachtio (drachtio-fsmrf's
`forkAudioStart`, jambonz's `listen` verb) send mod_audio_fork's words and read its answers,
which are not mod_audio_stream's: positional `[bugname] [metadata]` told apart by a leading `{`
or `[`, three bidirectional-audio words, and only three answers -- `+OK Success`, `-ERR
Operation Failed`, `-USAGE: ...` -- or none at all where the C code returns before writing one
(an unknown mix type, a send_text without text). The words are split as FreeSWITCH splits an api
command's (app/separate.py, at most 10). Pure: every transport parses the same string here.

Where jambonz's module crashes FreeSWITCH or goes on with garbage, the answer here is the
nearest of its own: `start` with no rate is `-USAGE`, a URL it cannot parse or a rate that is not
a multiple of 8000 is `-ERR Operation Failed` (the reason is logged by the caller).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .commands import CommandError, validate_ws_url
from .separate import separate
from .settings import atoi

API = "uuid_audio_fork"
SYNTAX = (
    "<uuid> [start | stop | send_text | pause | resume | graceful-shutdown | stop_play ] "
    "[wss-url | path] [mono | mixed | stereo] [8000 | 16000 | 24000 | 32000 | 64000] [bugname] "
    "[metadata] [bidirectionalAudio_enabled] [bidirectionalAudio_stream_enabled] "
    "[bidirectionalAudio_stream_samplerate]"
)
OK = "+OK Success\n"
ERR = "-ERR Operation Failed\n"
USAGE = f"-USAGE: {SYNTAX}\n"
#: What the C code writes when it returns before any answer (`goto done`).
SILENT = ""
#: MY_BUG_NAME: the bug a command names when it names none.
BUGNAME = "audio_fork"
MAX_ARGS = 10
MIX_TYPES = ("mono", "mixed", "stereo")
#: Stream rates: multiples of 8000 (mod_audio_fork's own check) up to its largest, 64000.
MIN_RATE, MAX_RATE = 8000, 64000
#: The rate of the endpoint's binary audio (bidirectionalAudio_stream_samplerate), 0 = none.
MIN_BIDI_RATE, MAX_BIDI_RATE = 8000, 64000
#: parse_ws_uri's schemes, exactly as it compares them (http(s) is taken as ws(s)).
_SCHEMES = {"https://": "wss://", "HTTPS://": "wss://", "wss://": "wss://", "WSS://": "wss://",
            "http://": "ws://", "HTTP://": "ws://", "ws://": "ws://", "WS://": "ws://"}
_UUID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.:-]{0,127}$")


class Refused(Exception):
    """A command answered without being carried out: `answer` is the exact text (mod_audio_fork's),
    str() the reason, for the log."""

    def __init__(self, answer: str, reason: str) -> None:
        super().__init__(reason)
        self.answer = answer


@dataclass(frozen=True, slots=True)
class ForkStart:
    uuid: str
    url: str  # ws:// or wss:// (an http(s) URL is taken as ws(s), as parse_ws_uri does)
    mix: str
    rate: int
    bugname: str
    metadata: str | None
    bidi_enabled: bool  # playAudio carried out (mod_audio_fork's default: true)
    bidi_stream: bool  # binary messages are audio to play
    bidi_rate: int  # ... at this rate (0: none)


@dataclass(frozen=True, slots=True)
class ForkStop:
    uuid: str
    bugname: str
    text: str | None


@dataclass(frozen=True, slots=True)
class ForkSendText:
    uuid: str
    bugname: str
    text: str | None  # None: only a bugname was given (+OK, nothing sent)


@dataclass(frozen=True, slots=True)
class ForkPause:
    uuid: str
    bugname: str


@dataclass(frozen=True, slots=True)
class ForkResume:
    uuid: str
    bugname: str


@dataclass(frozen=True, slots=True)
class ForkGracefulShutdown:
    uuid: str
    bugname: str


@dataclass(frozen=True, slots=True)
class ForkStopPlay:
    uuid: str
    bugname: str


ForkCommand = (ForkStart | ForkStop | ForkSendText | ForkPause | ForkResume
               | ForkGracefulShutdown | ForkStopPlay)


def _json_like(word: str) -> bool:
    """How mod_audio_fork tells a lone optional word apart: metadata/text starts with { or [."""
    return word[:1] in ("{", "[")


def parse(args: str | bytes) -> ForkCommand:
    """Parse a `uuid_audio_fork` argument string (everything after the API name); raises
    Refused with the answer for anything that is not carried out."""
    if isinstance(args, bytes):
        try:
            args = args.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(ERR, "the command is not valid UTF-8") from None
    argv = separate(args.strip(" \t\r\n"), " ", MAX_ARGS)
    argc = len(argv)
    if argc < 2 or (argv[1].lower() == "start" and argc < 5):
        raise Refused(USAGE, "too few arguments")
    uuid, verb = argv[0], argv[1].lower()
    if not _UUID_RE.match(uuid):
        raise Refused(ERR, f"Error locating session {uuid!r}")
    if verb == "start":
        return _start(argv)
    bugname = BUGNAME
    if verb == "stop":
        text = None
        if argc > 3:
            bugname, text = argv[2], argv[3]
        elif argc > 2:
            if _json_like(argv[2]):
                text = argv[2]
            else:
                bugname = argv[2]
        return ForkStop(uuid, bugname, text)
    if verb == "send_text":
        if argc < 3:
            raise Refused(SILENT, "send_text requires an argument specifying text to send")
        text = None
        if argc > 3:
            bugname, text = argv[2], argv[3]
        elif _json_like(argv[2]):
            text = argv[2]
        else:
            bugname = argv[2]
        return ForkSendText(uuid, bugname, text)
    if argc > 2:
        bugname = argv[2]
    if verb == "pause":
        return ForkPause(uuid, bugname)
    if verb == "resume":
        return ForkResume(uuid, bugname)
    if verb == "graceful-shutdown":
        return ForkGracefulShutdown(uuid, bugname)
    if verb == "stop_play":
        return ForkStopPlay(uuid, bugname)
    raise Refused(ERR, f"unsupported mod_audio_fork cmd: {argv[1]}")


def _start(argv: list[str]) -> ForkStart:
    argc = len(argv)
    bugname, metadata = BUGNAME, None
    enabled, stream, bidi_rate = True, False, 0
    if argc > 9:  # bugname and metadata may be '' (quoted) when the bidirectional words follow
        if argv[5]:
            bugname = argv[5]
        if argv[6]:
            metadata = argv[6]
        enabled = argv[7] == "true"
        stream = argv[8] == "true"
        bidi_rate = atoi(argv[9])
    elif argc > 6:
        bugname, metadata = argv[5], argv[6]
    elif argc > 5:
        if _json_like(argv[5]):
            metadata = argv[5]
        else:
            bugname = argv[5]
    mix = argv[3]
    if mix not in MIX_TYPES:
        raise Refused(SILENT, f"invalid mix type: {mix}, must be mono, mixed, or stereo")
    rate = 16000 if argv[4] == "16k" else 8000 if argv[4] == "8k" else atoi(argv[4])
    if rate % 8000 or not MIN_RATE <= rate <= MAX_RATE:
        raise Refused(ERR, f"invalid sample rate: {argv[4]}")
    if bidi_rate and not MIN_BIDI_RATE <= bidi_rate <= MAX_BIDI_RATE:
        raise Refused(ERR, f"invalid bidirectionalAudio_stream_samplerate: {argv[9]} "
                           f"({MIN_BIDI_RATE}-{MAX_BIDI_RATE}, or 0)")
    return ForkStart(argv[0], ws_url(argv[2]), mix, rate, bugname, metadata, enabled, stream,
                     bidi_rate)


def ws_url(url: str) -> str:
    """The URL as the daemon connects to it: parse_ws_uri's schemes (http(s) taken as ws(s));
    Refused(ERR) for anything else."""
    for scheme, ws in _SCHEMES.items():
        if url.startswith(scheme):
            converted = ws + url[len(scheme):]
            break
    else:
        raise Refused(ERR, f"invalid websocket uri: {url}")
    try:
        return validate_ws_url(converted)
    except CommandError as exc:
        raise Refused(ERR, str(exc)) from None
