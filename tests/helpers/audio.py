"""Audio the endpoint sends back: tones, and mod_audio_stream's streamAudio messages."""

from __future__ import annotations

import base64
import io
import itertools
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


def phase_steps(pcm: bytes, rate: int, freq: float, frame_ms: int = 20) -> list[float]:
    """For a steady tone cut into frames, how far the tone's phase moves from each frame to
    the next, in cycles (0..1). A continuous tone moves by freq*frame (mod 1) every time; a
    frame sent twice moves by 0, a frame lost by twice that: what counts cannot tell apart
    from a frame in flight."""
    n = rate * frame_ms // 1000
    samples = array("h", pcm[: len(pcm) // (2 * n) * 2 * n])
    window = [0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1)) for i in range(n)]
    w = [2 * math.pi * freq * i / rate for i in range(n)]
    phases = []
    for k in range(len(samples) // n):
        frame = samples[k * n:(k + 1) * n]
        re = sum(x * h * math.cos(a) for x, h, a in zip(frame, window, w, strict=True))
        im = sum(x * h * math.sin(a) for x, h, a in zip(frame, window, w, strict=True))
        phases.append(math.atan2(-im, re) / (2 * math.pi))
    return [(b - a) % 1.0 for a, b in itertools.pairwise(phases)]
