"""The keys a caller presses: how the simulator reports them (as FreeSWITCH does: facts file),
how the daemon routes each to its stream once (app/dtmf.py, sans-IO), and what the endpoint gets
in both protocols, end to end with a real `websockets` peer: once, in order, also while paused,
also through taps; in mod_audio_stream mode only when STREAM_SEND_DTMF asks. How long a digit
takes is measured and printed, never asserted."""

from __future__ import annotations

import json
import time

import gevent
import pytest
from conftest import wait_until
from helpers.twilio import check_dtmf, event_of

from esl_audio_stream.app.dtmf import KeyRouter, keypress
from esl_audio_stream.protocols.mod_audio_stream import ModAudioStream

# -- the router, sans-IO ----------------------------------------------------------------------


class Listener:
    def __init__(self) -> None:
        self.keys: list[tuple[str, int]] = []

    def on_dtmf(self, digit: str, duration_ms: int) -> None:
        self.keys.append((digit, duration_ms))


def dtmf(uuid: str, digit: str, source: str = "APP", duration: str = "2000") -> dict:
    return {"Event-Name": "DTMF", "Unique-ID": uuid, "DTMF-Digit": digit,
            "DTMF-Duration": duration, "DTMF-Source": source}


def test_a_key_is_what_freeswitch_reports() -> None:
    press = keypress(dtmf("u", "5"))
    assert press is not None and press.digit == "5" and press.duration_ms == 250  # samples/8
    assert keypress(dtmf("u", "a")).digit == "A"  # type: ignore[union-attr]
    assert keypress(dtmf("u", "#", duration="800")).duration_ms == 100  # type: ignore[union-attr]
    assert keypress(dtmf("u", "7", duration="junk")).duration_ms == 0  # type: ignore[union-attr]
    for bad in ("", "55", "E", "x", " "):
        assert keypress(dtmf("u", bad)) is None


def test_each_press_goes_to_its_stream_once_and_a_tap_reports_for_its_target() -> None:
    router, call, other = KeyRouter(), Listener(), Listener()
    streams = {"call": call, "other": other}
    taps = {"tap-a": call}
    assert router.route(dtmf("call", "1"), streams, taps, 10.0) is call
    # the same press seen again by another reporter (the call's tap, a second detector)
    assert router.route(dtmf("tap-a", "1", "UNKNOWN"), streams, taps, 10.01) is None
    assert router.route(dtmf("call", "1", "INBAND_AUDIO"), streams, taps, 10.1) is None
    assert router.duplicates == 2
    # one reporter is never merged with itself: 11 is two ones
    assert router.route(dtmf("call", "1"), streams, taps, 10.12) is call
    # another digit, or the same one after the press has run out (250 ms + slack), is new
    assert router.route(dtmf("tap-a", "2", "UNKNOWN"), streams, taps, 10.2) is call
    assert router.route(dtmf("call", "2"), streams, taps, 10.2 + 0.25 + 0.11) is call
    assert router.route(dtmf("other", "9"), streams, taps, 10.2) is other
    assert router.route(dtmf("nobody", "9"), streams, taps, 10.2) is None
    assert router.route(dtmf("call", "Z"), streams, taps, 10.2) is None
    assert router.route(dtmf("tap-b", "3"), streams, {"tap-b": object()}, 11.0) is None
    assert call.keys == [("1", 250), ("1", 250), ("2", 250), ("2", 250)]
    assert other.keys == [("9", 250)]


def test_mod_audio_stream_tells_keys_only_when_asked() -> None:
    assert ModAudioStream(metadata=None, stream_rate=8000).dtmf("5", 250) is None
    told = ModAudioStream(metadata=None, stream_rate=8000, send_dtmf=True).dtmf("#", 120)
    assert json.loads(told) == {"type": "dtmf", "data": {"digit": "#", "duration": 120}}  # type: ignore[arg-type]


# -- the simulator: DTMF as FreeSWITCH reports it ----------------------------------------------


def parked(esl, ext: str = "1000", extra: str = "") -> str:
    answer = esl.api(f"originate {{channel_rate=8000{extra}}}loopback/{ext}/default &park()")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def bridged(esl, extra: str = "") -> str:
    answer = esl.api(f"originate {{channel_rate=8000{extra}}}loopback/1000/default "
                     "&bridge(loopback/1001/default)")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "bridge")
    return uuid


def keys_seen(esl) -> list:
    return [e for e in esl.seen if e.name == "DTMF"]


