"""Crash-only: a daemon that dies, is killed or is restarted never ends a call's stream.

Real processes and signals: the daemon runs as a child process (`run --config`), FreeSWITCH is
the simulator in this process (so its channels can be looked at), the endpoint a real
`websockets` server. Nobody sends a command after the restart: the new process finds the
streams on the calls (app/resume.py) and carries them on."""

from __future__ import annotations

import json
import signal
import time

import gevent
import pytest
from conftest import wait_until
from helpers.listener import listening
from helpers.procs import DaemonProcess, simulator
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.app.resume import (
    STATE_VAR,
    RecordError,
    StreamRecord,
    TapRecord,
    alive_var,
    decode,
    index_var,
    read_index,
)

EXTENSIONS = {"1000": "tone:440", "1001": "tone:1000", "2000": "echo", "3000": "silence"}


# -- the record, sans-IO ---------------------------------------------------------------------------

def test_a_record_survives_freeswitchs_argument_splitting():
    record = StreamRecord(owner="h:1", url="wss://bot.example/a b?x='1'", mix="stereo",
                          rate=16000, metadata='{"caller": "O\'Brien \\\\ co"}', source="taps",
                          taps=(TapRecord("read", "t-1", 13000, 40000),
                                TapRecord("write", "t-2", 13001, 40001)),
                          fs_port=13002, udp_port=40002, paused=True, marks=("m 1", "m'2"),
                          started=1700000000.5)
    text = record.encode()
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    from esl_audio_stream.dev.simulator.separate import separate

    stored = separate(f"uuid-1 {STATE_VAR} {text}", " ", 3)[2]  # what uuid_setvar keeps
    assert decode(stored) == record


@pytest.mark.parametrize("garbage", ["", "not base64!", "e30", "eyJ2IjoyfQ",
                                     StreamRecord("o", "ws://x/", "mono", 8000, None,
                                                  "direct").encode()[:-8]])
def test_a_broken_record_is_refused_not_guessed(garbage):
    with pytest.raises(RecordError):
        decode(garbage)


def test_the_index_of_one_owner_is_read_from_one_dump():
    dump = (f"hostname=fs1\ncore_uuid=c-1\n{index_var('a', 'u1')}=1.0\n"
            f"{index_var('b', 'u2')}=1.0\n{index_var('a', 'u3')}=2.0\n{alive_var('a')}=99.5\n")
    index = read_index(dump, "a")
    assert index.uuids == ("u1", "u3") and index.alive == 99.5 and index.core_uuid == "c-1"
    assert read_index(dump, "b").alive is None


# -- processes --------------------------------------------------------------------------------

@pytest.fixture
def sim():
    with simulator(EXTENSIONS) as s:
        yield s


@pytest.fixture
def esl(sim):
    with listening(sim.address, events.CONNECT, events.DISCONNECT, events.ERROR) as conn:
        yield conn


@pytest.fixture
def daemon(tmp_path, sim):
    with DaemonProcess(tmp_path, sim.address, owner=f"crash-{tmp_path.name[-12:]}") as d:
        yield d


def channels(esl) -> int:
    return int(esl.api("show channels count").split()[0])


def parked(esl) -> str:
    uuid = esl.api("originate {channel_rate=8000}loopback/1000/default &park()").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def bridged(esl) -> str:
    """A bridged call streamed through taps (asked for: `auto` records a bridged call; the
    record source's own crash-only tests are in test_record_resume.py)."""
    uuid = esl.api("originate {channel_rate=8000,STREAM_SOURCE=taps}loopback/1000/default "
                   "&bridge(loopback/1001/default)").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "bridge")
    return uuid


def conns(peer: WSPeer, path: str) -> list:
    return [c for c in peer.connections if c.path == path]


