"""mod_audio_stream's wire protocol, as its endpoints expect it.

Out: the start's metadata as the first text message of every connection, then the audio as
binary messages of L16 (STREAM_BUFFER_SIZE ms each), texts (send_text) in order with it, and the
stop's text as the last message before the close. In: `{"type":"streamAudio","data":{...}}`
plays a chunk (its file named in a `mod_audio_stream::play` event), `killAudio`/`clear` barge in,
`mark` is answered `{"type":"mark","data":{"name":..,"event":"playout"|"cleared"}}`, binary
messages are raw L16 at the stream's rate to play, and any other text is relayed as
`mod_audio_stream::json`. Decoding is media/decode.py's.
"""

from __future__ import annotations

from ..jsonfmt import compact as _compact
from ..media.decode import (
    DecodeError,
    decode_binary,
    decode_stream_audio,
    mark_name,
    parse_message,
)
from .actions import Action, AudioOut, Clear, Link, Mark, Play, Refuse, Relay


class ModAudioStream:
    name = "mod_audio_stream"

    def __init__(self, *, metadata: str | None, stream_rate: int,
                 max_audio_bytes: int = 8 << 20) -> None:
        self.metadata = metadata
        self.stream_rate = stream_rate
        self.max_audio_bytes = max_audio_bytes

    def greeting(self) -> list[str]:
        return [self.metadata] if self.metadata else []

    def audio_out(self, link: Link) -> AudioOut:
        return link  # binary L16 chunks as they are: the link's own send

    def goodbye(self, text: str | None) -> list[str]:
        return [text] if text else []

    def mark_reply(self, name: str, event: str) -> str:
        return _compact({"type": "mark", "data": {"name": name, "event": event}})

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
        try:
            return Play(decode_binary(data, self.stream_rate, max_bytes=self.max_audio_bytes))
        except DecodeError as exc:
            return Refuse(str(exc))
