"""mod_audio_fork's wire protocol and events, as jambonz's module speaks and fires them
(jambonz/freeswitch-modules mod_audio_fork: lws_glue.cpp, audio_pipe.cpp, mod_audio_fork.h).

Out: the WebSocket subprotocol `audio.drachtio.org` offered (`fit`), no permessage-deflate
offer, no reconnection; the start's metadata as the first text message, then L16 binary
messages; texts (send_text) in order with them; the stop's text last. `graceful-shutdown` stops
the audio and sends one zero-length binary message (the endpoint flushes its last answers and
closes); nothing is sent after it.

In (parsed as cJSON parses them, protocols/cjson.py; `type` and `data` found in any case):
- `playAudio` (only with bidirectionalAudio_enabled and not _stream_enabled): the audio
  (`audioContent`, base64; `audioContentType` raw with `sampleRate`, or wave/wav) is written to
  a per-call file and `mod_audio_fork::play_audio` fires with `data` minus audioContent plus
  `"file"` -- jambonz's application plays that file; the daemon also plays it when asked
  (AUDIO_FORK_PLAY_AUDIO);
- `killAudio`: `mod_audio_fork::kill_audio` (no body), what plays is cleared and FreeSWITCH's own
  playback broken (`uuid_break`, jambonz's CF_BREAK);
- `transcription`, `transfer`, `disconnect`, `error`: the event of that name, body `data` as
  cJSON prints it (none when there is no `data`); `json` or no `type` at all (any JSON value):
  `mod_audio_fork::json` with the whole message; `mark` / `clearMarks` as jambonz answers them;
  anything else (another type, not JSON) is only logged, as jambonz does;
- binary messages: L16 at bidirectionalAudio_stream_samplerate, played into the call when
  bidirectional streaming is on (an odd byte waits for the next message), dropped otherwise.

The stream's own events (call/answers.py `_fire`) go through `told`: connect -> `::connect`,
every failure before it -> one `::connect_failed` `{"reason":..}`, the endpoint closing ->
`::disconnect` (no body; a stop, a hang-up or a shutdown fire nothing, as jambonz), the first
audio the backlog drops -> `::buffer_overrun` (once), the play file -> `::play_audio`; the rest
(refused audio, reconnection reports) only logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from ..app import events
from ..app.settings import SettingsError, StreamSettings, parse_bool
from ..jsonfmt import compact
from ..media.decode import Chunk, DecodeError, decode_stream_audio
from . import cjson
from .actions import Actions, AudioOut, Clear, Link, Mark, Notify, Play, Refuse

log = logging.getLogger(__name__)

NAME = "audio_fork"
SUBPROTOCOL = "audio.drachtio.org"
BUGNAME = "audio_fork"

CONNECT = "mod_audio_fork::connect"
CONNECT_FAILED = "mod_audio_fork::connect_failed"
DISCONNECT = "mod_audio_fork::disconnect"
BUFFER_OVERRUN = "mod_audio_fork::buffer_overrun"
PLAY_AUDIO = "mod_audio_fork::play_audio"
KILL_AUDIO = "mod_audio_fork::kill_audio"
TRANSCRIPTION = "mod_audio_fork::transcription"
TRANSFER = "mod_audio_fork::transfer"
ERROR = "mod_audio_fork::error"
JSON = "mod_audio_fork::json"
SUBCLASSES = (CONNECT, CONNECT_FAILED, DISCONNECT, BUFFER_OVERRUN, PLAY_AUDIO, KILL_AUDIO,
              TRANSCRIPTION, TRANSFER, ERROR, JSON)
_PREFIX = "mod_audio_fork::"
#: Server messages whose `data` becomes an event of the same name.
_DATA_EVENTS = {"transcription": TRANSCRIPTION, "transfer": TRANSFER, "disconnect": DISCONNECT,
                "error": ERROR}
#: A raw playAudio's file extension says its rate; any other rate is written as .r16.
_RAW_RATES = frozenset({8000, 16000, 24000, 32000, 48000, 64000})
MAX_MARKS = 30  # marks waiting at once; beyond it a mark is discarded (jambonz's MAX_MARKS)
#: chunk.meta key carrying the play_audio body (cJSON-printed) through the player's event.
_BODY = "\x00mod_audio_fork"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110: what a subprotocol name is

#: Channel variables read when a stream starts (jambonz's, plus the subprotocol per call).
AUTH_USER = "MOD_AUDIO_BASIC_AUTH_USERNAME"
AUTH_PASSWORD = "MOD_AUDIO_BASIC_AUTH_PASSWORD"
SUBPROTOCOL_VAR = "MOD_AUDIO_FORK_SUBPROTOCOL_NAME"
SELFSIGNED_VAR = "MOD_AUDIO_FORK_ALLOW_SELFSIGNED"
EXPIRED_VAR = "MOD_AUDIO_FORK_ALLOW_EXPIRED"
HOSTNAME_VAR = "MOD_AUDIO_FORK_SKIP_SERVER_CERT_HOSTNAME_CHECK"
#: Ours: the daemon also plays playAudio's audio (jambonz leaves that to the application).
PLAY_VAR = "AUDIO_FORK_PLAY_AUDIO"


@dataclass(frozen=True, slots=True)
class ForkOptions:
    """What a uuid_audio_fork start asked for beyond url, mix, rate and metadata; kept in the
    stream's record (`extra`) so a next process carries it on the same."""

    bugname: str = BUGNAME
    bidi_enabled: bool = True
    bidi_stream: bool = False
    bidi_rate: int = 0
    play_audio: bool = False

    @property
    def streams_audio(self) -> bool:
        """Binary messages are audio to play (jambonz's SMBF_WRITE_REPLACE)."""
        return self.bidi_enabled and self.bidi_stream and self.bidi_rate > 0

    def as_extra(self) -> dict:
        return asdict(self)

    @classmethod
    def from_extra(cls, extra: Mapping | None) -> ForkOptions:
        extra = extra or {}
        try:
            return cls(bugname=str(extra.get("bugname", BUGNAME)),
                       bidi_enabled=bool(extra.get("bidi_enabled", True)),
                       bidi_stream=bool(extra.get("bidi_stream", False)),
                       bidi_rate=int(extra.get("bidi_rate", 0)),
                       play_audio=bool(extra.get("play_audio", False)))
        except (TypeError, ValueError):
            return cls()


