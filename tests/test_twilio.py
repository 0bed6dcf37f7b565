"""STREAM_PROTOCOL=twilio end to end: the simulator, the daemon, and a real `websockets` peer
that checks every message Twilio-style (tests/helpers/twilio.py: every field and its type,
the order, the numbering). What is played is checked by what the call got (the simulator keeps
what was written into it) and by the stream itself (the outbound track, the echo extension)."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace

import gevent
import pytest
from conftest import wait_until
from helpers.audio import tone
from helpers.procs import DaemonProcess
from helpers.twilio import (
    check_connected,
    check_dtmf,
    check_mark,
    check_numbering,
    check_sequence,
    check_start,
    check_stop,
    clear_message,
    event_of,
    mark_message,
    media_message,
    media_of,
)
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.app.config import ConfigError, load_config
from esl_audio_stream.app.config_table import TWILIO_ACCOUNT_SID
from esl_audio_stream.dev.analysis import dominant_frequency, tone_amplitude
from esl_audio_stream.dev.simulator import Simulator
from esl_audio_stream.esl.connection import ESLConnection
from esl_audio_stream.service import build_daemon


def twilio_call(esl, ext: str = "1000", rate: int = 8000, extra: str = "") -> str:
    answer = esl.api(f"originate {{channel_rate={rate},STREAM_PROTOCOL=twilio{extra}}}"
                     f"loopback/{ext}/default &park()")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def start(daemon, peer, uuid: str, mix: str = "mono", metadata: str = "", path: str = "/t"):
    n = len(peer.connections)
    line = f"{uuid} start {peer.url(path)} {mix} 8k" + (f" {metadata}" if metadata else "")
    assert daemon.execute(line) == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.messages) >= 5)
    sid = check_start(conn.messages[1], call_sid=uuid, custom=_custom(metadata),
                      tracks=["inbound", "outbound"] if mix == "stereo" else ["inbound"],
                      account_sid=TWILIO_ACCOUNT_SID)
    return conn, sid


def _custom(metadata: str) -> dict:
    return json.loads(metadata) if metadata.startswith("{") else (
        {"metadata": metadata} if metadata else {})


def outbound_pcm(messages: list, sid: str) -> bytes:
    return b"".join(m.pcm for m in media_of(messages, sid) if m.track == "outbound")


def test_a_twilio_stream_is_what_twilio_sends(esl, daemon, peer, sim):
    esl.subscribe("CUSTOM", events.CONNECT, events.DISCONNECT)
    uuid = twilio_call(esl)  # the caller: 440 Hz
    conn, sid = start(daemon, peer, uuid, metadata='{"caller":"alice","lang":"fr"}')
    assert wait_until(lambda: len(conn.messages) >= 60, 5)
    assert all(isinstance(m, str) for m in conn.messages)  # text frames only
    check_connected(conn.messages[0])
    medias = media_of(conn.messages[2:], sid)
    assert [event_of(m) for m in conn.messages[2:len(medias) + 2]] == ["media"] * len(medias)
    check_numbering(medias, ["inbound"])
    check_sequence(conn.messages)
    assert medias[0].seq == 2 and 0 <= medias[0].timestamp < 2000
    assert abs(dominant_frequency(b"".join(m.pcm for m in medias), 8000) - 440) <= 5  # µ-law
    esl.api(f"uuid_kill {uuid}")  # a hang-up: stop, then close 1000
    assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
    check_stop(conn.messages[-1], sid, uuid, TWILIO_ACCOUNT_SID)
    check_sequence(conn.messages)
    check_numbering(media_of(conn.messages, sid), ["inbound"])  # to the end
    subclasses = [e.subclass for e in esl.seen if e.get(events.STREAM_UUID_HEADER) == uuid]
    assert wait_until(lambda: events.DISCONNECT in [e.subclass for e in esl.seen], 3)
    assert events.CONNECT in subclasses  # the same events to FreeSWITCH subscribers


def test_twilio_start_refuses_any_rate_but_8k(esl, daemon, peer):
    uuid = twilio_call(esl)
    answer = daemon.execute(f"{uuid} start {peer.url()} mono 16k")
    assert answer.startswith("-ERR STREAM_PROTOCOL=twilio streams µ-law at 8000 Hz only")
    assert not peer.connections and not daemon.streams
    stop = daemon.execute(f"{uuid} start {peer.url()} mono 8k stop-text")
    assert stop == "+OK Success\n"
    conn = peer.wait_connection(1)
    assert daemon.execute(f"{uuid} stop bye") == "+OK Success\n"
    assert wait_until(conn.closed.is_set, 5)
    assert conn.messages[-2] == "bye" and event_of(conn.messages[-1]) == "stop"


def test_stereo_outbound_is_what_the_caller_hears_and_a_mark_comes_after_its_audio(
        esl, daemon, peer, sim):
    """The mark is echoed only when its audio has played: counted in frames of the outbound
    track (the very frames the caller heard, slot by slot), not in time."""
    esl.subscribe("CUSTOM", events.JSON)
    uuid = twilio_call(esl, extra=",STREAM_SOURCE=direct")
    conn, sid = start(daemon, peer, uuid, mix="stereo")
    peer.send_text(conn, media_message(sid, tone(1000, 0.4, 8000)))  # 20 frames
    peer.send_text(conn, mark_message(sid, "after-tone"))
    assert wait_until(lambda: any(event_of(m) == "mark" for m in conn.messages), 5)
    at = next(i for i, m in enumerate(conn.messages) if event_of(m) == "mark")
    assert check_mark(conn.messages[at], sid)[1] == "after-tone"
    heard = [m for m in media_of(conn.messages[:at], sid) if m.track == "outbound"
             and tone_amplitude(m.pcm, 1000, 8000) > 1000]
    assert len(heard) >= 19  # all 20 but the slot the mark was answered in
    gevent.sleep(0.2)
    medias = media_of(conn.messages, sid)
    check_numbering(medias, ["inbound", "outbound"])
    check_sequence(conn.messages)
    out = b"".join(m.pcm for m in medias if m.track == "outbound")
    inb = b"".join(m.pcm for m in medias if m.track == "inbound")
    assert abs(dominant_frequency(out, 8000) - 1000) <= 5
    assert abs(dominant_frequency(inb, 8000) - 440) <= 5
    assert len(sim.channel(uuid).written) == 6400  # 0.4 s at 8 kHz: written into the call
    relayed = [json.loads(e.body) for e in esl.seen if e.subclass == events.JSON]
    assert wait_until(lambda: any(r.get("event") == "mark" for r in
                                  [json.loads(e.body) for e in esl.seen
                                   if e.subclass == events.JSON]), 3), relayed
    assert not any(json.loads(e.body).get("event") == "media" for e in esl.seen
                   if e.subclass == events.JSON)  # media is never relayed
    esl.api(f"uuid_kill {uuid}")


def test_clear_empties_the_queue_and_sends_back_every_pending_mark(esl, daemon, peer, sim):
    uuid = twilio_call(esl, ext="3000")
    conn, sid = start(daemon, peer, uuid)
    peer.send_text(conn, media_message(sid, tone(700, 3.0, 8000)))
    peer.send_text(conn, mark_message(sid, "one"))
    peer.send_text(conn, media_message(sid, tone(700, 1.0, 8000)))
    peer.send_text(conn, mark_message(sid, "two"))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 3200, 3)  # playing
    peer.send_text(conn, clear_message(sid))
    assert wait_until(lambda: sum(event_of(m) == "mark" for m in conn.messages) == 2, 3)
    played = len(sim.channel(uuid).written)
    marks = [check_mark(m, sid)[1] for m in conn.messages if event_of(m) == "mark"]
    assert marks == ["one", "two"]
    gevent.sleep(0.3)
    assert len(sim.channel(uuid).written) == played < 3 * 16000  # nothing after the clear
    check_sequence(conn.messages)
    esl.api(f"uuid_kill {uuid}")


def test_a_440_hz_tone_sent_in_comes_back_out_at_440_hz(esl, daemon, peer, sim):
    """µ-law both ways: the bot's media played into an echoing call comes back in the inbound
    track."""
    uuid = twilio_call(esl, ext="2000")  # echo: what is written comes back
    conn, sid = start(daemon, peer, uuid)
    before = len(conn.messages)
    peer.send_text(conn, media_message(sid, tone(440, 1.0, 8000)))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 16000, 3)
    gevent.sleep(0.2)
    assert abs(dominant_frequency(bytes(sim.channel(uuid).written), 8000) - 440) <= 5
    back = b"".join(m.pcm for m in media_of(conn.messages[before:], sid))
    assert abs(dominant_frequency(back, 8000) - 440) <= 5
    assert tone_amplitude(back, 440, 8000) > 4000
    esl.api(f"uuid_kill {uuid}")


def test_keys_pressed_arrive_once_in_order_also_while_paused(esl, daemon, peer, sim):
    uuid = twilio_call(esl)
    conn, sid = start(daemon, peer, uuid)
    assert esl.api(f"uuid_recv_dtmf {uuid} 12") == f"+OK {uuid} received DTMF 12.\n"
    assert wait_until(lambda: sum(event_of(m) == "dtmf" for m in conn.messages) == 2, 3)
    b_leg = esl.api(f"uuid_getvar {uuid} other_loopback_leg_uuid")
    assert esl.api(f"uuid_send_dtmf {b_leg} 3#").startswith(f"+OK {b_leg} sent DTMF 3#.")
    assert wait_until(lambda: sum(event_of(m) == "dtmf" for m in conn.messages) == 4, 3)
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    gevent.sleep(0.1)
    paused_at = len(conn.messages)
    esl.api(f"uuid_recv_dtmf {uuid} *")
    assert wait_until(lambda: sum(event_of(m) == "dtmf" for m in conn.messages) == 5, 3)
    assert all(event_of(m) == "dtmf" for m in conn.messages[paused_at:])  # no media
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    n = len(media_of(conn.messages, sid))
    assert wait_until(lambda: len(media_of(conn.messages, sid)) >= n + 25, 3)  # 25 frames on
    digits = [check_dtmf(m, sid)[1] for m in conn.messages if event_of(m) == "dtmf"]
    assert digits == ["1", "2", "3", "#", "*"]  # once each, in order
    medias = media_of(conn.messages, sid)
    assert [m.chunk for m in medias] == list(range(1, len(medias) + 1))  # on across the pause
    gap = medias[n].timestamp - medias[n - 1].timestamp
    assert gap > 100  # the timestamp is the present again
    check_sequence(conn.messages)
    esl.api(f"uuid_kill {uuid}")


def test_what_is_not_twilio_is_an_error_and_text_is_relayed(esl, daemon, peer):
    esl.subscribe("CUSTOM", events.JSON, events.ERROR)
    gevent.sleep(0.1)
    uuid = twilio_call(esl)
    conn, sid = start(daemon, peer, uuid)
    peer.send_binary(conn, b"\x00" * 320)
    peer.send_text(conn, "not json")
    peer.send_text(conn, json.dumps({"event": "media", "streamSid": sid,
                                     "media": {"payload": "@@@"}}))
    peer.send_text(conn, json.dumps({"event": "transcript", "text": "hi"}))

    def of(subclass):
        return [e.body.decode() for e in esl.seen if e.subclass == subclass
                and e.get(events.STREAM_UUID_HEADER) == uuid]

    assert wait_until(lambda: len(of(events.ERROR)) == 3 and len(of(events.JSON)) == 2, 3)
    errors = [json.loads(b)["message"]["error"] for b in of(events.ERROR)]
    assert "binary" in errors[0] and "JSON" in errors[1] and "base64" in errors[2]
    assert of(events.JSON) == ["not json", json.dumps({"event": "transcript", "text": "hi"})]
    assert daemon.execute(f"{uuid} send_text {{\"a\": 1}}") == "+OK Success\n"
    assert wait_until(lambda: '{"a": 1}' in conn.messages, 3)  # as it is
    assert daemon.streams[uuid].lifecycle.value == "streaming"  # the stream went on
    esl.api(f"uuid_kill {uuid}")


def test_a_reconnection_starts_again_with_connected_and_start(esl, daemon, sim):
    peer = WSPeer().start()
    port = peer.port
    uuid = twilio_call(esl)
    try:
        conn, sid = start(daemon, peer, uuid)
        assert wait_until(lambda: len(media_of(conn.messages, sid)) >= 5)
        peer.kill()  # no close frame: the link reconnects
        gevent.sleep(0.3)  # audio waits in the backlog meanwhile
        peer = WSPeer(port=port).start()
        again = peer.wait_connection(1, timeout=10)
        assert wait_until(lambda: len(again.messages) >= 30, 5)
        check_connected(again.messages[0])
        assert check_start(again.messages[1], call_sid=uuid, tracks=["inbound"], custom={},
                           account_sid=TWILIO_ACCOUNT_SID) == sid
        medias = media_of(again.messages[2:], sid)
        assert all(event_of(m) == "media" for m in again.messages[2:])
        assert len(medias) >= 15  # the backlog (0.3 s), then live
        old = media_of(conn.messages, sid)
        assert medias[0].seq > old[-1].seq and medias[0].chunk > old[-1].chunk
        chunks = [m.chunk for m in medias]
        assert chunks == list(range(chunks[0], chunks[0] + len(chunks)))  # nothing lost
        check_sequence(again.messages)
    finally:
        peer.stop()
        esl.api(f"uuid_kill {uuid}")


@pytest.fixture
def crash_sim():
    sim = Simulator(port=0, extensions={"1000": "tone:440"})
    sim.start()
    yield sim
    sim.stop()


def test_a_carried_on_stream_keeps_its_protocol_and_stream_sid(tmp_path, crash_sim):
    """A daemon killed mid-call: the next process carries the stream on in Twilio's terms."""
    esl = ESLConnection(*crash_sim.address, "ClueCon")
    esl.start()
    assert esl.wait_connected(5)
    daemon = DaemonProcess(tmp_path, crash_sim.address, owner=f"tw-{tmp_path.name[-10:]}")
    peer = WSPeer().start()
    try:
        daemon.start()
        uuid = twilio_call(esl)
        assert daemon.ctl(f"{uuid} start {peer.url('/c')} mono 8k") == "+OK Success\n"
        first = peer.wait_connection(1)
        assert wait_until(lambda: len(first.messages) >= 20, 5)
        sid = check_start(first.messages[1], call_sid=uuid, tracks=["inbound"], custom={},
                          account_sid=TWILIO_ACCOUNT_SID)
        daemon.signal(signal.SIGKILL)
        daemon.wait_exit(10)
        last = media_of(first.messages, sid)[-1]
        daemon.start()
        second = peer.wait_connection(2, timeout=10)
        assert wait_until(lambda: len(media_of(second.messages, sid)) >= 10, 5)
        check_connected(second.messages[0])
        assert check_start(second.messages[1], call_sid=uuid, tracks=["inbound"], custom={},
                           account_sid=TWILIO_ACCOUNT_SID) == sid
        medias = media_of(second.messages[2:], sid)
        assert medias[0].seq > last.seq and medias[0].chunk > last.chunk
        assert medias[0].timestamp > last.timestamp
        check_numbering(medias, ["inbound"], first_chunk=None)
        check_sequence(second.messages)
        assert daemon.drain().startswith("+OK drained 1")
        assert wait_until(second.closed.is_set, 5)
        check_stop(second.messages[-1], sid, uuid, TWILIO_ACCOUNT_SID)
    finally:
        peer.stop()
        daemon.close()
        esl.stop()


