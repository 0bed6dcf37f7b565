"""Audio back into the call (inject mode), end to end: a `websockets` endpoint sends streamAudio,
the daemon plays it through FreeSWITCH's unicast write-back port (the simulator records what
was written into the call; its `echo` extension plays it back into the outgoing stream)."""

from __future__ import annotations

import json
import os
import stat
from array import array

import gevent
import pytest
from conftest import wait_until
from helpers.audio import stream_audio, tone
from helpers.calls import call_with_mode, originate, start

from esl_audio_stream.app import events
from esl_audio_stream.dev.analysis import dominant_frequency

#: Each test that uses the daemon runs on the native pump and on the Python path (conftest).
pytestmark = pytest.mark.both_paths


def subscribe(esl) -> None:
    esl.subscribe("CUSTOM", events.PLAY, events.ERROR)
    gevent.sleep(0.1)


def of(esl, uuid, subclass):
    return [json.loads(e.body) for e in esl.seen if e.subclass == subclass
            and e.get(events.STREAM_UUID_HEADER) == uuid]




def test_played_audio_comes_back_in_the_stream_without_a_gap(esl, daemon, peer, sim):
    subscribe(esl)
    uuid = originate(esl, ext="2000", rate=16000)  # echo: what is written comes back
    conn = start(daemon, peer, uuid)
    before = len(conn.binary)
    sent_before = sim.channel(uuid).frames_sent
    peer.send_text(conn, stream_audio(tone(1000, 1.0, 16000), 16000, extra_field="kept"))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 32000, 3)
    gevent.sleep(0.3)
    heard = b"".join(conn.binary[before:])
    assert abs(dominant_frequency(heard, 16000) - 1000) <= 5
    # the stream never stopped while it played: every frame FreeSWITCH sent meanwhile reached
    # the endpoint, one message each (counted, not timed: a loaded machine delays, not drops)
    sent = sim.channel(uuid).frames_sent - sent_before
    assert sent >= 60 and wait_until(lambda: len(conn.binary) - before >= sent - 2, 2)
    play = of(esl, uuid, events.PLAY)
    assert len(play) == 1 and play[0]["extra_field"] == "kept" and "audioData" not in play[0]
    assert play[0]["audioDataType"] == "raw" and play[0]["file"].endswith(f"{uuid}_0.r16")
    esl.api(f"uuid_kill {uuid}")


def test_chunks_play_in_order_gapless_with_marks(esl, daemon, peer, sim):
    uuid = originate(esl, ext="3000", rate=8000)
    conn = start(daemon, peer, uuid, rate="8k")
    peer.send_text(conn, stream_audio(tone(500, 0.4, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "first"}}))
    peer.send_text(conn, stream_audio(tone(1500, 0.4, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "second"}}))
    assert wait_until(lambda: len([t for t in conn.texts if "playout" in t]) == 2, 3)
    marks = [json.loads(t)["data"] for t in conn.texts if '"mark"' in t]
    assert marks == [{"name": "first", "event": "playout"}, {"name": "second", "event": "playout"}]
    # the mark goes when the last frame is sent; FreeSWITCH takes it in on its next tick
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 2 * 6400, 2)
    gevent.sleep(0.1)
    written = bytes(sim.channel(uuid).written)
    assert len(written) == 2 * 6400  # 0.8 s at 8 kHz, not a byte more (no padding between)
    assert abs(dominant_frequency(written[:6400], 8000) - 500) <= 5
    assert abs(dominant_frequency(written[6400:], 8000) - 1500) <= 5
    esl.api(f"uuid_kill {uuid}")


def test_clear_mid_chunk_drops_the_rest_and_clears_marks(esl, daemon, peer, sim):
    uuid = originate(esl, ext="3000", rate=8000)
    conn = start(daemon, peer, uuid, rate="8k")
    peer.send_text(conn, stream_audio(tone(700, 3.0, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "end"}}))
    gevent.sleep(0.5)
    peer.send_text(conn, json.dumps({"type": "clear"}))
    assert wait_until(lambda: any("cleared" in t for t in conn.texts), 2)
    played = len(sim.channel(uuid).written)
    gevent.sleep(0.3)
    assert len(sim.channel(uuid).written) == played  # nothing after the clear
    assert 0.3 * 16000 <= played <= 0.8 * 16000
    assert json.loads(conn.texts[-1])["data"] == {"name": "end", "event": "cleared"}
    # killAudio is the same barge-in
    peer.send_text(conn, stream_audio(tone(700, 3.0, 8000), 8000))
    gevent.sleep(0.3)
    peer.send_text(conn, json.dumps({"type": "killAudio"}))
    gevent.sleep(0.2)
    n = len(sim.channel(uuid).written)
    gevent.sleep(0.3)
    assert len(sim.channel(uuid).written) == n
    esl.api(f"uuid_kill {uuid}")


