"""The simulator's `uuid_record`, against the facts file ("recording into a FIFO") and
FreeSWITCH's source (switch_ivr_async.c, switch_core_file.c, mod_sndfile): a recording into a
FIFO streams the call in real time after one start stall, stereo left read / right write or one
direction, in any call state; its variables stay off the channel; the open waits for a reader
(without holding up the simulator); stop ends it (EOF); a reader that goes away is not the end of
the recording; a displace attached after it is not in it."""

from __future__ import annotations

import os
from array import array

import gevent
import pytest
from helpers.fifo import Fifo
from helpers.sim import RawEsl, originate, simulator_fixtures

from esl_audio_stream.dev.analysis import tone_amplitude
from esl_audio_stream.dev.simulator.recording import FILE_BUFFER_LEN, PRE_BUFFER_FRAMES

EXTENSIONS = {"1000": "tone:440", "2000": "tone:1000", "3000": "silence", "4000": "echo"}
REALTIME = "{RECORD_STEREO=true,enable_file_write_buffering=false}"
FRAME = 320  # 20 ms of 8 kHz mono

sim, esl = simulator_fixtures(EXTENSIONS)


def bridged(esl) -> str:
    return originate(esl, "1000", "&bridge(loopback/2000/default)", "{channel_rate=8000}")


def parked(esl, ext: str = "1000") -> str:
    uuid = originate(esl, ext, "&park()", "{channel_rate=8000}")
    gevent.sleep(0.06)
    return uuid


def split(stereo: bytes) -> tuple[bytes, bytes]:
    a = array("h", stereo[: len(stereo) & ~3])
    return a[0::2].tobytes(), a[1::2].tobytes()


def amp(pcm: bytes, freq: float) -> float:
    return tone_amplitude(pcm, freq, 8000)


def record(esl, uuid: str, path: str, variables: str = REALTIME) -> str:
    return esl.api_body(f"uuid_record {uuid} start {path} 0 {variables}")


def test_a_bridged_call_recorded_into_a_fifo_in_real_time(sim, esl, tmp_path):
    uuid = bridged(esl)
    gevent.sleep(0.1)
    before = dict(sim.channel(uuid).variables)
    esl.send(b"event plain RECORD_START RECORD_STOP\n\n")
    esl.expect("command/reply")
    fifo = Fifo(tmp_path)
    assert record(esl, uuid, fifo.path) == "+OK Success\n"
    assert esl.event(match=lambda e: e.name == "RECORD_START").get(
        "Record-File-Path") == fifo.path
    # the start stall: one frame, then the pre-buffer's frames at once, then a frame at a time
    stall = (PRE_BUFFER_FRAMES + 1) * 2 * FRAME
    assert fifo.read_until(2 * FRAME + stall + 20 * 2 * FRAME)
    sizes = [len(r) for r in fifo.reads]
    assert sizes[0] == 2 * FRAME
    assert sum(sizes[1:3]) >= stall  # the burst, however the reads cut it
    left, right = split(fifo.data[-40 * 2 * FRAME:])
    assert amp(left, 440) == pytest.approx(8000, rel=0.05) and amp(left, 1000) < 100
    assert amp(right, 1000) == pytest.approx(8000, rel=0.05) and amp(right, 440) < 100
    # the recording's variables stayed off the channel; FreeSWITCH's own results are set at stop
    ch = sim.channel(uuid)
    assert not {k for k in ch.variables if k.upper().startswith(("RECORD_", "ENABLE_FILE"))}
    assert esl.api_body(f"uuid_record {uuid} stop {fifo.path}") == "+OK Success\n"
    assert fifo.read_to_eof()
    assert ch.variables["record_completion_cause"] == "success-maxtime"
    assert int(ch.variables["record_samples"]) == len(fifo.data) // 4 > 0
    assert set(ch.variables) - set(before) == {"record_samples", "record_seconds", "record_ms",
                                               "record_completion_cause"}
    stop = esl.event(match=lambda e: e.name == "RECORD_STOP")
    assert stop.get("Record-File-Path") == fifo.path
    assert not ch.recordings and os.path.exists(fifo.path)  # a FIFO written to stays
    assert esl.api_body(f"uuid_record {uuid} stop {fifo.path}") == (
        "-ERR Cannot stop record session!\n")
    fifo.close()


