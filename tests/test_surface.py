"""mod_audio_stream's surface end to end: rates, pause/resume/send_text, channel variables,
daemon-wide defaults — simulator + daemon + a real `websockets` server."""

from __future__ import annotations

import dataclasses
import logging

import gevent
import pytest
from conftest import wait_until
from helpers.calls import originate

from esl_audio_stream.app.settings import StreamSettings
from esl_audio_stream.dev.analysis import dominant_frequency


def call_with(esl, variables: str, ext: str = "1000", rate: int = 8000) -> str:
    answer = esl.api(f"originate {{channel_rate={rate},{variables}}}loopback/{ext}/default &park()")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


@pytest.mark.parametrize(("word", "rate"), [("8k", 8000), ("16k", 16000), ("44100", 44100),
                                            ("48000", 48000), ("11025", 11025)])
def test_any_rate(esl, daemon, peer, word, rate):
    uuid = originate(esl, rate=16000)
    assert daemon.execute(f"{uuid} start {peer.url()} mono {word}") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 60, 5)
    sizes = [len(m) for m in conn.binary]
    if rate == 11025:  # 220.5 samples per 20 ms: 220 and 221 alternate, exact on average
        assert set(sizes) == {440, 442}
    else:
        assert set(sizes) == {rate * 2 // 50}
    freq = dominant_frequency(conn.audio[sizes[0] * 5:], rate)
    assert abs(freq - 440) <= 5, freq
    esl.api(f"uuid_kill {uuid}")


def test_pause_resume_and_send_text(esl, daemon, peer):
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 16k first") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 5)
    assert daemon.execute(f"{uuid} send_text hello there") == "+OK Success\n"
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    gevent.sleep(0.1)
    paused_at = len(conn.binary)
    gevent.sleep(0.6)
    assert len(conn.binary) == paused_at  # nothing while paused
    assert not conn.closed.is_set()
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    gevent.sleep(0.5)
    resumed = len(conn.binary) - paused_at
    assert 20 <= resumed <= 27, resumed  # from the present moment: no burst of held-back audio
    assert conn.texts == ["first", "hello there"]
    assert "invalid utf8" in daemon.execute(f"{uuid} send_text ".encode() + b"\xc3\x28")
    esl.api(f"uuid_kill {uuid}")


def test_buffer_size_extra_headers_and_deflate_variables(esl, daemon, peer):
    uuid = call_with(esl, "STREAM_BUFFER_SIZE=60,STREAM_MESSAGE_DEFLATE=true,"
                     "STREAM_EXTRA_HEADERS='{\"X-Call\":\"abc\",\"Authorization\":\"Bearer t\"}'")
    assert daemon.execute(f"{uuid} start {peer.url()} mono 16k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 3)
    assert {len(m) for m in conn.binary} == {1920}  # 60 ms at 16 kHz
    assert conn.headers["x-call"] == "abc" and conn.headers["authorization"] == "Bearer t"
    assert "sec-websocket-extensions" not in conn.headers  # true/1 disables deflate
    esl.api(f"uuid_kill {uuid}")


def test_bad_buffer_size_warns_and_uses_20(esl, daemon, peer, caplog):
    uuid = call_with(esl, "STREAM_BUFFER_SIZE=30")
    with caplog.at_level(logging.WARNING):
        assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 3)
    assert {len(m) for m in conn.binary} == {320}
    assert any("STREAM_BUFFER_SIZE" in r.getMessage() and uuid in r.getMessage()
               for r in caplog.records)
    assert "sec-websocket-extensions" in conn.headers  # deflate offered by default
    esl.api(f"uuid_kill {uuid}")


@pytest.mark.parametrize(
    ("variables", "needle"),
    [
        ("STREAM_EXTRA_HEADERS='{not json'", "STREAM_EXTRA_HEADERS"),
        ("STREAM_EXTRA_HEADERS='[1,2]'", "STREAM_EXTRA_HEADERS"),
        ("STREAM_HEART_BEAT=soon", "STREAM_HEART_BEAT"),
        ("STREAM_TLS_CA_FILE=/nonexistent/ca.pem", "STREAM_TLS_CA_FILE"),
        ("STREAM_TLS_CERT_FILE=/nonexistent/c.pem", "STREAM_TLS"),
    ],
)
def test_bad_variables_are_clear_errors(esl, daemon, peer, variables, needle):
    uuid = call_with(esl, variables)
    answer = daemon.execute(f"{uuid} start wss://127.0.0.1:{peer.port}/ mono 8k")
    assert answer.startswith("-ERR ") and needle in answer, answer
    assert not daemon.streams and daemon.ports.in_use == 0
    esl.api(f"uuid_kill {uuid}")


def test_json_log_and_suppress_log(esl, daemon, peer, caplog):
    loud = call_with(esl, "STREAM_SUPPRESS_LOG=false")
    quiet = call_with(esl, "STREAM_SUPPRESS_LOG=true")
    with caplog.at_level(logging.INFO):
        for uuid in (loud, quiet):
            assert daemon.execute(f"{uuid} start {peer.url('/' + uuid)} mono 8k") == (
                "+OK Success\n")
        for n, _uuid in enumerate((loud, quiet), 1):
            peer.send_text(peer.wait_connection(n), f'{{"said":"secret-{n}"}}')
        gevent.sleep(0.3)
    text = caplog.text
    assert "secret-1" in text and "secret-2" not in text
    for uuid in (loud, quiet):
        esl.api(f"uuid_kill {uuid}")


def test_channel_value_wins_over_daemon_default(esl, daemon, peer):
    daemon.config = dataclasses.replace(
        daemon.config, stream_defaults=StreamSettings(buffer_ms=40))
    plain = originate(esl)
    own = call_with(esl, "STREAM_BUFFER_SIZE=20")
    for n, uuid in enumerate((plain, own), 1):
        assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
        conn = peer.wait_connection(n)
        assert wait_until(lambda c=conn: len(c.binary) >= 3)
    assert {len(m) for m in peer.connections[0].binary} == {640}  # the daemon's 40 ms
    assert {len(m) for m in peer.connections[1].binary} == {320}  # the channel's 20 ms
    for uuid in (plain, own):
        esl.api(f"uuid_kill {uuid}")


def _channels(pcm: bytes) -> tuple[bytes, bytes]:
    import array

    samples = array.array("h", pcm)
    return samples[0::2].tobytes(), samples[1::2].tobytes()


@pytest.mark.parametrize("rate", [8000, 16000])
def test_stereo_and_mixed_on_a_parked_call(esl, daemon, peer, rate):
    """Parked call: left = what the caller says; right = what the call hears from the daemon's
    playback (silence while nothing plays); mixed = their sum."""
    word = {8000: "8k", 16000: "16k"}[rate]
    stereo, mixed = originate(esl), originate(esl)
    assert daemon.execute(f"{stereo} start {peer.url('/s')} stereo {word}") == "+OK Success\n"
    assert daemon.execute(f"{mixed} start {peer.url('/m')} mixed {word}") == "+OK Success\n"
    cs, cm = peer.wait_connection(1), peer.wait_connection(2)
    assert wait_until(lambda: len(cs.binary) >= 50 and len(cm.binary) >= 50, 5)
    frame = rate * 2 // 50
    assert {len(m) for m in cs.binary} == {2 * frame}  # interleaved L R L R
    assert {len(m) for m in cm.binary} == {frame}
    left, right = _channels(cs.audio[2 * frame * 5:])
    assert abs(dominant_frequency(left, rate) - 440) <= 5
    assert right == bytes(len(right))
    assert abs(dominant_frequency(cm.audio[frame * 5:], rate) - 440) <= 5
    gevent.sleep(1.0)
    # one output frame per caller frame, in both: no drift between the channels
    s, m = daemon.streams[stereo], daemon.streams[mixed]
    assert s.frames_in - 2 <= s.frames_out <= s.frames_in + 1
    assert m.frames_in - 2 <= m.frames_out <= m.frames_in + 1
    for uuid in (stereo, mixed):
        esl.api(f"uuid_kill {uuid}")


def test_heartbeat_variable_pings_an_idle_connection(esl, daemon, peer):
    uuid = call_with(esl, "STREAM_HEART_BEAT=0.3")
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"  # no audio: the link goes idle
    ws = daemon.streams[uuid]._link.ws
    assert wait_until(lambda: ws.pings_sent >= 2, 3)
    assert ws.is_open and not conn.closed.is_set()  # the peer answered every ping
    esl.api(f"uuid_kill {uuid}")


def test_http_refusal_is_an_error_event_with_http_status(esl, daemon):
    """An endpoint that refuses the upgrade (403): -ERR, and mod_audio_stream::error with code 2
    and http_status 403 for subscribers."""
    import json

    from gevent.server import StreamServer

    from esl_audio_stream.app import events

    def refuse(sock, _addr):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        sock.close()

    server = StreamServer(("127.0.0.1", 0), refuse)
    server.start()
    esl.subscribe("CUSTOM", events.ERROR)
    gevent.sleep(0.1)
    try:
        uuid = originate(esl)
        answer = daemon.execute(f"{uuid} start ws://127.0.0.1:{server.server_port}/ mono 8k")
        assert answer.startswith("-ERR cannot connect") and "403" in answer
        assert wait_until(lambda: [e for e in esl.seen if e.subclass == events.ERROR], 3)
        err = next(e for e in esl.seen if e.subclass == events.ERROR)
        body = json.loads(err.body)
        assert body["status"] == "error"
        assert body["message"]["code"] == events.WS_INVALID_HEADER
        assert body["message"]["http_status"] == 403 and "403" in body["message"]["error"]
        assert err.get("Audio-Stream-UUID") == uuid
        esl.api(f"uuid_kill {uuid}")
    finally:
        server.stop()
