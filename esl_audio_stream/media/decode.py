"""What the WebSocket endpoint sends back to be played: its messages, decoded to L16.

mod_audio_stream accepts `{"type":"streamAudio","data":{"audioDataType":..,"sampleRate":..,
"audioData":"<base64>"}}` and fires `mod_audio_stream::play` naming a file it wrote. This daemon
also plays the audio itself, so every chunk is decoded here to mono little-endian L16 at a known
rate; the playback queue then only ever sees one format. Binary messages are raw L16 at the
stream's rate, and `killAudio`/`clear`/`mark` control what plays (Twilio-style barge-in).

Everything here runs once per message, never per frame, and is pure: bytes in, a Chunk or a
DecodeError out. A DecodeError's message is what the `mod_audio_stream::error` event says; a
bad message never writes or queues anything, because it is refused before anything is kept.

Containers (wav/mp3/ogg) go through libsndfile (the `soundfile` package; its wheels bundle a
libsndfile with MP3 and Vorbis/Opus). libsndfile silently shortens a truncated WAV and mpg123
decodes what it can of a truncated MP3, so both are checked here against their own headers.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import sys
from dataclasses import dataclass, field

from .pcm import audioop

__all__ = [
    "KINDS",
    "MAX_RATE",
    "MIN_RATE",
    "Chunk",
    "DecodeError",
    "decode_binary",
    "decode_stream_audio",
    "mark_name",
    "parse_message",
]

MIN_RATE = 8000
MAX_RATE = 48000
# Containers say their own rate; a wider range is fine there (resampled down), but a tiny rate
# would make the resampler multiply the data, so it is bounded too.
_CONTAINER_MIN_RATE = 8000
_CONTAINER_MAX_RATE = 192000
KINDS = ("raw", "wav", "mp3", "ogg", "pcmu", "pcma")
_CONTROL = frozenset(("streamAudio", "killAudio", "clear", "mark"))
# libsndfile's major format names each audioDataType may carry.
_CONTAINER_FORMATS = {"wav": ("WAV", "WAVEX", "RF64"), "mp3": ("MP3",), "ogg": ("OGG",)}
_BLOCK_FRAMES = 8192
_MAX_MARK_NAME = 256
_BIG_ENDIAN = sys.byteorder == "big"


class DecodeError(ValueError):
    """A message from the endpoint that cannot be played; str(e) is the error event's text."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One message's audio, decoded. `pcm` is mono little-endian L16 at `rate`."""

    pcm: bytes
    rate: int
    kind: str  # "raw" | "wav" | "mp3" | "ogg" | "pcmu" | "pcma" | "binary"
    original: bytes  # the payload as received (base64-decoded): what the per-call file holds
    meta: dict = field(default_factory=dict)  # the message's `data` minus audioData

    @property
    def duration(self) -> float:
        """Seconds of audio in `pcm`."""
        return len(self.pcm) / (2 * self.rate)


def parse_message(text: str) -> tuple[str, dict] | None:
    """(type, data) for streamAudio/killAudio/clear/mark, None for any other text.

    Anything that is not one of those (not JSON, not an object, another type) is the endpoint's
    business and is relayed as a `mod_audio_stream::json` event, so this never raises. A missing
    or non-object `data` comes back as {} (decode_stream_audio / mark_name then refuse it).
    """
    if "streamAudio" not in text and "killAudio" not in text and "clear" not in text \
            and "mark" not in text and "\\u" not in text:
        return None  # cheap exit for the common relayed JSON; \u escapes could spell a type
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict):
        return None
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in _CONTROL:
        return None
    data = msg.get("data")
    return kind, data if isinstance(data, dict) else {}


def mark_name(data: dict) -> str:
    """The name of a `mark` message (a non-empty string of at most 256 characters)."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise DecodeError("mark - 'name' must be a non-empty string")
    if len(name) > _MAX_MARK_NAME:
        raise DecodeError(f"mark - 'name' longer than {_MAX_MARK_NAME} characters")
    return name