def channel_variable(channel: Mapping[str, str], name: str) -> str | None:
    """A channel variable from `uuid_dump` (`variable_<name>`, any case, as FreeSWITCH finds
    it); None when unset or empty."""
    value = channel.get(f"variable_{name}")
    if value is None:
        want = f"variable_{name}".lower()
        value = next((v for k, v in channel.items() if k.lower() == want), None)
    return value or None


def fit(settings: StreamSettings, channel: Mapping[str, str], subprotocol: str
        ) -> StreamSettings:
    """The stream's settings as jambonz's client connects: the subprotocol offered (the
    channel's MOD_AUDIO_FORK_SUBPROTOCOL_NAME, else `subprotocol`), HTTP basic auth when both
    MOD_AUDIO_BASIC_AUTH_* are set, no deflate offer, no reconnection, and the TLS leniency
    its MOD_AUDIO_FORK_* variables ask for. SettingsError for a subprotocol that cannot be one."""
    name = (channel_variable(channel, SUBPROTOCOL_VAR) or subprotocol).strip()
    if not _TOKEN.fullmatch(name):
        raise SettingsError(f"{SUBPROTOCOL_VAR}: {name!r} is not a subprotocol name")
    replaced = {"sec-websocket-protocol"}
    added = [("Sec-WebSocket-Protocol", name)]
    user = channel_variable(channel, AUTH_USER)
    password = channel_variable(channel, AUTH_PASSWORD)
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        added.append(("Authorization", f"Basic {token}"))
        replaced.add("authorization")
    headers = tuple(h for h in settings.extra_headers if h[0].lower() not in replaced)
    changes: dict = {"protocol": NAME, "reconnect": False, "deflate": False,
                     "extra_headers": headers + tuple(added)}
    if any(parse_bool(channel_variable(channel, v) or "") for v in (SELFSIGNED_VAR, EXPIRED_VAR)):
        changes["tls_ca"] = "NONE"
    if parse_bool(channel_variable(channel, HOSTNAME_VAR) or ""):
        changes["tls_check_hostname"] = False
    return replace(settings, **changes)


def mark_text(name: str, event: str) -> str:
    """jambonz's send_mark_event, blanks and all."""
    return f'{{"type": "mark", "data": {{"name":{cjson.string(name)}, "event": "{event}"}}}}'


