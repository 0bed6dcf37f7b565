"""Streams through the `record` source, end to end against the simulator (which records into a
FIFO as the facts file says FreeSWITCH does): FreeSWITCH records the call into a FIFO the daemon
reads -- any call, one media bug, no extra channel.

The two-party call (helpers/bridged.py): the caller says 440 Hz, the other party 1000 Hz, so
what the caller hears is 1000 Hz."""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from array import array
from pathlib import Path

import gevent
import pytest
from conftest import wait_until
from helpers.audio import stream_audio, tone
from helpers.bridged import amp, blocks, bridged_call, channels, played_once, recent, split, start

from esl_audio_stream.app import events
from esl_audio_stream.call.reader import FifoReader
from esl_audio_stream.call.recording import record_variables

#: Each test that uses the daemon runs on the native pump and on the Python path (conftest).
pytestmark = pytest.mark.both_paths

def fifos(root) -> list[str]:
    """Every FIFO under the daemon's files directory."""
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names
            if os.path.exists(os.path.join(d, f))
            and os.stat(os.path.join(d, f)).st_mode & 0o170000 == 0o010000]


def files_dir(daemon) -> str:
    return daemon.config.files_dir


def errors_of(esl, uuid: str) -> list[str]:
    return [json.loads(e.body)["message"]["error"] for e in esl.seen
            if e.subclass == events.ERROR and e.get(events.STREAM_UUID_HEADER) == uuid]


@pytest.mark.parametrize("mix", ["mono", "stereo", "mixed"])
def test_a_bridged_call_streams_through_one_recording(esl, daemon, peer, sim, mix):
    uuid = bridged_call(esl)
    before = channels(esl)
    conn = start(daemon, peer, uuid, mix)
    stream = daemon.streams[uuid]
    assert stream.source == "record"  # auto: the call is not parked
    assert channels(esl) == before  # no extra channel
    recs = sim.channel(uuid).recordings
    assert list(recs) == [stream.recording] and fifos(files_dir(daemon)) == [stream.recording]
    assert recs[stream.recording].channels == (1 if mix == "mono" else 2)
    gevent.sleep(0.3)
    audio = recent(conn)
    if mix == "mono":
        assert amp(audio, 440) == pytest.approx(8000, rel=0.1) and amp(audio, 1000) < 200
    elif mix == "stereo":
        left, right = split(audio)
        assert amp(left, 440) == pytest.approx(8000, rel=0.1) and amp(left, 1000) < 200
        assert amp(right, 1000) == pytest.approx(8000, rel=0.1) and amp(right, 440) < 200
    else:
        assert amp(audio, 440) == pytest.approx(8000, rel=0.1)
        assert amp(audio, 1000) == pytest.approx(8000, rel=0.1)
    # either party hanging up ends the stream, and the FIFO goes
    far = sim.channel(uuid).bridge_peer.uuid
    esl.api(f"uuid_kill {far if mix == 'stereo' else uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
    assert conn.closed.wait(3) or wait_until(conn.closed.is_set, 3)
    assert fifos(files_dir(daemon)) == [] and not sim.channel(uuid).recordings
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_the_recording_is_asked_for_with_every_variable_and_none_stays(esl, daemon, peer, sim):
    """Each recording variable FreeSWITCH would take from the channel is named, so the user's
    RECORD_* for their own recordings change nothing of ours, and none is left on the channel."""
    uuid = bridged_call(esl, extra=",RECORD_HANGUP_ON_ERROR=true,RECORD_STEREO=true,"
                                   "RECORD_BRIDGE_REQ=true,enable_file_write_buffering=true")
    before = dict(sim.channel(uuid).variables)
    start(daemon, peer, uuid, "mono")
    rec = next(iter(sim.channel(uuid).recordings.values()))
    assert rec.channels == 1 and rec.read and not rec.write and rec.buffered == 0
    for name in ("RECORD_HANGUP_ON_ERROR=false", "RECORD_USE_THREAD=true",
                 "RECORD_STEREO=false", "RECORD_READ_ONLY=true", "record_sample_rate=8000",
                 "enable_file_write_buffering=false"):
        assert name in record_variables(8000, 1)
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    after = sim.channel(uuid).variables
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k.startswith("record_") for k in changed), changed  # FreeSWITCH's
    esl.api(f"uuid_kill {uuid}")


