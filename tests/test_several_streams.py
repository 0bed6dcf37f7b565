"""Several streams on one call, end to end: real `websockets` endpoints, the simulator, both
APIs. Each endpoint gets exactly its own audio (its mix, rate and protocol), FreeSWITCH is asked
for the call's audio once (one unicast, one recording), one stream's playback is heard in
another's right side, stopping one leaves the others as they were, the hang-up ends them all
and leaves nothing."""

from __future__ import annotations

import base64
import json
import time

import gevent
import pytest
from conftest import wait_until
from helpers.audio import phase_steps, stream_audio, tone
from helpers.bridged import amp, bridged_call, split
from helpers.forkpeer import ForkPeer
from helpers.twilio import check_connected, check_media, check_start, parse

from esl_audio_stream.app import events, fork_commands, intake
from esl_audio_stream.dev.analysis import dominant_frequency
from esl_audio_stream.dev.simulator import recording as simrec
from esl_audio_stream.media.pcm import audioop
from esl_audio_stream.ops import status
from esl_audio_stream.protocols import audio_fork as af

OK = "+OK Success\n"


@pytest.fixture
def fpeer():
    p = ForkPeer().start()
    try:
        yield p
    finally:
        p.stop()


def watch(sim, monkeypatch) -> dict[str, list[str]]:
    """What the daemon asks the simulator for: unicast sendmsgs (by call), api commands."""
    asked: dict[str, list[str]] = {"unicast": [], "api": []}
    sendmsg, api = sim.sendmsg, sim.api

    def on_sendmsg(uuid, pkt):
        if (pkt.get("call-command") or "") == "unicast":
            asked["unicast"].append(uuid)
        return sendmsg(uuid, pkt)

    def on_api(name, arg):
        asked["api"].append(f"{name} {arg or ''}".strip())
        return api(name, arg)

    monkeypatch.setattr(sim, "sendmsg", on_sendmsg)
    monkeypatch.setattr(sim, "api", on_api)
    return asked


def parked(esl, ext: str = "1000", rate: int = 8000) -> str:
    answer = esl.api(f"originate {{channel_rate={rate}}}loopback/{ext}/default &park()")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def named(esl, uuid: str, subclass: str) -> list[str]:
    """The Stream-Name of each `subclass` event of the call ("" where it carries none)."""
    return [e.get(events.STREAM_NAME_HEADER) or "" for e in esl.seen
            if e.subclass == subclass and e.get(events.STREAM_UUID_HEADER) == uuid]


def twilio_media(conn, uuid: str, account_sid: str) -> list:
    """Every media message of a stereo Twilio stream, each checked as Twilio sends them."""
    texts = [m for m in conn.messages if isinstance(m, str)]
    check_connected(texts[0])
    sid = check_start(texts[1], call_sid=uuid, tracks=["inbound", "outbound"], custom={},
                      account_sid=account_sid)
    return [check_media(t, sid) for t in texts[2:] if parse(t)["event"] == "media"]


def track(media: list, name: str) -> bytes:
    return b"".join(m.pcm for m in media if m.track == name)


def counts(a, b, c) -> tuple[int, int, int]:
    """Frames each endpoint got: A's 20 ms binary frames, B's inbound media, C's frames."""
    b_in = sum(1 for t in b.messages if isinstance(t, str) and '"track":"inbound"' in t)
    return len(a.binary), b_in, len(c.binary)


