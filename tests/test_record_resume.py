"""Crash-only with the `record` source: a daemon that dies or is restarted never ends a stream
FreeSWITCH records into a FIFO.

As in test_crashonly.py: the daemon is a real child process (`run --config`), FreeSWITCH the
simulator in this process (its recordings can be looked at), the endpoint a real `websockets`
server, and nobody sends a command after the restart. FreeSWITCH's recording thread goes on
while nobody reads the FIFO (its writes fail, facts file / simulator); the next process opens the
same FIFO again (re-attached), or, when the FIFO is gone, stops that recording and makes a new
one -- never two recordings of one stream."""

from __future__ import annotations

import json
import os
import signal
import stat

import gevent
import pytest
from conftest import wait_until
from helpers.bridged import amp, split
from helpers.listener import listening
from helpers.procs import DaemonProcess, simulator
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.app.resume import STATE_VAR, decode, index_var

EXTENSIONS = {"1000": "tone:440", "1001": "tone:1000"}
#: Each test with the daemon fixture runs on the native pump and on the Python path (conftest).
pytestmark = pytest.mark.both_paths


@pytest.fixture
def sim():
    with simulator(EXTENSIONS) as s:
        yield s


@pytest.fixture
def esl(sim):
    with listening(sim.address, events.CONNECT, events.DISCONNECT, events.ERROR) as conn:
        yield conn


@pytest.fixture
def daemon(tmp_path, sim, native):
    with DaemonProcess(tmp_path, sim.address, owner=f"rec-{tmp_path.name[-12:]}",
                       native=native) as d:
        yield d


def bridged(esl) -> str:
    """The caller says 440 Hz, the other party 1000 Hz; `auto` records the call."""
    uuid = esl.api("originate {channel_rate=8000}loopback/1000/default "
                   "&bridge(loopback/1001/default)").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "bridge")
    return uuid


def parked(esl) -> str:
    uuid = esl.api("originate {channel_rate=8000,STREAM_SOURCE=record}loopback/1000/default "
                   "&park()").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def conns(peer: WSPeer, path: str) -> list:
    return [c for c in peer.connections if c.path == path]


def fifos(root) -> list[str]:
    if not os.path.exists(root):
        return []
    return sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names
                  if stat.S_ISFIFO(os.lstat(os.path.join(d, f)).st_mode))


def start_streams(daemon: DaemonProcess, esl, peer: WSPeer) -> dict[str, tuple[str, str]]:
    """A bridged call streamed mono, stereo and mixed, and a parked one (asked for record)
    stereo: uuid -> (path, mix)."""
    streams = {}
    for i, (kind, mix) in enumerate((("bridged", "mono"), ("bridged", "stereo"),
                                     ("bridged", "mixed"), ("parked", "stereo"))):
        uuid = bridged(esl) if kind == "bridged" else parked(esl)
        path = f"/r{i}"
        answer = daemon.ctl(f"{uuid} start {peer.url(path)} {mix} 8k META-{i}")
        assert answer == "+OK Success\n", answer
        streams[uuid] = (path, mix)
    for path, _ in streams.values():
        assert wait_until(lambda p=path: conns(peer, p) and len(conns(peer, p)[-1].binary) > 5,
                          5), path
    return streams


def recordings(sim, uuid: str) -> list[str]:
    return list(sim.channel(uuid).recordings)


def record_of(esl, uuid: str):
    return decode(esl.api(f"uuid_getvar {uuid} {STATE_VAR}"))


def heard_right(conn, mix: str, far: bool = True) -> None:
    """The new connection carries the call as before: the caller, and (stereo/mixed) what the
    caller hears: the other party on a bridged call (`far`), nothing on a parked one."""
    audio = b"".join(conn.binary[-25:])
    if mix == "mono":
        assert amp(audio, 440) > 6000 and amp(audio, 1000) < 300
    elif mix == "stereo":
        left, right = split(audio)
        assert amp(left, 440) > 6000 and amp(left, 1000) < 300 and amp(right, 440) < 300
        assert amp(right, 1000) > 6000 if far else max(abs(x) for x in memoryview(right)
                                                       .cast("h")) <= 1
    else:
        assert amp(audio, 440) > 6000 and amp(audio, 1000) > 6000


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_restarted_daemon_reattaches_every_recording(sim, esl, daemon, peer, how):
    daemon.start()
    streams = start_streams(daemon, esl, peer)
    paths = {uuid: recordings(sim, uuid) for uuid in streams}
    assert all(len(p) == 1 for p in paths.values())
    assert fifos(daemon.files) == sorted(p[0] for p in paths.values())
    for uuid in streams:
        record = record_of(esl, uuid)
        assert record.source == "record" and [record.fifo] == paths[uuid]
        assert record.fifo_rate == 8000
    if how == "SIGKILL":
        daemon.kill()
    else:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(5) == 0
    gevent.sleep(0.5)  # no daemon: FreeSWITCH records on, its writes failing
    assert {uuid: recordings(sim, uuid) for uuid in streams} == paths
    assert all(sim.channel(u).recordings[paths[u][0]].errors > 0 for u in streams)
    daemon.start()
    for uuid, (path, mix) in streams.items():
        assert wait_until(lambda p=path: len(conns(peer, p)) == 2
                          and len(conns(peer, p)[1].binary) > 30, 6), path
        old, new = conns(peer, path)
        assert new.messages[0] == f"META-{path[2:]}"  # the metadata first, again
        if how == "SIGTERM":
            assert wait_until(old.closed.is_set, 2) and old.close_code == 1001
        heard_right(new, mix, far=sim.channel(uuid).bridge_peer is not None)
    # the same recording, read again: none made twice, none left over
    assert {uuid: recordings(sim, uuid) for uuid in streams} == paths
    assert fifos(daemon.files) == sorted(p[0] for p in paths.values())
    rows = {r["uuid"]: r for r in daemon.streams()}
    assert {u: rows[u]["recording"] for u in streams} == {u: p[0] for u, p in paths.items()}
    counts = {p: len(conns(peer, p)[1].binary) for p, _ in streams.values()}
    gevent.sleep(0.5)
    assert all(len(conns(peer, p)[1].binary) > counts[p] + 10 for p, _ in streams.values())
    assert daemon.drain().startswith("+OK drained 4")
    assert all(recordings(sim, u) == [] for u in streams)  # stopped
    assert fifos(daemon.files) == []


