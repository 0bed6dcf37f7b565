"""The native pump in tests: seeded mask keys (so two paths put the same bytes on the wire) and
the C pump driven with no socket, its frames captured by the engine."""

from __future__ import annotations

import random

import pytest

from esl_audio_stream.media.resample import make_resampler
from esl_audio_stream.native.engine import AVAILABLE, ffi, lib
from esl_audio_stream.ws import framing

needs_native = pytest.mark.skipif(not AVAILABLE, reason="the native pump was not built")


def seed_masks(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Mask keys drawn from a seeded generator from now on (every FrameWriter's refills)."""
    monkeypatch.setattr(framing, "mask_source", random.Random(seed).randbytes)


class CapturedPump:
    """One C pump in an engine of its own, fed datagrams by hand; its frames (masked with
    `writer`'s keys) go to the engine's capture instead of a socket."""

    def __init__(self, writer: framing.FrameWriter, channel_rate: int, stream_rate: int,
                 chunk: int, sample_mask: int = -1) -> None:
        self.writer = writer
        self.resampler = make_resampler(channel_rate, stream_rate)
        self.engine = ffi.gc(lib.eas_engine_new(), lib.eas_engine_free)
        self.st = ffi.gc(lib.eas_pump_new(chunk, 1, channel_rate, stream_rate), lib.eas_pump_free)
        st = self.st
        st.tcp_fd = -1
        st.masks = ffi.cast("unsigned char *", writer.mask_pool)
        st.mask_at = ffi.cast("uint32_t *", writer.mask_at)
        st.mask_pool = writer.mask_pool_size
        st.rs = (ffi.NULL if self.resampler is None
                 else ffi.cast("SpeexResamplerState *", self.resampler.address))
        st.sample_mask = (1 << 64) - 1 if sample_mask < 0 else sample_mask
        self.refills = 0

    def room(self, n: int) -> None:
        """The capture takes `n` more bytes, then refuses (EAGAIN); -1: any."""
        lib.eas_engine_set_room(self.engine, n, 0)

    def fail_with(self, errno: int) -> None:
        lib.eas_engine_set_room(self.engine, -1, errno)

    def feed(self, datagram: bytes) -> int:
        """One datagram; what C stopped on (a new block of keys is drawn as FrameWriter would,
        and the frame goes on)."""
        why = lib.eas_pump_feed(self.engine, self.st, datagram, len(datagram))
        while why == lib.EAS_MASKS:
            self.writer.refill_masks()
            self.refills += 1
            why = lib.eas_engine_resume(self.engine, self.st)
        return why

    def captured(self) -> bytes:
        out = ffi.new("const unsigned char **")
        n = lib.eas_engine_captured(self.engine, out)
        return ffi.buffer(out[0], n)[:] if n else b""
