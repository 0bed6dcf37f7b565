"""Twilio Media Streams, as Twilio itself speaks it to a WebSocket server.

Why: most voice-bot software (Pipecat's TwilioFrameSerializer, Twilio's samples; SignalWire's
and Telnyx's streams are near-copies) already speaks it, so a bot written for Twilio runs
against FreeSWITCH unchanged. Only text frames, JSON, and every number in `sequenceNumber`,
`chunk` and `timestamp` is a string, as Twilio sends them.

Out, in order: `connected`; `start` (sequenceNumber "1", the streamSid -- `MZ` and 32 hex digits
-- at the top and in `start` with accountSid, callSid (the channel's uuid), tracks, mediaFormat
and customParameters); `media` per track per STREAM_BUFFER_SIZE ms (µ-law 8 kHz, base64;
`chunk` counts each track's messages from 1; `timestamp` is ms since the stream started, 20 ms
more per 20 ms chunk, from the present again after a pause); `dtmf` for each key the caller
presses; `mark` when the audio queued before an endpoint's mark has played (or a clear dropped
it); `stop` before the close. `connected` and the same `start` open every connection again
after a reconnection, so an endpoint always sees a start before media.

In: `media` (base64 µ-law 8 kHz, any length) plays after what plays; `mark` is echoed when its
audio has played; `clear` barges in (pending marks echoed at once). Every other text message
(not media: too large, too many) is also relayed as `mod_audio_stream::json`; a binary frame or
a message that is not valid is an error event, the stream goes on (Twilio answers the same with
its errors 31950-31952).

The per-frame path (`send`, bound to `_first`, `_mono` or `_stereo`): one µ-law conversion and
one base64 in C, one bytes %-format into a template made once per stream: no dict, no json.
"""

from __future__ import annotations

import binascii
import json
import uuid as _uuid
from collections.abc import Callable, Mapping

from ..jsonfmt import compact as _compact
from ..media.decode import Chunk, DecodeError, mark_name
from ..media.g711 import G711_RATE, decoder, encoder
from .actions import Actions, AudioOut, Clear, Link, Mark, Play, Refuse, Relay

CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": G711_RATE, "channels": 1}
#: A carried-on stream's sequenceNumber jumps this far beyond what the dead process may have
#: sent besides media (marks, keys) after its record was last written: never back, never twice.
SEQ_SLACK = 100

_b64 = binascii.b2a_base64
_unb64 = binascii.a2b_base64
_ulaw = encoder("pcmu")
_unlaw = decoder("pcmu")


def new_stream_sid() -> str:
    """`MZ` and 32 hex digits, as Twilio's streamSids look: new for every stream."""
    return "MZ" + _uuid.uuid4().hex


def custom_parameters(metadata: str | None) -> dict[str, str]:
    """The start's metadata as Twilio's customParameters: a JSON object of strings as it is,
    any other text as {"metadata": text}, nothing as {}."""
    if not metadata:
        return {}
    try:
        value = json.loads(metadata)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return value
    return {"metadata": metadata}