class AudioFork:
    """One stream's mod_audio_fork side (sans-IO: fed messages, read for actions and for what
    goes on the wire)."""

    name = NAME
    audio_as_text = False
    marks_when_heard = False  # as mod_audio_stream: when the last frame is handed over

    def __init__(self, options: ForkOptions, *, metadata: str | None, rate: int, channels: int,
                 max_audio_bytes: int = 8 << 20, graceful: bool = False) -> None:
        self.options = options
        self.metadata = metadata
        self.rate = rate
        self.channels = channels
        self.max_audio_bytes = max_audio_bytes
        #: graceful-shutdown asked: no audio, no text goes out any more.
        self.graceful = graceful
        self._link: Link | None = None
        self._odd = b""  # a binary message's last byte, waiting for the next one
        self._marks: list[str] = []  # marks handed to the player, not answered yet
        self._silenced: list[str] = []  # marks clearMarks took back: never answered
        self._told_connect = False  # connect or connect_failed fired
        self._overrun = False

    @classmethod
    def carried_on(cls, extra: Mapping | None, **kwargs) -> AudioFork:
        """The protocol of a stream a previous process left (its record's `extra`)."""
        extra = extra or {}
        return cls(ForkOptions.from_extra(extra), graceful=bool(extra.get("graceful")), **kwargs)

    @property
    def wire_bytes_per_second(self) -> int:
        return self.rate * self.channels * 2

    @property
    def reported(self) -> bool:
        """Whether ::connect or ::connect_failed has been fired."""
        return self._told_connect

    # -- out ------------------------------------------------------------------------------

    def greeting(self) -> list[str]:
        return [self.metadata] if self.metadata and not self.graceful else []

    def audio_out(self, link: Link) -> AudioOut:
        self._link = link
        if self.graceful:  # asked while connecting: its zero-length message goes first
            link.send(b"")
        return link  # binary L16 chunks as they are: the link's own send

    def goodbye(self, text: str | None) -> list[str]:
        return [text] if text and not self.graceful else []

    def shut_down_gracefully(self) -> None:
        """graceful-shutdown: the stream pauses the audio; then one zero-length binary
        message, after what is queued (jambonz's flush request)."""
        if self.graceful:
            return
        self.graceful = True
        if self._link is not None:
            self._link.send(b"")

    def mark_reply(self, name: str, event: str) -> str | None:
        if name in self._silenced:
            self._silenced.remove(name)
            return None
        if name in self._marks:
            self._marks.remove(name)
        return mark_text(name, event)

    def dtmf(self, digit: str, duration_ms: int) -> str | None:
        return None  # mod_audio_fork does not tell the endpoint the caller's keys

    def resume(self) -> None:
        pass

    def record_extra(self) -> dict:
        return {**self.options.as_extra(), "graceful": self.graceful}

    # -- the stream's own events ----------------------------------------------------------

    def told(self, subclass: str, body: str, cause: str) -> tuple[str, str] | None:
        """A stream event (app/events.py's names) as mod_audio_fork fires it, or None."""
        if subclass.startswith(_PREFIX):
            return subclass, body
        if subclass == events.CONNECT:
            self._told_connect = True
            return CONNECT, ""
        if subclass == events.DISCONNECT:
            return (DISCONNECT, "") if cause == "endpoint-closed" else None
        if subclass == events.PLAY:
            return PLAY_AUDIO, _play_body(body)
        if subclass == events.ERROR:
            if not self._told_connect:
                self._told_connect = True
                return CONNECT_FAILED, compact({"reason": _error_text(body)})
            if '"dropped":' in body and not self._overrun:  # call/link.py's drop report
                self._overrun = True
                return BUFFER_OVERRUN, ""
        return None

    def connect_failed(self, reason: str) -> tuple[str, str] | None:
        """The start failed before the stream could say so: ::connect_failed, unless told."""
        if self._told_connect:
            return None
        self._told_connect = True
        return CONNECT_FAILED, compact({"reason": reason})

    # -- in -------------------------------------------------------------------------------

    def on_text(self, text: str) -> Actions:
        try:
            msg = cjson.parse(text)
        except cjson.ParseError:
            log.info("mod_audio_fork: not a JSON message from the endpoint: %.200s", text)
            return ()
        kind = cjson.get_str(msg, "type") or "json"
        data = cjson.get(msg, "data")
        opts = self.options
        if kind == "playAudio" and opts.bidi_enabled and not opts.bidi_stream:
            return self._play_audio(data)
        if kind == "killAudio":
            return Notify(KILL_AUDIO, ""), Clear(interrupt=True)
        if kind == "mark":
            return self._mark(data)
        if kind == "clearMarks":
            self._silenced.extend(self._marks)
            self._marks.clear()
            return ()
        if kind in _DATA_EVENTS:
            return Notify(_DATA_EVENTS[kind], "" if data is cjson.MISSING else cjson.dumps(data))
        if kind == "json":
            return Notify(JSON, cjson.dumps(msg))
        log.info("mod_audio_fork: unsupported msg type %.100s", kind)
        return ()

    def _mark(self, data: object) -> Actions:
        name = cjson.get(data, "name")
        if not isinstance(name, str):
            return ()
        if len(self._marks) >= MAX_MARKS:
            log.info("mod_audio_fork: mark count exceeded, discarding mark %.100s", name)
            return ()
        self._marks.append(name)
        return Mark(name)

    def _play_audio(self, data: object) -> Actions:
        if data is cjson.MISSING:
            log.warning("mod_audio_fork: missing data payload in playAudio request")
            return ()
        audio = cjson.detach(data, "audioContent")
        kind = cjson.get_str(data, "audioContentType")
        rate = 0
        if kind == "raw":
            rate = cjson.valueint(cjson.get(data, "sampleRate"))
            rate = rate if rate in _RAW_RATES else 16000
        elif kind not in ("wave", "wav"):
            log.info("mod_audio_fork: unsupported audioContentType: %.40s", kind)
            audio = None
        body = cjson.dumps(data)
        if not isinstance(audio, str):  # announced without a file, as jambonz does
            return Notify(PLAY_AUDIO, body)
        try:
            chunk = _decode(audio, rate, self.max_audio_bytes)
        except DecodeError as exc:
            return Refuse(f"playAudio - {exc}"), Notify(PLAY_AUDIO, body)
        chunk = replace(chunk, meta={_BODY: body})
        return Play(chunk, announce=True, queue=self.options.play_audio)

    def on_binary(self, data: bytes) -> Actions:
        if not self.options.streams_audio:
            return ()  # jambonz buffers them where nothing plays them
        if self._odd:
            data, self._odd = self._odd + data, b""
        if len(data) & 1:
            data, self._odd = data[:-1], data[-1:]
        if not data:
            return ()
        if len(data) > self.max_audio_bytes:
            return Refuse(f"binary audio - message larger than {self.max_audio_bytes} bytes")
        payload = bytes(data)
        return Play(Chunk(payload, self.options.bidi_rate, "binary", payload, {}))


