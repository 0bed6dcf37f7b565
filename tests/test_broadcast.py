"""Broadcast playback mode, end to end: `uuid_broadcast` per chunk. FreeSWITCH (the simulator, as
the facts file says) stops the unicast stream for good when a broadcast plays; the daemon plays
queued chunks back to back, answers marks when the broadcast before them has ended, clears with
`uuid_break`, and brings the stream back afterwards (re-park + new unicast)."""

from __future__ import annotations

import itertools
import json
import os

import gevent
from conftest import wait_until
from helpers.audio import stream_audio, tone
from helpers.calls import call_with_mode, start

from esl_audio_stream.app import events
from esl_audio_stream.dev.simulator.api import execute


def marks(conn) -> list[dict]:
    return [json.loads(t)["data"] for t in conn.texts if '"mark"' in t]


def playback_events(esl, uuid, name):
    return [e for e in esl.seen if e.name == name and e.uuid == uuid]


def test_broadcast_plays_chunks_in_order_then_the_stream_comes_back(esl, daemon, peer, sim):
    esl.subscribe("PLAYBACK_START", "PLAYBACK_STOP")
    gevent.sleep(0.1)
    uuid = call_with_mode(esl, "broadcast", rate=8000)
    conn = start(daemon, peer, uuid, rate="8k")
    stream = daemon.streams[uuid]
    peer.send_text(conn, stream_audio(tone(500, 0.4, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "a"}}))
    peer.send_text(conn, stream_audio(tone(900, 0.4, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "b"}}))
    assert wait_until(lambda: len(marks(conn)) == 2, 4)
    assert marks(conn) == [{"name": "a", "event": "playout"}, {"name": "b", "event": "playout"}]
    started = [e.get("Playback-File-Path") for e in playback_events(esl, uuid, "PLAYBACK_START")]
    assert [os.path.basename(p) for p in started] == [f"{uuid}_0.r8", f"{uuid}_1.r8"]
    stops = playback_events(esl, uuid, "PLAYBACK_STOP")
    assert [e.get("Playback-Status") for e in stops] == ["done", "done"]
    # the caller was not streamed while it played; then the stream came back, once
    assert wait_until(lambda: stream.restores == 1, 3)
    n = len(conn.binary)
    assert wait_until(lambda: len(conn.binary) >= n + 10, 2)
    gaps = [b - a for a, b in zip(conn.times, conn.times[1:], strict=False)]
    assert max(gaps) >= 0.7  # both chunks (0.8 s) played with the stream stopped
    tail = conn.times[-10:]
    # flowing again (a loaded machine delays a frame by tens of ms; stopped is 0.7 s and more)
    assert max(b - a for a, b in itertools.pairwise(tail)) < 0.3
    played_dir = os.path.dirname(started[0])
    assert not [f for f in os.listdir(played_dir) if f.endswith(".r8")]  # removed once played
    assert sim.channel(uuid).unicast_active
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
    assert not os.path.exists(played_dir)


def test_broadcast_clear_breaks_the_playback_and_restores_the_stream(esl, daemon, peer, sim):
    esl.subscribe("PLAYBACK_STOP", "CUSTOM", events.ERROR)
    gevent.sleep(0.1)
    uuid = call_with_mode(esl, "broadcast", rate=8000)
    conn = start(daemon, peer, uuid, rate="8k")
    stream = daemon.streams[uuid]
    peer.send_text(conn, stream_audio(tone(500, 3.0, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "never"}}))
    peer.send_text(conn, stream_audio(tone(500, 3.0, 8000), 8000))
    assert wait_until(lambda: not sim.channel(uuid).unicast_active, 2)
    gevent.sleep(0.3)
    peer.send_text(conn, json.dumps({"type": "clear"}))
    assert wait_until(lambda: marks(conn) == [{"name": "never", "event": "cleared"}], 2)
    assert wait_until(lambda: stream.restores == 1, 3)
    stops = playback_events(esl, uuid, "PLAYBACK_STOP")
    assert [e.get("Playback-Status") for e in stops] == ["break"]  # the second never started
    n = len(conn.binary)
    assert wait_until(lambda: len(conn.binary) >= n + 10, 2)
    # a stop while a broadcast plays breaks it and leaves the call parked, without unicast
    peer.send_text(conn, stream_audio(tone(500, 3.0, 8000), 8000))
    assert wait_until(lambda: not sim.channel(uuid).unicast_active, 2)
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(lambda: len(playback_events(esl, uuid, "PLAYBACK_STOP")) == 2, 2)
    assert playback_events(esl, uuid, "PLAYBACK_STOP")[-1].get("Playback-Status") == "break"
    assert wait_until(lambda: sim.channel(uuid).mode == "park", 2)
    assert esl.api(f"uuid_exists {uuid}") == "true" and not sim.channel(uuid).unicast_active
    assert not [e for e in esl.seen if e.subclass == events.ERROR
                and e.get(events.STREAM_UUID_HEADER) == uuid]
    esl.api(f"uuid_kill {uuid}")


def test_simulator_uuid_break_answers_as_freeswitch(sim):
    assert execute(sim, "uuid_break", None) == "-USAGE: <uuid> [all]\n"
    assert execute(sim, "uuid_break", "nope all") == "-ERR No Such Channel!\n"


def test_a_refused_broadcast_is_an_error_and_the_queue_goes_on(tmp_path, monkeypatch):
    """No FreeSWITCH needed: the player's broadcast logic with an api that refuses the first
    file, and a watchdog for an end that never comes."""
    from esl_audio_stream.call import broadcast as player_mod
    from esl_audio_stream.call.broadcast import BroadcastPlayer
    from esl_audio_stream.protocols.actions import Mark, Play
    from esl_audio_stream.protocols.mod_audio_stream import ModAudioStream

    monkeypatch.setattr(player_mod, "BROADCAST_GRACE", 0.2)
    calls, fired, texts, restored = [], [], [], []

    def api(cmd: str) -> str:
        calls.append(cmd)
        return "-ERR invalid uuid\n" if len(calls) == 1 else "+OK Message sent\n"

    protocol = ModAudioStream(metadata=None, stream_rate=8000)
    p = BroadcastPlayer(
        "u1", send_mark=lambda name, event: texts.append(protocol.mark_reply(name, event)),
        fire=lambda sub, body: fired.append((sub, body)), channel_rate=8000,
        files_dir=tmp_path, api=api, restore=lambda: restored.append(1))

    def on_text(text: str) -> None:  # what the stream does with the protocol's actions
        action = protocol.on_text(text)
        if isinstance(action, Play):
            p.play(action.chunk, action.announce)
        elif isinstance(action, Mark):
            p.mark(action.name)

    on_text(stream_audio(tone(500, 0.1, 8000), 8000))
    on_text(json.dumps({"type": "mark", "data": {"name": "m"}}))
    on_text(stream_audio(tone(500, 0.1, 8000), 8000))
    # the first is refused (error event), the mark follows it, the second plays and its end
    # never comes: after its length + grace the player goes on and restores the stream
    assert wait_until(lambda: restored == [1], 3)
    assert [c.split()[0] for c in calls] == ["uuid_broadcast", "uuid_broadcast"]
    errors = [json.loads(b)["message"]["error"] for s, b in fired if s == events.ERROR]
    assert "invalid uuid" in errors[0] and "never said it ended" in errors[1]
    assert [json.loads(t)["data"] for t in texts] == [{"name": "m", "event": "playout"}]
    assert not list((tmp_path / "u1").glob("*.r8"))
    p.close()
    assert not (tmp_path / "u1").exists()