def _rate(value: object, default: int | None, lo: int, hi: int) -> int:
    if value is None:
        if default is None:
            raise DecodeError("streamAudio - missing 'sampleRate'")
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DecodeError(f"streamAudio - unsupported sample rate: {value!r}"
                          f" (an integer from {lo} to {hi})")
    return value


def _b64(text: object, max_bytes: int) -> bytes:
    if not isinstance(text, str):
        raise DecodeError("streamAudio - missing 'audioData' (expected a base64 string)")
    if len(text) // 4 * 3 > max_bytes + 3:  # refuse before decoding anything that large
        raise DecodeError(f"streamAudio - audioData larger than {max_bytes} bytes")
    if any(c in text for c in " \t\r\n"):  # MIME-style line breaks are harmless
        text = "".join(text.split())
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:  # ValueError: non-ASCII characters
        raise DecodeError(f"streamAudio - base64 decode error: {e}") from None
    if not payload:
        raise DecodeError("streamAudio - empty audioData")
    if len(payload) > max_bytes:
        raise DecodeError(f"streamAudio - audioData larger than {max_bytes} bytes")
    return payload


def decode_stream_audio(data: dict, *, max_bytes: int = 8 << 20,
                        max_pcm_bytes: int = 64 << 20) -> Chunk:
    """Decode a streamAudio message's `data` to a Chunk, or raise DecodeError.

    `max_bytes` bounds the base64-decoded payload, `max_pcm_bytes` the decoded L16 (a small
    compressed file can expand a lot). `sampleRate` is required for raw, 8000 by default for
    pcmu/pcma, and ignored for containers, which carry their own rate.
    """
    kind = data.get("audioDataType")
    if not isinstance(kind, str) or kind not in KINDS:
        raise DecodeError(f"streamAudio - unsupported audio type: {kind!r}"
                          f" (one of {', '.join(KINDS)})")
    rate_value = data.get("sampleRate")
    if kind == "raw":
        rate = _rate(rate_value, None, MIN_RATE, MAX_RATE)
    elif kind in ("pcmu", "pcma"):
        rate = _rate(rate_value, 8000, MIN_RATE, MAX_RATE)
    payload = _b64(data.get("audioData"), max_bytes)
    meta = {k: v for k, v in data.items() if k != "audioData"}
    if kind == "raw":
        if len(payload) & 1:
            raise DecodeError("streamAudio - raw audio of odd length (L16 is 2 bytes a sample)")
        pcm = payload
    elif kind in ("pcmu", "pcma"):
        pcm = (audioop.ulaw2lin if kind == "pcmu" else audioop.alaw2lin)(payload, 2)
        if _BIG_ENDIAN:
            pcm = audioop.byteswap(pcm, 2)
    else:
        pcm, rate = _decode_container(kind, payload, max_pcm_bytes)
    if len(pcm) > max_pcm_bytes:
        raise DecodeError(f"streamAudio - decoded audio larger than {max_pcm_bytes} bytes")
    return Chunk(pcm, rate, kind, payload, meta)


def decode_binary(payload: bytes, rate: int, *, max_bytes: int = 8 << 20) -> Chunk:
    """A binary message: raw L16 at the stream's rate, played as it is."""
    if not payload:
        raise DecodeError("binary audio - empty message")
    if len(payload) & 1:
        raise DecodeError("binary audio - odd length (L16 is 2 bytes a sample)")
    if len(payload) > max_bytes:
        raise DecodeError(f"binary audio - message larger than {max_bytes} bytes")
    payload = bytes(payload)
    return Chunk(payload, rate, "binary", payload, {})


