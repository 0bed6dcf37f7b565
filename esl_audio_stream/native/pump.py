"""The native frame pump: a stream's steady state carried in C (native/pump.c), the Python path
as the reference and the fallback.

Why: on the Python path each 20 ms frame costs a wake-up, a recv, the pipeline, the framing and a
send, most of it Python between system calls. In the steady state -- a mono stream of the call's
own unicast (`PumpedReader`) or of a mono recording's FIFO (call/reader.py's `FifoReader`) whose
frames only go out, to a plain ws:// endpoint that takes everything -- all of that is the same
few steps every time, so C does them (engine.py: one watcher for every steady stream) with the
pipeline's own resampler, the chunker's pending audio, the connection's mask keys and socket. A
FIFO is a byte stream: C cuts it into frames of the recording's (fixed) size, at most a
FifoReader's read per wake-up, and the bytes of a frame not yet whole go back and forth with the
FifoReader (`take_pending`, `give_back`). Whatever is not steady gives control back, before
anything changes:
- the link leaves LIVE (a short write of ours or of a text, a drop, reconnecting, closing): the
  link's `on_state`;
- the pipeline pauses, gets a player to pace, or closes: its `native.leave()`;
- C itself stops on a short write or EAGAIN (the rest of the frame is the connection's, as in
  `Outgoing._put`), a failed send (the connection ends, the chunk goes to the backlog, as in
  `Link._send_live`), a failed recv, read or resample (the stream stops, as `FrameReader` and
  `FifoReader` do), the FIFO's EOF (the recording ended: `FifoReader.ended`);
- the FIFO's reader is told to discard (the stream stops), stopped or closed: `let_go`.
Control comes back -- counts, the last frame, audio not yet a whole chunk, a FIFO's bytes not
yet fed -- and the socket's (FIFO's) Python reader starts again; it is taken anew (`rejoin`,
deferred to a clean moment of the loop) once the link is LIVE again, the pipeline set up or
resumed. Every frame C sends is the frame the Python path would have sent, with the same key, so
the peer gets the same bytes.

Not carried (the Python path does it): wss:// (TLS), audio compressed (never by default: binary
messages go uncompressed even where permessage-deflate is negotiated, on both paths), stereo and
mixed (a stereo recording), taps, chunk or frame sizes that alternate (rates like 11025 Hz), a
stream that plays the endpoint's audio (its frames pace the player), protocols whose audio is not
the link's own binary L16.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from socket import socket
from typing import TYPE_CHECKING, Any, Protocol

import gevent

from ..call.link import LinkState
from ..call.reader import FifoReader, FrameReader
from ..media.frames import PTIME_MS, chunk_pattern
from ..media.resample import ResamplerError
from .engine import AVAILABLE, engine, ffi, lib

if TYPE_CHECKING:
    from ..call.link import Link
    from ..call.pipeline import FramePipeline, FrameTimer
    from ..ws.framing import FrameWriter
    from ..ws.outgoing import Outgoing

_LIVE = LinkState.LIVE
_ALL_BITS = (1 << 64) - 1
_WHY = {} if lib is None else {
    lib.EAS_SHORT: "short", lib.EAS_SEND_ERROR: "send_error", lib.EAS_MASKS: "masks",
    lib.EAS_RECV_ERROR: "recv_error", lib.EAS_RESAMPLE_ERROR: "resample_error",
    lib.EAS_EOF: "eof"}


class Carried(Protocol):
    """What a pump reads instead of a Python reader while armed (`PumpedReader`, `FifoReader`):
    its fd; paused while the pump reads, resumed when control comes back."""

    stopped: bool

    @property
    def fd(self) -> int: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def fail(self, exc: BaseException) -> None: ...


def _frame_size(payload: int) -> int:
    """A masked binary frame's bytes (ws/framing.py's header lengths)."""
    return payload + (6 if payload < 126 else 8 if payload < 65536 else 14)


class Pump:
    """One stream's steady state in C while `armed` (see the module docstring). Made by the
    direct source for a stream that may be carried; `close()` gives everything back."""

    def __init__(self, pipeline: FramePipeline, link: Link) -> None:
        self._pipeline = pipeline
        self._link = link
        self._engine = engine()
        self.st: Any = None  # the C state, made on the first arming (the rates are known then)
        self._chunk = 0
        self.armed = False
        self._reader: Carried | None = None
        self._fifo: FifoReader | None = None  # the reader, when it is a recording's FIFO
        self._out: Outgoing | None = None
        self._writer: FrameWriter | None = None
        self._timer: FrameTimer | None = None
        self._latency: FrameTimer | None = None
        self._last_before = b""  # the last frame when C took control ...
        self._in_at_arm = 0  # ... until C has one of its own
        self._arming = False  # an arming is scheduled
        self._closed = False
        self.arms = 0  # times C took control (tests, the bench's profile) ...
        self.stops: Counter[str] = Counter()  # ... and why it gave control back
        pipeline.native = self
        link.on_state = self._link_state

    # -- what the pipeline reads while armed (call/pipeline.py NativePart) ---------------------

    @property
    def frames_in(self) -> int:
        return self.st.frames_in

    @property
    def frames_out(self) -> int:
        return self.st.frames_out

    @property
    def malformed(self) -> int:
        return self.st.malformed

    @property
    def last_frame(self) -> bytes:
        st = self.st
        if st.frames_in == self._in_at_arm:
            return self._last_before
        return ffi.buffer(st.last, st.last_len)[:]

    def leave(self) -> None:
        """The pipeline is about to change its steady state: control comes back first."""
        self._disarm(restart=True)

    def rejoin(self) -> None:
        """The pipeline may be steady again: try to take it, once the loop is at a clean
        point (never in the middle of a frame the Python path is carrying)."""
        if not self._arming and not self.armed and not self._closed:
            self._arming = True
            gevent.get_hub().loop.run_callback(self._try_arm)

    def _link_state(self, state: LinkState) -> None:
        if state is _LIVE:
            self.rejoin()
        else:
            self._disarm(restart=True)

    # -- the socket --------------------------------------------------------------------------

    def attach(self, reader: Carried) -> None:
        """`reader`'s socket or FIFO is the stream's from now on: the pump may read it."""
        self._disarm(restart=False)
        self._reader = reader
        self._fifo = reader if isinstance(reader, FifoReader) else None
        if self._fifo is not None:
            self._fifo.native = self
        self.rejoin()

    def detach(self, reader: Carried) -> None:
        if self._reader is reader:
            self._disarm(restart=False)
            self._reader = self._fifo = None

    def let_go(self, reader: Carried) -> None:
        """`reader` must read on its own from now on (a FIFO's reader told to discard, stopped
        or closed): control back first, its Python reading resumed unless it is stopped."""
        if self._reader is reader:
            self._disarm(restart=True)
            self._reader = self._fifo = None

    # -- taking control and giving it back -----------------------------------------------------

    def _try_arm(self) -> None:
        self._arming = False
        reader, pipe, link = self._reader, self._pipeline, self._link
        if (self.armed or self._closed or reader is None or reader.stopped
                or link.state is not _LIVE or pipe.out is not link or not pipe.steady):
            return
        out: Outgoing | None = getattr(link.ws, "outgoing", None)
        if out is None or out.congested:
            return
        target = out.native_target()
        if target is None:
            return
        lent = pipe.lend()
        chunk = lent.chunker.whole
        if chunk <= 0:  # chunk sizes in a cycle: the Python path's
            return
        st = self.st
        if st is None:
            made = lib.eas_pump_new(chunk, pipe.channels, pipe.channel_rate, pipe.stream_rate)
            if made == ffi.NULL:
                return
            st = self.st = ffi.gc(made, lib.eas_pump_free)
            self._chunk = chunk
        fd, writer = target
        st.in_fd = reader.fd
        st.tcp_fd = fd
        st.masks = ffi.cast("unsigned char *", writer.mask_pool)
        st.mask_at = ffi.cast("uint32_t *", writer.mask_at)
        st.mask_pool = writer.mask_pool_size
        resampler = lent.resampler
        st.rs = ffi.NULL if resampler is None else ffi.cast("SpeexResamplerState *",
                                                            resampler.address)
        st.sample_mask = _ALL_BITS if lent.sample_mask < 0 else lent.sample_mask
        st.frames_in, st.frames_out, st.malformed = lent.frames_in, lent.frames_out, \
            lent.malformed
        st.sampling = 0
        fifo = self._fifo
        if fifo is not None:
            size = fifo.frame_bytes
            if size <= 0 or lib.eas_pump_set_fifo(st, size, fifo.max_bytes):
                return
            st.bytes_read = 0
            unread = fifo.take_pending()
            if lib.eas_pump_set_input(st, unread, len(unread)):
                fifo.give_back(unread, 0)
                return
        else:
            st.fifo_frame = 0
        pending = lent.chunker.take()
        if lib.eas_pump_set_pending(st, pending, len(pending)) or not self._engine.add(self):
            lent.chunker.push(pending)
            if fifo is not None:
                fifo.give_back(unread, 0)
            return
        reader.pause()
        self._last_before, self._in_at_arm = lent.last_frame, lent.frames_in
        self._out, self._writer, self._timer = out, writer, lent.timer
        self._latency = lent.latency
        self.armed = True
        self.arms += 1

    def _disarm(self, restart: bool) -> None:
        """Control back to the Python path: counts, the last frame, audio not yet a chunk;
        with `restart`, the socket's Python reader reads again."""
        if not self.armed:
            return
        self.armed = False
        self._engine.remove(self)
        st = self.st
        pending = ffi.buffer(st.pend, st.pend_len)[:]
        if st.out_len:  # after a short write: what the frame under way had left to cut
            pending += ffi.buffer(st.out, st.out_len)[:]
        st.pend_len = st.out_len = 0
        last = self.last_frame
        self._pipeline.take_back(st.frames_in, st.frames_out, st.malformed, last, pending)
        out = self._out
        if out is not None and st.last_out > out.last_out:
            out.last_out = st.last_out  # the heartbeat's idea of when data last went
        self._out = self._writer = None
        fifo = self._fifo
        if fifo is not None:  # what C read and did not feed: the reader's again, first
            at, end = st.in_at, st.in_len
            fifo.give_back(ffi.buffer(st.inbuf + at, end - at)[:], st.bytes_read)
            st.in_at = st.in_len = st.bytes_read = 0
        reader = self._reader
        if restart and reader is not None and not reader.stopped:
            reader.resume()

    # -- when C stops on this pump (the engine calls; in the event loop) ------------------------

    def attention(self) -> None:
        st = self.st
        why = st.why
        if why == lib.EAS_SAMPLE:
            self._timer.observe(st.sample)  # type: ignore[union-attr]
            if st.latency >= 0 and self._latency is not None:
                self._latency.observe(st.latency)
            self._out.last_out = st.last_out  # type: ignore[union-attr]
            return
        self.stops[_WHY.get(why, "other")] += 1
        if why == lib.EAS_MASKS:  # the pool used up: a new block, as FrameWriter would draw
            self._writer.refill_masks()  # type: ignore[union-attr]
            if lib.eas_engine_resume(self._engine.c, st) != lib.EAS_STEADY:
                self.attention()
            return
        sampling, t0 = st.sampling, st.t0
        st.sampling = 0
        out, link, reader, fifo = self._out, self._link, self._reader, self._fifo
        if why == lib.EAS_SHORT:  # Outgoing._put: the rest is the connection's; it blocks
            rest = ffi.buffer(st.rest, st.rest_len)[:]
            if len(rest) == _frame_size(self._chunk):
                self.stops["eagain"] += 1  # of which nothing of the frame was taken
            self._disarm(restart=True)
            out.keep(rest)  # type: ignore[union-attr]
        elif why == lib.EAS_SEND_ERROR:  # Link._send_live: the connection ends, the chunk waits
            chunk = ffi.buffer(st.rest, st.rest_len)[:]
            err = st.err
            self._disarm(restart=True)
            out.fail(OSError(err, os.strerror(err)))  # type: ignore[union-attr]
            link.refused(chunk)
        elif why == lib.EAS_EOF:  # FifoReader: the recording ended (or was stopped)
            self._disarm(restart=False)
            if fifo is not None:
                fifo.ended()
        else:  # FrameReader, FifoReader: a failed recv or read (or resample) stops the stream
            err = st.err
            self._disarm(restart=False)
            exc: Exception = (OSError(err, os.strerror(err)) if why == lib.EAS_RECV_ERROR
                              else ResamplerError(f"speexdsp failed ({err})"))
            if reader is not None:
                reader.fail(exc)
        if sampling and self._timer is not None:
            self._timer.observe(lib.eas_now() - t0)
        if fifo is not None and why in (lib.EAS_SHORT, lib.EAS_SEND_ERROR):
            fifo.flush()  # the frames of that read C did not get to, after the one it stopped in

    def broken(self, exc: BaseException) -> None:
        """A bug while attending: this stream stops (as the Python reader's would)."""
        self._disarm(restart=False)
        if self._reader is not None:
            self._reader.fail(exc)

    def retire(self) -> None:
        """Control back to the Python path for good while the socket is still read (the call
        gained a second stream: the fan-out feeds both): the Python reader reads again."""
        self._disarm(restart=True)
        self.close()

    def close(self) -> None:
        """Everything back to the Python path, for good; the C state is freed."""
        self._disarm(restart=False)
        self._closed = True
        if self._pipeline.native is self:
            self._pipeline.native = None
        if self._link.on_state == self._link_state:
            self._link.on_state = None
        if self._fifo is not None and self._fifo.native is self:
            self._fifo.native = None
        self._reader = self._fifo = None
        st, self.st = self.st, None
        if st is not None:
            ffi.release(st)


