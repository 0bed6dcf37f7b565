"""ws/framing.py with no socket: the frames FrameWriter builds are read back by an independent
parser (wsproto's server-side frame protocol) and by our FrameParser; compressed messages inflate
with plain zlib as RFC 7692 says; the parser takes any split of the byte stream."""

from __future__ import annotations

import os
import zlib

import pytest
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

from esl_audio_stream.ws.framing import (
    FIN,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    RSV1,
    FrameError,
    FrameParser,
    FrameWriter,
    server_frame,
)

SIZES = [0, 1, 125, 126, 640, 65535, 65536, 200_000]


def wsproto_reads(wire: bytes, deflate: PerMessageDeflate | None = None) -> list[tuple]:
    """What a real server's frame parser makes of the client's bytes."""
    proto = FrameProtocol(client=False, extensions=[deflate] if deflate else [])
    proto.receive_bytes(wire)
    return [(f.opcode, bytes(f.payload) if isinstance(f.payload, bytes | bytearray)
             else f.payload, f.message_finished) for f in proto.received_frames()]


def test_binary_frames_of_every_header_size_read_back_by_wsproto() -> None:
    writer = FrameWriter()
    for n in SIZES:
        payload = os.urandom(n)
        wire = bytes(writer.frame(FIN | OP_BINARY, payload))
        assert wire[0] == FIN | OP_BINARY
        assert wire[1] & 0x80  # masked, as every client frame must be
        assert wsproto_reads(wire) == [(Opcode.BINARY, payload, True)]
        if n >= 8:
            assert payload not in wire  # the payload really is masked


def test_text_frames_read_back_by_wsproto() -> None:
    writer = FrameWriter()
    text = '{"event":"mark","name":"é€☎"}'
    wire = bytes(writer.frame(FIN | OP_TEXT, text.encode()))
    assert wsproto_reads(wire) == [(Opcode.TEXT, text, True)]


def test_the_view_is_the_reused_buffer_so_callers_copy_what_they_keep() -> None:
    writer = FrameWriter()
    first = writer.frame(FIN | OP_BINARY, b"a" * 10)
    kept = bytes(first)
    writer.frame(FIN | OP_BINARY, b"b" * 10)  # same buffer: `first` now shows the new frame
    assert wsproto_reads(kept) == [(Opcode.BINARY, b"a" * 10, True)]
    assert bytes(first) != kept


def test_compressed_messages_inflate_with_zlib_and_keep_their_context() -> None:
    writer = FrameWriter()
    writer.use_deflate(max_window_bits=15, no_context_takeover=False)
    assert writer.deflate and writer.compress_bits == 10  # our window: 1 kB, never larger
    inflate = zlib.decompressobj(-15)
    parser = FrameParser()
    messages = [bytes(640) * 5, b"hello " * 100, os.urandom(300), b""]
    for m in messages:
        ((opcode, fin, rsv1, payload),) = parser.feed(
            writer.frame(FIN | OP_BINARY, m, compress=True))
        assert opcode == OP_BINARY and fin and rsv1
        assert inflate.decompress(bytes(payload) + b"\x00\x00\xff\xff") == m
    # uncompressed when not asked, even with deflate negotiated (RSV1 clear)
    ((_, _, rsv1, payload),) = parser.feed(writer.frame(FIN | OP_BINARY, b"raw", compress=False))
    assert not rsv1 and payload == b"raw"


def test_no_context_takeover_starts_each_message_afresh() -> None:
    writer = FrameWriter()
    writer.use_deflate(max_window_bits=9, no_context_takeover=True)
    parser = FrameParser()
    for _ in range(3):
        ((_, _, _, payload),) = parser.feed(
            writer.frame(FIN | OP_TEXT, b"same text" * 20, compress=True))
        fresh = zlib.decompressobj(-9)  # a peer with no context: each message stands alone
        assert fresh.decompress(bytes(payload) + b"\x00\x00\xff\xff") == b"same text" * 20


def test_compressed_frames_read_back_by_wsproto_with_the_extension() -> None:
    writer = FrameWriter()
    writer.use_deflate(max_window_bits=15, no_context_takeover=False)
    server_ext = PerMessageDeflate()
    server_ext.accept("permessage-deflate")  # the server side of the negotiation
    wire = b"".join(bytes(writer.frame(FIN | OP_TEXT, t.encode(), compress=True))
                    for t in ("one", "two two two", "three"))
    assert [t for _, t, _ in wsproto_reads(wire, server_ext)] == ["one", "two two two", "three"]


def test_parser_reads_any_split_of_the_stream() -> None:
    writer = FrameWriter()
    payloads = [os.urandom(n) for n in (0, 5, 126, 3000, 70000)]
    stream = b"".join(bytes(writer.frame(FIN | OP_BINARY, p)) for p in payloads)
    stream += bytes(writer.frame(FIN | OP_TEXT, b"fin"))
    for step in (1, 7, 4096, len(stream)):
        parser = FrameParser()
        frames = []
        for at in range(0, len(stream), step):
            frames += parser.feed(stream[at:at + step])
        assert [bytes(f[3]) for f in frames] == [*payloads, b"fin"]
        assert [f[0] for f in frames] == [OP_BINARY] * len(payloads) + [OP_TEXT]
        assert all(fin and not rsv1 for _, fin, rsv1, _ in frames)


def test_parser_reads_unmasked_server_frames_too() -> None:
    parser = FrameParser()
    wire = server_frame(OP_PING, b"p") + server_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    wire += server_frame(OP_BINARY, bytes(70000))
    frames = parser.feed(wire)
    assert [(f[0], bytes(f[3])) for f in frames] == [
        (OP_PING, b"p"), (OP_CLOSE, b"\x03\xe8"), (OP_BINARY, bytes(70000))]


def test_parser_refuses_a_frame_beyond_its_bound() -> None:
    parser = FrameParser(max_payload=1000)
    with pytest.raises(FrameError):
        parser.feed(bytes(FrameWriter().frame(FIN | OP_BINARY, bytes(1001)))[:20])


def test_rsv1_flag_value() -> None:
    assert RSV1 == 0x40 and FIN == 0x80  # RFC 6455 5.2 / RFC 7692 6
