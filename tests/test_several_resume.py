"""Crash-only with several streams on one call: a daemon killed (or restarted) while calls carry
several streams each comes back with every one of them, each to its own endpoint, on the call's
one source as it was (no second unicast, no second recording); and a call whose record a daemon
from before several streams per call wrote is carried on as it was.

Real processes (`run --config`), the simulator in this process, real `websockets` endpoints."""

from __future__ import annotations

import base64
import json
import signal

import gevent
import pytest
from conftest import wait_until
from helpers.forkpeer import ForkPeer
from helpers.listener import listening
from helpers.procs import DaemonProcess, simulator
from wspeer import WSPeer

from esl_audio_stream.app.resume import STATE_VAR, decode_all
from esl_audio_stream.ops.client import control_http

EXTENSIONS = {"1000": "tone:440", "1001": "tone:1000", "3000": "silence"}


@pytest.fixture
def sim():
    with simulator(EXTENSIONS) as s:
        yield s


@pytest.fixture
def esl(sim):
    with listening(sim.address) as conn:
        yield conn


@pytest.fixture
def daemon(tmp_path, sim):
    with DaemonProcess(tmp_path, sim.address, owner=f"several-{tmp_path.name[-12:]}") as d:
        yield d


def fork(daemon: DaemonProcess, args: str) -> str:
    return gevent.get_hub().threadpool.apply(
        control_http, (daemon.control, "POST", "/api/uuid_audio_fork", args.encode()),
        {"timeout": 15})[1]


def conns(peer: WSPeer, path: str) -> list:
    return [c for c in peer.connections if c.path == path]


def flowing(peer: WSPeer, path: str, n: int) -> bool:
    c = conns(peer, path)
    return len(c) == n and len(c[-1].binary) > 5


def parked(esl) -> str:
    uuid = esl.api("originate {channel_rate=8000}loopback/1000/default &park()").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def bridged(esl) -> str:
    uuid = esl.api("originate {channel_rate=8000}loopback/1000/default "
                   "&bridge(loopback/1001/default)").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "bridge")
    return uuid


def unicasts(sim, monkeypatch) -> list[str]:
    asked: list[str] = []
    sendmsg = sim.sendmsg

    def on_sendmsg(uuid, pkt):
        if (pkt.get("call-command") or "") == "unicast":
            asked.append(uuid)
        return sendmsg(uuid, pkt)

    monkeypatch.setattr(sim, "sendmsg", on_sendmsg)
    return asked


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_every_stream_of_every_call_comes_back(sim, esl, daemon, monkeypatch, how):
    peer, fpeer = WSPeer().start(), ForkPeer().start()
    asked = unicasts(sim, monkeypatch)
    try:
        daemon.start()
        call = parked(esl)  # direct: its one unicast for three streams
        assert daemon.ctl(f"{call}@a start {peer.url('/a')} mono 8k META-A") == "+OK Success\n"
        assert daemon.ctl(f"{call}@b start {peer.url('/b')} stereo 16k") == "+OK Success\n"
        assert fork(daemon, f"{call} start {fpeer.url('/c')} mono 16k c") == "+OK Success\n"
        rec = bridged(esl)  # recorded: mono, then stereo (the recording made again)
        assert daemon.ctl(f"{rec} start {peer.url('/m')} mono 8k") == "+OK Success\n"
        assert daemon.ctl(f"{rec}@s start {peer.url('/s')} stereo 8k") == "+OK Success\n"
        assert wait_until(lambda: all(flowing(peer, p, 1) for p in ["/a", "/b", "/m", "/s"])
                          and flowing(fpeer, "/c", 1), 5)
        records = decode_all(esl.api(f"uuid_getvar {call} {STATE_VAR}"))
        assert [r.name for r in records] == ["a", "b", "c"]  # one variable, every stream
        assert {(r.fs_port, r.udp_port) for r in records} == {(records[0].fs_port,
                                                              records[0].udp_port)}
        fifo = {r.fifo for r in decode_all(esl.api(f"uuid_getvar {rec} {STATE_VAR}"))}
        assert len(fifo) == 1 and list(sim.channel(rec).recordings) == list(fifo)
        if how == "SIGKILL":
            daemon.kill()
        else:
            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit(5) == 0
        gevent.sleep(0.3)
        daemon.start()
        assert wait_until(lambda: all(flowing(peer, p, 2) for p in ["/a", "/b", "/m", "/s"])
                          and flowing(fpeer, "/c", 2), 8), daemon.logged()
        assert conns(peer, "/a")[1].messages[0] == "META-A"  # the metadata first, again
        rows = {(r["uuid"], r["name"]): r for r in daemon.streams()}
        assert set(rows) == {(call, "a"), (call, "b"), (call, "c"), (rec, ""), (rec, "s")}
        assert rows[(call, "b")]["mix"] == "stereo" and rows[(call, "c")]["rate"] == 16000
        # the call's source as it was: adopted once, not asked for again
        assert asked == [call] and not sim.channel(call).leaked
        assert list(sim.channel(rec).recordings) == list(fifo)
        left = conns(peer, "/s")[1].binary
        assert all(len(x) == 640 for x in left)  # stereo 8k: the recording still stereo
        # and each stream still goes its own way
        assert daemon.ctl(f"{call}@b stop") == "+OK Success\n"
        assert [r.name for r in decode_all(esl.api(f"uuid_getvar {call} {STATE_VAR}"))] == [
            "a", "c"]
        n = len(conns(peer, "/a")[1].binary)
        assert wait_until(lambda: len(conns(peer, "/a")[1].binary) > n + 10, 3)
        assert daemon.drain().startswith("+OK drained 4")
        assert esl.api(f"uuid_getvar {call} {STATE_VAR}") == "_undef_"
        assert wait_until(lambda: not sim.channel(rec).recordings, 3)
    finally:
        peer.stop()
        fpeer.stop()


def test_a_record_from_before_several_streams_per_call_is_carried_on(sim, esl, daemon):
    """A daemon upgraded mid-call: the variable holds one record of the old shape (no name, no
    source mix); the new process carries that stream on as the call's unnamed stream."""
    peer = WSPeer().start()
    try:
        daemon.start()
        call = parked(esl)
        assert daemon.ctl(f"{call} start {peer.url('/o')} stereo 8k OLD") == "+OK Success\n"
        assert wait_until(lambda: flowing(peer, "/o", 1), 5)
        daemon.kill()
        value = esl.api(f"uuid_getvar {call} {STATE_VAR}").strip()
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        for key in ("name", "source_mix"):
            del data[key]
        old = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        assert esl.api(f"uuid_setvar {call} {STATE_VAR} {old}").startswith("+OK")
        daemon.start()
        assert wait_until(lambda: flowing(peer, "/o", 2), 8), daemon.logged()
        assert conns(peer, "/o")[1].messages[0] == "OLD"
        rows = daemon.streams()
        assert [(r["uuid"], r["name"], r["mix"]) for r in rows] == [(call, "", "stereo")]
        assert daemon.ctl(f"{call} stop") == "+OK Success\n"
        assert esl.api(f"uuid_getvar {call} {STATE_VAR}") == "_undef_"
    finally:
        peer.stop()