@pytest.mark.parametrize("kind", ["raw", "wav", "ogg", "mp3", "pcmu"])
@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100])
def test_each_audio_type_and_rate_plays_at_the_right_pitch(esl, daemon, peer, sim, kind, rate):
    if kind == "pcmu" and rate != 8000:
        pytest.skip("G.711 is 8 kHz")
    subscribe(esl)
    uuid = originate(esl, ext="3000", rate=16000)
    conn = start(daemon, peer, uuid)
    peer.send_text(conn, stream_audio(tone(800, 0.6, rate), rate, kind))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 16000, 4), of(esl, uuid,
                                                                              events.ERROR)
    gevent.sleep(0.2)
    written = bytes(sim.channel(uuid).written)
    assert abs(dominant_frequency(written[1600:], 16000) - 800) <= 5
    assert abs(len(written) / 32000 - 0.6) < 0.1  # the right speed: 0.6 s of audio
    play = of(esl, uuid, events.PLAY)
    assert play and play[0]["audioDataType"] == kind and os.path.exists(play[0]["file"])
    esl.api(f"uuid_kill {uuid}")


def test_binary_messages_play_too(esl, daemon, peer, sim):
    uuid = originate(esl, ext="3000", rate=8000)
    conn = start(daemon, peer, uuid)  # stream at 16k: binary audio is L16 at the stream's rate
    pcm = tone(600, 0.5, 16000)
    for i in range(0, len(pcm), 3200):
        peer.send_binary(conn, pcm[i:i + 3200])
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 7000, 3)
    gevent.sleep(0.2)
    written = bytes(sim.channel(uuid).written)
    assert abs(len(written) - 8000) <= 320  # 0.5 s at the channel's 8 kHz
    assert abs(dominant_frequency(written, 8000) - 600) <= 5
    esl.api(f"uuid_kill {uuid}")


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":8000,'
         '"audioData":"not base64!!"}}', "base64"),
        ('{"type":"streamAudio","data":{"audioDataType":"flac","sampleRate":8000,'
         '"audioData":"AAAA"}}', "audio type"),
        ('{"type":"streamAudio","data":{"audioDataType":"raw","audioData":"AAAA"}}', "sampleRate"),
        ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":5,'
         '"audioData":"AAAA"}}', "sample rate"),
        ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":8000,'
         '"audioData":"AAAA"}}', "odd"),
        ('{"type":"streamAudio","data":{"audioDataType":"wav","sampleRate":8000,'
         '"audioData":"UklGRiQAAABXQVZF"}}', "wav"),
    ],
)
def test_bad_audio_is_an_error_event_and_harms_nothing(esl, daemon, peer, sim, message, needle):
    subscribe(esl)
    uuid = originate(esl, ext="3000")
    conn = start(daemon, peer, uuid)
    peer.send_text(conn, message)
    assert wait_until(lambda: of(esl, uuid, events.ERROR), 2)
    err = of(esl, uuid, events.ERROR)[0]["message"]
    assert needle.lower() in err["error"].lower(), err
    assert not sim.channel(uuid).written and not of(esl, uuid, events.PLAY)
    n = len(conn.binary)
    gevent.sleep(0.2)
    assert len(conn.binary) > n and uuid in daemon.streams  # the stream goes on
    esl.api(f"uuid_kill {uuid}")


def test_files_are_private_and_gone_after_hangup(esl, daemon, peer, sim):
    subscribe(esl)
    uuid = originate(esl, ext="3000")
    conn = start(daemon, peer, uuid)
    for _ in range(3):
        peer.send_text(conn, stream_audio(tone(400, 0.1, 8000), 8000))
    assert wait_until(lambda: len(of(esl, uuid, events.PLAY)) == 3, 3)
    paths = [p["file"] for p in of(esl, uuid, events.PLAY)]
    assert [os.path.basename(p) for p in paths] == [f"{uuid}_{n}.r8" for n in range(3)]
    folder = os.path.dirname(paths[0])
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in paths)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not os.path.exists(folder), 5)
    assert wait_until(lambda: not daemon.streams, 3)


@pytest.mark.parametrize("source", ["direct", "taps"])
def test_stereo_carries_what_the_call_hears_on_the_right(esl, daemon, peer, sim, source):
    """direct: the daemon pairs the caller's frames with what it plays (FrameClock); taps: a
    write tap carries what FreeSWITCH wrote (the write-back audio), aligned with the read tap."""
    uuid = call_with_mode(esl, "inject", ext="1000", rate=8000, source=source)  # caller: 440 Hz
    conn = start(daemon, peer, uuid, mix="stereo", rate="8k")
    assert daemon.streams[uuid].source == source
    before = len(conn.binary)
    peer.send_text(conn, stream_audio(tone(1000, 1.0, 8000), 8000))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 16000, 3)
    pcm = array("h", b"".join(conn.binary[before:]))
    left, right = pcm[0::2].tobytes(), pcm[1::2].tobytes()
    assert abs(dominant_frequency(left, 8000) - 440) <= 5
    assert abs(dominant_frequency(right, 8000) - 1000) <= 5
    # the right channel is exactly what was written into the call, frame for frame
    assert bytes(sim.channel(uuid).written)[:3200] in right
    esl.api(f"uuid_kill {uuid}")


