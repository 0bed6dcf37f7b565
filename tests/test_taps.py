"""Streams of calls that are not parked, through loopback taps, end to end against the simulator
(which does what the facts file says of `native_eavesdrop` taps and two-party calls).

The two-party call: originate `loopback/1000/default &bridge(loopback/1001/default)`: the call's
caller says 440 Hz (extension 1000), the other party says 1000 Hz (extension 1001), so what the
caller hears is 1000 Hz."""

from __future__ import annotations

import json
import os

import gevent
import pytest
from conftest import wait_until
from helpers.audio import stream_audio, tone
from helpers.bridged import amp, blocks, channels, played_once, recent, split, start
from helpers.bridged import bridged_call as bridged

from esl_audio_stream.app import events, intake
from esl_audio_stream.call.taps import TAP_OF_VAR, TAP_VAR, tap_originate
from esl_audio_stream.esl.protocol import Event


def bridged_call(esl, rate: int = 8000, extra: str = "") -> str:
    """A bridged call streamed through taps (nobody's default any more: asked for)."""
    return bridged(esl, rate, ",STREAM_SOURCE=taps" + extra)


@pytest.mark.parametrize("mix", ["mono", "stereo", "mixed"])
def test_bridged_call_streams_through_taps(esl, daemon, peer, sim, mix):
    uuid = bridged_call(esl)
    before = channels(esl)
    conn = start(daemon, peer, uuid, mix)
    stream = daemon.streams[uuid]
    assert stream.source == "taps" and len(stream.taps) == (1 if mix == "mono" else 2)
    assert channels(esl) == before + 2 * len(stream.taps)  # each tap is a loopback pair
    for tap in stream.taps:  # marked for the operator, and never auto-started
        ch = sim.channel(tap.uuid)
        assert ch.variables[TAP_VAR] == tap.side and ch.variables[TAP_OF_VAR] == uuid
    gevent.sleep(0.3)
    audio = recent(conn)
    if mix == "mono":
        assert amp(audio, 440) == pytest.approx(8000, rel=0.1) and amp(audio, 1000) < 200
    elif mix == "stereo":
        left, right = split(audio)
        assert amp(left, 440) == pytest.approx(8000, rel=0.1) and amp(left, 1000) < 200
        assert amp(right, 1000) == pytest.approx(8000, rel=0.1) and amp(right, 440) < 200
    else:
        assert amp(audio, 440) == pytest.approx(8000, rel=0.1)
        assert amp(audio, 1000) == pytest.approx(8000, rel=0.1)
    # either party hanging up ends the stream and every tap
    far = sim.channel(uuid).bridge_peer.uuid
    esl.api(f"uuid_kill {far if mix == 'stereo' else uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
    assert wait_until(lambda: channels(esl) == 0, 3)
    assert conn.closed.wait(3) or wait_until(conn.closed.is_set, 3)
    assert not daemon.calls.tap_owners and daemon.ports.in_use == 0


@pytest.mark.parametrize("mix", ["mono", "mixed", "stereo"])
def test_parked_call_with_inject_playback_through_taps(esl, daemon, peer, sim, mix):
    answer = esl.api("originate {channel_rate=8000,STREAM_SOURCE=taps}loopback/1000/default "
                     "&park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    conn = start(daemon, peer, uuid, mix)
    stream = daemon.streams[uuid]
    assert stream.source == "taps"
    n = len(conn.binary)
    peer.send_text(conn, stream_audio(tone(1500, 1.0, 8000), 8000))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 16000, 3)  # write-back
    gevent.sleep(0.2)
    heard = b"".join(conn.binary[n:])
    if mix == "mono":  # the caller only
        assert amp(heard, 440) == pytest.approx(8000, rel=0.15) and amp(heard, 1500) < 300
    elif mix == "mixed":  # the caller and, for its second, the played tone, once
        assert amp(heard, 440) == pytest.approx(8000, rel=0.15)
        played_once(heard, 1500, 1.0)
    if mix != "stereo":
        esl.api(f"uuid_kill {uuid}")
        assert wait_until(lambda: channels(esl) == 0, 3)
        return
    left, right = split(heard)
    assert amp(left, 440) == pytest.approx(8000, rel=0.15) and amp(left, 1500) < 300
    # the played tone is on the right exactly once (FreeSWITCH puts it in the write tap; the
    # daemon adds nothing): for 1 s, at its own amplitude
    assert stream.player.mode == "inject" and not stream.playback.paced_here
    played_once(right, 1500, 1.0)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_bridged_call_displace_playback_is_on_the_right_exactly_once(esl, daemon, peer, sim):
    uuid = bridged_call(esl, extra=",STREAM_PLAYBACK_MODE=inject")  # not parked: displace
    conn = start(daemon, peer, uuid, "stereo")
    stream = daemon.streams[uuid]
    n = len(conn.binary)
    peer.send_text(conn, stream_audio(tone(1500, 1.0, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "done"}}))
    assert wait_until(lambda: any("playout" in t for t in conn.texts), 3)
    gevent.sleep(0.3)
    assert stream.player.mode == "displace"
    ch = sim.channel(uuid)
    assert amp(bytes(ch.displaced), 1500) == pytest.approx(8000, rel=0.15)  # the caller heard it
    left, right = split(b"".join(conn.binary[n:]))
    played_once(right, 1500, 1.0)  # once, not twice
    assert amp(right, 1000) == pytest.approx(8000, rel=0.15)  # and the other party
    assert amp(left, 1500) < 300
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_pause_closes_the_taps_and_resume_makes_them_again(esl, daemon, peer, sim):
    uuid = bridged_call(esl)
    base = channels(esl)
    conn = start(daemon, peer, uuid, "mixed")
    assert channels(esl) == base + 4
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    assert wait_until(lambda: channels(esl) == base, 2)  # no tap runs idle
    n = len(conn.binary)
    gevent.sleep(0.2)
    assert len(conn.binary) == n
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    assert channels(esl) == base + 4
    assert wait_until(lambda: len(conn.binary) > n + 10, 2)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_a_tap_killed_by_someone_is_made_again(esl, daemon, peer, sim):
    esl.subscribe("CUSTOM", events.ERROR)
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "mono")
    stream = daemon.streams[uuid]
    old = stream.taps[0].uuid
    esl.api(f"uuid_kill {old}")
    assert wait_until(lambda: stream.tap_reopens == 1, 3)
    assert stream.taps[0].uuid != old
    n = len(conn.binary)
    assert wait_until(lambda: len(conn.binary) > n + 10, 2)
    errors = [json.loads(e.body)["message"]["error"] for e in esl.seen
              if e.subclass == events.ERROR and e.get(events.STREAM_UUID_HEADER) == uuid]
    assert any("making the taps again" in text for text in errors)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_direct_is_kept_for_mono_on_a_parked_call_and_can_be_forced(esl, daemon, peer, sim):
    answer = esl.api("originate {channel_rate=8000,STREAM_SOURCE=taps}loopback/1000/default "
                     "&park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    start(daemon, peer, uuid, "mono")
    assert daemon.streams[uuid].source == "taps"
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(lambda: channels(esl) == 2, 2)  # the taps went; the call goes on
    esl.api(f"uuid_setvar {uuid} STREAM_SOURCE auto")
    start(daemon, peer, uuid, "mono")
    assert daemon.streams[uuid].source == "direct" and not daemon.streams[uuid].taps
    esl.api(f"uuid_kill {uuid}")


def test_taps_never_auto_start_and_the_dial_string_is_safe():
    ev = Event({"Event-Name": "CHANNEL_PARK", "Unique-ID": "t1", f"variable_{TAP_VAR}": "read",
                "variable_AUDIO_STREAM_URL": "ws://127.0.0.1:1/"})
    assert intake.auto_start(ev) is None
    text = tap_originate("6f1c-ab", "write")
    assert text.endswith("loopback/native_eavesdrop:6f1c-ab\\swrite/default/inline &park()")
    with pytest.raises(ValueError):
        tap_originate("x,y}loopback/evil", "read")


def test_a_thousand_start_stop_cycles_leave_nothing_behind(esl, daemon, peer, sim):
    """1,000 cycles (10 calls at a time, 100 each) of start + stop of a stereo stream on a
    bridged call: no tap channel, greenlet, port, socket or file descriptor left."""
    import gc

    calls = [bridged_call(esl) for _ in range(10)]
    base_channels = channels(esl)
    gc.collect()
    base_greenlets = sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet))
    base_fds = len(os.listdir("/proc/self/fd"))
    done = []

    def cycle(uuid: str) -> None:
        for _ in range(100):
            answer = daemon.execute(f"{uuid} start {peer.url('/c')} stereo 8k")
            assert answer == "+OK Success\n", answer
            assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
            done.append(1)

    with gevent.Timeout(240):
        gevent.joinall([gevent.spawn(cycle, u) for u in calls], raise_error=True)
    assert len(done) == 1000
    assert wait_until(lambda: channels(esl) == base_channels, 5)
    assert not daemon.streams and not daemon.calls.tap_owners and daemon.ports.in_use == 0
    gevent.sleep(0.5)
    gc.collect()
    greenlets = sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet)
                    and not o.dead)
    assert greenlets <= base_greenlets + 2
    assert len(os.listdir("/proc/self/fd")) <= base_fds + 5
    for uuid in calls:
        esl.api(f"uuid_kill {uuid}")


