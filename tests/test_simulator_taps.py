"""The simulator's bridged calls and loopback taps, against the facts file ("Streaming calls
that are not parked"): `originate ... &bridge(loopback/<ext>/default)` gives a two-party call;
`originate loopback/native_eavesdrop:<uuid>\\s<read|write>/default/inline &park()` a parked tap
whose unicast carries what the target reads or hears; taps end with their target; a write tap
sees a displace only if the displace was attached before it (media-bug order)."""

from __future__ import annotations

import re

import gevent
import pytest
from helpers.sim import UUID_RE, UdpSink, originate, simulator_fixtures, start_unicast, write_wav

from esl_audio_stream.dev.analysis import dominant_frequency, tone_amplitude

EXTENSIONS = {"1000": "tone:440", "2000": "tone:1000", "3000": "silence"}


sim, esl = simulator_fixtures(EXTENSIONS)


def bridged(esl) -> str:
    return originate(esl, "1000", "&bridge(loopback/2000/default)", "{channel_rate=8000}")


def tap(esl, target: str, side: str) -> str:
    body = esl.api_body(f"originate loopback/native_eavesdrop:{target}\\s{side}/default/inline"
                        " &park()")
    m = re.fullmatch(rf"\+OK ({UUID_RE})\n", body)
    assert m, body
    return m.group(1)


def audio(sink: UdpSink, n: int = 25) -> bytes:
    assert sink.wait_for(n + 5, timeout=3.0)
    return b"".join(d for _, d, _ in sink.got[5:5 + n])


def count(esl) -> int:
    return int(esl.api_body("show channels count").split()[0])


def test_bridge_makes_a_two_party_call_and_taps_carry_each_side(sim, esl):
    uuid = bridged(esl)
    gevent.sleep(0.1)
    assert count(esl) == 4  # two loopback pairs
    assert esl.api_body(f"uuid_getvar {uuid} current_application") == "bridge"
    sinks = {side: UdpSink() for side in ("read", "write")}
    taps = {side: tap(esl, uuid, side) for side in sinks}
    try:
        gevent.sleep(0.1)
        assert count(esl) == 8
        for side, sink in sinks.items():
            start_unicast(esl, taps[side], sink)
        assert abs(dominant_frequency(audio(sinks["read"]), 8000) - 440) <= 5
        assert abs(dominant_frequency(audio(sinks["write"]), 8000) - 1000) <= 5
        assert sim.channel(taps["read"]).variables["other_loopback_leg_uuid"]
        # the far party hangs up: the whole call goes, then the taps
        far = sim.channel(uuid).bridge_peer
        esl.api_body(f"uuid_kill {far.uuid}")
        gevent.sleep(0.3)
        assert esl.api_body(f"uuid_exists {uuid}") == "false"
        assert all(esl.api_body(f"uuid_exists {t}") == "false" for t in taps.values())
        assert count(esl) == 0
    finally:
        for s in sinks.values():
            s.close()


def test_a_tap_on_nothing_ends_by_itself(sim, esl):
    t = tap(esl, "00000000-0000-0000-0000-000000000000", "read")
    gevent.sleep(0.2)
    assert esl.api_body(f"uuid_exists {t}") == "false"
    assert esl.api_body("originate loopback/9999/default &bridge(loopback/2000/default)") \
        == "-ERR NO_ROUTE_DESTINATION\n"


def test_write_tap_sees_a_displace_only_if_it_was_attached_first(sim, esl, tmp_path):
    import math

    path = str(tmp_path / "tone.wav")
    write_wav(path, 8000, [int(8000 * math.sin(2 * math.pi * 2000 * i / 8000))
                           for i in range(8000 * 3)])
    uuid = bridged(esl)
    gevent.sleep(0.1)
    before = UdpSink()
    after = UdpSink()
    try:
        t1 = tap(esl, uuid, "write")  # attached before the displace starts
        assert esl.api_body(f"uuid_displace {uuid} start {path} 0 mux") == "+OK Success\n"
        t2 = tap(esl, uuid, "write")  # attached after it
        start_unicast(esl, t1, before)
        start_unicast(esl, t2, after)
        heard_before, heard_after = audio(before), audio(after)
        # a displace started after the tap attached is not in it; one started before is
        assert tone_amplitude(heard_before, 2000, 8000) < 100
        assert tone_amplitude(heard_after, 2000, 8000) == pytest.approx(8000, rel=0.1)
        for heard in (heard_before, heard_after):  # the far party's voice in both
            assert tone_amplitude(heard, 1000, 8000) == pytest.approx(8000, rel=0.1)
        assert len(sim.channel(uuid).displaced) > 0  # the caller heard it either way
    finally:
        before.close()
        after.close()
        esl.api_body(f"uuid_kill {uuid}")


def test_parked_call_write_tap_carries_write_back_audio(sim, esl):
    from gevent import socket

    uuid = originate(esl, "3000", vars_="{channel_rate=8000}")
    gevent.sleep(0.1)
    direct, tapped = UdpSink(), UdpSink()
    try:
        port = start_unicast(esl, uuid, direct)
        t = tap(esl, uuid, "write")
        start_unicast(esl, t, tapped)
        assert direct.wait_for(3)
        import math
        from array import array

        tone = array("h", (int(8000 * math.sin(2 * math.pi * 700 * i / 8000))
                           for i in range(160 * 60))).tobytes()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(60):  # one frame per 20 ms into the write-back port
            tx.sendto(tone[i * 320:(i + 1) * 320], ("127.0.0.1", port))
            gevent.sleep(0.02)
        tx.close()
        heard = b"".join(d for _, d, _ in tapped.got)
        assert abs(dominant_frequency(heard, 8000) - 700) <= 5
    finally:
        direct.close()
        tapped.close()
        esl.api_body(f"uuid_kill {uuid}")