def start_streams(daemon: DaemonProcess, esl, peer: WSPeer, n_direct: int, n_taps: int):
    """Streams on parked calls (direct, mono) and bridged calls (taps, stereo): uuid -> path."""
    streams = {}
    for i in range(n_direct + n_taps):
        uuid = parked(esl) if i < n_direct else bridged(esl)
        mix = "mono" if i < n_direct else "stereo"
        path = f"/s{i}"
        answer = daemon.ctl(f"{uuid} start {peer.url(path)} {mix} 8k META-{i}")
        assert answer == "+OK Success\n", answer
        streams[uuid] = path
    for path in streams.values():
        assert wait_until(lambda p=path: conns(peer, p) and len(conns(peer, p)[-1].binary) > 5,
                          5), path
    return streams


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_restarted_daemon_carries_every_stream_on(sim, esl, daemon, how):
    peer = WSPeer().start()
    try:
        daemon.start()
        streams = start_streams(daemon, esl, peer, 14, 6)
        base = channels(esl)
        assert base == 14 * 2 + 6 * 4 + 6 * 2 * 2  # calls, and two taps (two legs each) per
        if how == "SIGKILL":
            daemon.kill()
        else:
            sent = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit(5) == 0
            handover = time.monotonic() - sent
        gevent.sleep(0.5)  # a while with no daemon: FreeSWITCH streams on into the void
        assert channels(esl) == base  # the calls and their taps went on
        up = daemon.start()
        back: dict[str, float] = {}

        def carried_on() -> bool:
            for uuid, path in streams.items():
                c = conns(peer, path)
                if uuid not in back and len(c) == 2 and len(c[1].binary) >= 3:
                    back[uuid] = time.monotonic() - up
            return len(back) == len(streams)

        assert wait_until(carried_on, 6), sorted(set(streams) - set(back))
        print(f"\n{how}: every stream's audio back at its endpoint within "
              f"{max(back.values()):.2f} s of the new process answering"
              + (f" (old process exited {handover:.2f} s after SIGTERM)"
                 if how == "SIGTERM" else ""))
        for path in streams.values():
            old, new = conns(peer, path)
            assert new.messages[0] == f"META-{path[2:]}"  # the metadata first, again
            if how == "SIGTERM":
                assert wait_until(old.closed.is_set, 2) and old.close_code == 1001
        rows = {r["uuid"]: r for r in daemon.streams()}
        assert set(rows) == set(streams)
        assert channels(esl) == base  # taps adopted, not made twice
        # audio keeps flowing on the new connections
        counts = {p: len(conns(peer, p)[1].binary) for p in streams.values()}
        gevent.sleep(0.5)
        assert all(len(conns(peer, p)[1].binary) > counts[p] + 10 for p in streams.values())
        connects = [e for e in esl.seen if e.subclass == events.CONNECT]
        assert len(connects) >= 2 * len(streams)  # fired again for each
        assert daemon.drain().startswith("+OK drained 20")
        assert wait_until(lambda: channels(esl) == 14 * 2 + 6 * 4, 3)  # the taps went
    finally:
        peer.stop()


def index_of(esl, owner: str) -> list[str]:
    return list(read_index(esl.api("global_getvar"), owner).uuids)


def test_a_killed_daemon_forgets_calls_that_ended_and_carries_on_the_rest(sim, esl, daemon):
    peer = WSPeer().start()
    try:
        daemon.start()
        streams = start_streams(daemon, esl, peer, 6, 4)
        owner = daemon.config.read_text().split('owner = "')[1].split('"')[0]
        assert sorted(index_of(esl, owner)) == sorted(streams)
        daemon.kill()
        uuids = list(streams)
        ended, going = uuids[::2], uuids[1::2]  # both kinds in each half
        for uuid in ended:
            esl.api(f"uuid_kill {uuid}")
        assert wait_until(lambda: all(sim.channel(u).state == "CS_DESTROY" or not
                                      sim.channel(u).up for u in ended), 3)
        (daemon.files / ended[0]).mkdir(parents=True, exist_ok=True)  # files it left behind
        daemon.start()
        for uuid in going:
            path = streams[uuid]
            assert wait_until(lambda p=path: len(conns(peer, p)) == 2
                              and len(conns(peer, p)[1].binary) > 3, 5), path
        assert wait_until(lambda: sorted(index_of(esl, owner)) == sorted(going), 3)
        assert {r["uuid"] for r in daemon.streams()} == set(going)
        assert not (daemon.files / ended[0]).exists()
        assert wait_until(lambda: {e.get(events.STREAM_UUID_HEADER) for e in esl.seen
                                   if e.subclass == events.DISCONNECT} >= set(ended), 3)
        for uuid in ended:
            assert len(conns(peer, streams[uuid])) == 1  # never carried on
    finally:
        peer.stop()


