"""The native pump's C reading a real FIFO (os.mkfifo): a byte stream written in odd sizes, cut
into the recording's frames as FifoReader cuts it, each frame put on the wire as the Python path
(FramePipeline, then FrameWriter) puts it, byte for byte; a partial frame kept between reads,
a FifoReader's read at most per wake-up, EOF, and a stop in the middle of a read."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from helpers.native import CapturedPump, needs_native, seed_masks

from esl_audio_stream.call.link import Link
from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.media.frames import Chunker, chunk_bytes_for
from esl_audio_stream.native.engine import lib
from esl_audio_stream.native.pump import carrier
from esl_audio_stream.ws.framing import FIN, OP_BINARY, FrameWriter

pytestmark = needs_native
ODD = (1, 77, 255, 3, 501, 19, 1023, 2, 641, 333)  # write sizes, in a cycle


def recorded(rate: int, frames: int) -> bytes:
    """`frames` 20 ms of audio no frame repeats, with comfort noise and silence among them."""
    n = rate // 50
    out = bytearray()
    for k in range(frames):
        if k % 17 == 5:
            out += b"\xff" * (2 * n)  # all 0xFF: silence on both paths
        elif k % 23 == 7:
            out += bytes(2 * n)
        else:
            out += struct.pack(f"<{n}h", *(((k * 131 + i * 17) % 20000) - 10000
                                           for i in range(n)))
    return bytes(out)


def python_wire(stream: bytes, frame: int, channel_rate: int, rate: int, buffer_ms: int,
                ) -> tuple[bytes, FramePipeline]:
    """The Python path: the bytes cut as FifoReader cuts them, fed, framed."""
    pipe = FramePipeline(mix="mono", stream_rate=rate, buffer_ms=buffer_ms, pairing="none",
                         channel_rate=channel_rate)
    writer, wire = FrameWriter(), bytearray()

    class Out:
        @staticmethod
        def send(chunk: bytes) -> bool:
            wire.extend(writer.frame(FIN | OP_BINARY, chunk))
            return True

    pipe.out = Out()
    chunker = Chunker(frame)
    chunker.push(stream)
    while (f := chunker.pop()) is not None:
        pipe.feed(f)
    return bytes(wire), pipe


@pytest.fixture
def fifo(tmp_path):
    """A FIFO's read end and write end, both non-blocking (as call/recording.py opens it)."""
    path = tmp_path / "call_rec1.r8"
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    ends = {"r": r, "w": w}
    yield ends
    for fd in ends.values():
        if fd >= 0:
            os.close(fd)


@pytest.mark.parametrize(("channel_rate", "rate", "buffer_ms", "frames"), [
    (8000, 16000, 20, 1100),  # a new block of keys on the way, in the middle of a read
    (8000, 8000, 100, 300),
    (16000, 16000, 20, 300),  # no resampler: frames straight from the read buffer
    (48000, 16000, 40, 200),  # a read of 8 frames (15 kB) is more than a datagram's buffer
])
def test_odd_writes_reach_the_wire_as_the_python_paths(monkeypatch, fifo, channel_rate, rate,
                                                         buffer_ms, frames):
    frame = channel_rate // 50 * 2
    stream = recorded(channel_rate, frames) + b"\x01\x02\x03"  # and a partial frame at the end
    seed_masks(monkeypatch, 3)
    wire, pipe = python_wire(stream, frame, channel_rate, rate, buffer_ms)
    seed_masks(monkeypatch, 3)
    pump = CapturedPump(FrameWriter(), channel_rate, rate, chunk_bytes_for(rate, buffer_ms))
    pump.read_fifo(fifo["r"], frame, 8 * frame)
    at, sizes = 0, itertools.cycle(ODD)
    while at < len(stream):
        n = next(sizes)
        at += os.write(fifo["w"], stream[at:at + n])
        assert pump.run() == []
        if pump.st.in_len - pump.st.in_at >= frame:  # the run's one read stopped short of it
            assert pump.run() == []
    assert pump.captured() == wire
    st = pump.st
    assert (st.frames_in, st.frames_out, st.malformed) == (pipe.frames_in, pipe.frames_out, 0)
    assert st.frames_in == frames and st.bytes_read == len(stream)
    assert pump.unfed() == b"\x01\x02\x03"  # the partial frame waits for the next read
    assert bytes(st.pend[0:st.pend_len]) == pipe.lend().chunker.take()
    pump.remove()


def test_one_read_a_run_like_fifo_reader(fifo):
    """20 frames waiting: a run reads 8 (one FifoReader read), however many rounds it makes;
    the next run 8 more, then the last 4."""
    pump = CapturedPump(FrameWriter(), 8000, 8000, 320)
    pump.read_fifo(fifo["r"], 320, 8 * 320)
    os.write(fifo["w"], recorded(8000, 20) + b"\x00")
    counts = []
    for _ in range(4):
        pump.run()
        counts.append(pump.st.frames_in)
    assert counts == [8, 16, 20, 20]
    assert pump.st.bytes_read == 20 * 320 + 1 and pump.unfed() == b"\x00"
    pump.remove()


