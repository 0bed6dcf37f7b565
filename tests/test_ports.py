"""FreeSWITCH-side ports someone else holds (another FreeSWITCH, another daemon, a test): real
FreeSWITCH answers the unicast sendmsg +OK even when its bind fails (facts file; the simulator
does the same and logs "Failure creating unicast connection"), so silence is the only sign. The
daemon skips ports it finds bound, tries the next free port when one gives no audio, and gives
back a port it gave up on only once it is known unused."""

from __future__ import annotations

import json
import socket

import gevent
import pytest
from conftest import wait_until
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.media.unicast import HOLD_RECHECK, PortPool


def blocker(port: int) -> socket.socket:
    """Someone else's socket on a FreeSWITCH-side port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    return s


def free_range(n: int) -> int:
    """The first of n consecutive UDP ports nobody holds on 127.0.0.1 (in the pool's range)."""
    for low in range(16100, 16900, n):
        socks = []
        try:
            for port in range(low, low + n):
                socks.append(blocker(port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return low
    pytest.skip("no free port range")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_pool_skips_a_bound_port_and_takes_it_back_once_free():
    low = free_range(3)
    clock = Clock()
    pool = PortPool(low, low + 2, probe_host="127.0.0.1", clock=clock)
    held = blocker(low)
    try:
        assert pool.take() == low + 1  # low is bound by someone: skipped, held back
        assert pool.skipped == 1 and pool.held == 1
        clock.t += HOLD_RECHECK
        assert pool.take() == low + 2  # still bound: still held back
        assert pool.held == 1
    finally:
        held.close()
    clock.t += HOLD_RECHECK
    pool.give(low + 1)
    assert pool.take() == low + 1  # given back first: first in the line
    assert pool.take() == low  # free now: back in the line, after it
    assert pool.held == 0 and pool.in_use == 3


def test_a_port_given_up_on_stays_out_until_nobody_holds_it():
    low = free_range(2)
    clock = Clock()
    pool = PortPool(low, low + 1, probe_host="127.0.0.1", clock=clock)
    a = pool.take()
    fs_side = blocker(a)  # FreeSWITCH bound it after all (a slow answer)
    pool.hold(a)
    assert pool.in_use == 0 and pool.held == 1
    clock.t += HOLD_RECHECK
    assert pool.take() == low + 1
    with pytest.raises(RuntimeError, match="held back"):
        pool.take()
    fs_side.close()  # the channel ended
    clock.t += HOLD_RECHECK
    assert pool.take() == a


def test_a_remote_freeswitch_gets_held_ports_back_after_a_long_while():
    pool = PortPool(5000, 5001, probe_host="192.0.2.1")  # not an address of this machine
    assert pool.take() == 5000  # nothing can be probed: nothing skipped
    pool.hold(5000)
    assert pool.take() == 5001 and pool.held == 1


def parked(esl) -> str:
    uuid = esl.api("originate {channel_rate=8000}loopback/1000/default &park()").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def bridged(esl) -> str:
    """A bridged call streamed through taps (asked for: `auto` records a bridged call)."""
    answer = esl.api("originate {channel_rate=8000,STREAM_SOURCE=taps}loopback/1000/default "
                     "&bridge(loopback/1001/default)")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "bridge")
    return uuid


@pytest.fixture
def racing_pool(daemon):
    """A pool that cannot probe (as when someone binds the port between the probe and
    FreeSWITCH's own bind): the only defence left is to notice the silence."""
    low = free_range(10)
    daemon.ports = PortPool(low, low + 9)
    return low


def test_a_direct_stream_whose_port_is_taken_moves_to_the_next(esl, daemon, peer, sim,
                                                                racing_pool):
    low = racing_pool
    held = blocker(low)
    try:
        uuid = parked(esl)
        assert daemon.execute(f"{uuid} start {peer.url('/p')} mono 8k") == "+OK Success\n"
        conn = peer.wait_connection(1)
        assert wait_until(lambda: len(conn.binary) >= 10, 5)  # the audio came, on another port
        stream = daemon.streams[uuid]
        assert stream.port_retries == 1
        assert daemon.ports.held == 1 and daemon.ports.in_use == 1  # low: held back, not reused
        assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
        assert daemon.ports.in_use == 0 and daemon.ports.held == 1
    finally:
        held.close()
    esl.api(f"uuid_kill {uuid}")


def test_a_tap_whose_port_is_taken_moves_to_the_next(esl, daemon, peer, sim, racing_pool):
    low = racing_pool
    held = blocker(low)
    try:
        uuid = bridged(esl)
        assert daemon.execute(f"{uuid} start {peer.url('/t')} mono 8k") == "+OK Success\n"
        conn = peer.wait_connection(1)
        assert wait_until(lambda: len(conn.binary) >= 10, 5)
        stream = daemon.streams[uuid]
        assert stream.source == "taps" and stream.port_retries == 1
        assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
        assert daemon.ports.in_use == 0
    finally:
        held.close()
    esl.api(f"uuid_kill {uuid}")


def test_when_every_port_tried_is_taken_the_error_names_them(esl, daemon, peer, sim,
                                                             racing_pool):
    low = racing_pool
    esl.subscribe("CUSTOM", events.ERROR)
    gevent.sleep(0.1)
    held = [blocker(p) for p in range(low, low + 3)]
    try:
        uuid = parked(esl)
        assert daemon.execute(f"{uuid} start {peer.url('/p')} mono 8k") == "+OK Success\n"

        def errors():
            return [json.loads(e.body)["message"] for e in esl.seen
                    if e.subclass == events.ERROR and e.get(events.STREAM_UUID_HEADER) == uuid]

        assert wait_until(lambda: errors(), 4)
        message = errors()[0]
        assert message["code"] == events.WS_TIMEOUT
        assert f"local-port {low}, {low + 1}, {low + 2} free?" in message["error"]
        assert daemon.streams[uuid].port_retries == 2
    finally:
        for s in held:
            s.close()
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(lambda: daemon.ports.in_use == 0, 3)
    esl.api(f"uuid_kill {uuid}")


def test_a_tap_that_gives_nothing_on_any_port_tried_is_refused(esl, daemon, peer, sim,
                                                              racing_pool):
    low = racing_pool
    held = [blocker(p) for p in range(low, low + 3)]
    try:
        uuid = bridged(esl)
        base = int(esl.api("show channels count").split()[0])
        answer = daemon.execute(f"{uuid} start {peer.url('/t')} mono 8k")
        assert answer.startswith("-ERR no audio from the read tap")
        assert f"local-port {low}, {low + 1}, {low + 2} tried" in answer
    finally:
        for s in held:
            s.close()
    assert uuid not in daemon.streams and daemon.ports.in_use == 0
    assert wait_until(lambda: int(esl.api("show channels count").split()[0]) == base, 3)
    esl.api(f"uuid_kill {uuid}")


def test_the_daemon_probes_freeswitch_ports_on_this_host(esl, daemon, sim):
    """With FreeSWITCH on this host (the default), a bound port is skipped before FreeSWITCH is
    ever asked: no silence to wait for."""
    low = free_range(5)
    daemon.ports = PortPool(low, low + 4, probe_host=daemon.config.fs_media_host)
    held = blocker(low)
    peer = WSPeer().start()
    try:
        uuid = parked(esl)
        assert daemon.execute(f"{uuid} start {peer.url('/p')} mono 8k") == "+OK Success\n"
        conn = peer.wait_connection(1)
        assert wait_until(lambda: len(conn.binary) >= 5, 3)
        assert daemon.streams[uuid].port_retries == 0 and daemon.ports.skipped == 1
    finally:
        held.close()
        peer.stop()
    esl.api(f"uuid_kill {uuid}")