def test_three_streams_on_a_parked_call_share_its_one_unicast(esl, daemon, sim, peer, fpeer,
                                                               monkeypatch):
    esl.subscribe("CUSTOM", *events.SUBCLASSES, *af.SUBCLASSES, intake.REPLY_SUBCLASS)
    gevent.sleep(0.1)
    asked = watch(sim, monkeypatch)
    uuid = parked(esl, "1000")  # the caller: a 440 Hz tone
    # A: mono 8k, mod_audio_stream; B: stereo, Twilio Media Streams (8 kHz µ-law, its only
    # rate); C: mono 16k, uuid_audio_fork (bugname c). STREAM_PROTOCOL is read at each start.
    assert daemon.execute(f"{uuid}@a start {peer.url('/a')} mono 8k") == OK
    a = peer.wait_connection(1)
    esl.api(f"uuid_setvar {uuid} STREAM_PROTOCOL twilio")
    assert daemon.execute(f"{uuid}@b start {peer.url('/b')} stereo 8k") == OK
    b = peer.wait_connection(2)
    esl.api(f"uuid_setvar {uuid} STREAM_PROTOCOL")
    assert daemon.execute(f'{uuid} start {fpeer.url("/c")} mono 16k c {{"who":"c"}} true true '
                          "16000", fork_commands.API) == fork_commands.OK  # it may play too
    c = fpeer.wait_connection(1)
    assert (a.path, b.path, c.path) == ("/a", "/b", "/c")
    assert wait_until(lambda: min(counts(a, b, c)) > 25, 5)
    # FreeSWITCH streams the call once, to one port, for all three
    assert asked["unicast"] == [uuid] and daemon.ports.in_use == 1
    assert sim.channel(uuid).unicast is not None and not sim.channel(uuid).leaked
    assert [s.name for s in daemon.streams.of(uuid)] == ["a", "b", "c"]
    # each endpoint its own audio: its shape, its rate, the caller's tone
    assert all(isinstance(m, bytes) and len(m) == 320 for m in a.messages)  # L16 8k, 20 ms
    assert abs(dominant_frequency(a.audio, 8000) - 440) <= 5
    assert c.messages[0] == '{"who":"c"}'  # mod_audio_fork's metadata, then L16 16k, 20 ms
    assert all(isinstance(m, bytes) and len(m) == 640 for m in c.messages[1:])
    assert abs(dominant_frequency(c.audio, 16000) - 440) <= 5
    assert all(isinstance(m, str) for m in b.messages)  # Twilio: JSON text frames only
    sid = daemon.config.twilio_account_sid
    media = twilio_media(b, uuid, sid)
    assert abs(dominant_frequency(track(media, "inbound"), 8000) - 440) <= 5
    # none got a frame twice, none lost one, none got silence that never was: the caller's
    # tone runs on from frame to frame without a jump in its phase. (Counting frames against
    # what FreeSWITCH sent in a window cannot tell: on a loaded machine hundreds of ms of
    # frames are in flight at either end of it.)
    before, sent = counts(a, b, c), sim.channel(uuid).frames_sent
    gevent.sleep(1.0)
    grown = [n - m for n, m in zip(counts(a, b, c), before, strict=True)]
    sent = sim.channel(uuid).frames_sent - sent
    assert sent > 30 and min(grown) > 30, (grown, sent)
    inbound = [m.pcm for m in twilio_media(b, uuid, sid) if m.track == "inbound"]
    for i, (pcm, rate) in enumerate(((b"".join(a.binary[before[0]:]), 8000),
                      (b"".join(inbound[before[1]:]), 8000),
                      (b"".join(c.binary[before[2]:]), 16000))):
        steps = phase_steps(pcm, rate, 440)
        assert len(steps) > 30 and all(abs(x - 0.8) < 0.05 for x in steps), (
            i, [round(x, 2) for x in steps], audioop.rms(pcm, 2), grown, sent)
    # A's endpoint plays into the call: heard by the caller, and in B's outbound track
    peer.send_text(a, stream_audio(tone(1000, 1.0, 8000), 8000))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 16000, 4)
    gevent.sleep(0.3)
    played = track(twilio_media(b, uuid, sid), "outbound")
    assert amp(played, 1000) > 1000 and abs(dominant_frequency(played, 8000) - 1000) <= 10
    # the others' endpoints may not play meanwhile: B is told once (its events are named),
    # C's audio (bidirectional L16) is not heard
    law = base64.b64encode(audioop.lin2ulaw(tone(600, 0.1, 8000), 2)).decode()
    b_sid = parse(b.texts[1])["streamSid"]
    media = json.dumps({"event": "media", "streamSid": b_sid, "media": {"payload": law}})
    for _ in range(3):
        peer.send_text(b, media)
        fpeer.send_binary(c, tone(600, 0.2, 16000))
    assert wait_until(lambda: named(esl, uuid, events.ERROR), 3)
    gevent.sleep(0.3)
    refused = [e for e in esl.seen if e.subclass == events.ERROR
               and e.get(events.STREAM_UUID_HEADER) == uuid]
    assert len(refused) == 1 and refused[0].get(events.STREAM_NAME_HEADER) == "b"
    assert "the call's playback belongs to its stream a" in refused[0].body.decode()
    assert amp(bytes(sim.channel(uuid).written), 600) < 300
    # every event names its stream
    assert wait_until(lambda: len(named(esl, uuid, events.CONNECT)) == 2, 3)
    assert sorted(named(esl, uuid, events.CONNECT)) == ["a", "b"]
    assert named(esl, uuid, af.CONNECT) == ["c"]
    # stopping B leaves A and C as they were: same unicast, nothing asked of FreeSWITCH
    n_api = len(asked["api"])
    assert daemon.execute(f"{uuid}@b stop") == OK
    assert wait_until(b.closed.is_set, 3) and b.close_code == 1000
    before = counts(a, b, c)
    gevent.sleep(0.5)
    after = counts(a, b, c)
    assert after[0] > before[0] + 15 and after[2] > before[2] + 15
    assert not a.closed.is_set() and not c.closed.is_set()
    assert asked["unicast"] == [uuid] and daemon.ports.in_use == 1
    assert not any("uuid_transfer" in cmd for cmd in asked["api"][n_api:])  # no re-park
    assert [s.name for s in daemon.streams.of(uuid)] == ["a", "c"]
    assert daemon.execute(f"{uuid}@b stop") == f"-ERR no audio stream b on {uuid}\n"
    # the hang-up ends them all and leaves nothing
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: a.closed.is_set() and c.closed.is_set(), 3)
    assert wait_until(lambda: not daemon.streams and not daemon.streams.audio, 3)
    assert daemon.ports.in_use == 0 and len(daemon.calls) == 0
    assert wait_until(lambda: uuid not in daemon.fork.bugs, 3)
    assert not daemon.calls.tap_owners


