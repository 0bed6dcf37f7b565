"""The native pump against the Python path, on the wire: the same datagrams through the same
pipeline and link, once with the pump and once without, through a steady run, a peer that stops
reading (EAGAIN, and short writes of frames bigger than the kernel takes at once), a peer that
goes away in the middle of a frame, and the reconnection: the peer gets the same bytes. The
same again from a recording's FIFO written in odd sizes, to its EOF.

The connection is a Unix socket pair (ws.connection's open_tcp replaced): its kernel accounting
has no timers (no delayed ACK, no autotuning), so where a send is refused depends only on what
was sent, and a peer that reads everything the kernel took and then goes away makes the same cut
in both runs. TCP itself is the end-to-end tests' (every one of them runs on the pump).
"""

from __future__ import annotations

import itertools
import os
import struct

import gevent
import pytest
from conftest import wait_until
from gevent import socket as gsocket
from helpers.native import PairPeer, PairPeers, needs_native, seed_masks

from esl_audio_stream.call.link import Link, LinkState
from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.call.reader import FifoReader, FrameReader
from esl_audio_stream.native.engine import engine
from esl_audio_stream.native.pump import Pump, PumpedReader
from esl_audio_stream.ws import connection as ws_connection

pytestmark = needs_native


def frame_audio(k: int) -> bytes:
    """20 ms at 8 kHz that no other frame of the run repeats."""
    return struct.pack("<160h", *(((k * 131 + i * 17) % 20000) - 10000 for i in range(160)))


