"""uuid_audio_fork end to end, as jambonz's mod_audio_fork answers and fires: every command and its
answer, the wire a `websockets` endpoint insisting on `audio.drachtio.org` sees, the events the
operator's ESL client gets, audio played into the call (the simulator records what was written),
basic auth, graceful-shutdown, and the ways in (control endpoint, ctl, the command event)."""

from __future__ import annotations

import base64
import json
import os
import sys
from array import array
from pathlib import Path

import gevent
import pytest
from conftest import wait_until
from gevent import subprocess
from helpers.audio import tone
from helpers.daemons import make_daemon
from helpers.forkpeer import SUBPROTOCOL, ForkPeer, fork_events, message
from helpers.rawws import RawWSServer

from esl_audio_stream.app import fork_commands as fc
from esl_audio_stream.app import intake
from esl_audio_stream.call.player import Player
from esl_audio_stream.dev.analysis import dominant_frequency
from esl_audio_stream.ops.client import control_http, control_request
from esl_audio_stream.protocols import audio_fork as af

API = fc.API
CLI = [sys.executable, "-m", "esl_audio_stream.cli"]


@pytest.fixture
def fpeer():
    p = ForkPeer().start()
    try:
        yield p
    finally:
        p.stop()


def fork(daemon, args: str) -> str:
    return daemon.execute(args, API)


def subscribe(esl) -> None:
    esl.subscribe("CUSTOM", *af.SUBCLASSES, intake.REPLY_SUBCLASS)
    gevent.sleep(0.1)


def call(esl, ext: str = "1000", rate: int = 8000, **variables: str) -> str:
    """A parked call, with channel variables."""
    given = ",".join([f"channel_rate={rate}", *(f"{k}={v}" for k, v in variables.items())])
    answer = esl.api(f"originate {{{given}}}loopback/{ext}/default &park()")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def start(daemon, peer, uuid: str, rest: str = "mono 16k"):
    n = len(peer.connections)
    assert fork(daemon, f"{uuid} start {peer.url()} {rest}") == fc.OK
    return peer.wait_connection(n + 1)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def steady(read, quiet: float = 0.3, timeout: float = 5.0) -> int:
    """What read() says once it has stayed the same for `quiet` seconds (what was in flight
    has landed), within `timeout`."""
    value = read()
    with gevent.Timeout(timeout, False):
        while True:
            gevent.sleep(quiet)
            now = read()
            if now == value:
                return value
            value = now
    raise AssertionError(f"still changing after {timeout} s")


def test_start_stream_and_stop_as_jambonz_s_module(esl, daemon, fpeer):
    subscribe(esl)
    uuid = call(esl, "1000")  # a 440 Hz tone
    n = len(fpeer.connections)
    assert fork(daemon, f'{uuid} start {fpeer.url("/fork")} mono 16k {{"callid":"abc"}}') == fc.OK
    assert not fork_events(esl, uuid)  # +OK first: it connects afterwards
    conn = fpeer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.binary) > 25)
    headers = lower(conn.headers)
    assert headers["sec-websocket-protocol"] == SUBPROTOCOL and conn.ws.subprotocol == SUBPROTOCOL
    assert "sec-websocket-extensions" not in headers  # lws offers no deflate
    assert conn.path == "/fork" and conn.messages[0] == '{"callid":"abc"}'
    assert all(isinstance(m, bytes) for m in conn.messages[1:])
    assert abs(dominant_frequency(conn.audio, 16000) - 440) <= 5
    assert wait_until(lambda: fork_events(esl, uuid, af.CONNECT), 3)
    connect = fork_events(esl, uuid, af.CONNECT)
    assert len(connect) == 1 and connect[0].body == b"" and connect[0].uuid == uuid
    assert fork(daemon, f'{uuid} stop {{"bye":true}}') == fc.OK
    assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
    assert conn.messages[-1] == '{"bye":true}'
    gevent.sleep(0.3)
    assert not fork_events(esl, uuid, af.DISCONNECT)  # our own close fires nothing
    assert fork(daemon, f"{uuid} stop") == fc.ERR  # the bug is gone
    esl.api(f"uuid_kill {uuid}")