@pytest.mark.parametrize("variables, freqs", [
    ("{RECORD_READ_ONLY=true,enable_file_write_buffering=false}", (440,)),
    ("{RECORD_WRITE_ONLY=true,enable_file_write_buffering=false}", (1000,)),
    ("{enable_file_write_buffering=false}", (440, 1000)),  # mono: both directions mixed
])
def test_one_direction_or_both_mixed(sim, esl, tmp_path, variables, freqs):
    uuid = bridged(esl)
    fifo = Fifo(tmp_path)
    assert record(esl, uuid, fifo.path, variables) == "+OK Success\n"
    assert fifo.read_until(40 * FRAME)
    pcm = fifo.data[-30 * FRAME:]
    for freq in (440, 1000):
        if freq in freqs:
            assert amp(pcm, freq) == pytest.approx(8000, rel=0.05)
        else:
            assert amp(pcm, freq) < 100
    fifo.close()


def test_without_the_variable_writes_are_buffered_in_64k_bursts(sim, esl, tmp_path):
    uuid = bridged(esl)
    fifo = Fifo(tmp_path)
    assert record(esl, uuid, fifo.path, "{RECORD_STEREO=true}") == "+OK Success\n"
    assert fifo.read_until(FILE_BUFFER_LEN, timeout=5)
    gevent.sleep(0.05)  # a burst is one write; let it land whole
    fifo.read_now()
    assert len(fifo.data) % FILE_BUFFER_LEN == 0  # nothing but whole bursts
    fifo.close()


def test_the_open_waits_for_a_reader_without_holding_up_the_simulator(sim, esl, tmp_path):
    uuid = bridged(esl)
    other = parked(esl, "3000")
    fifo = Fifo(tmp_path, open_now=False)
    waiting = RawEsl(sim.address)
    job = gevent.spawn(waiting.api_body, f"uuid_record {uuid} start {fifo.path} 0 {REALTIME}")
    try:
        gevent.sleep(0.2)
        assert not job.ready()  # that connection waits, as FreeSWITCH's open does
        frames = sim.channel(other).frames_read
        assert esl.api_body(f"uuid_exists {other}") == "true"  # the others do not
        gevent.sleep(0.1)
        assert sim.channel(other).frames_read > frames  # and calls go on
        fifo.open()
        assert job.get(timeout=2) == "+OK Success\n"
        assert fifo.read_until(2 * FRAME)
    finally:
        waiting.close()
        fifo.close()


@pytest.mark.parametrize("state", ["parked", "bridged", "echo"])
def test_any_call_state(sim, esl, tmp_path, state):
    if state == "parked":
        uuid = parked(esl)
    elif state == "bridged":
        uuid = bridged(esl)
    else:
        uuid = originate(esl, "1000", "&echo()", "{channel_rate=8000}")
    fifo = Fifo(tmp_path)
    assert record(esl, uuid, fifo.path) == "+OK Success\n"
    assert fifo.read_until(40 * 2 * FRAME)
    left, _ = split(fifo.data[-20 * 2 * FRAME:])
    assert amp(left, 440) == pytest.approx(8000, rel=0.05)
    esl.api_body(f"uuid_kill {uuid}")  # a hang-up ends it: EOF
    assert fifo.read_to_eof()
    fifo.close()


def test_a_displace_after_the_recording_is_not_in_it_one_before_is(sim, esl, tmp_path):
    from helpers.sim import write_wav

    tone = [int(8000 * __import__("math").sin(2 * 3.141592653589793 * 1500 * i / 8000))
            for i in range(8000 * 3)]
    wav = str(tmp_path / "t.wav")
    write_wav(wav, 8000, tone)
    for before in (True, False):
        uuid = bridged(esl)
        fifo = Fifo(tmp_path, f"rec{before}.r8")
        if before:
            assert esl.api_body(f"uuid_displace {uuid} start {wav} 0 mux").startswith("+OK")
        assert record(esl, uuid, fifo.path) == "+OK Success\n"
        if not before:
            assert esl.api_body(f"uuid_displace {uuid} start {wav} 0 mux").startswith("+OK")
        assert fifo.read_until(60 * 2 * FRAME)
        _, right = split(fifo.data[-30 * 2 * FRAME:])
        assert amp(right, 1000) == pytest.approx(8000, rel=0.05)
        if before:
            assert amp(right, 1500) == pytest.approx(8000, rel=0.1)
        else:
            assert amp(right, 1500) < 100
            assert amp(bytes(sim.channel(uuid).displaced), 1500) > 4000  # the caller heard it
        esl.api_body(f"uuid_kill {uuid}")
        fifo.close()


