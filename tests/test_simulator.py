"""The simulator against /work/shared/freeswitch-facts.md: real sockets on loopback only."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys

import gevent
import pytest
from gevent import socket
from helpers.sim import (
    UUID_RE,
    RawEsl,
    UdpSink,
    free_udp_port,
    originate,
    parse_event,
    reply_raw,
    simulator_fixtures,
    start_unicast,
    unicast_headers,
    write_wav,
)

from esl_audio_stream.dev.simulator import Simulator
from esl_audio_stream.dev.simulator.dialstring import parse_originate
from esl_audio_stream.dev.simulator.events import Event, url_encode
from esl_audio_stream.dev.simulator.packets import PacketReader

EXTENSIONS = {"1000": "tone:440", "2000": "echo", "3000": "silence"}


sim, esl = simulator_fixtures(EXTENSIONS)


def api_raw(body: bytes) -> bytes:
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(body), body)






# -- the Transcripts table, byte for byte ---------------------------------------------------

def test_transcripts_api_rows(sim, esl):
    assert esl.api("show channels count").raw == api_raw(b"\n0 total.\n")
    uuid = originate(esl)
    assert esl.api("show channels count").raw == api_raw(b"\n2 total.\n")
    assert esl.api("originate loopback/9999/default &park()").raw == api_raw(
        b"-ERR NO_ROUTE_DESTINATION\n")
    assert esl.api(f"uuid_exists {uuid}").raw == api_raw(b"true")
    assert esl.api("uuid_exists 00000000-0000-0000-0000-000000000000").raw == api_raw(b"false")
    assert esl.api(f"uuid_getvar {uuid} NOPE").raw == api_raw(b"_undef_")
    assert esl.api(f"uuid_setvar {uuid} FOO bar baz").raw == api_raw(b"+OK\n")
    assert esl.api(f"uuid_getvar {uuid} FOO").raw == api_raw(b"bar baz")
    assert esl.api("no_such_command x").raw == api_raw(b"-ERR no_such_command Command not found!\n")
    assert esl.api(f"uuid_audio_stream {uuid} start ws://x mono").raw == api_raw(
        b"-ERR uuid_audio_stream Command not found!\n")
    assert esl.api(f"uuid_transfer {uuid} park inline").raw == api_raw(b"+OK\n")
    assert esl.api(f"uuid_broadcast {uuid} /nonexistent.wav aleg").raw == api_raw(
        b"+OK Message sent\n")
    assert esl.api(f"uuid_displace {uuid} start /nonexistent.wav 0 mux").raw == api_raw(
        b"-ERR Cannot displace session!\n")
    assert esl.api(f"uuid_kill {uuid}").raw == api_raw(b"+OK\n")
    # just after uuid_kill both legs still count, but the channel no longer exists
    assert esl.api("show channels count").raw == api_raw(b"\n2 total.\n")
    assert esl.api(f"uuid_exists {uuid}").raw == api_raw(b"false")
    assert esl.api(f"uuid_kill {uuid}").raw == api_raw(b"-ERR No such channel!\n")
    assert esl.api("uuid_kill 00000000-0000-0000-0000-000000000000").raw == api_raw(
        b"-ERR No such channel!\n")


def test_transcripts_command_rows(sim, esl):
    uuid = originate(esl)
    bogus = "11111111-2222-3333-4444-555555555555"
    assert esl.cmd(f"sendmsg {bogus}", [("call-command", "unicast")]).raw == reply_raw(
        f"-ERR invalid session id [{bogus}]")
    sink = UdpSink()
    try:
        start_unicast(esl, uuid, sink)
    finally:
        sink.close()
    assert esl.cmd("event plain CHANNEL_HANGUP").raw == reply_raw(
        "+OK event listener enabled plain")
    assert esl.cmd("auth wrong").raw == reply_raw("-ERR command not found")

    esl.api(f"uuid_setvar {uuid} FOO bar baz")
    esl.cmd("event plain BACKGROUND_JOB")
    r = esl.cmd(f"bgapi uuid_getvar {uuid} FOO")
    m = re.fullmatch(rf"Content-Type: command/reply\nReply-Text: \+OK Job-UUID: ({UUID_RE})\n"
                     rf"Job-UUID: ({UUID_RE})\n\n", r.raw.decode())
    assert m and m.group(1) == m.group(2), r.raw
    ev = esl.event(match=lambda e: e.name == "BACKGROUND_JOB")
    assert ev.get("Job-UUID") == m.group(1)
    assert ev.get("Job-Command") == "uuid_getvar"
    assert ev.get("Job-Command-Arg") == f"{uuid} FOO"
    assert ev.body == b"bar baz"

    # a client-chosen Job-UUID is honoured
    r = esl.cmd("bgapi status", [("Job-UUID", "my-job-1")])
    assert r.raw == (b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: my-job-1\n"
                     b"Job-UUID: my-job-1\n\n")
    ev = esl.event(match=lambda e: e.name == "BACKGROUND_JOB")
    assert ev.get("Job-UUID") == "my-job-1" and ev.body.startswith(b"UP ")

    esl.send(b"exit\n\n")
    assert esl.expect("command/reply").raw == reply_raw("+OK bye")
    notice = esl.expect("text/disconnect-notice")
    assert notice.body == b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    with pytest.raises(EOFError):
        esl.read(2.0)


def test_auth_rules(sim):
    c = RawEsl(sim.address, password=None)
    try:
        # before auth every other command is refused, and auth still works afterwards
        c.send(b"api status\n\n")
        assert c.read().raw == reply_raw("-ERR command not found")
        assert c.cmd("auth ClueCon").raw == reply_raw("+OK accepted")
    finally:
        c.close()
    c = RawEsl(sim.address, password=None)
    try:
        c.send(b"auth wrong\n\n")
        assert c.read().raw == reply_raw("-ERR invalid")
        assert c.read().ctype == "text/disconnect-notice"
        with pytest.raises(EOFError):
            c.read(2.0)
    finally:
        c.close()


def test_originate_variables_as_given(sim, esl):
    uuid = originate(esl, vars_="{STREAM_EXTRA_HEADERS='{\"X-A\":\"yes\"}',STREAM_BUFFER_SIZE=100,"
                                "v2='a,b {c}'}")
    assert esl.api_body(f"uuid_getvar {uuid} STREAM_EXTRA_HEADERS") == '{"X-A":"yes"}'
    assert esl.api_body(f"uuid_getvar {uuid} STREAM_BUFFER_SIZE") == "100"
    assert esl.api_body(f"uuid_getvar {uuid} v2") == "a,b {c}"
    a = sim.channel(uuid)
    b = sim.channel(a.variables["other_loopback_leg_uuid"])
    assert (a.name, b.name) == ("loopback/1000-a", "loopback/1000-b")
    assert b.variables["other_loopback_leg_uuid"] == uuid
    assert set(sim.channels) == {a.uuid, b.uuid}


# -- unicast ---------------------------------------------------------------------------------

def test_unicast_sizes_rates_and_source(sim, esl):
    sinks = {}
    ports = {}
    for rate in (8000, 16000, 48000):
        uuid = originate(esl, vars_=f"{{channel_rate={rate}}}")
        sinks[rate] = UdpSink()
        ports[rate] = start_unicast(esl, uuid, sinks[rate])
    try:
        for sink in sinks.values():
            assert sink.wait_for(40, timeout=3.0)
        for rate, sink in sinks.items():
            got = sink.got[:40]
            assert {len(d) for _, d, _ in got} == {rate // 50 * 2}
            assert {a for _, _, a in got} == {("127.0.0.1", ports[rate])}
            span = got[-1][0] - got[0][0]
            assert 39 / span == pytest.approx(50, rel=0.15)
            samples = struct.unpack(f"<{rate // 50 * 40}h", b"".join(d for _, d, _ in got))
            assert 7000 < max(samples) <= 8000 and -8000 <= min(samples) < -7000
    finally:
        for s in sinks.values():
            s.close()


def test_tone_phase_is_continuous(sim, esl):
    uuid = originate(esl)
    sink = UdpSink()
    try:
        start_unicast(esl, uuid, sink)
        assert sink.wait_for(20)
        pcm = struct.unpack("<3200h", b"".join(d for _, d, _ in sink.got[:20]))
        # a 440 Hz sine of amplitude 8000 at 8 kHz moves < 2800 per sample; a jump is a glitch
        assert max(abs(pcm[i + 1] - pcm[i]) for i in range(len(pcm) - 1)) < 2800
    finally:
        sink.close()


def test_cng_frames_are_ff(sim, esl):
    uuid = originate(esl, vars_="{sim_cng_every=4}")
    sink = UdpSink()
    try:
        start_unicast(esl, uuid, sink)
        assert sink.wait_for(12)
        cng = [d == b"\xff" * 320 for _, d, _ in sink.got[:12]]
        assert sum(cng) == 3 and all(len(d) == 320 for _, d, _ in sink.got[:12])
    finally:
        sink.close()


def test_no_streaming_unless_parked(sim, esl):
    uuid = originate(esl, app="&playback(silence_stream://-1)")
    sink = UdpSink()
    try:
        start_unicast(esl, uuid, sink)
        gevent.sleep(0.3)
        assert sink.got == []
        assert sim.channel(uuid).parked is False
        assert sim.channel(uuid).unicast_active is False
    finally:
        sink.close()


def test_write_back_echo_and_zero_length_end(sim, esl):
    uuid = originate(esl, ext="2000")
    sink = UdpSink()
    local = start_unicast(esl, uuid, sink)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # ANY sender is accepted
    try:
        assert sink.wait_for(3)
        marker = struct.pack("<160h", *([1234] * 160))
        for _ in range(3):
            other.sendto(marker, ("127.0.0.1", local))
            gevent.sleep(0.02)
        with gevent.Timeout(2):
            while not any(d == marker for _, d, _ in sink.got):
                gevent.sleep(0.01)
        assert bytes(sim.channel(uuid).written) == marker * 3
        other.sendto(b"", ("127.0.0.1", local))  # ends the write-back reader
        gevent.sleep(0.05)
        other.sendto(marker, ("127.0.0.1", local))
        n = len(sink.got)
        assert sink.wait_for(n + 5)
        assert bytes(sim.channel(uuid).written) == marker * 3
    finally:
        other.close()
        sink.close()


def test_unicast_acts_later_and_bind_failure_is_silent(sim, esl):
    uuid = originate(esl)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    sink = UdpSink()
    try:
        r = esl.cmd(f"sendmsg {uuid}", unicast_headers(taken.getsockname()[1], sink.port))
        assert r.raw == reply_raw("+OK")  # the failure is not in the reply
        gevent.sleep(0.2)
        assert sink.got == [] and sim.channel(uuid).unicast_active is False
    finally:
        taken.close()
        sink.close()


def test_broadcast_stops_unicast_until_transfer(sim, esl, tmp_path):
    wav = str(tmp_path / "short.wav")
    write_wav(wav, 8000, [0] * 1600)  # 0.2 s
    uuid = originate(esl)
    esl.cmd("event plain PLAYBACK_START PLAYBACK_STOP CHANNEL_PARK CHANNEL_UNPARK")
    esl.event(match=lambda e: e.name == "CHANNEL_PARK")
    sink = UdpSink()
    try:
        start_unicast(esl, uuid, sink)
        assert sink.wait_for(5)
        assert esl.api_body(f"uuid_broadcast {uuid} {wav} aleg") == "+OK Message sent\n"
        n = len(sink.got)
        assert esl.event(match=lambda e: e.name == "PLAYBACK_START").get(
            "Playback-File-Path") == wav
        assert esl.event(match=lambda e: e.name == "PLAYBACK_STOP").get(
            "Playback-Status") == "done"
        assert len(sink.got) <= n + 2  # stopped within a frame or so of the api call
        stopped_at = len(sink.got)
        gevent.sleep(0.15)
        assert len(sink.got) == stopped_at  # does not come back after the playback
        start_unicast(esl, uuid, sink)  # a new unicast is shut down again
        gevent.sleep(0.2)
        assert len(sink.got) == stopped_at
        assert esl.api_body(f"uuid_transfer {uuid} park inline") == "+OK\n"
        esl.event(match=lambda e: e.name == "CHANNEL_UNPARK")
        esl.event(match=lambda e: e.name == "CHANNEL_PARK")
        port = start_unicast(esl, uuid, sink)
        assert sink.wait_for(stopped_at + 5)
        assert sink.got[-1][2] == ("127.0.0.1", port)
    finally:
        sink.close()


# -- sendevent routing -----------------------------------------------------------------------

def sendevent(esl: RawEsl, headers: list[tuple[str, str]], body: bytes | None = None) -> str:
    r = esl.cmd("sendevent CUSTOM", [("Event-Subclass", "sim::test"), *headers], body)
    m = re.fullmatch(rf"\+OK ({UUID_RE})", r.headers["Reply-Text"])
    assert m, r.raw
    return m.group(1)


def test_sendevent_without_channel_fires_at_once(sim, esl):
    esl.cmd("event plain CUSTOM sim::test")
    ev_uuid = sendevent(esl, [("X-Key", "a b&c")], b'{"x": 1}\n')
    ev = esl.event()
    assert ev.items[0] == ("Event-Subclass", "sim::test")
    assert ev.get("Command") == "sendevent CUSTOM"
    assert ev.get("Event-Name") == "CUSTOM" and ev.get("Core-UUID")
    assert ev.get("Event-Sequence") and ev.get("Event-Date-Timestamp")
    assert ev.get("Event-UUID") == ev_uuid and ev.get("X-Key") == "a b&c"
    assert b"X-Key: a%20b%26c\n" in ev.raw
    assert ev.body == b'{"x": 1}\n'
    # a Unique-ID naming no channel: fired at once too
    sendevent(esl, [("Unique-ID", "00000000-0000-0000-0000-000000000000")])
    assert esl.event().get("Event-Name") == "CUSTOM"


def test_sendevent_to_parked_channel_goes_through_park_loop(sim, esl):
    esl.cmd("event plain CUSTOM sim::test")
    uuid = originate(esl)
    gevent.sleep(0.05)  # parked
    sendevent(esl, [("unique-id", uuid)])  # header name matched case-insensitively
    ev = esl.event()
    assert ev.get("Command") == "sendevent CUSTOM"
    for absent in ("Event-Name", "Core-UUID", "Event-Sequence", "Event-Date-Local",
                   "Event-Date-GMT", "Event-Date-Timestamp"):
        assert ev.get(absent) is None, absent
    assert ev.get("Channel-Name") == "loopback/1000-a"
    assert ev.get("Unique-ID") == uuid and ev.get("variable_uuid") == uuid
    sendevent(esl, [("Event-Name", "CUSTOM"), ("Unique-ID", uuid)])
    ev = esl.event()
    assert ev.get("Event-Name") == "CUSTOM" and ev.get("Channel-Name") == "loopback/1000-a"
    assert ev.get("Event-Sequence") is None and ev.get("Core-UUID") is None


def test_sendevent_to_channel_running_app_is_never_delivered(sim, esl):
    esl.cmd("event plain CHANNEL_DESTROY CUSTOM sim::test")
    uuid = originate(esl, app="&playback(silence_stream://-1)")
    sendevent(esl, [("Unique-ID", uuid)])
    assert [e for e in esl.events_for(0.3) if e.name != "CHANNEL_DESTROY"] == []
    esl.api(f"uuid_kill {uuid}")  # dropped at hang-up
    evs = esl.events_for(0.3)
    assert [e.name for e in evs] == ["CHANNEL_DESTROY", "CHANNEL_DESTROY"]


def test_sendevent_between_hangup_and_destroy_dropped_then_fired(sim, esl):
    esl.cmd("event plain CHANNEL_DESTROY CUSTOM sim::test")
    uuid = originate(esl)
    assert esl.api_body(f"uuid_kill {uuid}") == "+OK\n"
    sendevent(esl, [("Unique-ID", uuid), ("X-When", "hungup")])
    esl.event(match=lambda e: e.name == "CHANNEL_DESTROY")
    esl.event(match=lambda e: e.name == "CHANNEL_DESTROY")
    sendevent(esl, [("Unique-ID", uuid), ("X-When", "destroyed")])
    ev = esl.event(match=lambda e: e.get("Event-Subclass") == "sim::test")
    assert ev.get("X-When") == "destroyed" and ev.get("Event-Sequence")
    assert [e for e in esl.events_for(0.1) if e.get("X-When") == "hungup"] == []


def test_custom_subscription_is_by_subclass(sim, esl):
    esl.cmd("event plain CUSTOM sim::test")
    esl.cmd("sendevent CUSTOM", [("Event-Subclass", "other::thing")])
    sendevent(esl, [("X-Which", "mine")])
    assert esl.event().get("X-Which") == "mine"
    assert esl.events_for(0.1) == []


# -- hang-up ---------------------------------------------------------------------------------

def test_hangup_event_order_and_no_datagram_after(sim, esl):
    uuid = originate(esl)
    sink = UdpSink()
    try:
        start_unicast(esl, uuid, sink)
        assert sink.wait_for(3)
        esl.cmd("event plain CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_DESTROY")
        assert esl.api_body(f"uuid_kill {uuid}") == "+OK\n"
        n = len(sink.got)
        evs = [esl.event() for _ in range(6)]
        names = [e.name for e in evs]
        assert names[:2] == ["CHANNEL_HANGUP"] * 2
        assert sorted(names[2:4]) == ["CHANNEL_HANGUP_COMPLETE"] * 2
        assert names[4:] == ["CHANNEL_DESTROY"] * 2
        assert {e.get("Channel-Call-State") for e in evs[:2]} == {"ACTIVE"}
        assert {e.get("Hangup-Cause") for e in evs[2:4]} == {"NORMAL_CLEARING"}
        assert {e.get("Channel-State") for e in evs[2:4]} == {"CS_REPORTING"}
        assert {e.get("Channel-Name") for e in evs[:2]} == {"loopback/1000-a", "loopback/1000-b"}
        gevent.sleep(0.1)
        assert len(sink.got) == n
        assert esl.api_body("show channels count") == "\n0 total.\n"
        assert sim.channels == {} and sim.channel(uuid).frames_sent >= 3
    finally:
        sink.close()


def test_stop_leaves_no_socket_open():
    before = len(os.listdir("/proc/self/fd"))
    sim = Simulator(extensions=EXTENSIONS)
    sim.start()
    esl = RawEsl(sim.address)
    uuid = originate(esl, ext="2000")
    sink = UdpSink()
    local = start_unicast(esl, uuid, sink)
    assert sink.wait_for(2)
    address = sim.address
    sim.stop()
    with pytest.raises(EOFError):
        while True:
            esl.read(2.0)
    esl.close()
    sink.close()
    gevent.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=1).close()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", local))  # the unicast port is free again
    s.close()
    assert sim.channel(uuid).up is False


def test_slow_client_is_dropped_without_stalling_calls():
    sim = Simulator(extensions=EXTENSIONS, esl_queue_len=50)
    sim.start()
    try:
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(2)
        slow.connect(sim.address)
        slow.sendall(b"auth ClueCon\n\nevent plain ALL\n\n")
        fast = RawEsl(sim.address)
        uuid = originate(fast)
        sink = UdpSink()
        start_unicast(fast, uuid, sink)
        big = b"x" * 8000
        for _ in range(400):
            fast.send(b"sendevent CUSTOM\nEvent-Subclass: sim::flood\nContent-Length: %d\n\n%s"
                      % (len(big), big))
            fast.expect("command/reply", 5)
        assert len(sim.esl.connections) == 1  # the slow one is gone
        n = len(sink.got)
        assert sink.wait_for(n + 5)  # calls kept going
        sink.close()
        fast.close()
        slow.close()
    finally:
        sim.stop()


# -- pure parts ------------------------------------------------------------------------------

def test_url_encode_like_freeswitch():
    assert url_encode("a b:c") == "a%20b%3Ac"
    assert url_encode("100%41") == "100%41"  # an existing %XX is not re-encoded
    assert url_encode("x%4a") == "x%254a"
    assert url_encode("é") == "%C3%A9"


def test_event_serialization_has_inner_content_length():
    ev = Event("CUSTOM")
    ev.add("Command", "sendevent CUSTOM")
    ev.add("Event-Subclass", "a::b")
    ev.set_subclass("a::b")
    ev.body = "hi"
    data = ev.framed("plain")
    head, _, inner = data.partition(b"\n\n")
    assert head == b"Content-Length: %d\nContent-Type: text/event-plain" % len(inner)
    parsed = parse_event(inner)
    assert parsed.items[0] == ("Event-Subclass", "a::b") and parsed.body == b"hi"


def test_packet_reader_framing():
    r = PacketReader()
    r.feed(b"\r\n\napi status\r\n\r\nsendevent CUSTOM\nContent-Length: 3\nX: \n\nabc")
    p1 = r.next_packet()
    assert p1.command == "api status" and p1.body is None
    p2 = r.next_packet()
    assert p2.command == "sendevent CUSTOM" and p2.body == "abc"
    assert p2.get("x") is None  # empty values add nothing
    assert r.next_packet() is None


def test_dialstring_parsing():
    d = parse_originate("{a=1,b='x, {y}'}loopback/1000/default &playback(/tmp/a b.wav)")
    assert (d.extension, d.context, d.app, d.app_arg) == ("1000", "default", "playback",
                                                          "/tmp/a b.wav")
    assert d.variables == {"a": "1", "b": "x, {y}"}


def test_filter_and_json_format(sim, esl):
    uuid = originate(esl)
    other = originate(esl)
    assert esl.cmd("event json CHANNEL_HANGUP").raw == reply_raw("+OK event listener enabled json")
    assert esl.cmd(f"filter Unique-ID {uuid}").raw == reply_raw(
        f"+OK filter added. [Unique-ID]=[{uuid}]")
    esl.api(f"uuid_kill {other}")
    esl.api(f"uuid_kill {uuid}")
    m = esl.expect("text/event-json")
    ev = json.loads(m.body)
    assert ev["Event-Name"] == "CHANNEL_HANGUP" and ev["Unique-ID"] == uuid
    with pytest.raises(TimeoutError):
        esl.expect("text/event-json", 0.2)


def test_run_simulator_stops_on_sigterm():
    port = free_udp_port()  # any free number; TCP on the same number is almost surely free
    code = ("from esl_audio_stream.dev.simulator import run_simulator; "
            f"run_simulator('127.0.0.1', {port}, 'pw', {{'1000': 'tone:440'}})")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        c = None
        with gevent.Timeout(10):
            while c is None:
                try:
                    c = RawEsl(("127.0.0.1", port), password="pw")
                except OSError:
                    gevent.sleep(0.05)
        originate(c)
        proc.terminate()
        with pytest.raises(EOFError):
            while True:
                c.read(5.0)
        c.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