def test_the_start_stall_loses_no_frame(esl, daemon, peer, sim):
    """FreeSWITCH writes one frame, then nothing for ~0.5 s, then the frames it held at once:
    every one reaches the endpoint, in order, after the metadata -- the caller's tone arrives as
    one unbroken sequence of samples from the first message on."""
    uuid = bridged_call(esl)
    n = len(peer.connections)
    assert daemon.execute(f"{uuid} start {peer.url('/s')} stereo 8k META") == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.binary) > 60, 5)
    assert conn.messages[0] == "META"
    left, right = split(b"".join(conn.binary))
    buf, period = sim.switch.lib.tone(440, 8000)
    ref = array("h", bytes(buf[: 2 * period]))
    got = array("h", left)
    start_at = next(i for i in range(period) if ref[i:i + 8] == got[:8])
    expected = array("h", (ref[(start_at + i) % period] for i in range(len(got))))
    assert got == expected  # no frame lost, none twice, none out of order
    assert amp(right[-3200:], 1000) == pytest.approx(8000, rel=0.1) and len(right) == len(left)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 3)


def test_displace_playback_is_on_the_right_exactly_once(esl, daemon, peer, sim):
    uuid = bridged_call(esl, extra=",STREAM_PLAYBACK_MODE=inject")  # not parked: displace
    conn = start(daemon, peer, uuid, "stereo")
    stream = daemon.streams[uuid]
    n = len(conn.binary)
    peer.send_text(conn, stream_audio(tone(1500, 1.0, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "done"}}))
    assert wait_until(lambda: any("playout" in t for t in conn.texts), 3)
    gevent.sleep(0.3)
    assert stream.player.mode == "displace"
    assert amp(bytes(sim.channel(uuid).displaced), 1500) == pytest.approx(8000, rel=0.15)
    left, right = split(b"".join(conn.binary[n:]))
    played_once(right, 1500, 1.0)  # once, not twice
    assert amp(right, 1000) == pytest.approx(8000, rel=0.15)  # and the other party
    assert amp(left, 1500) < 300
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_a_displace_already_playing_when_the_recording_starts_is_not_added_twice(
        esl, daemon, peer, sim):
    esl.subscribe("CUSTOM", events.ERROR)
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "stereo")
    stream = daemon.streams[uuid]
    peer.send_text(conn, stream_audio(tone(1500, 3.0, 8000), 8000))
    assert wait_until(lambda: stream.player is not None and stream.player.displacing, 2)
    gevent.sleep(0.3)
    old = stream.recording
    esl.api(f"uuid_record {uuid} stop {old}")  # someone stops it: a new one comes
    assert wait_until(lambda: stream.recording_restarts == 1, 3)
    assert stream.recording != old
    assert stream.playback.in_tap == {stream.player.displacing}
    assert wait_until(lambda: sim.channel(uuid).recordings.get(stream.recording) is not None
                      and sim.channel(uuid).recordings[stream.recording].reads > 40, 3)
    n = len(conn.binary)
    gevent.sleep(0.8)
    _, right = split(b"".join(conn.binary[n:]))
    levels = blocks(right, 1500)
    assert levels and max(levels) == pytest.approx(8000, rel=0.15), levels  # not 16000
    assert min(levels[:-2]) > 4000  # and it is there all along
    assert any("recording again" in text for text in errors_of(esl, uuid))
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


@pytest.mark.parametrize("mix", ["mono", "stereo"])
def test_a_parked_call_with_inject_playback_through_a_recording(esl, daemon, peer, sim, mix):
    answer = esl.api("originate {channel_rate=8000,STREAM_SOURCE=record}loopback/1000/default "
                     "&park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    conn = start(daemon, peer, uuid, mix)
    stream = daemon.streams[uuid]
    assert stream.source == "record"
    n = len(conn.binary)
    peer.send_text(conn, stream_audio(tone(1500, 1.0, 8000), 8000))
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 16000, 3)  # write-back
    gevent.sleep(0.2)
    heard = b"".join(conn.binary[n:])
    assert stream.player.mode == "inject" and not stream.playback.paced_here
    if mix == "mono":  # the caller only
        assert amp(heard, 440) == pytest.approx(8000, rel=0.15) and amp(heard, 1500) < 300
    else:  # FreeSWITCH puts the injected audio in the recording: on the right, once
        left, right = split(heard)
        assert amp(left, 440) == pytest.approx(8000, rel=0.15) and amp(left, 1500) < 300
        played_once(right, 1500, 1.0)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams and daemon.ports.in_use == 0, 3)