def _decode_container(kind: str, payload: bytes, max_pcm_bytes: int) -> tuple[bytes, int]:
    import numpy as np  # soundfile depends on numpy; import both only when a container comes
    import soundfile as sf

    if kind == "wav":
        _check_wav(payload)
    elif kind == "mp3":
        _check_mp3(payload)
    try:
        with sf.SoundFile(io.BytesIO(payload)) as f:
            fmt, rate, channels, declared = f.format, f.samplerate, f.channels, f.frames
            if fmt not in _CONTAINER_FORMATS[kind]:
                raise DecodeError(f"streamAudio - audioDataType is {kind} but the data is {fmt}")
            _rate(rate, None, _CONTAINER_MIN_RATE, _CONTAINER_MAX_RATE)
            if channels < 1:
                raise DecodeError(f"streamAudio - {kind} with {channels} channels")
            limit = max_pcm_bytes // 2  # frames of mono output
            parts: list[bytes] = []
            total = 0
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="int16", always_2d=True)
                n = len(block)
                if not n:
                    break
                total += n
                if total > limit:
                    raise DecodeError(
                        f"streamAudio - decoded audio larger than {max_pcm_bytes} bytes")
                if channels == 1:
                    mono = block[:, 0]
                else:  # mix down: the mean of the channels, which cannot clip
                    mono = np.rint(block.mean(axis=1, dtype=np.float32))
                parts.append(mono.astype("<i2").tobytes())
    except DecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, AssertionError, ValueError, OverflowError) as e:
        raise DecodeError(f"streamAudio - cannot decode {kind}: {e}") from None
    if not total:
        raise DecodeError(f"streamAudio - {kind} holds no audio")
    if total < declared:
        raise DecodeError(f"streamAudio - truncated {kind}: {total} of {declared} frames")
    return b"".join(parts), rate


def _check_wav(data: bytes) -> None:
    """libsndfile plays a WAV whose data chunk is cut short as a shorter file; refuse it."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return  # not plain RIFF/WAVE (RF64, junk): libsndfile decides
    order = "little" if data[:4] == b"RIFF" else "big"
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], order)
        if cid == b"data":
            # 0 and 0xFFFFFFFF are what streaming writers put when the length is unknown.
            if size not in (0, 0xFFFFFFFF) and pos + 8 + size > len(data):
                raise DecodeError(f"streamAudio - truncated wav: data chunk says {size} bytes,"
                                  f" {len(data) - pos - 8} present")
            return
        pos += 8 + size + (size & 1)
    raise DecodeError("streamAudio - truncated wav: no data chunk")


_MP3_BITRATES = {  # kbit/s by (MPEG-1?, layer) for bitrate index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(h: bytes | memoryview) -> int:
    """Length of the MPEG audio frame whose 4-byte header is `h`, 0 if it is not one."""
    if h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return 0
    version, layer = (h[1] >> 3) & 3, 4 - ((h[1] >> 1) & 3)
    bi, ri, pad = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer == 4 or bi in (0, 15) or ri == 3:
        return 0  # reserved values, or free format (no length in the header)
    v1 = version == 3
    bitrate = _MP3_BITRATES[v1, layer][bi - 1] * 1000
    rate = _MP3_RATES[version][ri]
    if layer == 1:
        return (12 * bitrate // rate + pad) * 4
    return (144 if layer == 2 or v1 else 72) * bitrate // rate + pad


def _check_mp3(data: bytes) -> None:
    """Walk the MPEG frames: a last frame cut short means the file was truncated.

    mpg123 decodes what it can of a truncated stream without an error, and an MP3 without a
    Xing/LAME header has no frame count to compare with, so the structure is the only witness.
    """
    n = len(data)
    pos = 0
    if data[:3] == b"ID3" and n >= 10:  # ID3v2: syncsafe size, optional 10-byte footer
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        pos = 10 + size + (10 if data[5] & 0x10 else 0)
        if pos > n:
            raise DecodeError("streamAudio - truncated mp3: ID3 tag longer than the data")
    first = True
    view = memoryview(data)
    while pos < n:
        if n - pos < 4:
            if first or data[pos] == 0xFF:
                raise DecodeError("streamAudio - truncated mp3: no complete frame")
            return
        length = _mp3_frame_length(view[pos:pos + 4])
        if not length:
            if first:
                raise DecodeError("streamAudio - not an mp3: no MPEG audio frame at the start")
            return  # a trailing tag, or junk that libsndfile/mpg123 will judge
        if pos + length > n:
            raise DecodeError(f"streamAudio - truncated mp3: last frame needs {length} bytes,"
                              f" {n - pos} present")
        first = False
        pos += length