def test_displace_already_playing_when_taps_are_made_is_not_added_twice(esl, daemon, peer, sim):
    """Whichever came first: a write tap made while a displace plays carries it (media-bug
    order), so the daemon must not add it again; one made before does not, so it must."""
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "stereo")
    stream = daemon.streams[uuid]
    peer.send_text(conn, stream_audio(tone(1500, 3.0, 8000), 8000))
    assert wait_until(lambda: stream.player is not None and stream.player.displacing, 2)
    gevent.sleep(0.5)
    esl.api(f"uuid_kill {stream.taps[1].uuid}")  # the write tap goes; new taps come
    assert wait_until(lambda: stream.tap_reopens == 1, 3)
    n = len(conn.binary)
    assert stream.playback.in_tap == {stream.player.displacing}
    gevent.sleep(1.0)
    _, right = split(b"".join(conn.binary[n:]))
    levels = blocks(right, 1500)
    assert levels and max(levels) == pytest.approx(8000, rel=0.15), levels  # not 16000
    assert min(levels[:-2]) > 4000  # and it is there all along
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_a_stop_while_taps_are_being_made_again_leaves_no_tap(esl, daemon, peer, sim):
    uuid = bridged_call(esl)
    base = channels(esl)
    start(daemon, peer, uuid, "stereo")
    stream = daemon.streams[uuid]
    esl.api(f"uuid_kill {stream.taps[0].uuid}")
    assert wait_until(lambda: stream._source._job is not None, 2)
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(lambda: channels(esl) == base, 3)
    gevent.sleep(0.5)
    assert channels(esl) == base and not daemon.calls.tap_owners and daemon.ports.in_use == 0
    esl.api(f"uuid_kill {uuid}")