def test_pause_stops_the_recording_and_resume_records_again(esl, daemon, peer, sim):
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "mixed")
    stream = daemon.streams[uuid]
    first = stream.recording
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    assert not sim.channel(uuid).recordings and fifos(files_dir(daemon)) == []
    n = len(conn.binary)
    gevent.sleep(0.2)
    assert len(conn.binary) == n
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    assert list(sim.channel(uuid).recordings) == [stream.recording] != [first]
    assert wait_until(lambda: len(conn.binary) > n + 10, 2)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_pause_while_playing_keeps_the_recording_until_it_has_played(esl, daemon, peer, sim):
    """Displace playback is paced by the recording's frames: a pause keeps it until what plays
    has played (the mark comes back), then stops it."""
    uuid = bridged_call(esl)
    conn = start(daemon, peer, uuid, "stereo")
    peer.send_text(conn, stream_audio(tone(1500, 0.8, 8000), 8000))
    peer.send_text(conn, json.dumps({"type": "mark", "data": {"name": "end"}}))
    stream = daemon.streams[uuid]
    assert wait_until(lambda: stream.player is not None and stream.player.playing, 2)
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    gevent.sleep(0.2)
    assert sim.channel(uuid).recordings  # still playing: the recording paces it
    assert wait_until(lambda: any("playout" in t for t in conn.texts), 3)
    assert wait_until(lambda: not sim.channel(uuid).recordings, 2)  # over: stopped
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    assert sim.channel(uuid).recordings
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_shutdown_stops_the_recording_and_removes_the_fifo(esl, daemon, peer, sim):
    """A daemon stopped for good (not handing its streams over) ends each stream: FreeSWITCH
    told to stop recording, the FIFO gone."""
    calls = [bridged_call(esl) for _ in range(3)]
    conns = [start(daemon, peer, uuid, mix) for uuid, mix in zip(calls, ("mono", "stereo",
                                                                         "mixed"), strict=True)]
    assert len(fifos(files_dir(daemon))) == 3
    daemon.stop()
    assert all(not sim.channel(uuid).recordings for uuid in calls)
    assert fifos(files_dir(daemon)) == [] and os.listdir(files_dir(daemon)) == []
    assert all(c.closed.wait(3) for c in conns)
    for uuid in calls:
        esl.api(f"uuid_kill {uuid}")


def test_a_users_own_recording_is_left_alone(esl, daemon, peer, sim, tmp_path):
    uuid = bridged_call(esl)
    mine = str(tmp_path / "user.r8")
    assert esl.api(f"uuid_record {uuid} start {mine}") == "+OK Success\n"
    start(daemon, peer, uuid, "stereo")
    assert len(sim.channel(uuid).recordings) == 2
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert list(sim.channel(uuid).recordings) == [mine]  # ours went, the user's goes on
    written = sim.channel(uuid).recordings[mine].frames
    assert wait_until(lambda: sim.channel(uuid).recordings[mine].frames > written + 5, 2)
    assert not [k for k in sim.channel(uuid).variables if k.startswith("RECORD_")]
    esl.api(f"uuid_kill {uuid}")


def test_auto_picks_direct_on_a_parked_call_record_otherwise_and_taps_when_asked(
        esl, daemon, peer, sim):
    answer = esl.api("originate {channel_rate=8000}loopback/1000/default &park()")
    parked = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {parked} current_application") == "park")
    for mix in ("mono", "stereo"):
        start(daemon, peer, parked, mix)
        assert daemon.streams[parked].source == "direct"
        assert daemon.execute(f"{parked} stop") == "+OK Success\n"
        assert wait_until(lambda: esl.api(f"uuid_getvar {parked} current_application")
                          == "park", 2)
    bridged = bridged_call(esl)
    start(daemon, peer, bridged, "stereo")
    assert daemon.streams[bridged].source == "record" and not daemon.streams[bridged].taps
    assert daemon.execute(f"{bridged} stop") == "+OK Success\n"
    esl.api(f"uuid_setvar {bridged} STREAM_SOURCE taps")
    start(daemon, peer, bridged, "stereo")
    assert daemon.streams[bridged].source == "taps" and len(daemon.streams[bridged].taps) == 2
    for uuid in (parked, bridged):
        esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