def test_the_peer_insists_on_the_subprotocol_and_a_failed_connect_is_an_event(esl, daemon,
                                                                               fpeer):
    subscribe(esl)
    uuid = call(esl, "3000")
    refused = daemon.execute(f"{uuid} start {fpeer.url()} mono 16k")  # offers no subprotocol
    assert refused.startswith("-ERR cannot connect") and "400" in refused
    other = call(esl, "3000", MOD_AUDIO_FORK_SUBPROTOCOL_NAME="other.example.org")
    assert fork(daemon, f"{other} start {fpeer.url()} mono 8k") == fc.OK
    assert wait_until(lambda: fork_events(esl, other, af.CONNECT_FAILED), 5)
    [failed] = fork_events(esl, other)
    reason = json.loads(failed.body)
    assert list(reason) == ["reason"] and "400" in reason["reason"]
    # the bug outlives its connection: its bugname is taken, its commands do nothing but +OK
    assert fork(daemon, f"{other} start {fpeer.url()} mono 8k") == fc.ERR
    for command in ("pause", "resume", 'send_text {"a":1}', "stop_play", "graceful-shutdown"):
        assert fork(daemon, f"{other} {command}") == fc.OK, command
    assert fork(daemon, f"{other} stop") == fc.OK
    assert fork(daemon, f"{other} stop") == fc.ERR
    # nobody listening: +OK, then the event says why
    assert fork(daemon, f"{other} start ws://127.0.0.1:1/ mono 8k b2") == fc.OK
    assert wait_until(lambda: len(fork_events(esl, other, af.CONNECT_FAILED)) == 2, 5)
    assert "cannot connect" in json.loads(fork_events(esl, other)[-1].body)["reason"]
    assert not fork_events(esl, other, af.CONNECT) and len(fpeer.connections) == 0
    for u in (uuid, other):
        esl.api(f"uuid_kill {u}")


def test_basic_auth_from_the_channel_variables(esl, daemon, fpeer):
    uuid = call(esl, MOD_AUDIO_BASIC_AUTH_USERNAME="alice", MOD_AUDIO_BASIC_AUTH_PASSWORD="s3cr:t")
    conn = start(daemon, fpeer, uuid, "mono 8k")
    expected = "Basic " + base64.b64encode(b"alice:s3cr:t").decode()
    assert lower(conn.headers)["authorization"] == expected
    alone = call(esl, MOD_AUDIO_BASIC_AUTH_USERNAME="alice")  # no password: no header
    assert "authorization" not in lower(start(daemon, fpeer, alone, "mono 8k").headers)
    for u in (uuid, alone):
        esl.api(f"uuid_kill {u}")


def test_the_endpoint_s_messages_become_mod_audio_fork_events(esl, daemon, fpeer):
    subscribe(esl)
    uuid = call(esl, "3000")
    conn = start(daemon, fpeer, uuid)
    for text in [message("transcription", {"text": "hello", "confidence": 1.0, "alt": []}),
                 message("transfer", {"to": "+15551234", "headers": {"X-A": "b c"}}),
                 message("disconnect"),
                 message("error", "it broke"),
                 message("json", {"n": 2.50}),
                 '{"free": "form",  "x": [1, 2]}',
                 message("something-else", {"a": 1}),
                 "not json at all",
                 message("transcription", {"text": "é \"quoted\""})]:
        fpeer.send_text(conn, text)
    assert wait_until(lambda: len(fork_events(esl, uuid)) >= 8, 5)
    gevent.sleep(0.2)
    got = [(e.subclass, e.body.decode()) for e in fork_events(esl, uuid)]
    assert got == [
        (af.CONNECT, ""),
        (af.TRANSCRIPTION, '{"text":"hello","confidence":1,"alt":[]}'),
        (af.TRANSFER, '{"to":"+15551234","headers":{"X-A":"b c"}}'),
        (af.DISCONNECT, ""),
        (af.ERROR, '"it broke"'),
        (af.JSON, '{"type":"json","data":{"n":2.5}}'),
        (af.JSON, '{"free":"form","x":[1,2]}'),
        (af.TRANSCRIPTION, '{"text":"é \\"quoted\\""}'),
    ]
    assert all(e.uuid == uuid for e in fork_events(esl, uuid))  # the channel's headers too
    assert uuid in daemon.streams  # a disconnect message is only told: the stream goes on
    esl.api(f"uuid_kill {uuid}")