def test_the_simulator_reports_keys_as_freeswitch_does(esl, sim):
    esl.subscribe("DTMF")
    uuid = parked(esl)
    b_leg = esl.api(f"uuid_getvar {uuid} other_loopback_leg_uuid")
    assert esl.api(f"uuid_recv_dtmf {uuid} 5") == f"+OK {uuid} received DTMF 5.\n"
    assert wait_until(lambda: len(keys_seen(esl)) == 1, 3)
    ev = keys_seen(esl)[0]
    assert ev.get("Unique-ID") == uuid and ev.get("Channel-Name") == "loopback/1000-a"
    assert (ev.get("DTMF-Digit"), ev.get("DTMF-Duration"), ev.get("DTMF-Source")) == (
        "5", "2000", "APP")
    assert ev.get("Caller-Destination-Number") == "1000"  # the channel's data headers
    # the other loopback leg sends: the parked leg receives, one event per digit, none on B
    assert esl.api(f"uuid_send_dtmf {b_leg} 12").startswith(f"+OK {b_leg} sent DTMF 12.")
    assert wait_until(lambda: len(keys_seen(esl)) == 3, 3)
    gevent.sleep(0.1)
    sent = keys_seen(esl)[1:]
    assert [(e.get("Unique-ID"), e.get("DTMF-Digit"), e.get("DTMF-Source")) for e in sent] == [
        (uuid, "1", "UNKNOWN"), (uuid, "2", "UNKNOWN")]
    stamps = [int(e.get("Event-Date-Timestamp")) for e in sent]
    print(f"\nsimulator: digits of one uuid_send_dtmf {(stamps[1] - stamps[0]) / 1000:.1f} ms "
          "apart (FreeSWITCH: 20)")
    assert stamps[1] > stamps[0]  # one a tick after the other
    assert esl.api("uuid_recv_dtmf 00000000-0000-0000-0000-000000000000 1") == (
        "-ERR Cannot locate session!\n")
    assert esl.api(f"uuid_recv_dtmf {uuid}").startswith("-USAGE")
    # a short press: digits@ms
    assert esl.api(f"uuid_recv_dtmf {uuid} 7@100").startswith("+OK")
    assert wait_until(lambda: len(keys_seen(esl)) == 4, 3)
    assert keys_seen(esl)[3].get("DTMF-Duration") == "800"
    esl.api(f"uuid_kill {uuid}")


def test_on_a_bridged_call_the_key_is_reported_by_the_channel_that_got_it_only(esl, sim):
    esl.subscribe("DTMF")
    uuid = bridged(esl)
    assert esl.api(f"uuid_recv_dtmf {uuid} 9").startswith("+OK")
    assert wait_until(lambda: len(keys_seen(esl)) == 1, 3)
    gevent.sleep(0.15)
    assert [(e.get("Unique-ID"), e.get("Channel-Name")) for e in keys_seen(esl)] == [
        (uuid, "loopback/1000-a")]
    esl.api(f"uuid_kill {uuid}")


# -- end to end: what the endpoint gets --------------------------------------------------------


def press(esl, uuid: str, digits: str) -> float:
    """The caller presses `digits` (FreeSWITCH reports one every 20 ms); when it was asked."""
    at = time.monotonic()
    assert esl.api(f"uuid_recv_dtmf {uuid} {digits}").startswith("+OK")
    return at


def report_latency(label: str, asked: float, digits: int, conn, is_key) -> None:
    """From the api call to the peer's arrival of each digit, less FreeSWITCH's own 20 ms per
    digit (the simulator fires the first on the next tick: 0-20 ms of it is the simulator's)."""
    times = [t for m, t in zip(conn.messages, conn.times, strict=False) if is_key(m)][-digits:]
    late = [(t - asked) * 1000 - 20 * i for i, t in enumerate(times)]
    print(f"\n{label}: digit arrived {', '.join(f'{x:.1f}' for x in late)} ms after it was "
          f"pressed (incl. up to 20 ms of the simulator's tick)")


def mas_keys(conn) -> list[dict]:
    return [json.loads(m)["data"] for m in conn.texts if m.startswith('{"type":"dtmf"')]


def mas_start(daemon, peer, uuid: str, rate: str = "8k"):
    n = len(peer.connections)
    assert daemon.execute(f"{uuid} start {peer.url('/k')} mono {rate}") == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.binary) > 5, 5)
    return conn


def test_mod_audio_stream_tells_keys_once_in_order_when_asked(esl, daemon, peer):
    uuid = parked(esl, extra=",STREAM_SEND_DTMF=true")
    conn = mas_start(daemon, peer, uuid)
    asked = press(esl, uuid, "1234")
    assert wait_until(lambda: len(mas_keys(conn)) == 4, 3)
    report_latency("mod_audio_stream", asked, 4, conn,
                   lambda m: isinstance(m, str) and m.startswith('{"type":"dtmf"'))
    b_leg = esl.api(f"uuid_getvar {uuid} other_loopback_leg_uuid")
    assert esl.api(f"uuid_send_dtmf {b_leg} *#").startswith("+OK")
    assert wait_until(lambda: len(mas_keys(conn)) == 6, 3)
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    gevent.sleep(0.1)
    n = len(conn.messages)
    press(esl, uuid, "0")
    assert wait_until(lambda: len(mas_keys(conn)) == 7, 3)
    assert conn.messages[n:] == ['{"type":"dtmf","data":{"digit":"0","duration":250}}']
    gevent.sleep(0.2)
    assert mas_keys(conn) == [{"digit": d, "duration": 250} for d in "1234*#0"]  # once each
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    esl.api(f"uuid_kill {uuid}")