def test_a_mark_comes_back_no_earlier_than_its_audio_has_played(esl, daemon, peer, sim):
    """Two media messages, a mark after each: each mark is echoed no earlier than the audio
    queued before it takes to play (what the call got is all of it, one after the other)."""
    uuid = twilio_call(esl, ext="3000")
    conn, sid = start(daemon, peer, uuid)
    queued = time.monotonic()
    for name in ("half", "whole"):
        peer.send_text(conn, media_message(sid, tone(600, 0.5, 8000)))
        peer.send_text(conn, mark_message(sid, name))
    assert wait_until(lambda: sum(event_of(m) == "mark" for m in conn.messages) == 2, 5)
    at = {check_mark(m, sid)[1]: t - queued for m, t in zip(conn.messages, conn.times,
                                                              strict=False)
          if event_of(m) == "mark"}
    print(f"\nmarks echoed {at['half']:.3f} s and {at['whole']:.3f} s after 0.5 s + 0.5 s of "
          "audio was queued")
    assert at["half"] >= 0.5 and at["whole"] >= 1.0  # its last frame heard, not just sent
    assert len(sim.channel(uuid).written) == 16000  # 1 s at 8 kHz: both, in full
    check_sequence(conn.messages)
    esl.api(f"uuid_kill {uuid}")


