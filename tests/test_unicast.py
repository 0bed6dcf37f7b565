"""The daemon's unicast end: FreeSWITCH port allocation and the per-call UDP socket."""

import socket

import pytest

from esl_audio_stream.media.unicast import PortPool, UnicastEndpoint


def test_port_pool_reuses_released_ports_last():
    pool = PortPool(5000, 5002)
    a, b = pool.take(), pool.take()
    assert (a, b) == (5000, 5001)
    pool.give(a)
    assert pool.take() == 5002
    assert pool.take() == 5000
    with pytest.raises(RuntimeError):
        pool.take()
    assert pool.in_use == 3
    pool.give(4999)  # not ours: ignored
    assert pool.in_use == 3


def test_endpoint_only_hears_freeswitch_and_writes_back():
    fs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fs.bind(("127.0.0.1", 0))
    stranger.bind(("127.0.0.1", 0))
    fs.settimeout(2)
    ep = UnicastEndpoint("127.0.0.1", "127.0.0.1", fs.getsockname()[1])
    try:
        headers = ep.headers()
        assert headers["call-command"] == "unicast"
        assert headers["local-port"] == str(fs.getsockname()[1])
        assert headers["remote-port"] == str(ep.port)
        stranger.sendto(b"\x01\x00" * 160, ("127.0.0.1", ep.port))
        fs.sendto(b"\x02\x00" * 160, ("127.0.0.1", ep.port))
        assert ep.recv() == b"\x02\x00" * 160  # the stranger's datagram never reaches us
        ep.send(b"\x03\x00" * 160)
        assert fs.recvfrom(2048) == (b"\x03\x00" * 160, ("127.0.0.1", ep.port))
        ep.end_write_back()
        assert fs.recvfrom(2048)[0] == b""
    finally:
        ep.close()
        fs.close()
        stranger.close()
