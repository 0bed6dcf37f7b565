"""Audio the endpoint sends back: tones, and mod_audio_stream's streamAudio messages."""

from __future__ import annotations

import base64
import io
import json
import math
from array import array

import soundfile


def tone(freq: float, seconds: float, rate: int, amp: int = 8000) -> bytes:
    n = int(seconds * rate)
    return array("h", (int(amp * math.sin(2 * math.pi * freq * i / rate))
                       for i in range(n))).tobytes()


def stream_audio(pcm: bytes, rate: int, kind: str = "raw", **extra) -> str:
    if kind in ("wav", "ogg", "mp3"):
        buf = io.BytesIO()
        fmt = {"wav": "WAV", "ogg": "OGG", "mp3": "MP3"}[kind]
        sub = {"wav": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}[kind]
        soundfile.write(buf, array("h", pcm), rate, format=fmt, subtype=sub)
        payload = buf.getvalue()
    elif kind == "pcmu":
        import audioop

        payload = audioop.lin2ulaw(pcm, 2)
    else:
        payload = pcm
    data = {"audioDataType": kind, "sampleRate": rate,
            "audioData": base64.b64encode(payload).decode(), **extra}
    return json.dumps({"type": "streamAudio", "data": data})
