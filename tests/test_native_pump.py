"""The native pump's C, through cffi and with no socket: what it puts on the wire for each
datagram is what the Python path (FramePipeline, then FrameWriter) puts there, byte for byte,
with the same mask keys; and it stops where the Python path would do something else."""

from __future__ import annotations

import errno
import math
import random
import socket
import struct
import time

import pytest
from helpers.native import CapturedPump, needs_native, seed_masks

from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.call.reader import _stamp_arrivals
from esl_audio_stream.media.frames import chunk_bytes_for
from esl_audio_stream.native.engine import lib
from esl_audio_stream.ws.framing import FIN, OP_BINARY, FrameParser, FrameWriter

pytestmark = needs_native
BINARY = FIN | OP_BINARY


class Wire:
    """The Python path's out: each chunk framed as Outgoing.send_binary frames it."""

    def __init__(self) -> None:
        self.writer = FrameWriter()
        self.bytes = bytearray()
        self.chunks: list[bytes] = []

    def send(self, chunk: bytes) -> bool:
        self.chunks.append(chunk)
        self.bytes += self.writer.frame(BINARY, chunk)
        return True


def tone(rate: int, n: int, freq: float = 440.0, at: int = 0) -> bytes:
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * (at + i) / rate))
                                   for i in range(n)))


def datagrams(rate: int, count: int, seed: int = 7) -> list[bytes]:
    """20 ms frames of a tone, with comfort noise, noise that starts with 0xFF, silence and
    datagrams that are not L16 (empty, odd) among them."""
    rng = random.Random(seed)
    n = rate // 50
    out = []
    for k in range(count):
        pick = rng.random()
        if pick < 0.05:
            out.append(b"\xff" * (2 * n))  # comfort noise
        elif pick < 0.07:
            out.append(b"\xff" * (2 * n - 2) + b"\x01\x02")  # not CNG: audio
        elif pick < 0.09:
            out.append(rng.choice([b"", b"\x01\x02\x03"]))  # not L16
        elif pick < 0.11:
            out.append(bytes(2 * n))
        else:
            out.append(tone(rate, n, at=k * n))
    return out


def python_path(frames: list[bytes], channel_rate: int, rate: int, buffer_ms: int,
                ) -> tuple[Wire, FramePipeline]:
    pipe = FramePipeline(mix="mono", stream_rate=rate, buffer_ms=buffer_ms, pairing="none",
                         channel_rate=channel_rate)
    wire = Wire()
    pipe.out = wire
    for data in frames:
        pipe.feed(data)
    return wire, pipe


@pytest.mark.parametrize(("channel_rate", "rate", "buffer_ms", "count"), [
    (8000, 16000, 20, 1100),  # more frames than a pool has keys: a refill on the way
    (8000, 16000, 60, 200),
    (16000, 16000, 20, 200),  # no resampler: the datagram as it is
    (48000, 16000, 40, 200),
    (8000, 8000, 100, 200),
    (16000, 48000, 20, 100),  # frames of more than 1000 bytes: the 16-bit length
])
def test_the_wire_is_the_python_paths(monkeypatch, channel_rate, rate, buffer_ms, count):
    frames = datagrams(channel_rate, count)
    seed_masks(monkeypatch, 1)
    wire, pipe = python_path(frames, channel_rate, rate, buffer_ms)
    seed_masks(monkeypatch, 1)
    pump = CapturedPump(FrameWriter(), channel_rate, rate, chunk_bytes_for(rate, buffer_ms))
    for data in frames:
        assert pump.feed(data) == lib.EAS_STEADY
    assert pump.captured() == bytes(wire.bytes)
    st = pump.st
    assert (st.frames_in, st.frames_out, st.malformed) == (pipe.frames_in, pipe.frames_out,
                                                           pipe.malformed)
    assert pipe.malformed > 0 and pipe.frames_out > 0
    assert bytes(st.last[0:st.last_len]) == pipe.last_frame
    assert bytes(st.pend[0:st.pend_len]) == pipe.lend().chunker.take()  # not a chunk yet
    assert pump.refills == (1 if count > 1024 else 0) + 1  # the first block, then one more


def test_what_the_parser_reads_back_is_the_chunks(monkeypatch):
    frames = datagrams(8000, 60)
    wire, _ = python_path(frames, 8000, 16000, 20)
    pump = CapturedPump(FrameWriter(), 8000, 16000, 640)
    for data in frames:
        pump.feed(data)
    parsed = FrameParser().feed(pump.captured())
    assert [(op, fin, rsv1) for op, fin, rsv1, _ in parsed] == [(OP_BINARY, True, False)] * len(
        wire.chunks)
    assert [bytes(p) for *_, p in parsed] == wire.chunks  # unmasked: the Python path's audio