def test_a_stereo_stream_joining_a_mono_recorded_call_gets_one_richer_recording(
        esl, daemon, sim, peer, monkeypatch):
    """A bridged call is recorded for its mono stream; a stereo stream that joins has the
    recording made again in stereo, which replaces the mono one once it delivers: the mono
    stream goes on from its left side, FreeSWITCH records the call twice only meanwhile."""
    uuid = bridged_call(esl)  # the caller says 440 Hz, the other party 1000 Hz
    asked: list[tuple[str, int, int]] = []  # (start|stop, recordings after, bytes delivered)
    start_rec, stop_rec = simrec.start, simrec.stop

    def on_start(sw, ch, path, var_block):
        ok = start_rec(sw, ch, path, var_block)
        asked.append(("start", len(ch.recordings), 0))
        return ok

    def on_stop(sw, ch, path):
        others = [r.written for p, r in ch.recordings.items() if p != path]
        ok = stop_rec(sw, ch, path)
        asked.append(("stop", len(ch.recordings), min(others, default=0)))
        return ok

    monkeypatch.setattr(simrec, "start", on_start)
    monkeypatch.setattr(simrec, "stop", on_stop)
    assert daemon.execute(f"{uuid}@mono start {peer.url('/m')} mono 8k") == OK
    m = peer.wait_connection(1)
    assert wait_until(lambda: len(m.binary) > 20, 5)
    first = next(iter(sim.channel(uuid).recordings.values()))
    assert first.channels == 1
    assert daemon.execute(f"{uuid}@rec start {peer.url('/s')} stereo 16k") == OK
    s = peer.wait_connection(2)
    assert wait_until(lambda: len(s.binary) > 25, 5)
    recs = sim.channel(uuid).recordings
    assert len(recs) == 1 and next(iter(recs.values())).channels == 2
    mark = len(m.binary)
    gevent.sleep(0.5)
    # one recording at a time, but for the hand-over: the stereo one has delivered before the
    # mono one is stopped, so the mono stream has no gap
    assert [(what, n) for what, n, _ in asked] == [("start", 1), ("start", 2), ("stop", 1)]
    assert asked[2][2] > 0, asked
    assert daemon.streams.audio[uuid].remade == 1
    left, right = split(b"".join(s.binary[-20:]))
    assert amp(left, 440, 16000) == pytest.approx(8000, rel=0.1) and amp(left, 1000, 16000) < 200
    assert amp(right, 1000, 16000) == pytest.approx(8000, rel=0.1)
    mono = b"".join(m.binary[mark:])
    assert len(m.binary) - mark > 20 and all(len(x) == 320 for x in m.binary)
    assert amp(mono, 440) == pytest.approx(8000, rel=0.1) and amp(mono, 1000) < 200
    # the status reads each stream by its name; the stereo one leaving keeps the recording
    rows = status.rows(daemon.streams.all(), time.monotonic(), level=True, seen={})
    assert {(r["uuid"], r["name"], r["mix"]) for r in rows} == {(uuid, "mono", "mono"),
                                                              (uuid, "rec", "stereo")}
    assert all(r["level_db"] > -30 for r in rows)  # each its own meter
    table = status.format_table(rows)
    assert f"{uuid}@mono " in table and f"{uuid}@rec " in table  # `status`: a line each
    assert daemon.execute(f"{uuid}@rec stop") == OK
    mark = len(m.binary)
    assert wait_until(lambda: len(m.binary) > mark + 15, 3)
    assert len(sim.channel(uuid).recordings) == 1
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(m.closed.is_set, 3)
    assert wait_until(lambda: not daemon.streams and not sim.channel(uuid).recordings, 3)