def play_audio(pcm: bytes, rate: int, **extra) -> str:
    return message("playAudio", {"audioContentType": "raw", "sampleRate": rate,
                                 "audioContent": base64.b64encode(pcm).decode(), **extra})


def test_play_audio_is_a_file_named_in_the_event_and_played_by_the_daemon_only_if_asked(
        esl, daemon, fpeer, sim):
    subscribe(esl)
    uuid = call(esl, "3000")
    conn = start(daemon, fpeer, uuid, "mono 8k")
    pcm = tone(500, 0.5, 8000)
    fpeer.send_text(conn, play_audio(pcm, 8000, textContent="Hi there!"))
    assert wait_until(lambda: fork_events(esl, uuid, af.PLAY_AUDIO), 3)
    body = json.loads(fork_events(esl, uuid, af.PLAY_AUDIO)[0].body, object_pairs_hook=list)
    assert [k for k, _ in body] == ["audioContentType", "sampleRate", "textContent", "file"]
    path = dict(body)["file"]
    assert path.endswith(f"{uuid}_0.r8") and Path(path).read_bytes() == pcm
    gevent.sleep(0.5)
    assert len(sim.channel(uuid).written) == 0  # jambonz's application plays the file
    played = call(esl, "3000", AUDIO_FORK_PLAY_AUDIO="true")
    conn2 = start(daemon, fpeer, played, "mono 8k")
    fpeer.send_text(conn2, play_audio(pcm, 8000))
    assert wait_until(lambda: len(sim.channel(played).written) >= len(pcm), 3)
    gevent.sleep(0.2)
    written = bytes(sim.channel(played).written)
    assert len(written) == len(pcm) and abs(dominant_frequency(written, 8000) - 500) <= 5
    assert wait_until(lambda: fork_events(esl, played, af.PLAY_AUDIO), 3)
    for u in (uuid, played):
        esl.api(f"uuid_kill {u}")
    assert wait_until(lambda: not os.path.exists(path), 5)  # removed when the call ends


def test_binary_audio_plays_at_the_bidirectional_rate_and_kill_audio_clears_it(esl, daemon,
                                                                             fpeer, sim):
    subscribe(esl)
    uuid = call(esl, "3000")
    conn = start(daemon, fpeer, uuid, "mono 16k mybug '' true true 24000")
    assert conn.texts == []  # an empty metadata is none
    pcm = tone(600, 3.0, 24000)
    for i in range(0, len(pcm), 4801):  # odd sizes: a byte waits for the next message
        fpeer.send_binary(conn, pcm[i:i + 4801])
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 8000, 3)
    assert abs(dominant_frequency(bytes(sim.channel(uuid).written), 8000) - 600) <= 5
    fpeer.send_text(conn, message("killAudio"))
    assert wait_until(lambda: fork_events(esl, uuid, af.KILL_AUDIO), 3)
    assert fork_events(esl, uuid, af.KILL_AUDIO)[0].body == b""
    n = steady(lambda: len(sim.channel(uuid).written))
    assert n < 3.0 * 16000  # the rest was dropped
    # stop_play clears the same way, without an event
    fpeer.send_binary(conn, pcm)
    assert wait_until(lambda: len(sim.channel(uuid).written) >= n + 3200, 3)
    assert fork(daemon, f"{uuid} stop_play mybug") == fc.OK
    assert steady(lambda: len(sim.channel(uuid).written)) < n + 3.0 * 16000
    assert len(fork_events(esl, uuid, af.KILL_AUDIO)) == 1
    # binary audio is not played when bidirectional streaming is off (the default)
    quiet = call(esl, "3000")
    conn2 = start(daemon, fpeer, quiet, "mono 16k")
    fpeer.send_binary(conn2, tone(600, 0.5, 16000))
    gevent.sleep(0.5)
    assert len(sim.channel(quiet).written) == 0
    for u in (uuid, quiet):
        esl.api(f"uuid_kill {u}")


