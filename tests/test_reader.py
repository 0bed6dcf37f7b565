"""call/reader.py's FrameReader on a real UDP socket: what it feeds, and when each datagram
truly arrived (the kernel's stamp) however late the loop reads it."""

from __future__ import annotations

import socket
import time

import gevent

from esl_audio_stream.call import reader


def test_arrival_is_when_the_datagram_came_not_when_a_stalled_loop_read_it():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    seen: list[tuple[bytes, float | None, float]] = []
    failed: list[BaseException] = []
    r = reader.FrameReader(rx, lambda d: seen.append((d, reader.arrival(), time.time())),
                           failed.append)
    try:
        # the kernel starts stamping a host's datagrams a moment after it is first asked (a
        # static key switched by deferred work): on a host where no socket asked before,
        # a datagram sent at once has no stamp, and SIOCGSTAMP says "now" (when it is read)
        gevent.sleep(0.1)
        sent = []
        for k in range(3):
            sent.append(time.time())
            tx.sendto(bytes([k]) * 320, rx.getsockname())
            time.sleep(0.3)  # the event loop is held: the datagrams queue in the socket
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            gevent.sleep(0.01)
    finally:
        r.close()
        rx.close()
        tx.close()
    assert not failed and [d[0] for d in seen] == [bytes([k]) * 320 for k in range(3)]
    # the kernel stamps a datagram when it takes it in (on loopback, in the sender's softirq:
    # a loaded machine may defer that a little), never before it was sent nor after it is read
    for (_data, came, read), at in zip(seen, sent, strict=True):
        assert came is not None and at - 0.005 <= came <= read
    assert seen[0][2] - seen[0][1] >= 0.3  # the first was read 0.6 s after it was sent
    assert reader.arrival() is None  # outside a reader's callback: nothing to say