def test_comfort_noise_is_silence_and_other_0xff_audio_is_not():
    pump = CapturedPump(FrameWriter(), 16000, 16000, 640)
    pump.feed(b"\xff" * 640)
    pump.feed(b"\xff" * 638 + b"\x00\x01")
    chunks = [bytes(p) for *_, p in FrameParser().feed(pump.captured())]
    assert chunks == [bytes(640), b"\xff" * 638 + b"\x00\x01"]
    assert bytes(pump.st.last[0:pump.st.last_len]) == b"\xff" * 638 + b"\x00\x01"


def test_audio_a_pipeline_held_goes_first():
    """What the Python chunker held when C took over (Chunker.take) starts C's next chunk."""
    pump = CapturedPump(FrameWriter(), 16000, 16000, 960)  # 30 ms chunks of 20 ms frames
    assert lib.eas_pump_set_pending(pump.st, b"\x01\x00" * 160, 320) == 0
    pump.feed(b"\x02\x00" * 320)
    (_, _, _, chunk), = FrameParser().feed(pump.captured())
    assert bytes(chunk) == b"\x01\x00" * 160 + b"\x02\x00" * 320
    assert pump.st.pend_len == 0
    assert lib.eas_pump_set_pending(pump.st, bytes(962), 962) == -1  # more than a chunk: no


def test_a_short_write_leaves_the_rest_of_the_frame(monkeypatch):
    frames = [tone(8000, 160, at=160 * k) for k in range(3)]
    seed_masks(monkeypatch, 2)
    wire, _ = python_path(frames, 8000, 16000, 20)
    seed_masks(monkeypatch, 2)
    pump = CapturedPump(FrameWriter(), 8000, 16000, 640)
    pump.feed(frames[0])
    pump.room(100)  # the kernel takes 100 bytes of the next frame
    assert pump.feed(frames[1]) == lib.EAS_SHORT
    st = pump.st
    rest = bytes(st.rest[0:st.rest_len])
    assert pump.captured() + rest == bytes(wire.bytes[:2 * 648])
    assert len(rest) == 648 - 100 and st.frames_out == 2  # counted out, as Python counts it
    pump.room(0)  # full: EAGAIN, nothing of the frame taken
    assert pump.feed(frames[2]) == lib.EAS_SHORT
    assert bytes(st.rest[0:st.rest_len]) == bytes(wire.bytes[2 * 648:])
    assert pump.captured() == b""


def test_a_failed_send_gives_the_chunk_back_unmasked():
    frames = [tone(8000, 160, at=160 * k) for k in range(2)]
    wire, _ = python_path(frames, 8000, 16000, 20)
    pump = CapturedPump(FrameWriter(), 8000, 16000, 640)
    pump.feed(frames[0])
    pump.fail_with(errno.ECONNRESET)
    assert pump.feed(frames[1]) == lib.EAS_SEND_ERROR
    st = pump.st
    assert st.err == errno.ECONNRESET
    assert bytes(st.rest[0:st.rest_len]) == wire.chunks[1]  # what the backlog takes


def test_one_frame_in_sample_every_is_timed():
    pump = CapturedPump(FrameWriter(), 8000, 16000, 640, sample_mask=63)
    whys = [pump.feed(d) for d in datagrams(8000, 200, seed=11) if d and not len(d) & 1]
    timed = [i + 1 for i, why in enumerate(whys) if why == lib.EAS_SAMPLE]
    assert timed == [64, 128, 192]  # the counts the Python path times (frames & 63 == 0)
    assert 0 < pump.st.sample < 0.02
    assert pump.st.latency < 0  # fed by hand: no socket, no arrival stamp


def test_a_timed_datagram_has_its_latency_from_the_kernels_arrival_stamp():
    """Read from a real UDP socket, a timed frame's latency runs from when the datagram reached
    the host (the kernel's stamp, asked for once as call/reader.py asks) to its send."""
    pump = CapturedPump(FrameWriter(), 8000, 16000, 640, sample_mask=0)  # every frame timed
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        _stamp_arrivals(rx.fileno())
        time.sleep(0.1)  # the kernel turns stamping on a moment later (test_reader.py)
        pump.read_socket(rx.fileno())
        frame = tone(8000, 160)
        tx.sendto(frame, rx.getsockname())
        time.sleep(0.05)  # it waits in the socket: the latency counts that wait
        assert pump.run() == [lib.EAS_SAMPLE]
        assert 0.05 <= pump.st.latency < 5.0  # the wait, and whatever the host added
        assert pump.st.sample < pump.st.latency  # the frame's own work is a part of it
        pump.remove()
    assert len(pump.captured()) == 640 + 4 + 4  # the chunk went out