def test_kill_audio_breaks_freeswitch_s_own_playback():
    """jambonz's killAudio also sets CF_BREAK: what the application plays (the play_audio file)
    stops too. Here that is `uuid_break <uuid>`, asked of FreeSWITCH outside the hub."""
    asked: list[str] = []
    player = Player("u1", fire=lambda *a: None, send_mark=lambda *a: None, channel_rate=8000,
                    files_dir="/nonexistent", api=lambda command: asked.append(command) or "")
    player.interrupt()
    assert wait_until(lambda: asked == ["uuid_break u1"], 2)


def test_graceful_shutdown_as_jambonz_does_it(esl, daemon, fpeer):
    subscribe(esl)
    uuid = call(esl, "1000")
    conn = start(daemon, fpeer, uuid, "mono 16k")
    assert wait_until(lambda: len(conn.binary) > 10)
    assert fork(daemon, f"{uuid} graceful-shutdown") == fc.OK
    assert wait_until(lambda: b"" in conn.binary, 3)  # the flush request: a zero-length message
    gevent.sleep(0.3)
    assert conn.messages[-1] == b"" and conn.binary.count(b"") == 1  # no audio after it
    assert fork(daemon, f'{uuid} send_text {{"late":1}}') == fc.OK
    assert fork(daemon, f"{uuid} resume") == fc.OK
    gevent.sleep(0.3)
    assert conn.messages[-1] == b""  # nothing goes out any more
    # the endpoint flushes its last answers and closes
    fpeer.send_text(conn, message("transcription", {"text": "final"}))
    fpeer.close(conn, 1000, "done")
    assert wait_until(lambda: fork_events(esl, uuid, af.DISCONNECT), 3)
    got = [(e.subclass, e.body) for e in fork_events(esl, uuid)][-2:]
    assert got == [(af.TRANSCRIPTION, b'{"text":"final"}'), (af.DISCONNECT, b"")]
    assert wait_until(lambda: uuid not in daemon.streams, 3)
    assert fork(daemon, f"{uuid} stop") == fc.OK  # the bug stayed until stop
    assert fork(daemon, f"{uuid} stop") == fc.ERR
    esl.api(f"uuid_kill {uuid}")


def test_pause_resume_and_send_text(esl, daemon, fpeer):
    uuid = call(esl, "1000")
    conn = start(daemon, fpeer, uuid, "mono 8k mybug")
    assert wait_until(lambda: len(conn.binary) > 5)
    assert fork(daemon, f"{uuid} pause") == fc.ERR  # not its bug: mybug is
    assert fork(daemon, f"{uuid} pause mybug") == fc.OK
    n = steady(lambda: len(conn.binary), quiet=0.5)  # 25 messages a second while it streams
    assert fork(daemon, f"{uuid} send_text mybug hello") == fc.OK
    assert fork(daemon, f"{uuid} send_text mybug") == fc.OK  # a bugname, no text: nothing sent
    assert fork(daemon, f"{uuid} resume mybug") == fc.OK
    assert wait_until(lambda: len(conn.binary) > n + 5)
    assert conn.texts == ["hello"]
    assert fork(daemon, f"{uuid} stop mybug") == fc.OK
    esl.api(f"uuid_kill {uuid}")


def test_a_pause_right_after_the_start_is_kept(esl, daemon, fpeer):
    """mod_audio_fork answers start before it connects; a pause that comes at once still holds
    the audio back from the first frame (the command waits the few ms its stream takes)."""
    uuid = call(esl, "1000")
    assert fork(daemon, f"{uuid} start {fpeer.url()} mono 8k meta") == fc.OK
    assert fork(daemon, f"{uuid} pause meta") == fc.OK
    conn = fpeer.wait_connection(1)
    assert wait_until(lambda: daemon.streams.get(uuid) is not None
                      and daemon.streams[uuid].lifecycle.value == "paused", 5)
    assert steady(lambda: len(conn.messages)) == 0 and conn.binary == []
    assert fork(daemon, f"{uuid} resume meta") == fc.OK
    assert wait_until(lambda: len(conn.binary) > 3)
    esl.api(f"uuid_kill {uuid}")


