"""Stateful L16 resampling over speexdsp (cffi API mode), one state per stream and direction.

Quality 2 is `SWITCH_RESAMPLE_QUALITY` (FreeSWITCH's switch_resample.h), which is what
mod_audio_stream passes to `speex_resampler_init`: the same audio a mod_audio_stream user gets,
at a CPU cost suited to 1000 calls (higher qualities cost several times more for telephony audio).

The filter state lives in C and carries across frames, so frame edges do not click, and speexdsp
tracks the fractional input position with integers, so output length never drifts over long calls.
Leading zeros are kept (no `skip_zeros`), like mod_audio_stream: each 20 ms frame in gives exactly
one 20 ms frame out, at the cost of the filter's constant latency (a few ms).
"""

from __future__ import annotations

from types import TracebackType

from esl_audio_stream.media._speexdsp import ffi, lib

#: speexdsp quality used by FreeSWITCH (SWITCH_RESAMPLE_QUALITY) and mod_audio_stream.
DEFAULT_QUALITY = 2

_resample = lib.eas_resample
_buffer = ffi.buffer



class ResamplerError(RuntimeError):
    """speexdsp refused the parameters or failed while processing."""


class Resampler:
    """Stateful L16 resampler for one stream and direction (state carries across frames, so frame
    edges do not click; integer bookkeeping so there is no drift over long calls).

    Not thread-safe; one instance per stream and direction. Input must hold whole sample frames.
    """

    __slots__ = (
        "_in_bytes",
        "_in_cap",
        "_in_len",
        "_out",
        "_out_cap",
        "_out_len",
        "_st",
        "_step",
        "channels",
        "in_rate",
        "out_rate",
    )

    def __init__(
        self, in_rate: int, out_rate: int, channels: int = 1, quality: int = DEFAULT_QUALITY
    ) -> None:
        if in_rate <= 0 or out_rate <= 0 or channels <= 0:
            raise ValueError(f"bad resampler parameters {in_rate}->{out_rate} x{channels}")
        if not 0 <= quality <= 10:
            raise ValueError(f"speexdsp quality must be 0..10, not {quality}")
        self._st = ffi.NULL  # so close() is safe even if init fails below
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self._step = 2 * channels
        self._in_bytes = 0
        err = ffi.new("int *")
        st = lib.speex_resampler_init(channels, in_rate, out_rate, quality, err)
        if st == ffi.NULL or err[0] != 0:
            if st != ffi.NULL:
                lib.speex_resampler_destroy(st)
            raise ResamplerError(ffi.string(lib.speex_resampler_strerror(err[0])).decode())
        self._st = st
        # In/out lengths are in-out parameters of the C call: allocate them once.
        self._in_len = ffi.new("spx_uint32_t *")
        self._out_len = ffi.new("spx_uint32_t *")
        self._in_cap = 0
        self._out_cap = 0
        self._out = ffi.NULL
        self._grow(max(in_rate // 25, 160))  # 40 ms: two usual frames, so growth is rare

    def _grow(self, in_frames: int) -> None:
        """Size the output buffer for `in_frames` frames in (+ slack for the fraction carried)."""
        self._in_cap = in_frames
        self._in_bytes = 0 if self._st == ffi.NULL else in_frames * 2 * self.channels
        self._out_cap = -(-in_frames * self.out_rate // self.in_rate) + 4
        self._out = ffi.new("spx_int16_t[]", self._out_cap * self.channels)

    def process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Resample one chunk of interleaved L16 (native byte order, little-endian on x86/ARM)."""
        size = len(pcm)
        # The per-frame path, one C call: bytes of whole frames that fit the buffers of an open
        # resampler (_in_bytes is 0 once closed). The output buffer has room for all of it, so
        # speex consumes everything; anything else is an error, never a silent loss.
        if type(pcm) is bytes and 0 < size <= self._in_bytes and not size % self._step:
            n = _resample(self._st, pcm, size, self.channels, self._out, self._out_cap)
            if n >= 0:
                return _buffer(self._out, n)[:]
            if n == -1:
                raise ResamplerError("speexdsp left input unconsumed")
            raise ResamplerError(ffi.string(lib.speex_resampler_strerror(-1000 - n)).decode())
        return self._process(pcm)

    def _process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        st = self._st
        if st == ffi.NULL:
            raise ResamplerError("resampler is closed")
        nbytes = len(pcm) if not isinstance(pcm, memoryview) else pcm.nbytes
        step = 2 * self.channels
        if nbytes % step:
            raise ValueError(f"{nbytes} bytes is not a whole number of {step}-byte frames")
        frames = nbytes // step
        if frames == 0:
            return b""
        if frames > self._in_cap:
            self._grow(frames)
        src = ffi.from_buffer("spx_int16_t[]", pcm)  # no copy
        in_len = self._in_len
        out_len = self._out_len
        in_len[0] = frames
        out_len[0] = self._out_cap
        rc = lib.speex_resampler_process_interleaved_int(st, src, in_len, self._out, out_len)
        if rc != 0:
            raise ResamplerError(ffi.string(lib.speex_resampler_strerror(rc)).decode())
        if in_len[0] == frames:  # the normal case: everything consumed in one call
            return ffi.buffer(self._out, out_len[0] * step)[:]
        return self._process_rest(src, frames, out_len[0] * step)

    def _process_rest(self, src: object, frames: int, first_bytes: int) -> bytes:
        """Rare path: the output buffer was too small for one call; keep feeding the remainder."""
        step = 2 * self.channels
        parts = [ffi.buffer(self._out, first_bytes)[:]]
        done = self._in_len[0]
        while done < frames:
            self._in_len[0] = frames - done
            self._out_len[0] = self._out_cap
            rc = lib.speex_resampler_process_interleaved_int(
                self._st, src + done * self.channels, self._in_len, self._out, self._out_len
            )
            if rc != 0:
                raise ResamplerError(ffi.string(lib.speex_resampler_strerror(rc)).decode())
            if self._in_len[0] == 0 and self._out_len[0] == 0:
                raise ResamplerError("speexdsp made no progress")
            done += self._in_len[0]
            parts.append(ffi.buffer(self._out, self._out_len[0] * step)[:])
        return b"".join(parts)

    @property
    def address(self) -> int:
        """The speexdsp state's address (0 once closed): native code (native/pump.c) resamples
        with this very state, so the audio is the same whichever path carries a frame."""
        return int(ffi.cast("uintptr_t", self._st))

    @property
    def output_latency(self) -> int:
        """Constant filter delay, in output samples per channel."""
        return lib.speex_resampler_get_output_latency(self._st) if self._st != ffi.NULL else 0

    def reset(self) -> None:
        """Forget the filter history (e.g. after a pause), keeping the configuration."""
        if self._st != ffi.NULL:
            lib.speex_resampler_reset_mem(self._st)

    def close(self) -> None:
        """Free the C state. Idempotent."""
        st = self._st
        if st != ffi.NULL:
            self._st = ffi.NULL
            self._in_bytes = 0
            lib.speex_resampler_destroy(st)

    def __enter__(self) -> Resampler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Safety net only: owners call close(); this avoids leaking C memory if one forgets.
        st = getattr(self, "_st", None)
        if st is not None:
            self.close()

    def __repr__(self) -> str:
        return f"Resampler({self.in_rate}->{self.out_rate}, channels={self.channels})"


def make_resampler(in_rate: int, out_rate: int, channels: int = 1) -> Resampler | None:
    """A resampler, or None when the rates are equal (the caller passes audio through as is)."""
    if in_rate == out_rate:
        return None
    return Resampler(in_rate, out_rate, channels)