def test_bytes_the_python_reader_held_come_first(monkeypatch, fifo):
    """A partial frame FifoReader had read when the pump took over starts C's first frame."""
    stream = recorded(8000, 6)
    seed_masks(monkeypatch, 4)
    wire, _ = python_wire(stream, 320, 8000, 16000, 20)
    seed_masks(monkeypatch, 4)
    pump = CapturedPump(FrameWriter(), 8000, 16000, 640)
    pump.read_fifo(fifo["r"], 320, 8 * 320)
    assert lib.eas_pump_set_input(pump.st, stream[:111], 111) == 0
    os.write(fifo["w"], stream[111:])
    pump.run()
    assert pump.captured() == wire and pump.unfed() == b""
    assert lib.eas_pump_set_input(pump.st, bytes(8 * 320 + 2), 8 * 320 + 2) == -1  # too much
    pump.remove()


def test_eof_stops_the_run_and_keeps_the_partial_frame(fifo):
    pump = CapturedPump(FrameWriter(), 8000, 8000, 320)
    pump.read_fifo(fifo["r"], 320, 8 * 320)
    os.write(fifo["w"], recorded(8000, 3) + b"\x05" * 99)
    assert pump.run() == []
    os.close(fifo["w"])
    fifo["w"] = -1
    assert pump.run() == [lib.EAS_EOF]
    assert pump.st.frames_in == 3 and pump.unfed() == b"\x05" * 99
    pump.remove()


def test_a_short_write_in_the_middle_of_a_read_leaves_the_rest_unfed(monkeypatch, fifo):
    """8 frames in one read (the 5 bytes after them wait in the pipe); the kernel takes 3 frames
    and part of the 4th: C stops there, the 4th's rest is the connection's, the 5th to 8th frames
    are not fed."""
    stream = recorded(8000, 8) + b"\x07" * 5
    seed_masks(monkeypatch, 6)
    wire, _ = python_wire(stream, 320, 8000, 8000, 20)
    seed_masks(monkeypatch, 6)
    pump = CapturedPump(FrameWriter(), 8000, 8000, 320)
    pump.read_fifo(fifo["r"], 320, 8 * 320)
    os.write(fifo["w"], stream)
    pump.room(3 * 328 + 100)  # 320 bytes of audio a frame, and 8 of header
    assert pump.run() == [lib.EAS_SHORT]
    st = pump.st
    rest = bytes(st.rest[0:st.rest_len])
    assert pump.captured() + rest == wire[:4 * 328]
    assert st.frames_in == st.frames_out == 4
    assert pump.unfed() == stream[4 * 320:8 * 320]  # what the FifoReader takes back
    assert st.bytes_read == 8 * 320
    pump.remove()


def test_timed_frames_and_a_new_block_of_keys_do_not_end_a_read(monkeypatch, fifo):
    """A frame to time (EAS_SAMPLE) or a pool of keys used up (EAS_MASKS) in the middle of a
    read: the run goes on with the rest of that read."""
    stream = recorded(8000, 1030)
    seed_masks(monkeypatch, 8)
    wire, _ = python_wire(stream, 320, 8000, 8000, 20)
    seed_masks(monkeypatch, 8)
    pump = CapturedPump(FrameWriter(), 8000, 8000, 320, sample_mask=3)
    pump.read_fifo(fifo["r"], 320, 8 * 320)
    stops = []
    for k in range(0, len(stream), 8 * 320):
        os.write(fifo["w"], stream[k:k + 8 * 320])
        stops += pump.run()
    assert pump.captured() == wire
    assert stops == [lib.EAS_SAMPLE] * (1030 // 4)
    assert pump.refills == 2  # the first block, then one more in the middle of a read
    assert pump.st.frames_in == 1030 and pump.unfed() == b""
    pump.remove()


@pytest.mark.parametrize(("fifo_rate", "carried"), [(8000, True), (16000, True), (48000, True),
                                                    (22050, True), (11025, False)])
def test_a_recording_whose_frames_alternate_in_size_is_not_carried(fifo_rate, carried):
    """11025 Hz makes 20 ms frames of 220.5 samples, so of alternating sizes: the Python
    path's (22050 and 44100 Hz make whole ones)."""
    pipe = FramePipeline(mix="mono", stream_rate=16000, buffer_ms=20, pairing="none")
    link = Link("ws://x/", uuid="u", fire=lambda s, b: None, on_text=lambda t: None,
                on_binary=lambda b: None, on_gone=lambda c, r: None, metadata=None,
                reconnect=False, backlog_bytes=1 << 16)
    pipe.out = link
    pump = carrier(pipe, link, fifo_rate=fifo_rate)
    assert (pump is not None) == carried
    if pump is not None:
        pump.close()
        assert pipe.native is None and link.on_state is None