class TwilioMediaStreams:
    """One stream's Twilio Media Streams side (sans-IO: fed chunks and messages, read for what
    goes on the wire; `clock` is monotonic seconds, `epoch` wall-clock seconds)."""

    name = "twilio"
    audio_as_text = True
    marks_when_heard = True  # "when the media sent before it has completed playing"

    def __init__(self, *, call_sid: str, account_sid: str, metadata: str | None, mix: str,
                 buffer_ms: int, clock: Callable[[], float], epoch: Callable[[], float],
                 started: float | None = None, resumed: Mapping | None = None,
                 max_audio_bytes: int = 8 << 20) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.tracks = ("inbound", "outbound") if mix == "stereo" else ("inbound",)
        self.buffer_ms = buffer_ms
        self.max_audio_bytes = max_audio_bytes
        self._clock = clock
        self._epoch = epoch
        self._link: Link | None = None
        self._seq = 1  # the start's
        self._chunk = 0  # media messages per track so far
        self._ts = 0  # the next message's timestamp, ms
        resumed = resumed or {}
        sid = resumed.get("stream_sid")
        self.stream_sid = sid if isinstance(sid, str) and sid else new_stream_sid()
        # "ms since the stream started": a carried-on stream started in the dead process
        self._t0 = clock() - (max(0.0, epoch() - started) if started else 0.0)
        if sid:
            self._carry_on(resumed)
        self._start = _compact({
            "event": "start", "sequenceNumber": "1",
            "start": {"accountSid": account_sid, "streamSid": self.stream_sid,
                      "callSid": call_sid, "tracks": list(self.tracks),
                      "mediaFormat": MEDIA_FORMAT,
                      "customParameters": custom_parameters(metadata)},
            "streamSid": self.stream_sid})
        head = b'{"event":"media","sequenceNumber":"%d","media":{"track":"'
        tail = (b'","chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"'
                + self.stream_sid.encode() + b'"}')
        self._tpl_in = head + b"inbound" + tail
        self._tpl_out = head + b"outbound" + tail
        self._steady = self._stereo if len(self.tracks) == 2 else self._mono
        #: The per-frame path (AudioOut.send): the first chunk reads the clock once.
        self.send: Callable[[bytes], bool] = self._first

    def _carry_on(self, resumed: Mapping) -> None:
        """A stream a previous process left: its numbers go on from where it may have got to
        (media since its record was written: at most one message per track per buffer_ms)."""
        try:
            seq, chunk, at = int(resumed["seq"]), int(resumed["chunk"]), float(resumed["at"])
        except (KeyError, TypeError, ValueError):
            seq, chunk, at = 1, 0, self._epoch()
        since = int(max(0.0, self._epoch() - at) * 1000) // self.buffer_ms + 2
        self._chunk = chunk + since
        self._seq = seq + since * len(self.tracks) + SEQ_SLACK

    @property
    def wire_bytes_per_second(self) -> int:
        """A media message per track per buffer_ms: the template, the base64 payload and the
        numbers (at most 10 digits each)."""
        per_message = len(self._tpl_in) + 30 + (G711_RATE * self.buffer_ms // 1000 + 2) // 3 * 4
        return per_message * len(self.tracks) * 1000 // self.buffer_ms

    # -- out ------------------------------------------------------------------------------

    def greeting(self) -> list[str]:
        return [CONNECTED, self._start]

    def audio_out(self, link: Link) -> AudioOut:
        self._link = link
        return self

    def _first(self, chunk: bytes) -> bool:
        """The first chunk (of the stream, or after a pause): its timestamp is now."""
        self._ts = round((self._clock() - self._t0) * 1000)
        self.send = self._steady
        return self._steady(chunk)

    def _mono(self, chunk: bytes) -> bool:
        seq = self._seq = self._seq + 1
        n = self._chunk = self._chunk + 1
        ts = self._ts
        self._ts = ts + self.buffer_ms
        return self._link.send(  # type: ignore[union-attr]
            self._tpl_in % (seq, n, ts, _b64(_ulaw(chunk), newline=False)))

    def _stereo(self, chunk: bytes) -> bool:
        """Left (what the caller says) on inbound, right (what the caller hears) on outbound:
        µ-law keeps the interleaving, one byte a sample."""
        law = _ulaw(chunk)
        seq = self._seq
        self._seq = seq + 2
        n = self._chunk = self._chunk + 1
        ts = self._ts
        self._ts = ts + self.buffer_ms
        send = self._link.send  # type: ignore[union-attr]
        sent = send(self._tpl_in % (seq + 1, n, ts, _b64(law[0::2], newline=False)))
        return send(self._tpl_out % (seq + 2, n, ts, _b64(law[1::2], newline=False))) and sent

    def resume(self) -> None:
        self.send = self._first  # "from the present": the next chunk's timestamp is now

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def mark_reply(self, name: str, event: str) -> str:
        """Played out or cleared, the same echo (Twilio's)."""
        return _compact({"event": "mark", "sequenceNumber": self._next_seq(),
                         "streamSid": self.stream_sid, "mark": {"name": name}})

    def dtmf(self, digit: str, duration_ms: int) -> str | None:
        return _compact({"event": "dtmf", "streamSid": self.stream_sid,
                         "sequenceNumber": self._next_seq(),
                         "dtmf": {"track": "inbound_track", "digit": digit}})

    def goodbye(self, text: str | None) -> list[str]:
        stop = _compact({"event": "stop", "sequenceNumber": self._next_seq(),
                         "streamSid": self.stream_sid,
                         "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
        return [text, stop] if text else [stop]

    def record_extra(self) -> dict:
        return {"stream_sid": self.stream_sid, "seq": self._seq, "chunk": self._chunk,
                "at": self._epoch()}

    # -- in -------------------------------------------------------------------------------

    def on_text(self, text: str) -> Actions:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return Relay(text), Refuse("twilio - not a JSON message")
        event = msg.get("event") if isinstance(msg, dict) else None
        if not isinstance(event, str):
            return Relay(text), Refuse("twilio - not a message: no \"event\"")
        sid = msg.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            refused = Refuse(f"twilio - streamSid {str(sid)[:40]!r} is not this stream's "
                             f"({self.stream_sid})")
            return refused if event == "media" else (Relay(text), refused)
        if event == "media":
            return self._media(msg.get("media"))  # never relayed: too large, too many
        if event == "mark":
            mark = msg.get("mark")
            try:
                return Relay(text), Mark(mark_name(mark if isinstance(mark, dict) else {}))
            except DecodeError as exc:
                return Relay(text), Refuse(f"twilio - {exc}")
        if event == "clear":
            return Relay(text), Clear()
        return Relay(text)

    def _media(self, media: object) -> Actions:
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str) or not payload:
            return Refuse("twilio - media without a payload")
        if len(payload) // 4 * 3 > self.max_audio_bytes + 3:
            return Refuse(f"twilio - media payload larger than {self.max_audio_bytes} bytes")
        try:
            law = _unb64(payload, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            return Refuse(f"twilio - media payload is not base64: {exc}")
        if not law:
            return Refuse("twilio - media without a payload")
        return Play(Chunk(_unlaw(law), G711_RATE, "pcmu", law, {}))

    def on_binary(self, data: bytes) -> Actions:
        return Refuse("twilio - binary frames are not Twilio Media Streams messages: send "
                      "JSON text ({\"event\":\"media\",...})")
