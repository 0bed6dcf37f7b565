"""WebSocket frames as bytes (RFC 6455 5.2-5.7, RFC 7692), with no socket: built and parsed.

Why our own framer for outgoing data: sending is on the per-frame path (50 messages/s per call),
and wsproto's generic framer costs ~21 us per 640-byte frame (masking byte-class tables, event
objects). `FrameWriter` builds each frame in one reused buffer and masks it in place in C
(ws/_mask_build.py): nothing is allocated per frame but the view handed to the socket. Messages
are never fragmented, so wsproto's state stays valid; wsproto still builds the upgrade and the
control frames (ping, pong, close) and parses everything the client receives.

Compression (permessage-deflate) uses zlib level 1 and a 1 kB window: for real-time audio speed
matters more than the last bytes of ratio, any window smaller than the negotiated one is
inflatable by the peer, and it keeps zlib at ~12 kB per connection instead of ~256 kB.

Mask keys come from `mask_source` (os.urandom) in blocks, into a pool in C memory with its
offset: the native pump (native/pump.c) frames binary messages on the same connection from the
same pool, so both paths take the same keys in message order (a test that puts a seeded source
here compares their bytes on the wire).

`FrameParser` reads frames the other way (a server reading a client, e.g. the bench's sink),
unmasking in place with the same C routine.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable

from ._mask import ffi as _mask_ffi
from ._mask import lib as _mask_lib

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
FIN = 0x80
RSV1 = 0x40  # permessage-deflate: this message is compressed

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_MASK_POOL = 4096  # mask keys are drawn from os.urandom in blocks, not one syscall per frame

#: Where mask keys come from, a block at a time (looked up at each refill).
mask_source: Callable[[int], bytes] = os.urandom

#: Our compression window (2**10 bytes) and zlib memLevel: small, because text messages are short
#: and audio is sent uncompressed by default (L16 barely compresses; deflating it costs CPU).
COMPRESS_BITS = 10
_COMPRESS_MEMLEVEL = 4


def _compressor(bits: int) -> zlib._Compress:
    return zlib.compressobj(zlib.Z_BEST_SPEED, zlib.DEFLATED, -max(bits, 9), _COMPRESS_MEMLEVEL)


class FrameWriter:
    """One client connection's outgoing data frames: masked, and compressed where negotiated."""

    __slots__ = ("_buf", "_compressor", "_ptr", "_view", "compress_bits", "compress_reset",
                 "mask_at", "mask_pool")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._view = memoryview(self._buf)
        self._ptr = _mask_ffi.NULL
        #: The pool of mask keys and the offset of the next (C memory: the native pump takes
        #: its keys here too); drawn on the first frame.
        self.mask_pool = _mask_ffi.new("unsigned char[]", _MASK_POOL)
        self.mask_at = _mask_ffi.new("uint32_t *", _MASK_POOL)
        self._compressor: zlib._Compress | None = None
        self.compress_bits = 15
        self.compress_reset = False  # client_no_context_takeover: a fresh context per message

    @property
    def deflate(self) -> bool:
        """permessage-deflate was negotiated (set by `use_deflate`)."""
        return self._compressor is not None

    def use_deflate(self, max_window_bits: int, no_context_takeover: bool) -> None:
        """Adopt the parameters the server accepted for our side (client_max_window_bits,
        client_no_context_takeover)."""
        self.compress_bits = min(max_window_bits, COMPRESS_BITS)
        self.compress_reset = no_context_takeover
        self._compressor = _compressor(self.compress_bits)

    @property
    def mask_pool_size(self) -> int:
        """Bytes in `mask_pool` (4 a key)."""
        return _MASK_POOL

    def refill_masks(self) -> None:
        """A new block of keys (the pool is used up)."""
        _mask_ffi.memmove(self.mask_pool, mask_source(_MASK_POOL), _MASK_POOL)
        self.mask_at[0] = 0

    def frame(self, first: int, payload: bytes | bytearray | memoryview,
              compress: bool = False) -> memoryview:
        """One complete, masked (and, if asked and negotiated, compressed) data frame; `first`
        is its first byte (FIN | opcode). The view is valid until the next call."""
        comp = self._compressor if compress else None
        if comp is not None:
            payload = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
            if payload.endswith(b"\x00\x00\xff\xff"):
                payload = payload[:-4]
            first |= RSV1
            if self.compress_reset:
                self._compressor = _compressor(self.compress_bits)
        n = len(payload)
        if n < 126:
            hl = 2
        elif n < 65536:
            hl = 4
        else:
            hl = 10
        mask_at = self.mask_at
        at = mask_at[0]
        if at >= _MASK_POOL:
            self.refill_masks()
            at = 0
        mask_at[0] = at + 4
        size = hl + 4 + n
        buf = self._buf
        if len(buf) < size:
            buf = self._buf = bytearray(max(size, 2 * len(buf)))
            self._view = memoryview(buf)
            self._ptr = _mask_ffi.from_buffer(buf)
        if hl == 2:
            buf[0] = first
            buf[1] = 0x80 | n
        elif hl == 4:
            _H16.pack_into(buf, 0, first, 0xFE, n)
        else:
            _H64.pack_into(buf, 0, first, 0xFF, n)
        buf[hl + 4:size] = payload
        _mask_lib.eas_frame_mask(self._ptr, hl, n, self.mask_pool, at)
        return self._view[:size]


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One unmasked, unfragmented frame, as a server sends it (the sink's pongs and close)."""
    n = len(payload)
    if n < 126:
        return bytes((FIN | opcode, n)) + payload
    if n < 65536:
        return _H16.pack(FIN | opcode, 126, n) + payload
    return _H64.pack(FIN | opcode, 127, n) + payload


#: A parsed frame: (opcode, fin, rsv1, payload). rsv1: compressed (permessage-deflate), on a
#: message's first frame; payload: unmasked. A plain tuple: the sink parses ~10^4 a second.
Frame = tuple[int, bool, bool, bytearray]


class FrameError(ValueError):
    """The byte stream is not WebSocket frames (or a frame is beyond the parser's bound)."""


class FrameParser:
    """Frames out of a byte stream, unmasked: what a server reads from a client.

    Feed it whatever the socket gave; it returns the frames completed so far and keeps the rest
    (at most one frame, bounded by `max_payload`). Control frames come as they are; messages
    are not reassembled nor inflated (a caller that needs that has wsproto).
    """

    def __init__(self, max_payload: int = 16 << 20) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """The frames `data` completes, in order."""
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        append = frames.append
        off, size = 0, len(buf)
        ptr = _mask_ffi.from_buffer(buf)  # released below: a bytearray cannot be resized
        mask = _mask_lib.eas_mask
        limit = self.max_payload
        try:  # while exported
            while size - off >= 2:
                b0 = buf[off]
                b1 = buf[off + 1]
                n = b1 & 0x7F
                p = off + 2
                if n == 126:
                    if size < p + 2:
                        break
                    n = (buf[p] << 8) | buf[p + 1]
                    p += 2
                elif n == 127:
                    if size < p + 8:
                        break
                    n = int.from_bytes(buf[p:p + 8], "big")
                    p += 8
                if n > limit:
                    raise FrameError(f"a {n}-byte frame: more than {limit}")
                if b1 & 0x80:
                    if size < p + 4 + n:
                        break
                    if n:
                        mask(ptr + p + 4, n, ptr + p)
                    p += 4
                elif size < p + n:
                    break
                off = p + n
                append((b0 & 0x0F, b0 >= 0x80, b0 & 0x40 != 0, buf[p:off]))  # FIN, RSV1
        finally:
            _mask_ffi.release(ptr)
        if off:
            del buf[:off]
        return frames