def test_a_stream_left_without_a_daemon_too_long_is_ended(tmp_path, sim, esl):
    daemon = DaemonProcess(tmp_path, sim.address, owner="orphans", orphan_timeout=1.0)
    peer = WSPeer().start()
    try:
        daemon.start()
        streams = start_streams(daemon, esl, peer, 2, 2)
        calls_only = 2 * 2 + 2 * 4
        daemon.kill()
        gevent.sleep(2.0)  # longer than orphan_timeout with no daemon
        direct = list(streams)[:2]
        sent = {u: sim.channel(u).frames_sent for u in direct}
        daemon.start()
        assert wait_until(lambda: channels(esl) == calls_only, 5)  # the taps killed
        gevent.sleep(0.3)
        moved = {u: sim.channel(u).frames_sent for u in direct}
        gevent.sleep(0.3)
        assert {u: sim.channel(u).frames_sent for u in direct} == moved  # unicast ended
        assert all(moved[u] >= sent[u] for u in direct)
        assert daemon.streams() == [] and index_of(esl, "orphans") == []
        for uuid in streams:
            assert esl.api(f"uuid_getvar {uuid} {STATE_VAR}") == "_undef_"
            assert len(conns(peer, streams[uuid])) == 1  # not carried on into the endpoint
        disc = [json.loads(e.body) for e in esl.seen if e.subclass == events.DISCONNECT]
        assert len(disc) == 4 and all("no daemon for" in d["message"]["reason"] for d in disc)
    finally:
        peer.stop()
        daemon.close()


def test_marks_the_dead_process_owed_are_answered_cleared(sim, esl, daemon):
    from helpers.audio import stream_audio, tone

    peer = WSPeer().start()
    try:
        daemon.start()
        uuid = esl.api("originate {channel_rate=8000}loopback/2000/default &park()").split()[1]
        assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
        assert daemon.ctl(f"{uuid} start {peer.url('/m')} mono 8k META") == "+OK Success\n"
        first = peer.wait_connection(1)
        assert wait_until(lambda: len(first.binary) > 3)
        peer.send_text(first, stream_audio(tone(700, 5.0, 8000), 8000))
        peer.send_text(first, json.dumps({"type": "mark", "data": {"name": "after-five"}}))
        assert wait_until(lambda: len(sim.channel(uuid).written) > 3200, 3)  # playing
        gevent.sleep(0.3)  # the mark is in the record
        daemon.kill()
        daemon.start()
        second = peer.wait_connection(2, timeout=5)
        assert wait_until(lambda: len(second.messages) >= 2, 5)
        assert second.messages[0] == "META"
        assert json.loads(second.messages[1]) == {
            "type": "mark", "data": {"name": "after-five", "event": "cleared"}}
        errors = [json.loads(e.body)["message"]["error"] for e in esl.seen
                  if e.subclass == events.ERROR and e.get(events.STREAM_UUID_HEADER) == uuid]
        assert wait_until(lambda: any("carried on by a new daemon process" in x for x in
                                      [json.loads(e.body)["message"]["error"] for e in esl.seen
                                       if e.subclass == events.ERROR]), 3), errors
    finally:
        peer.stop()
