"""The native pump on a recording's FIFO, in a running daemon: it carries a mono `record` stream
(every call that is not parked), gives control back at each change -- pause, a recording someone
stopped, a second stream, stop, hang-up -- and takes the next recording again; nothing of it is
left behind (no pump in the engine's set, no FIFO fd)."""

from __future__ import annotations

import os
from array import array

import gevent
import pytest
from conftest import wait_until
from helpers.bridged import amp, bridged_call, channels, start
from helpers.native import needs_native

from esl_audio_stream.native.engine import engine

pytestmark = needs_native


def the_pump(daemon, uuid):
    return daemon.streams[uuid].pipeline.native


def open_fifos() -> list[str]:
    """The recordings' FIFOs this process holds open for reading (the daemon's read ends; the
    simulator, in this process too, holds the write ends)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            with open(f"/proc/self/fdinfo/{fd}") as info:
                flags = int(info.read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError):
            continue
        if target.endswith((".r8", ".r16", ".raw")) and flags & os.O_ACCMODE == os.O_RDONLY:
            out.append(target)
    return out


def unbroken(sim, pcm: bytes, freq: float = 440) -> bool:
    """`pcm` is the simulator's `freq` tone at 8 kHz, no sample lost, repeated or reordered."""
    buf, period = sim.switch.lib.tone(freq, 8000)
    ref = array("h", bytes(buf[: 2 * period]))
    got = array("h", pcm)
    at = next((i for i in range(period) if ref[i:i + 8] == got[:8]), None)
    return at is not None and len(got) > 0 and got == array(
        "h", (ref[(at + i) % period] for i in range(len(got))))


def test_a_mono_recording_is_carried_in_c_every_sample_in_order(esl, daemon, peer, sim):
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "mono")  # 8k: no resampler, the recording's own samples
    stream = daemon.streams[uuid]
    assert stream.source == "record"
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    at_arm = stream.frames_in
    assert wait_until(lambda: stream.frames_in >= at_arm + 50, 3)  # a second of C's frames
    assert len(stream.last_frame) == 320 and stream.malformed == 0
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(conn.closed.is_set, 5)
    assert len(conn.binary) == stream.frames_out  # what was counted out is what arrived
    assert {len(m) for m in conn.binary} == {320}
    assert unbroken(sim, b"".join(conn.binary))  # from the Python reader's frames to C's
    assert pump.arms == 1 and not pump.stops
    assert len(engine()) == 0 and open_fifos() == []
    esl.api(f"uuid_kill {uuid}")


def test_16k_from_an_8k_recording_is_resampled_in_c(esl, daemon, peer):
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "mono", "16k")
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    n = len(conn.binary)
    assert wait_until(lambda: len(conn.binary) >= n + 40, 3)
    audio = b"".join(conn.binary[-25:])
    assert amp(audio, 440, 16000) == pytest.approx(8000, rel=0.1) and amp(audio, 1000,
                                                                           16000) < 200
    assert {len(m) for m in conn.binary} == {640}
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
    assert len(engine()) == 0 and open_fifos() == []


def test_pause_hands_back_and_resume_carries_the_new_recording(esl, daemon, peer, sim):
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "mono")
    stream = daemon.streams[uuid]
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    first = stream.recording
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    assert not pump.armed and len(engine()) == 0
    assert not sim.channel(uuid).recordings and open_fifos() == []
    n = len(conn.binary)
    gevent.sleep(0.2)
    assert len(conn.binary) <= n + 1
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    assert stream.recording != first
    assert wait_until(lambda: pump.armed, 2) and pump.arms == 2
    assert wait_until(lambda: len(conn.binary) >= n + 30, 3)
    assert open_fifos() == [stream.recording]
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
    assert len(engine()) == 0 and open_fifos() == []


def test_a_recording_someone_stopped_ends_in_c_and_the_next_is_carried(esl, daemon, peer, sim):
    """EOF in C gives control back; the Python path's on_eof records again, and the pump
    takes the new recording's FIFO."""
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "mono")
    stream = daemon.streams[uuid]
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    old = stream.recording
    esl.api(f"uuid_record {uuid} stop {old}")
    assert wait_until(lambda: stream.recording_restarts == 1, 3)
    assert stream.recording != old
    assert pump.stops["eof"] == 1 or pump.stops["short"] > 0  # C read the EOF, unless a short
    # write (a loaded machine's slow peer) had given the FIFO back to Python just before
    assert wait_until(lambda: pump.armed and pump.arms == 2, 2)
    n = len(conn.binary)
    assert wait_until(lambda: len(conn.binary) >= n + 30, 3)
    assert amp(b"".join(conn.binary[-25:]), 440) == pytest.approx(8000, rel=0.1)
    assert open_fifos() == [stream.recording] and len(engine()) == 1
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(conn.closed.is_set, 5)
    assert len(conn.binary) == stream.frames_out
    assert len(engine()) == 0 and open_fifos() == []
    esl.api(f"uuid_kill {uuid}")


def test_a_stereo_stream_joining_retires_the_pump_and_the_first_loses_nothing(esl, daemon, peer,
                                                                             sim):
    uuid = bridged_call(esl)
    first = start(daemon, peer, uuid, "mono")
    stream = daemon.streams[uuid]
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    n = len(peer.connections)
    assert daemon.execute(f"{uuid}@second start {peer.url('/second')} stereo 8k") == \
        "+OK Success\n"
    second = peer.wait_connection(n + 1)
    assert not pump.armed and stream.pipeline.native is None  # retired, for good
    assert wait_until(lambda: len(second.binary) >= 25, 3)
    assert len(engine()) == 0
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(first.closed.is_set, 5)
    assert len(first.binary) == stream.frames_out  # no frame lost or doubled at the hand-back
    assert unbroken(sim, b"".join(first.binary))  # across the recording made again in stereo
    esl.api(f"uuid_kill {uuid}")  # the second stream ends with the call
    assert wait_until(lambda: channels(esl) == 0 and not daemon.streams, 3)
    assert len(engine()) == 0 and open_fifos() == []


def test_a_hang_up_while_carried_leaves_nothing(esl, daemon, peer):
    calls = [bridged_call(esl) for _ in range(4)]
    conns = [start(daemon, peer, uuid, "mono") for uuid in calls]
    pumps = [the_pump(daemon, uuid) for uuid in calls]
    assert wait_until(lambda: all(p.armed for p in pumps), 2)
    assert len(engine()) == 4 and len(open_fifos()) == 4
    for uuid in calls:
        esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: all(c.closed.is_set() for c in conns) and not daemon.streams, 5)
    assert len(engine()) == 0 and open_fifos() == []
    assert all(p.st is None and not p.armed for p in pumps)


@pytest.mark.parametrize("native", [False])
def test_native_off_records_on_the_python_path(esl, daemon, peer, native):
    uuid = bridged_call(esl)
    start(daemon, peer, uuid, "mono")
    assert the_pump(daemon, uuid) is None
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