def _decode(audio: str, rate: int, max_bytes: int) -> Chunk:
    """playAudio's audioContent: raw L16 at `rate`, or (rate 0) a WAV; DecodeError if not."""
    if len(audio) // 4 * 3 > max_bytes + 3:
        raise DecodeError(f"audioContent larger than {max_bytes} bytes")
    try:
        payload = binascii.a2b_base64(audio)  # as lenient as jambonz's decoder
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"base64 decode error: {exc}") from None
    if not rate:
        return decode_stream_audio({"audioDataType": "wav",
                                    "audioData": base64.b64encode(payload).decode()},
                                   max_bytes=max_bytes)
    if len(payload) & 1:
        payload = payload[:-1]
    if not payload:
        raise DecodeError("empty audioContent")
    return Chunk(payload, rate, "raw", payload, {})


def _play_body(body: str) -> str:
    """The player's play event body ({_BODY: the cJSON text, "file": path}) as jambonz's:
    `data` without audioContent, then "file" appended."""
    try:
        carried = json.loads(body)
        text, path = carried[_BODY], carried["file"]
    except (ValueError, KeyError, TypeError):
        return body
    item = f'"file":{cjson.string(path)}'
    return f"{{{item}}}" if text == "{}" else f"{text[:-1]},{item}}}"


def _error_text(body: str) -> str:
    """What an app/events.py error body says (its message's `error`)."""
    try:
        return str(json.loads(body)["message"]["error"])
    except (ValueError, KeyError, TypeError):
        return body
