"""mod_audio_stream's wire protocol, as its endpoints expect it.

Out: the start's metadata as the first text message of every connection, then the audio as
binary messages of L16 (STREAM_BUFFER_SIZE ms each) -- or G.711 (`STREAM_AUDIO_ENCODING=pcmu|pcma`,
8 kHz, a byte a sample, stereo interleaved byte by byte) --, texts (send_text) in order with it,
the caller's keys as `{"type":"dtmf","data":{"digit":"5","duration":250}}` only when asked
(`STREAM_SEND_DTMF`: endpoints written for the C module may not expect text frames, and some
close the session on one), and the stop's text as the last message before the close. In:
`{"type":"streamAudio","data":{...}}` plays a chunk (its file named in a `mod_audio_stream::play`
event), `killAudio`/`clear` barge in, `mark` is answered
`{"type":"mark","data":{"name":..,"event":"playout"|"cleared"}}`, binary messages are raw audio
at the stream's rate in the wire's encoding to play, and any other text is relayed as
`mod_audio_stream::json`. Decoding is media/decode.py's.
"""

from __future__ import annotations

from collections.abc import Callable

from ..jsonfmt import compact as _compact
from ..media.decode import (
    Chunk,
    DecodeError,
    decode_binary,
    decode_stream_audio,
    mark_name,
    parse_message,
)
from ..media.g711 import G711, decoder, encoder
from .actions import Action, AudioOut, Clear, Link, Mark, Play, Refuse, Relay


class ModAudioStream:
    name = "mod_audio_stream"
    audio_as_text = False
    marks_when_heard = False  # as it always was: when the last frame is handed over

    def __init__(self, *, metadata: str | None, stream_rate: int,
                 max_audio_bytes: int = 8 << 20, encoding: str = "l16",
                 send_dtmf: bool = False, channels: int = 1) -> None:
        if encoding in G711 and stream_rate != 8000:
            raise ValueError(f"{encoding} is 8000 Hz only, not {stream_rate}")
        self.metadata = metadata
        self.stream_rate = stream_rate
        self.max_audio_bytes = max_audio_bytes
        self.encoding = encoding
        self.send_dtmf = send_dtmf
        self.channels = channels

    @property
    def wire_bytes_per_second(self) -> int:
        return self.stream_rate * self.channels * (1 if self.encoding in G711 else 2)

    def greeting(self) -> list[str]:
        return [self.metadata] if self.metadata else []

    def audio_out(self, link: Link) -> AudioOut:
        if self.encoding in G711:
            return _Encoded(link, encoder(self.encoding))
        return link  # binary L16 chunks as they are: the link's own send

    def goodbye(self, text: str | None) -> list[str]:
        return [text] if text else []

    def mark_reply(self, name: str, event: str) -> str:
        return _compact({"type": "mark", "data": {"name": name, "event": event}})

    def dtmf(self, digit: str, duration_ms: int) -> str | None:
        if not self.send_dtmf:
            return None
        return _compact({"type": "dtmf", "data": {"digit": digit, "duration": duration_ms}})

    def resume(self) -> None:
        pass

    def record_extra(self) -> dict:
        return {}

    def on_text(self, text: str) -> Action:
        parsed = parse_message(text) if text.startswith("{") and '"type"' in text else None
        if parsed is None:
            return Relay(text)
        kind, data = parsed
        try:
            if kind == "streamAudio":
                return Play(decode_stream_audio(data, max_bytes=self.max_audio_bytes), True)
            if kind == "mark":
                return Mark(mark_name(data))
        except DecodeError as exc:
            return Refuse(str(exc))
        return Clear()  # killAudio, clear

    def on_binary(self, data: bytes) -> Action:
        if self.encoding in G711:
            return _play_g711(data, self.encoding, self.max_audio_bytes)
        try:
            return Play(decode_binary(data, self.stream_rate, max_bytes=self.max_audio_bytes))
        except DecodeError as exc:
            return Refuse(str(exc))


class _Encoded:
    """The per-frame path of a G.711 stream: one C call, then the link's send (looked up per
    chunk: the link swaps it with its state)."""

    __slots__ = ("_encode", "_link")

    def __init__(self, link: Link, encode: Callable[[bytes], bytes]) -> None:
        self._link = link
        self._encode = encode

    def send(self, chunk: bytes) -> bool:
        return self._link.send(self._encode(chunk))


def _play_g711(data: bytes, encoding: str, max_bytes: int) -> Action:
    """A binary message of a G.711 stream: G.711 at 8 kHz, one byte a sample."""
    if not data:
        return Refuse("binary audio - empty message")
    if len(data) > max_bytes:
        return Refuse(f"binary audio - message larger than {max_bytes} bytes")
    payload = bytes(data)
    return Play(Chunk(decoder(encoding)(payload), 8000, encoding, payload, {}))
