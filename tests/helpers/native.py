"""The native pump in tests: seeded mask keys (so two paths put the same bytes on the wire), the
C pump driven with no socket (fed by hand, or reading a real FIFO), its frames captured by the
engine, and the endpoint of a socket pair that stands in for the WebSocket's TCP connection."""

from __future__ import annotations

import fcntl
import random
import struct
import termios

import gevent
import gevent.event
import pytest
from gevent import socket as gsocket
from gevent.socket import wait_read
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate

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

    # -- reading a FIFO --------------------------------------------------------------------------

    def read_fifo(self, fd: int, frame: int, max_bytes: int) -> None:
        """The pump reads the FIFO `fd` (frames of `frame` bytes, `max_bytes` a read at most),
        in its engine's epoll set."""
        assert lib.eas_pump_set_fifo(self.st, frame, max_bytes) == 0
        self.st.in_fd = fd
        assert lib.eas_engine_add(self.engine, self.st) == 0

    def read_socket(self, fd: int) -> None:
        """The pump reads the datagram socket `fd`, in its engine's epoll set."""
        self.st.fifo_frame = 0
        self.st.in_fd = fd
        assert lib.eas_engine_add(self.engine, self.st) == 0

    def run(self) -> list[int]:
        """One wake-up of the engine, as engine.py drives it: a new block of keys drawn where the
        pool ran out (`refills`) and timed frames noted, the run going on after both; what C
        stopped on but keys, in order, the last one the stop that ends the run if any
        (EAS_SHORT, EAS_EOF, ...)."""
        stops: list[int] = []
        fresh = 1
        while lib.eas_engine_run(self.engine, fresh) >= 0:  # the one pump of its set
            fresh = 0
            why = self.st.why
            while why == lib.EAS_MASKS:
                self.writer.refill_masks()
                self.refills += 1
                why = lib.eas_engine_resume(self.engine, self.st)
            if why != lib.EAS_STEADY:
                stops.append(why)
            if why not in (lib.EAS_STEADY, lib.EAS_SAMPLE):
                break
        return stops

    def unfed(self) -> bytes:
        """What C read from the FIFO and has not fed as frames (a partial frame, or the rest of a
        read a stop interrupted)."""
        st = self.st
        return ffi.buffer(st.inbuf + st.in_at, st.in_len - st.in_at)[:]

    def remove(self) -> None:
        lib.eas_engine_remove(self.engine, self.st)


class PairPeer:
    """The endpoint's side of one socket pair: the upgrade (deflate accepted), then every byte
    it reads kept as it came, reading only while `reading` is set."""

    def __init__(self, sock: gsocket.socket) -> None:
        self.sock = sock
        self.raw = bytearray()
        self.reading = gevent.event.Event()
        self.reading.set()
        self.upgraded = gevent.event.Event()
        self._glet = gevent.spawn(self._run)

    def _run(self) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while not self.upgraded.is_set():
            ws.receive_data(self.sock.recv(65536))
            for event in ws.events():
                if isinstance(event, Request):
                    self.sock.sendall(ws.send(AcceptConnection(
                        extensions=[PerMessageDeflate()])))
                    self.upgraded.set()
        raw = self.sock._sock  # the kernel's socket: reads that never wait
        while True:
            self.reading.wait()
            wait_read(raw.fileno())
            if not self.reading.is_set():  # stopped meanwhile: not one read more
                continue
            try:
                data = raw.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            self.raw += data

    def unread(self) -> int:
        """Bytes the kernel holds for us."""
        return struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]

    def go_away(self) -> None:
        """Read everything the kernel holds for us (without yielding: nothing more comes
        meanwhile), then close: the daemon loses the frame it was in the middle of."""
        self.reading.clear()
        raw = self.sock._sock  # the kernel's socket: a read that never waits
        while True:
            try:
                data = raw.recv(65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.raw += data
        self._glet.kill()
        self.sock.close()


class PairPeers:
    """Stands in for open_tcp: each connection is a new socket pair and its peer."""

    def __init__(self) -> None:
        self.peers: list[PairPeer] = []

    def open(self, _host: str, _port: int) -> gsocket.socket:
        ours, theirs = gsocket.socketpair()
        ours.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, 4096)  # little room: refusals
        self.peers.append(PairPeer(theirs))
        return ours