class PumpedReader:
    """`FrameReader`'s place in the call's unicast when a pump may carry the stream: the
    Python reader while the pump is not armed, paused while it is."""

    def __init__(self, sock: socket, take: Callable[[bytes], None],
                 failed: Callable[[BaseException], None], pump: Pump) -> None:
        self.fd = sock.fileno()
        self._failed = failed
        self._reader = FrameReader(sock, take, failed)
        self._pump = pump
        self.stopped = False
        pump.attach(self)

    def pause(self) -> None:
        self._reader.stop()

    def resume(self) -> None:
        self._reader.start()

    def fail(self, exc: BaseException) -> None:
        self.stopped = True
        self._reader.stop()
        self._failed(exc)

    def stop(self) -> None:
        self.stopped = True
        self._pump.detach(self)
        self._reader.stop()

    def close(self) -> None:
        """Before the socket closes: the pump lets go of it, the watcher goes."""
        self.stopped = True
        self._pump.detach(self)
        self._reader.close()


def carrier(pipeline: FramePipeline, link: Link, fifo_rate: int = 0) -> Pump | None:
    """A pump for this stream (`fifo_rate`: read from a mono recording's FIFO at that rate);
    None where the extension was not built, or for a stream it would never carry: not mono, not
    ws://, audio that is not the link's own binary L16 (a protocol's encoding), chunk sizes (or
    a FIFO's frame sizes) that alternate."""
    if (not AVAILABLE or pipeline.mix != "mono" or pipeline.out is not link
            or not link.url.lower().startswith("ws://")
            or len(chunk_pattern(pipeline.stream_rate, pipeline.buffer_ms)) != 1
            or (fifo_rate and len(chunk_pattern(fifo_rate, PTIME_MS)) != 1)):
        return None
    return Pump(pipeline, link)