def keys(conn) -> list[str]:
    return [json.loads(m)["data"]["digit"] for m in conn.texts if m.startswith('{"type":"dtmf"')]


def test_keys_go_to_each_stream_once_and_pause_is_each_streams_own(esl, daemon, sim, peer):
    """Each press reaches every stream of the call once; one stream paused sends nothing while
    the other goes on from the same recording, which stops only when both are paused."""
    esl.subscribe("DTMF")
    uuid = bridged_call(esl, extra=",STREAM_SEND_DTMF=true")  # recorded: auto
    assert daemon.execute(f"{uuid}@x start {peer.url('/x')} mono 8k") == OK
    assert daemon.execute(f"{uuid}@y start {peer.url('/y')} mono 16k") == OK
    x, y = peer.wait_connection(1), peer.wait_connection(2)
    assert wait_until(lambda: len(x.binary) > 5 and len(y.binary) > 5, 5)
    assert esl.api(f"uuid_recv_dtmf {uuid} 42").startswith("+OK")
    assert wait_until(lambda: len(keys(x)) == 2 and len(keys(y)) == 2, 3)
    gevent.sleep(0.2)
    assert keys(x) == keys(y) == ["4", "2"]  # once each, in order
    recs = sim.channel(uuid).recordings
    assert daemon.execute(f"{uuid}@x pause") == OK
    n_x, n_y = len(x.binary), len(y.binary)
    gevent.sleep(0.4)
    assert len(x.binary) <= n_x + 1 and len(y.binary) > n_y + 15  # y goes on
    assert len(recs) == 1  # the call's recording too
    assert daemon.execute(f"{uuid}@y pause") == OK
    assert wait_until(lambda: not recs, 3)  # every stream paused: the recording stops
    assert daemon.execute(f"{uuid}@x resume") == OK
    assert len(recs) == 1  # made again for x
    n_x, n_y = len(x.binary), len(y.binary)
    assert wait_until(lambda: len(x.binary) > n_x + 15, 3)
    assert len(y.binary) <= n_y + 1  # y is still paused
    assert amp(b"".join(x.binary[-10:]), 440) == pytest.approx(8000, rel=0.1)
    assert daemon.execute(f"{uuid}@y resume") == OK
    assert wait_until(lambda: len(y.binary) > n_y + 15, 3) and len(recs) == 1
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams and not recs, 3)


def test_taps_are_made_again_for_a_stereo_stream_and_for_a_tap_killed(esl, daemon, sim, peer):
    """A call tapped for a mono stream gets both taps when a stereo stream joins (the read tap
    alone goes); a tap killed by someone is made again for both streams."""
    uuid = bridged_call(esl, extra=",STREAM_SOURCE=taps")
    assert daemon.execute(f"{uuid}@m start {peer.url('/m')} mono 8k") == OK
    m = peer.wait_connection(1)
    assert wait_until(lambda: len(m.binary) > 10, 5)
    assert len(daemon.calls.tap_owners) == 1
    assert daemon.execute(f"{uuid}@s start {peer.url('/s')} stereo 8k") == OK
    s = peer.wait_connection(2)
    assert wait_until(lambda: len(s.binary) > 10, 5)
    audio = daemon.streams.audio[uuid]
    assert audio.remade == 1 and len(daemon.calls.tap_owners) == 2
    assert set(daemon.calls.tap_owners.values()) == {audio}
    assert wait_until(lambda: len(sim.channel(uuid).taps) == 2, 3)  # the old read tap went
    left, right = split(b"".join(s.binary[-10:]))
    assert amp(left, 440) == pytest.approx(8000, rel=0.1)
    assert amp(right, 1000) == pytest.approx(8000, rel=0.1)
    tap = next(iter(daemon.calls.tap_owners))
    esl.api(f"uuid_kill {tap}")
    assert wait_until(lambda: audio.source.reopens == 1, 5)
    n_m, n_s = len(m.binary), len(s.binary)
    assert wait_until(lambda: len(m.binary) > n_m + 15 and len(s.binary) > n_s + 15, 5)
    assert amp(b"".join(m.binary[-10:]), 440) == pytest.approx(8000, rel=0.1)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams and not daemon.calls.tap_owners, 3)
    assert wait_until(lambda: int(esl.api("show channels count").split()[0]) == 0, 3)