def test_a_flood_is_bounded_keeping_the_oldest(esl, daemon, peer, sim):
    subscribe(esl)
    uuid = originate(esl, ext="3000", rate=8000)
    conn = start(daemon, peer, uuid, rate="8k")
    ten_seconds = stream_audio(bytes(160000), 8000)  # 10 s of silence per chunk; the bound is 60 s
    for _ in range(8):
        peer.send_text(conn, ten_seconds)
    assert wait_until(lambda: len(of(esl, uuid, events.PLAY)) == 8, 5)
    assert wait_until(lambda: len(of(esl, uuid, events.ERROR)) >= 2, 3)
    errors = [e["message"]["error"] for e in of(esl, uuid, events.ERROR)]
    assert all("playback queue full" in e for e in errors)
    player = daemon.streams[uuid].player
    assert player.queue.dropped_chunks == 2 and player.chunks == 6
    assert player.queue.queued_bytes <= 60 * 16000
    esl.api(f"uuid_kill {uuid}")


def test_displace_mode_plays_through_uuid_displace_and_the_stream_flows(esl, daemon, peer, sim):
    subscribe(esl)
    uuid = call_with_mode(esl, "displace", ext="2000")  # echo: what the caller hears comes back
    conn = start(daemon, peer, uuid)
    before = len(conn.binary)
    peer.send_text(conn, stream_audio(tone(1000, 0.6, 16000), 16000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "m"}}))
    assert wait_until(lambda: any("playout" in t for t in conn.texts), 3)
    assert wait_until(lambda: len(sim.channel(uuid).displaced) >= 0.5 * 32000, 3)
    gevent.sleep(0.3)
    ch = sim.channel(uuid)
    assert not ch.written  # never the write-back port: one mechanism per call
    assert abs(dominant_frequency(bytes(ch.displaced), 16000) - 1000) <= 5
    heard = b"".join(conn.binary[before:])
    assert abs(dominant_frequency(heard, 16000) - 1000) <= 5  # displaced audio came back
    gaps = [b - a for a, b in zip(conn.times[before:], conn.times[before + 1:], strict=False)]
    # the outgoing stream never stopped for what played (0.6 s); a loaded machine delays a
    # frame by tens of ms
    assert max(gaps) < 0.3
    # clear stops the displace at once
    peer.send_text(conn, stream_audio(tone(1000, 3.0, 16000), 16000))
    gevent.sleep(0.4)
    peer.send_text(conn, json.dumps({"type": "clear"}))
    gevent.sleep(0.2)
    n = len(ch.displaced)
    gevent.sleep(0.3)
    assert len(ch.displaced) == n and not ch.displace
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
    assert not ch.wedged




def test_simulator_wedges_a_call_that_uses_both_injection_paths(esl, sim, tmp_path):
    """The facts file's warning, reproduced: displace + write-back on one call -> unkillable."""
    import socket

    uuid = originate(esl, ext="3000", rate=8000)
    path = tmp_path / "x.r8"
    path.write_bytes(tone(500, 2.0, 8000))
    assert esl.api(f"uuid_displace {uuid} start {path} 0 mux") == "+OK Success\n"
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:  # a port nobody holds now
        free.bind(("127.0.0.1", 0))
        fs_port = free.getsockname()[1]
    esl.sendmsg(uuid, {"call-command": "unicast", "local-ip": "127.0.0.1",
                       "local-port": str(fs_port), "remote-ip": "127.0.0.1",
                       "remote-port": str(rx.getsockname()[1])})
    assert wait_until(lambda: sim.channel(uuid).unicast_active, 2)
    rx.sendto(bytes(320), ("127.0.0.1", fs_port))
    assert wait_until(lambda: sim.channel(uuid).wedged, 2)
    assert esl.api(f"uuid_kill {uuid}") == "+OK\n"
    gevent.sleep(0.3)
    assert esl.api(f"uuid_exists {uuid}") == "false"
    assert "2 total" in esl.api("show channels count")  # both legs stuck
    rx.close()


def test_displace_mode_keeps_queue_order_and_marks(esl, daemon, peer, sim):
    uuid = call_with_mode(esl, "displace", rate=8000)
    conn = start(daemon, peer, uuid, rate="8k")
    peer.send_text(conn, stream_audio(tone(500, 0.4, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "first"}}))
    peer.send_text(conn, stream_audio(tone(1500, 0.4, 16000), 16000))  # another rate too
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "second"}}))
    assert wait_until(lambda: len([t for t in conn.texts if "playout" in t]) == 2, 3)
    marks = [json.loads(t)["data"]["name"] for t in conn.texts if '"mark"' in t]
    assert marks == ["first", "second"]
    assert wait_until(lambda: len(sim.channel(uuid).displaced) >= 2 * 6400, 2)
    shown = bytes(sim.channel(uuid).displaced)
    assert abs(dominant_frequency(shown[:6000], 8000) - 500) <= 5
    assert abs(dominant_frequency(shown[6800:12800], 8000) - 1500) <= 5
    assert not sim.channel(uuid).written
    esl.api(f"uuid_kill {uuid}")
