"""What the far end of a simulated call says, as 20 ms L16 frames (pure, no I/O).

Why precomputed buffers: the ticker serves every call 50 times a second, so a frame must be a
slice of a buffer built once per (spec, rate) and shared by all calls, never computed per frame.
"""

from __future__ import annotations

import logging
import math
import sys
import wave
from array import array
from fractions import Fraction

log = logging.getLogger(__name__)

PTIME_MS = 20
AMPLITUDE = 8000
SUPPORTED_RATES = (8000, 16000, 48000)


def frame_samples(rate: int) -> int:
    return rate * PTIME_MS // 1000


def _le(samples: array) -> bytes:
    """L16 in host byte order, which is little-endian on every host we run on; force it."""
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def tone_buffer(freq: float, rate: int) -> tuple[bytes, int]:
    """A buffer holding a whole number of periods (`period` samples) plus one extra frame, so
    every frame is one contiguous slice at `offset` and the phase never jumps at the wrap."""
    spf = frame_samples(rate)
    f = Fraction(freq).limit_denominator(1000)
    if f <= 0 or f >= Fraction(rate, 2):
        raise ValueError(f"tone frequency {freq} not in (0, {rate // 2})")
    num = rate * f.denominator
    period = num // math.gcd(num, f.numerator)
    if period > rate * 10:  # irrational-looking frequency: accept a tiny phase step per 10 s
        period = rate * 10
    w = 2.0 * math.pi * float(f) / rate
    samples = array("h", (round(AMPLITUDE * math.sin(w * n)) for n in range(period)))
    reps = -(-(period + spf) // period)
    full = samples * reps
    return _le(full[: period + spf]), period


def read_wav(path: str) -> tuple[array, int]:
    """Mono 16-bit PCM WAV -> (samples, rate). Raises on anything else."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: need mono 16-bit PCM WAV")
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    samples = array("h")
    samples.frombytes(data)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples, rate


def wav_duration(path: str) -> float | None:
    """Seconds of audio in a readable WAV file, else None."""
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except Exception:
        return None


def resample_linear(samples: array, src: int, dst: int) -> array:
    """Linear interpolation: simple, done once per file and rate, good enough for a test feed."""
    if src == dst or not samples:
        return array("h", samples)
    n_out = len(samples) * dst // src
    step = src / dst
    last = len(samples) - 1
    out = array("h", bytes(2 * n_out))
    for i in range(n_out):
        pos = i * step
        j = int(pos)
        frac = pos - j
        a = samples[j]
        b = samples[j + 1] if j < last else a
        out[i] = int(a + (b - a) * frac)
    return out


class Library:
    """Shared, immutable frame buffers, built on first use per (spec, rate)."""

    def __init__(self) -> None:
        self._tones: dict[tuple[float, int], tuple[memoryview, int]] = {}
        self._wavs: dict[tuple[str, int], memoryview] = {}
        self._silence: dict[int, memoryview] = {}
        self._cng: dict[int, bytes] = {}

    def silence(self, rate: int) -> memoryview:
        mv = self._silence.get(rate)
        if mv is None:
            mv = self._silence[rate] = memoryview(bytes(2 * frame_samples(rate)))
        return mv

    def cng(self, rate: int) -> bytes:
        """A CNG frame as the park loop sends it: bytes of 0xFF, one frame long."""
        b = self._cng.get(rate)
        if b is None:
            b = self._cng[rate] = b"\xff" * (2 * frame_samples(rate))
        return b

    def tone(self, freq: float, rate: int) -> tuple[memoryview, int]:
        key = (freq, rate)
        hit = self._tones.get(key)
        if hit is None:
            buf, period = tone_buffer(freq, rate)
            hit = self._tones[key] = (memoryview(buf), period)
        return hit

    def wav(self, path: str, rate: int) -> memoryview:
        key = (path, rate)
        mv = self._wavs.get(key)
        if mv is None:
            try:
                samples, src = read_wav(path)
                samples = resample_linear(samples, src, rate)
            except Exception as exc:  # a missing file plays as silence, like a broken prompt
                log.warning("simulator: cannot read %s (%s); playing silence", path, exc)
                samples = array("h")
            fb = frame_samples(rate)
            pad = (-len(samples)) % fb
            samples.extend(array("h", [0]) * pad)
            mv = self._wavs[key] = memoryview(_le(samples))
        return mv


class Source:
    """Far-end audio for one call; `next_frame()` returns one 20 ms frame (a shared slice)."""

    def next_frame(self) -> memoryview | bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Audio written into the call (write-back). Only `echo` does anything with it."""


class SilenceSource(Source):
    __slots__ = ("_frame",)

    def __init__(self, lib: Library, rate: int) -> None:
        self._frame = lib.silence(rate)

    def next_frame(self) -> memoryview:
        return self._frame


class ToneSource(Source):
    __slots__ = ("_buf", "_fb", "_off", "_period")

    def __init__(self, lib: Library, rate: int, freq: float) -> None:
        self._buf, period = lib.tone(freq, rate)
        self._period = 2 * period
        self._fb = 2 * frame_samples(rate)
        self._off = 0

    def next_frame(self) -> memoryview:
        off = self._off
        nxt = off + self._fb
        # any offset below one period starts a whole frame (the buffer is a period plus a frame),
        # also when the period is shorter than a frame (1 kHz at 8 kHz: 8 samples)
        self._off = nxt % self._period if nxt >= self._period else nxt
        return self._buf[off : off + self._fb]


class WavSource(Source):
    """Plays the file once, then silence."""

    __slots__ = ("_buf", "_end", "_fb", "_off", "_silence")

    def __init__(self, lib: Library, rate: int, path: str) -> None:
        self._buf = lib.wav(path, rate)
        self._end = len(self._buf)
        self._fb = 2 * frame_samples(rate)
        self._off = 0
        self._silence = lib.silence(rate)

    def next_frame(self) -> memoryview:
        off = self._off
        if off >= self._end:
            return self._silence
        self._off = off + self._fb
        return self._buf[off : off + self._fb]


class EchoSource(Source):
    """What is written into the call comes back in its read audio on the next frame tick."""

    __slots__ = ("_fb", "_max", "_pending", "_silence")

    def __init__(self, lib: Library, rate: int, max_frames: int = 25) -> None:
        self._fb = 2 * frame_samples(rate)
        self._max = self._fb * max_frames
        self._pending = bytearray()
        self._silence = lib.silence(rate)

    def write(self, data: bytes) -> None:
        p = self._pending
        p += data
        if len(p) > self._max:  # a writer far ahead of real time: keep the newest audio
            del p[: len(p) - self._max]

    def next_frame(self) -> memoryview | bytes:
        p = self._pending
        if not p:
            return self._silence
        fb = self._fb
        if len(p) >= fb:
            out = bytes(p[:fb])
            del p[:fb]
            return out
        out = bytes(p) + bytes(self._silence[len(p) :])
        p.clear()
        return out


def parse_spec(spec: str) -> tuple[str, str]:
    """`tone:440` -> ("tone", "440"); validates the kind."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in ("tone", "wav", "echo", "silence"):
        raise ValueError(f"unknown extension spec {spec!r} (tone:F, wav:PATH, echo, silence)")
    if kind == "tone":
        float(arg)
    if kind == "wav" and not arg:
        raise ValueError("wav: needs a path")
    return kind, arg


def make_source(lib: Library, spec: str, rate: int) -> Source:
    kind, arg = parse_spec(spec)
    if kind == "tone":
        return ToneSource(lib, rate, float(arg))
    if kind == "wav":
        return WavSource(lib, rate, arg)
    if kind == "echo":
        return EchoSource(lib, rate)
    return SilenceSource(lib, rate)


def load_for_displace(path: str, rate: int) -> bytes | None:
    """A file as mod_sndfile/mod_native_file would play it into a channel at `rate`: L16 mono.
    `.wav` at any rate; `.r8`/`.raw` 8 kHz and `.r16` 16 kHz 16-bit raw (facts file: `.r24`/
    `.r32` are 24/32-BIT, not kHz, and are not simulated). None when FreeSWITCH could not open it.
    """
    lower = path.lower()
    try:
        if lower.endswith((".r8", ".raw", ".r16")):
            src = 16000 if lower.endswith(".r16") else 8000
            with open(path, "rb") as f:
                data = f.read()
            samples = array("h", data[: len(data) & ~1])
        elif lower.endswith(".wav"):
            with wave.open(path, "rb") as w:
                if w.getsampwidth() != 2:
                    return None
                src, channels = w.getframerate(), w.getnchannels()
                samples = array("h", w.readframes(w.getnframes()))
                if channels > 1:
                    samples = samples[::channels]
        else:
            return None
    except (OSError, wave.Error, EOFError):
        return None
    return resample_linear(samples, src, rate).tobytes()