def test_a_recording_whose_fifo_is_gone_is_stopped_and_made_again(sim, esl, daemon, peer):
    daemon.start()
    uuid = bridged(esl)
    assert daemon.ctl(f"{uuid} start {peer.url('/g')} stereo 8k") == "+OK Success\n"
    assert wait_until(lambda: conns(peer, "/g") and len(conns(peer, "/g")[0].binary) > 5, 5)
    [old] = recordings(sim, uuid)
    daemon.kill()
    os.unlink(old)  # FreeSWITCH still writes into the pipe it opened; nobody can open it again
    daemon.start()
    assert wait_until(lambda: len(conns(peer, "/g")) == 2
                      and len(conns(peer, "/g")[1].binary) > 30, 6)
    [new] = recordings(sim, uuid)  # the old one stopped, one new one
    assert new != old and fifos(daemon.files) == [new]
    assert record_of(esl, uuid).fifo == new
    heard_right(conns(peer, "/g")[1], "stereo")
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams() and fifos(daemon.files) == [], 5)


def test_a_call_that_ended_while_no_daemon_ran_leaves_no_fifo(sim, esl, daemon, peer):
    daemon.start()
    ended, going = bridged(esl), bridged(esl)
    for uuid, path in ((ended, "/e"), (going, "/k")):
        assert daemon.ctl(f"{uuid} start {peer.url(path)} mono 8k") == "+OK Success\n"
    assert wait_until(lambda: all(conns(peer, p) and len(conns(peer, p)[0].binary) > 5
                                  for p in ("/e", "/k")), 5)
    daemon.kill()
    esl.api(f"uuid_kill {ended}")
    assert wait_until(lambda: not sim.channel(ended).up, 3)
    daemon.start()
    assert wait_until(lambda: len(conns(peer, "/k")) == 2
                      and len(conns(peer, "/k")[1].binary) > 5, 6)
    assert wait_until(lambda: fifos(daemon.files) == recordings(sim, going), 3)
    assert not (daemon.files / ended).exists()
    assert len(conns(peer, "/e")) == 1  # never carried on
    esl.api(f"uuid_kill {going}")


def test_a_stream_left_too_long_has_its_recording_stopped(tmp_path, sim, esl, peer):
    daemon = DaemonProcess(tmp_path, sim.address, owner="rec-orphans", orphan_timeout=1.0)
    try:
        daemon.start()
        uuid = bridged(esl)
        mine = str(tmp_path / "user.r8")
        assert esl.api(f"uuid_record {uuid} start {mine}") == "+OK Success\n"  # the user's
        assert daemon.ctl(f"{uuid} start {peer.url('/o')} stereo 8k") == "+OK Success\n"
        assert wait_until(lambda: conns(peer, "/o") and len(conns(peer, "/o")[0].binary) > 5)
        assert len(recordings(sim, uuid)) == 2
        daemon.kill()
        gevent.sleep(2.0)  # longer than orphan_timeout with no daemon
        daemon.start()
        assert wait_until(lambda: recordings(sim, uuid) == [mine], 5)  # ours only
        assert wait_until(lambda: fifos(daemon.files) == [], 3)
        assert daemon.streams() == [] and len(conns(peer, "/o")) == 1
        disc = [json.loads(e.body) for e in esl.seen if e.subclass == events.DISCONNECT]
        assert wait_until(lambda: any(
            "no daemon for" in json.loads(e.body)["message"]["reason"]
            for e in esl.seen if e.subclass == events.DISCONNECT), 3), disc
        esl.api(f"uuid_kill {uuid}")
    finally:
        daemon.close()


def test_a_recording_left_by_a_process_killed_in_the_middle_of_a_stop_is_stopped(
        sim, esl, daemon, peer, tmp_path):
    """A stop removes the stream's record first (a stop is never undone by a restart), then
    stops the recording: a process killed in between leaves FreeSWITCH recording into a FIFO
    no stream claims. The next process stops that recording (the user's own goes on) and
    removes the FIFO."""
    daemon.start()
    uuid = bridged(esl)
    mine = str(tmp_path / "user.r8")
    assert esl.api(f"uuid_record {uuid} start {mine}") == "+OK Success\n"
    assert daemon.ctl(f"{uuid} start {peer.url('/m')} stereo 8k") == "+OK Success\n"
    assert wait_until(lambda: conns(peer, "/m") and len(conns(peer, "/m")[0].binary) > 5)
    [ours] = [p for p in recordings(sim, uuid) if p != mine]
    daemon.kill()
    owner = daemon.config.read_text().split('owner = "')[1].split('"')[0]
    esl.api(f"uuid_setvar {uuid} {STATE_VAR}")  # what the stop had done when it died
    esl.api(f"global_setvar {index_var(owner, uuid)}=")
    daemon.start()
    assert wait_until(lambda: recordings(sim, uuid) == [mine], 5)
    assert wait_until(lambda: fifos(daemon.files) == [], 3)
    assert daemon.streams() == [] and len(conns(peer, "/m")) == 1
    assert sim.channel(uuid).up and ours not in sim.channel(uuid).recordings
    esl.api(f"uuid_kill {uuid}")