def test_answers_and_streams_beside_a_bug(esl, daemon, fpeer, peer):
    uuid = call(esl, "3000")
    assert fork(daemon, "") == fork(daemon, uuid) == fork(daemon, f"{uuid} start") == fc.USAGE
    assert fork(daemon, f"{uuid} start {fpeer.url()} quad 8k") == ""  # the C code writes nothing
    assert fork(daemon, f"{uuid} send_text") == ""
    assert fork(daemon, f"{uuid} dance") == fc.ERR
    for command in ("stop", "pause", "resume", "send_text x y", "graceful-shutdown", "stop_play"):
        assert fork(daemon, f"{uuid} {command}") == fc.ERR, command  # no bug on the call
    assert fork(daemon, f"{uuid}-nope start {fpeer.url()} mono 8k") == fc.ERR  # no such call
    start(daemon, fpeer, uuid, "mono 8k")
    assert fork(daemon, f"{uuid} start {fpeer.url()} mono 8k") == fc.ERR  # bug already attached
    assert daemon.execute(f"{uuid} stop") == f"-ERR no audio stream on {uuid}\n"
    assert daemon.execute(f"{uuid} stop", "bogus").startswith("-ERR unknown API")
    # several streams on one call: another bug, and a uuid_audio_stream stream beside them
    start(daemon, fpeer, uuid, "mono 8k second")
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    assert daemon.execute(f"{uuid}@second start {peer.url()} mono 8k").startswith(
        "-ERR an audio stream named second is already running")  # a name is one stream's
    assert fork(daemon, f"{uuid} stop") == fc.OK
    assert [s.name for s in daemon.streams.of(uuid)] == ["second", ""]
    # and the other way round: a uuid_audio_stream stream is no bug of mod_audio_fork's
    assert fork(daemon, f"{uuid} stop") == fc.ERR
    assert daemon.execute(f"{uuid}@b3 start {peer.url()} mono 8k") == "+OK Success\n"
    assert fork(daemon, f"{uuid} start {fpeer.url()} mono 8k b3") == fc.ERR  # name taken
    esl.api(f"uuid_kill {uuid}")


def test_two_starts_at_once_of_one_bugname_make_one_stream(esl, daemon, fpeer):
    """The bug is taken before FreeSWITCH is asked about the call: a start of its bugname
    that comes meanwhile finds it."""
    uuid = call(esl, "3000")
    jobs = [gevent.spawn(fork, daemon, f"{uuid} start {fpeer.url()} mono 8k {name}")
            for name in ("one", "one")]
    gevent.joinall(jobs, timeout=10)
    answers = sorted(job.value for job in jobs)
    assert answers[0].startswith("+OK") and answers[1] == fc.ERR
    fpeer.wait_connection(1)
    gevent.sleep(0.3)
    assert len(fpeer.connections) == 1
    esl.api(f"uuid_kill {uuid}")


def test_hang_up_ends_it_quietly_and_takes_the_bug(esl, daemon, fpeer):
    subscribe(esl)
    uuid = call(esl, "1000")
    conn = start(daemon, fpeer, uuid)
    assert wait_until(lambda: fork_events(esl, uuid, af.CONNECT), 3)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
    assert wait_until(lambda: uuid not in daemon.fork.bugs, 5)
    gevent.sleep(0.3)
    assert [e.subclass for e in fork_events(esl, uuid)] == [af.CONNECT]
    assert fork(daemon, f"{uuid} stop") == fc.ERR


def in_thread(function, *args, **kwargs):
    """A blocking client call, in gevent's thread pool: the daemon answers from this process."""
    return gevent.get_hub().threadpool.apply(function, args, kwargs)