class FifoWriter:
    """FreeSWITCH's side of a recording's FIFO: the frames' bytes written in odd sizes, up to a
    cut in the middle of the next frame (so the reader always holds part of a frame)."""

    SIZES = (1, 77, 255, 3, 501, 19, 1023, 2, 641, 333)

    def __init__(self, path) -> None:
        os.mkfifo(path)
        self.rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self.stream = bytearray()
        self.written = 0
        self._sizes = itertools.cycle(self.SIZES)

    def frames(self, upto: int) -> None:
        """Every frame before `upto` written, and part of frame `upto`."""
        while len(self.stream) < (upto + 1) * 320:
            self.stream += frame_audio(len(self.stream) // 320)
        end = upto * 320 + (upto * 37) % 320
        while self.written < end:
            n = min(next(self._sizes), end - self.written)
            self.written += os.write(self.wfd, self.stream[self.written:self.written + n])

    def close(self) -> None:
        if self.wfd >= 0:
            os.close(self.wfd)
            self.wfd = -1


def run(monkeypatch, native: bool, buffer_ms: int, fifo_at=None) -> tuple[list[bytes], dict]:
    """The scenario; the bytes each connection's peer got (after the upgrade), and what
    happened on the way. With `fifo_at` (a path), the frames come through a FIFO (a mono
    recording's) instead of a UDP socket, and the scenario ends with its EOF."""
    seed_masks(monkeypatch, 5)
    peers = PairPeers()
    monkeypatch.setattr(ws_connection, "open_tcp", peers.open)
    rx = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    pipe = FramePipeline(mix="mono", stream_rate=16000, buffer_ms=buffer_ms, pairing="none",
                         channel_rate=8000)
    fired: list[tuple[str, str]] = []
    link = Link("ws://127.0.0.1:9/wire", uuid="wire", fire=lambda s, b: fired.append((s, b)),
                on_text=lambda t: None, on_binary=lambda b: None, on_gone=lambda c, r: None,
                metadata='{"call":"wire"}', reconnect=True, backlog_bytes=1 << 24)
    pipe.out = link
    failed: list[BaseException] = []
    pump = Pump(pipe, link) if native else None
    eofs: list[int] = []
    fifo = FifoWriter(fifo_at) if fifo_at is not None else None
    reader: FrameReader | PumpedReader | FifoReader
    if fifo is not None:
        reader = FifoReader(fifo.rfd, 320, pipe.feed, failed.append, lambda: eofs.append(1))
        if pump is not None:
            pump.attach(reader)
    else:
        reader = (PumpedReader(rx, pipe.feed, failed.append, pump) if pump is not None
                  else FrameReader(rx, pipe.feed, failed.append))
    sent = 0

    def send(n: int = 1) -> None:
        nonlocal sent
        for _ in range(n):
            if fifo is not None:
                fifo.frames(sent + 1)
            else:
                tx.sendto(frame_audio(sent), rx.getsockname())
            sent += 1
            assert wait_until(lambda n=sent: pipe.frames_in == n, 5, 0.0005)

    def settle(peer: PairPeer) -> None:
        """Everything sent so far read by the endpoint: a refusal from now on depends only on
        what is sent next."""
        assert wait_until(lambda: link.state is LinkState.LIVE and not link.ws.congested
                          and peer.unread() == 0, 5)

    def send_until_refused() -> int:
        """Frames until one the kernel will not take while the endpoint reads nothing (each
        time the link had its moment to hand the kernel what it could)."""
        for i in range(400):
            send()
            gevent.sleep(0.003)
            if link.state is not LinkState.LIVE:
                return i + 1
        raise AssertionError("the kernel never refused")

    seen: dict = {}
    try:
        link.connect()
        send(20)
        seen["armed_steady"] = pump.armed if pump else None
        settle(peers.peers[0])
        peers.peers[0].reading.clear()  # the endpoint stops reading: EAGAIN / a short write
        seen["until_refused"] = send_until_refused()
        send(5)  # into the backlog
        peers.peers[0].reading.set()
        assert wait_until(lambda: link.state is LinkState.LIVE, 5)
        send(20)
        seen["armed_again"] = pump.armed if pump else None
        settle(peers.peers[0])
        peers.peers[0].reading.clear()
        seen["until_refused_2"] = send_until_refused()
        peers.peers[0].go_away()  # in the middle of a frame: its rest is lost with it
        assert wait_until(lambda: link.state is LinkState.RECONNECTING, 5)
        send(5)  # while reconnecting: into the backlog
        assert wait_until(lambda: link.reconnects == 1 and link.state is LinkState.LIVE, 5)
        send(1100)  # 20 ms chunks: the second connection's pool of keys runs out on the way
        seen["armed_at_end"] = pump.armed if pump else None
        seen["frames_out"] = pipe.frames_out
        gevent.sleep(0.1)
        if fifo is not None:  # the recording ends: EOF, the partial frame left in the reader
            fifo.close()
            assert wait_until(lambda: eofs == [1], 5)
            assert isinstance(reader, FifoReader)
            seen["after_eof"] = (reader.eof, reader.bytes_in, reader.take_pending(),
                                 pump.armed if pump else None, len(engine()))
        seen["pump_arms"] = pump.arms if pump else 0
        seen["pump_stops"] = dict(pump.stops) if pump else {}
    finally:
        link.abort()  # no close frame: wsproto masks its own with keys of its own
        reader.close()
        if fifo is not None:
            fifo.close()
            os.close(fifo.rfd)
        if pump is not None:
            pump.close()
        pipe.close()
        rx.close()
        tx.close()
    assert not failed
    seen["events"] = [subclass for subclass, _ in fired]
    return [bytes(p.raw) for p in peers.peers], seen


@pytest.mark.parametrize("buffer_ms", [20, 400])
def test_the_peer_gets_the_python_paths_bytes(monkeypatch, buffer_ms):
    """20 ms: the kernel takes a frame whole or refuses it (EAGAIN); 400 ms (12.8 kB frames):
    it takes 8 kB of each at most, so every frame is a short write."""
    python, p_seen = run(monkeypatch, native=False, buffer_ms=buffer_ms)
    native, n_seen = run(monkeypatch, native=True, buffer_ms=buffer_ms)
    assert len(python) == len(native) == 2  # the first connection, and the reconnection
    assert native[0] == python[0]
    assert native[1] == python[1]
    assert len(native[1]) > 1100 * (buffer_ms * 32 + 8) // 20  # not empty-equal
    # the same story on both paths ...
    for key in ("until_refused", "until_refused_2", "frames_out", "events"):
        assert n_seen[key] == p_seen[key], key
    # ... and the pump carried the steady parts of it, and gave them back each time
    stops = n_seen["pump_stops"]
    if buffer_ms == 20:
        assert n_seen["armed_steady"] and n_seen["armed_again"] and n_seen["armed_at_end"]
        assert stops["short"] == stops["eagain"] >= 2
        assert stops["masks"] >= 1  # a new block of keys drawn in the middle of C's frames
    else:
        assert stops["short"] >= 40 and not stops.get("eagain")
    assert n_seen["pump_arms"] >= stops["short"] >= 2  # taken back after each


@pytest.mark.parametrize("buffer_ms", [20, 400])
def test_a_recordings_fifo_gives_the_peer_the_python_paths_bytes(monkeypatch, tmp_path,
                                                                 buffer_ms):
    """The same scenario read from a FIFO written in odd sizes: each hand-back (a short write,
    EAGAIN, the reset, the EOF) comes with part of a frame read and not fed, which goes back to
    the FifoReader; not a byte is lost or doubled."""
    python, p_seen = run(monkeypatch, native=False, buffer_ms=buffer_ms,
                         fifo_at=tmp_path / "py_rec1.r8")
    native, n_seen = run(monkeypatch, native=True, buffer_ms=buffer_ms,
                         fifo_at=tmp_path / "c_rec1.r8")
    assert len(python) == len(native) == 2
    assert native[0] == python[0]
    assert native[1] == python[1]
    assert len(native[1]) > 1100 * (buffer_ms * 32 + 8) // 20
    for key in ("until_refused", "until_refused_2", "frames_out", "events"):
        assert n_seen[key] == p_seen[key], key
    eof, bytes_in, partial, armed, in_set = n_seen["after_eof"]
    assert (eof, bytes_in, partial) == p_seen["after_eof"][:3]
    assert eof and len(partial) == bytes_in % 320 > 0  # part of a frame, as FifoReader keeps
    assert armed is False and in_set == 0  # EOF: control back, nothing left in the epoll set
    stops = n_seen["pump_stops"]
    assert stops["eof"] == 1
    if buffer_ms == 20:
        assert n_seen["armed_steady"] and n_seen["armed_again"] and n_seen["armed_at_end"]
        assert stops["short"] == stops["eagain"] >= 2
        assert stops["masks"] >= 1
    else:
        assert stops["short"] >= 40 and not stops.get("eagain")
    assert n_seen["pump_arms"] >= stops["short"] >= 2