def test_pause_while_playing_keeps_the_taps_until_it_has_played(esl, daemon, peer, sim):
    """Displace playback is paced by the taps' frames: a pause keeps them until what plays has
    played (the mark comes back), then closes them."""
    uuid = bridged_call(esl)
    base = channels(esl)
    conn = start(daemon, peer, uuid, "mixed")
    peer.send_text(conn, stream_audio(tone(1500, 0.8, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "end"}}))
    stream = daemon.streams[uuid]
    assert wait_until(lambda: stream.player is not None and stream.player.playing, 2)
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    gevent.sleep(0.2)
    assert channels(esl) == base + 4  # still playing: the taps pace it
    assert wait_until(lambda: any("playout" in t for t in conn.texts), 3)
    assert wait_until(lambda: channels(esl) == base, 2)  # over: no tap runs idle
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    assert channels(esl) == base + 4
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_a_refused_write_back_unicast_gives_its_port_back(esl, daemon, peer, sim, monkeypatch):
    """taps + inject on a parked call: the write-back unicast is asked for on the first audio
    from the endpoint. When FreeSWITCH cannot be asked (ESL fails), that port and socket are
    given back at once; the next audio tries again; nothing is left after the stop."""
    from esl_audio_stream.esl.connection import ESLError

    answer = esl.api("originate {channel_rate=8000,STREAM_SOURCE=taps}loopback/1000/default "
                     "&park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    conn = start(daemon, peer, uuid, "mono")
    taps_ports = daemon.ports.in_use  # the read tap's
    real = daemon.esl.sendmsg
    refused: list[str] = []

    def sendmsg(target, headers, *args, **kwargs):
        if target == uuid and not refused:  # the call's own unicast, once
            refused.append(target)
            raise ESLError("not connected to FreeSWITCH")
        return real(target, headers, *args, **kwargs)

    monkeypatch.setattr(daemon.esl, "sendmsg", sendmsg)
    peer.send_text(conn, stream_audio(tone(1500, 0.2, 8000), 8000))
    assert wait_until(lambda: refused, 3)
    gevent.sleep(0.2)
    assert daemon.ports.in_use == taps_ports  # nothing kept for the refused write-back
    peer.send_text(conn, stream_audio(tone(1500, 0.4, 8000), 8000))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 6400, 3)  # the retry plays
    assert daemon.ports.in_use == taps_ports + 1
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(lambda: daemon.ports.in_use == 0, 3), daemon.ports.in_use
    esl.api(f"uuid_kill {uuid}")