def test_a_thousand_start_stop_cycles_leave_nothing_behind(esl, daemon, peer, sim):
    """1,000 cycles (10 calls at a time, 100 each) of start + stop of a stereo stream on a
    bridged call: no FIFO, recording, greenlet or file descriptor left."""
    calls = [bridged_call(esl) for _ in range(10)]
    gc.collect()
    base_greenlets = sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet)
                         and not o.dead)
    base_fds = len(os.listdir("/proc/self/fd"))
    done = []

    def cycle(uuid: str) -> None:
        for _ in range(100):
            answer = daemon.execute(f"{uuid} start {peer.url('/c')} stereo 8k")
            assert answer == "+OK Success\n", answer
            assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
            done.append(1)

    with gevent.Timeout(240):
        gevent.joinall([gevent.spawn(cycle, u) for u in calls], raise_error=True)
    assert len(done) == 1000
    assert not daemon.streams
    assert all(not sim.channel(u).recordings for u in calls)
    assert fifos(files_dir(daemon)) == [] and os.listdir(files_dir(daemon)) == []
    gevent.sleep(0.5)
    gc.collect()
    greenlets = sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet)
                    and not o.dead)
    assert greenlets <= base_greenlets + 2
    assert len(os.listdir("/proc/self/fd")) <= base_fds + 5
    for uuid in calls:
        esl.api(f"uuid_kill {uuid}")


def unbroken(sim, pcm: bytes, freq: float = 440) -> bool:
    """`pcm` is the simulator's `freq` tone with no sample lost, repeated or out of order."""
    buf, period = sim.switch.lib.tone(freq, 8000)
    ref = array("h", bytes(buf[: 2 * period]))
    got = array("h", pcm)
    start_at = next((i for i in range(period) if ref[i:i + 8] == got[:8]), None)
    return start_at is not None and got == array(
        "h", (ref[(start_at + i) % period] for i in range(len(got))))


def test_a_stream_whose_reader_falls_behind_is_no_stall_for_the_others(esl, daemon, peer, sim):
    """One stream's FIFO is not read for a second (as when the daemon falls behind on it):
    FreeSWITCH's recording of that call holds its audio back in the pipe, the other call streams
    on meanwhile, and once read again the late one gets every frame, in order."""
    behind, other = bridged_call(esl), bridged_call(esl)
    late, going = start(daemon, peer, behind, "stereo"), start(daemon, peer, other, "stereo")
    reader = daemon.streams[behind]._source.recording.reader
    reader.stop()  # no more reads of that FIFO for now
    rec = sim.channel(behind).recordings[daemon.streams[behind].recording]
    n_late, n_going = len(late.binary), len(going.binary)
    gevent.sleep(1.0)
    assert len(going.binary) > n_going + 30  # the other call streams on
    assert len(late.binary) <= n_late + 1
    assert rec.written - reader.bytes_in >= 30 * 640 and rec.errors == 0  # waiting in the pipe
    reader._watcher.start(reader._ready)  # read again: the held-back second comes at once
    assert wait_until(lambda: len(late.binary) > n_late + 60, 3)
    gevent.sleep(0.2)
    for conn in (late, going):
        left, right = split(b"".join(conn.binary))
        assert unbroken(sim, left)  # not a frame lost, on either call
        assert amp(right[-3200:], 1000) == pytest.approx(8000, rel=0.1)
    for uuid in (behind, other):
        esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: channels(esl) == 0, 3)