def test_stop_all_and_a_second_start_on_the_same_path(sim, esl, tmp_path):
    uuid = parked(esl)
    fifos = [Fifo(tmp_path, f"r{i}.r8") for i in range(2)]
    for fifo in fifos:
        assert record(esl, uuid, fifo.path) == "+OK Success\n"
    assert record(esl, uuid, fifos[0].path) == "+OK Success\n"  # "Already recording": no second
    assert len(sim.channel(uuid).recordings) == 2
    assert esl.api_body(f"uuid_record {uuid} stop all") == "+OK Success\n"
    assert all(f.read_to_eof() for f in fifos)
    assert esl.api_body(f"uuid_record {uuid} stop all") == "-ERR Cannot stop record session!\n"
    assert esl.api_body(f"uuid_record {uuid} start") .startswith("-USAGE: ")
    assert esl.api_body(f"uuid_record nope start {fifos[0].path}") == (
        "-ERR Cannot locate session!\n")
    assert esl.api_body(f"uuid_record {uuid} start {tmp_path}/x.mp3 0") == (
        "-ERR Cannot record session!\n")
    for fifo in fifos:
        fifo.close()


def test_a_reader_that_goes_away_is_not_the_end_of_the_recording(sim, esl, tmp_path):
    uuid = bridged(esl)
    fifo = Fifo(tmp_path)
    assert record(esl, uuid, fifo.path) == "+OK Success\n"
    assert fifo.read_until(40 * 2 * FRAME)
    fifo.close()  # a daemon killed: FreeSWITCH's writes fail (EPIPE) and it goes on
    rec = sim.channel(uuid).recordings[fifo.path]
    errors = rec.errors
    gevent.sleep(0.2)
    assert rec.errors > errors and rec.open
    fifo.reads.clear()
    fifo.open()  # the next process opens the same FIFO: the audio comes again
    assert fifo.read_until(10 * 2 * FRAME)
    left, right = split(fifo.data[-8 * 2 * FRAME:])
    assert amp(left, 440) > 6000 and amp(right, 1000) > 6000
    fifo.close()


def test_a_fifo_nobody_reads_holds_up_no_other_call(sim, esl, tmp_path):
    stalled, other = bridged(esl), bridged(esl)
    full, fifo = Fifo(tmp_path, "full.r8"), Fifo(tmp_path, "other.r8")
    assert record(esl, stalled, full.path) == "+OK Success\n"
    assert record(esl, other, fifo.path) == "+OK Success\n"
    rec = sim.channel(stalled).recordings[full.path]
    assert fifo.read_until(3 * 65536, timeout=8)  # over 2 s: the other pipe filled long ago
    assert rec.frames * 2 * FRAME > rec.written  # held back by the full pipe, not lost
    assert rec.errors == 0
    full.close()
    fifo.close()


def test_a_users_recording_into_a_file(sim, esl, tmp_path):
    uuid = parked(esl)
    path = str(tmp_path / "user.r8")
    assert record(esl, uuid, path, "{RECORD_READ_ONLY=true}") == "+OK Success\n"
    gevent.sleep(0.6)
    assert esl.api_body(f"uuid_record {uuid} stop {path}") == "+OK Success\n"
    with open(path, "rb") as f:
        pcm = f.read()
    assert len(pcm) > 20 * FRAME and amp(pcm[-10 * FRAME:], 440) > 6000


@pytest.mark.parametrize("frames", [10, 0])
def test_the_start_stall_is_the_pre_buffer_record_pre_buffer_frames_sets(sim, esl, tmp_path,
                                                                         frames):
    """RECORD_PRE_BUFFER_FRAMES (25 when not set; set but not above 0: none) is how many frames
    the bug holds after its first: the stall, then all of them at once."""
    uuid = bridged(esl)
    fifo = Fifo(tmp_path)
    variables = (f"{{RECORD_PRE_BUFFER_FRAMES={frames},RECORD_READ_ONLY=true,"
                 "enable_file_write_buffering=false}")
    assert record(esl, uuid, fifo.path, variables) == "+OK Success\n"
    rec = sim.channel(uuid).recordings[fifo.path]
    assert rec.pre_buffer == frames
    assert fifo.read_until(FRAME * (frames + 10))
    if frames:
        assert fifo.reads[0] == fifo.data[:FRAME] and len(fifo.reads[1]) >= frames * FRAME
    else:  # nothing held: every frame read is written at once, from the first on
        assert rec.frames >= 10 and rec.written == rec.frames * FRAME
    fifo.close()