def test_mod_audio_stream_tells_no_key_unless_asked(esl, daemon, peer):
    """Endpoints written for the C module may not expect text frames: none without the
    variable (and none when it says false)."""
    quiet = parked(esl)
    said_no = parked(esl, extra=",STREAM_SEND_DTMF=false")
    conns = [mas_start(daemon, peer, uuid) for uuid in (quiet, said_no)]
    for uuid in (quiet, said_no):
        press(esl, uuid, "12#")
    gevent.sleep(0.3)
    assert daemon.keys.duplicates == 0
    for conn in conns:
        assert conn.texts == [] and len(conn.binary) > 10  # audio only, no text at all
    for uuid in (quiet, said_no):
        esl.api(f"uuid_kill {uuid}")


def twilio_start(daemon, peer, uuid: str):
    n = len(peer.connections)
    assert daemon.execute(f"{uuid} start {peer.url('/tw')} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.messages) >= 5, 5)
    return conn, json.loads(conn.messages[1])["streamSid"]


def twilio_keys(conn, sid: str) -> list[str]:
    return [check_dtmf(m, sid)[1] for m in conn.messages if event_of(m) == "dtmf"]


def test_twilio_keys_arrive_once_in_order(esl, daemon, peer):
    uuid = parked(esl, extra=",STREAM_PROTOCOL=twilio")
    conn, sid = twilio_start(daemon, peer, uuid)
    asked = press(esl, uuid, "9876")
    assert wait_until(lambda: len(twilio_keys(conn, sid)) == 4, 3)
    report_latency("twilio", asked, 4, conn, lambda m: '"event":"dtmf"' in m)
    gevent.sleep(0.2)
    assert twilio_keys(conn, sid) == ["9", "8", "7", "6"]
    esl.api(f"uuid_kill {uuid}")


@pytest.mark.parametrize("protocol", ["twilio", "mod_audio_stream"])
def test_keys_of_a_call_streamed_through_taps_are_the_call_s(esl, daemon, peer, sim, protocol):
    """A bridged call streams through loopback taps; the caller's keys are reported by the
    call itself (not by its taps: eavesdrop passes no DTMF) and reach its stream once."""
    esl.subscribe("DTMF")
    uuid = bridged(esl, extra=f",STREAM_PROTOCOL={protocol},STREAM_SEND_DTMF=true,"
                              "STREAM_SOURCE=taps")  # auto records a bridged call
    if protocol == "twilio":
        conn, sid = twilio_start(daemon, peer, uuid)
        got = lambda: twilio_keys(conn, sid)  # noqa: E731
    else:
        conn = mas_start(daemon, peer, uuid)
        got = lambda: [k["digit"] for k in mas_keys(conn)]  # noqa: E731
    stream = daemon.streams[uuid]
    assert stream.source == "taps" and daemon.calls.tap_owners  # fed by its taps
    asked = press(esl, uuid, "42")
    assert wait_until(lambda: len(got()) == 2, 3)
    report_latency(f"{protocol} through taps", asked, 2, conn,
                   lambda m: isinstance(m, str) and "dtmf" in m)
    gevent.sleep(0.2)
    assert got() == ["4", "2"]
    reporters = {e.get("Unique-ID") for e in keys_seen(esl)}
    assert reporters == {uuid}  # the target call, not a tap channel
    esl.api(f"uuid_kill {uuid}")


def test_keys_of_a_recorded_bridged_call_reach_its_stream_once(esl, daemon, peer, sim):
    """`auto` records a bridged call into a FIFO (no extra channel): its keys, reported by the
    call itself, reach its stream once and in order."""
    esl.subscribe("DTMF")
    uuid = bridged(esl, extra=",STREAM_PROTOCOL=twilio")
    conn, sid = twilio_start(daemon, peer, uuid)
    assert daemon.streams[uuid].source == "record"
    asked = press(esl, uuid, "314")
    assert wait_until(lambda: len(twilio_keys(conn, sid)) == 3, 3)
    report_latency("twilio, recorded", asked, 3, conn, lambda m: '"event":"dtmf"' in m)
    gevent.sleep(0.2)
    assert twilio_keys(conn, sid) == ["3", "1", "4"]
    esl.api(f"uuid_kill {uuid}")
