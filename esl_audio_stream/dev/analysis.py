"""Tone analysis for tests and the demo: which frequency dominates a stretch of L16 audio.

Pure Python on purpose (numpy is not a dependency). Two stages keep it both robust and fast:
a Hann-windowed radix-2 FFT over a few short segments finds the strongest bin (robust to noise
and to other, weaker tones), then Goertzel evaluations on ever longer windows around that bin
refine it, each stage halving the uncertainty, to a small fraction of a hertz on a few seconds.
"""

from __future__ import annotations

import cmath
import math
import sys
from array import array

_COARSE_N = 4096  # FFT size of the coarse stage (bin = rate/4096: ~3.9 Hz at 16 kHz)
_COARSE_SEGMENTS = 4  # segments averaged by the coarse stage, spread over the signal


def _samples(pcm: bytes | bytearray | memoryview) -> list[float]:
    a = array("h")
    a.frombytes(bytes(pcm[: len(pcm) & ~1]) if len(pcm) & 1 else pcm)
    if sys.byteorder == "big":  # L16 on the wire from FreeSWITCH here is little-endian
        a.byteswap()
    if not a:
        return []
    mean = sum(a) / len(a)
    return [x - mean for x in a]


def _hann(n: int) -> list[float]:
    k = 2.0 * math.pi / (n - 1)
    return [0.5 - 0.5 * math.cos(k * i) for i in range(n)]


def _fft_power(x: list[complex]) -> list[float]:
    """In-place iterative radix-2 FFT; returns |X[k]|^2 for k in 0..n/2."""
    n = len(x)
    j = 0
    for i in range(1, n):  # bit-reversal permutation
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            x[i], x[j] = x[j], x[i]
    size = 2
    while size <= n:
        half = size // 2
        tw = [cmath.exp(-2j * math.pi * k / size) for k in range(half)]
        for start in range(0, n, size):
            for k in range(half):
                a = x[start + k]
                b = x[start + k + half] * tw[k]
                x[start + k] = a + b
                x[start + k + half] = a - b
        size *= 2
    return [abs(v) ** 2 for v in x[: n // 2 + 1]]


def _goertzel_power(x: list[float], freq: float, rate: int) -> float:
    c = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + c * s1 - s2, s1
    return s1 * s1 + s2 * s2 - c * s1 * s2


def _parabolic(ym: float, y0: float, yp: float) -> float:
    """Offset (in steps, -0.5..0.5) of the vertex of the parabola through three log powers."""
    lm, l0, lp = (math.log(v + 1e-30) for v in (ym, y0, yp))
    den = lm - 2.0 * l0 + lp
    if den >= 0.0:
        return 0.0
    return max(-0.5, min(0.5, 0.5 * (lm - lp) / den))


def dominant_frequency(pcm: bytes | bytearray | memoryview, rate: int, *,
                       max_seconds: float = 4.0) -> float:
    """Frequency in Hz of the strongest tone in mono L16 `pcm` at `rate` (0.0 for silence).

    Uses at most the middle `max_seconds` of the signal for the fine stage, so a long recording
    costs no more than a short one. About 0.4 s of CPU for 3 s or more at 48 kHz; less at 8/16 kHz.
    """
    x = _samples(pcm)
    n = len(x)
    if n < 64 or not any(x):
        return 0.0
    # Coarse: averaged Hann-windowed FFT power over a few segments.
    nc = min(_COARSE_N, 1 << (n.bit_length() - 1))
    win = _hann(nc)
    segs = min(_COARSE_SEGMENTS, n // nc)
    stride = (n - nc) // (segs - 1) if segs > 1 else 0
    power = [0.0] * (nc // 2 + 1)
    for s in range(segs):
        off = s * stride
        spec = _fft_power([complex(x[off + i] * win[i]) for i in range(nc)])
        power = [p + q for p, q in zip(power, spec, strict=True)]
    k = max(range(1, nc // 2), key=power.__getitem__)
    step = rate / nc  # current uncertainty scale, in Hz
    freq = (k + _parabolic(power[k - 1], power[k], power[k + 1])) * step
    # Fine: Goertzel on doubling windows; the Hann main lobe (+-2 rate/L) spans the 5-point grid.
    limit = min(n, max(nc, int(max_seconds * rate)))
    length = nc
    while True:
        length = min(length * 2, limit)
        off = (n - length) // 2
        w = _hann(length)
        seg = [x[off + i] * w[i] for i in range(length)]
        grid = [freq + d * step / 2.0 for d in (-2, -1, 0, 1, 2)]
        p = [_goertzel_power(seg, f, rate) for f in grid]
        i = max(range(1, 4), key=p.__getitem__)
        freq = grid[i] + _parabolic(p[i - 1], p[i], p[i + 1]) * step / 2.0
        if length >= limit:
            return freq
        step = rate / length  # the next window is twice as long: half the lobe width


def tone_amplitude(pcm: bytes | bytearray | memoryview, freq: float, rate: int) -> float:
    """Peak amplitude (in L16 units) of the `freq` component of mono L16 `pcm`: a Hann-windowed
    Goertzel, so a tone among others is measured on its own (a 8000-peak sine gives ~8000; the
    same sine mixed in twice, ~16000). For tests of what a stream carries, and how much of it."""
    x = _samples(pcm)
    n = len(x)
    if n < 64:
        return 0.0
    w = _hann(n)
    power = _goertzel_power([x[i] * w[i] for i in range(n)], freq, rate)
    return 4.0 * math.sqrt(max(power, 0.0)) / n