def test_a_longer_buffer_puts_that_many_ms_in_each_media_message(esl, daemon, peer):
    """STREAM_BUFFER_SIZE=100: 800 µ-law bytes a message, chunk counts messages, the timestamp
    goes 100 ms a message; plain-text metadata is customParameters.metadata."""
    uuid = twilio_call(esl, extra=",STREAM_BUFFER_SIZE=100")
    n = len(peer.connections)
    assert daemon.execute(f"{uuid} start {peer.url('/b')} mono 8k lang-fr") == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.messages) >= 12, 5)
    check_connected(conn.messages[0])
    sid = check_start(conn.messages[1], call_sid=uuid, tracks=["inbound"],
                      custom={"metadata": "lang-fr"}, account_sid=TWILIO_ACCOUNT_SID)
    medias = media_of(conn.messages[2:], sid, ms=100)
    assert len(medias) >= 10
    check_numbering(medias, ["inbound"], ms=100)
    assert abs(dominant_frequency(b"".join(m.pcm for m in medias), 8000) - 440) <= 5
    esl.api(f"uuid_kill {uuid}")


def test_the_protocol_and_account_sid_from_the_daemon_s_configuration(esl, sim, peer, tmp_path):
    """STREAM_PROTOCOL as a daemon default ([stream_defaults]) and streams.twilio_account_sid
    from the file; a channel's own STREAM_PROTOCOL wins."""
    cfg = load_config('[streams]\ntwilio_account_sid = "AC0123456789abcdef0123456789abcdef"\n'
                      '[stream_defaults]\nSTREAM_PROTOCOL = "twilio"\n', {}, {})
    assert cfg.twilio_account_sid == "AC0123456789abcdef0123456789abcdef"
    base = 12000 + (os.getpid() % 35) * 100  # as conftest's daemon takes them
    d = build_daemon(replace(cfg, esl_host=sim.address[0], esl_port=sim.address[1],
                             esl_password="ClueCon", control_port=0, fs_port_min=base,
                             fs_port_max=base + 99, files_dir=str(tmp_path / "files")))
    d.start()
    try:
        assert d.esl.wait_connected(5)
        by_default = twilio_call(esl)  # STREAM_PROTOCOL=twilio on the channel too
        plain = esl.api("originate {channel_rate=8000}loopback/1000/default &park()").split()[1]
        its_own = esl.api("originate {channel_rate=8000,STREAM_PROTOCOL=mod_audio_stream}"
                          "loopback/1000/default &park()").split()[1]
        for uuid in (plain, its_own):
            assert wait_until(lambda u=uuid: esl.api(f"uuid_getvar {u} current_application")
                              == "park")
        conns = []
        for uuid in (by_default, plain, its_own):
            assert d.execute(f"{uuid} start {peer.url('/' + uuid)} mono 8k") == "+OK Success\n"
            conns.append(peer.wait_connection(len(conns) + 1))
        assert all(wait_until(lambda c=c: len(c.messages) >= 5, 5) for c in conns)
        for conn, uuid in zip(conns[:2], (by_default, plain), strict=True):
            check_connected(conn.messages[0])  # the daemon's default: Twilio
            check_start(conn.messages[1], call_sid=uuid, tracks=["inbound"], custom={},
                        account_sid="AC0123456789abcdef0123456789abcdef")
        assert all(isinstance(m, bytes) for m in conns[2].messages)  # the channel's own wins
        with pytest.raises(ConfigError, match="twilio_account_sid"):
            load_config('[streams]\ntwilio_account_sid = ""\n', {}, {})
        with pytest.raises(ConfigError, match="STREAM_PROTOCOL"):
            load_config('[stream_defaults]\nSTREAM_PROTOCOL = "sip"\n', {}, {})
    finally:
        d.stop()