@pytest.mark.parametrize("group", [False, True])
def test_the_fifo_is_freeswitchs_to_write_and_nobody_elses(tmp_path, group):
    """The FIFO lives in the call's private directory with the playback files' group rules:
    0600 (the daemon alone: FreeSWITCH runs as the same user), or 0620 in `files_group`
    (FreeSWITCH's user, a member, writes it; it reads nothing; nobody else gets anything). As
    root, another user in that group and one outside it really try."""
    import grp
    import stat as st

    from esl_audio_stream.media.files import CallFiles

    gid = (grp.getgrnam("audio").gr_gid if os.getuid() == 0 else os.getgid()) if group else None
    # pytest's tmp_path is under a 0700 directory: the other users need a way in
    top = tempfile.mkdtemp(prefix="eas-fifo-")
    os.chmod(top, 0o711)
    old = os.umask(0)  # the modes must not depend on the daemon's umask
    try:
        files = CallFiles(Path(top) / "base", "0f6c3a8e-5d1b",
                          None if gid is None else str(gid))
        path, fd = files.make_fifo("0f6c3a8e-5d1b_rec1.r8")
    finally:
        os.umask(old)
    try:
        info = os.lstat(path)
        assert st.S_ISFIFO(info.st_mode) and path.parent == files.dir
        assert st.S_IMODE(info.st_mode) == (0o620 if group else 0o600)
        assert st.S_IMODE(os.lstat(files.dir).st_mode) == (0o750 if group else 0o700)
        if group:
            assert info.st_gid == gid and os.lstat(files.dir).st_gid == gid
        assert files.open_fifo(tmp_path / "elsewhere.r8") is None  # only its own directory
        if os.getuid() == 0 and group:
            nobody = 65534

            def try_open(gids: list[int], flags: int) -> int:
                pid = os.fork()
                if pid == 0:  # a process of another user: FreeSWITCH, or a stranger
                    try:
                        os.setgroups(gids)
                        os.setgid(gids[0])
                        os.setuid(nobody)
                        os.close(os.open(path, flags | os.O_NONBLOCK))
                        os._exit(0)
                    except PermissionError:
                        os._exit(13)
                    except BaseException:
                        os._exit(1)
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

            assert try_open([gid], os.O_WRONLY) == 0  # FreeSWITCH writes
            assert try_open([gid], os.O_RDONLY) == 13  # and reads nothing
            assert try_open([nobody], os.O_WRONLY) == 13  # nobody else anything
    finally:
        os.close(fd)
        shutil.rmtree(top)


def test_a_reader_with_a_backlog_takes_turns_with_the_others(tmp_path):
    """One FIFO with 100 frames waiting, another getting a frame now and then: the backlog is
    read a few frames per turn of the event loop, so the other's frames are taken long before
    it has been worked through -- one reader that fell behind is no stall for the others."""
    order: list[str] = []
    fds = {}
    readers = []
    for name in ("behind", "other"):
        path = str(tmp_path / f"{name}.r8")
        os.mkfifo(path)
        fds[name] = (os.open(path, os.O_RDONLY | os.O_NONBLOCK),
                     os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    for name in fds:
        readers.append(FifoReader(fds[name][0], 320, lambda f, n=name: order.append(n),
                                  failed=lambda exc: order.append("failed"),
                                  on_eof=lambda: None))
    try:
        os.write(fds["behind"][1], bytes(320 * 100))
        for _ in range(5):
            os.write(fds["other"][1], bytes(320))
            gevent.sleep(0)
        assert wait_until(lambda: order.count("behind") == 100 and order.count("other") == 5)
        last_other = max(i for i, name in enumerate(order) if name == "other")
        assert last_other < order.index("behind") + 50  # the others were served meanwhile
    finally:
        for reader in readers:
            reader.close()
        for r, w in fds.values():
            os.close(r)
            os.close(w)


def test_a_fifo_is_cut_into_frames_whatever_the_reads(tmp_path):
    """A FIFO is a byte stream: writes of any size come out as whole frames, in order."""
    got: list[bytes] = []
    path = str(tmp_path / "cut.r16")
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    eof = []
    reader = FifoReader(r, 640, got.append, failed=lambda exc: None,
                        on_eof=lambda: eof.append(1))
    data = bytes(range(256)) * 50
    try:
        for size in (1, 639, 700, 3000, 17, 2000, 6443):
            os.write(w, data[:size])
            data = data[size:]
            gevent.sleep(0.01)
        os.close(w)
        assert wait_until(lambda: eof, 2)
        assert all(len(f) == 640 for f in got) and len(got) == 12800 // 640
        assert b"".join(got) == (bytes(range(256)) * 50)[: 640 * len(got)]
    finally:
        reader.close()
        os.close(r)
