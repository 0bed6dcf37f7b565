"""G.711 on the wire: L16 to µ-law or A-law (one byte a sample) and back, in C (audioop).

Why a module: both wire protocols send G.711 (Twilio Media Streams always µ-law; mod_audio_stream
mode when STREAM_AUDIO_ENCODING asks) and play it back, and the per-frame path wants one C call
bound once per stream, not a choice per frame. L16 here is the pipeline's: little-endian, which
is the host's order on every machine FreeSWITCH runs on; a big-endian host swaps first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .pcm import audioop

#: STREAM_AUDIO_ENCODING values that are G.711, and the only rate G.711 runs at here.
G711 = ("pcmu", "pcma")
G711_RATE = 8000

_BIG_ENDIAN = sys.byteorder == "big"


def encoder(encoding: str) -> Callable[[bytes], bytes]:
    """L16 (little-endian, any number of interleaved channels) -> one G.711 byte a sample."""
    to_law = {"pcmu": audioop.lin2ulaw, "pcma": audioop.lin2alaw}[encoding]
    if _BIG_ENDIAN:
        swap = audioop.byteswap
        return lambda pcm: to_law(swap(pcm, 2), 2)
    return lambda pcm: to_law(pcm, 2)


def decoder(encoding: str) -> Callable[[bytes], bytes]:
    """G.711 bytes -> L16 little-endian."""
    to_lin = {"pcmu": audioop.ulaw2lin, "pcma": audioop.alaw2lin}[encoding]
    if _BIG_ENDIAN:
        swap = audioop.byteswap
        return lambda data: swap(to_lin(data, 2), 2)
    return lambda data: to_lin(data, 2)