def test_reachable_by_the_control_endpoint_ctl_and_the_command_event(esl, daemon, fpeer):
    subscribe(esl)
    host, port = daemon.control.address
    where = f"{host}:{port}"
    uuid = call(esl, "3000")
    assert in_thread(control_request, where, f"{uuid} start {fpeer.url()} mono 8k",
                     api=API) == fc.OK
    conn = fpeer.wait_connection(1)
    ctl = subprocess.run([*CLI, "ctl", "--control", where, "--api", API, uuid, "send_text",
                          '{"via":"ctl"}'], capture_output=True, text=True, timeout=60)
    assert (ctl.returncode, ctl.stdout) == (0, fc.OK)
    assert wait_until(lambda: conn.texts == ['{"via":"ctl"}'], 3)
    esl.sendevent("CUSTOM", {"Event-Subclass": intake.COMMAND_SUBCLASS, intake.API_HEADER: API,
                             "Command": f"{uuid} stop"})
    assert wait_until(lambda: [e for e in esl.seen if e.subclass == intake.REPLY_SUBCLASS], 3)
    [reply] = [e for e in esl.seen if e.subclass == intake.REPLY_SUBCLASS]
    assert reply.body == fc.OK.encode() and wait_until(conn.closed.is_set, 5)
    assert in_thread(control_request, where, uuid, api=API) == fc.USAGE
    assert in_thread(control_http, where, "POST", "/api/uuid_audio_nothing", b"x")[0] == 404
    esl.api(f"uuid_kill {uuid}")


def test_buffer_overrun_once_when_the_endpoint_stops_reading(fs, tmp_path, esl):
    subscribe(esl)
    d = make_daemon(fs, tmp_path, reconnect_buffer_seconds=0.2)
    server = RawWSServer(["stall"])
    try:
        uuid = call(esl, "1000")
        assert fork(d, f"{uuid} start {server.url()} stereo 32000") == fc.OK
        assert wait_until(lambda: fork_events(esl, uuid, af.BUFFER_OVERRUN), 20)
        gevent.sleep(1.5)  # drops go on, reported about once a second: told once
        overrun = fork_events(esl, uuid, af.BUFFER_OVERRUN)
        assert len(overrun) == 1 and overrun[0].body == b""
        assert fork(d, f"{uuid} stop") == fc.OK
        esl.api(f"uuid_kill {uuid}")
    finally:
        d.stop()
        server.stop()


def test_carried_on_by_a_new_process_with_its_bug_and_options(fs, tmp_path, esl, fpeer, sim):
    subscribe(esl)
    first = make_daemon(fs, tmp_path, owner="fork-carry")
    uuid = call(esl, "3000")
    conn = start(first, fpeer, uuid, "mono 16k mybug '{\"m\":1}' true true 16000")
    assert wait_until(lambda: fork_events(esl, uuid, af.CONNECT), 3)
    first.hand_over()
    assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1001
    second = make_daemon(fs, tmp_path, owner="fork-carry")
    try:
        again = fpeer.wait_connection(2, timeout=10)
        assert wait_until(lambda: again.messages, 5)  # the connection is up before its first
        assert again.messages[0] == '{"m":1}'
        assert lower(again.headers)["sec-websocket-protocol"] == SUBPROTOCOL
        assert wait_until(lambda: len(fork_events(esl, uuid, af.CONNECT)) == 2, 5)
        fpeer.send_binary(again, tone(700, 0.5, 16000))  # bidirectional streaming carried on
        assert wait_until(lambda: len(sim.channel(uuid).written) >= 7000, 3)
        assert abs(dominant_frequency(bytes(sim.channel(uuid).written), 8000) - 700) <= 5
        assert fork(second, f"{uuid} stop mybug") == fc.OK
        assert wait_until(again.closed.is_set, 5)
    finally:
        second.stop()
        esl.api(f"uuid_kill {uuid}")


def test_the_play_file_of_a_wave(esl, daemon, fpeer):
    """wave (or wav) audio is written as it came, a .wav FreeSWITCH plays."""
    import io

    import soundfile

    subscribe(esl)
    uuid = call(esl, "3000")
    conn = start(daemon, fpeer, uuid, "mono 8k")
    buf = io.BytesIO()
    soundfile.write(buf, array("h", tone(300, 0.2, 16000)), 16000, format="WAV",
                    subtype="PCM_16")
    fpeer.send_text(conn, message("playAudio", {
        "audioContentType": "wave", "audioContent": base64.b64encode(buf.getvalue()).decode()}))
    assert wait_until(lambda: fork_events(esl, uuid, af.PLAY_AUDIO), 3)
    body = json.loads(fork_events(esl, uuid, af.PLAY_AUDIO)[0].body)
    assert body["audioContentType"] == "wave" and body["file"].endswith(".wav")
    assert Path(body["file"]).read_bytes() == buf.getvalue()
    esl.api(f"uuid_kill {uuid}")
