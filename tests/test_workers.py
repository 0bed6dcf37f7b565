"""`run --workers N`: a supervisor and N worker daemons that look like one daemon from outside.

Real processes and signals: the supervisor runs as a child process (`run --config`, with
`streams.workers`), its workers as its children; FreeSWITCH is the simulator in this process, the
endpoint a real `websockets` server. The calls are made with chosen uuids (their last two hex
digits say which worker owns them: app/shard.py), so each worker gets its share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid as _uuid
from pathlib import Path

import gevent
import pytest
from conftest import wait_until
from helpers.listener import listening
from helpers.procs import CLI, simulator
from helpers.workers import WorkersProcess, alive, value
from pki import make_ca
from wspeer import WSPeer

from esl_audio_stream.app import events, intake
from esl_audio_stream.app.shard import shard_of
from esl_audio_stream.ops.client import control_http
from esl_audio_stream.ops.workers import PID_FILE, RUNDIR_PREFIX, YOUNG, sweep

OK = "+OK Success\n"


@pytest.fixture(scope="module")
def sim():
    with simulator({"1000": "tone:440"}) as s:
        yield s


@pytest.fixture(scope="module")
def esl(sim):
    with listening(sim.address, intake.REPLY_SUBCLASS, events.CONNECT,
                   events.DISCONNECT) as conn:
        yield conn


@pytest.fixture(scope="module")
def peer():
    p = WSPeer().start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, sim):
    """Two workers, shared by the tests that leave them as they found them."""
    d = WorkersProcess(tmp_path_factory.mktemp("fleet"), sim.address, owner="workers-shared",
                       port_base=14000 + (os.getpid() % 10) * 100)
    d.start()
    try:
        yield d
    finally:
        d.close()


def call_uuid(tail: int) -> str:
    """A uuid whose last byte is `tail`: worker tail % N's call."""
    return str(_uuid.uuid4())[:-2] + f"{tail:02x}"


def parked(esl, uuid: str, variables: str = "") -> str:
    answer = esl.api(f"originate {{origination_uuid={uuid},channel_rate=8000{variables}}}"
                     "loopback/1000/default &park()")
    assert answer.startswith("+OK"), answer
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def conns(peer: WSPeer, path: str) -> list:
    return [c for c in peer.connections if c.path == path]


def streaming(peer: WSPeer, path: str, connections: int = 1, frames: int = 3) -> bool:
    c = conns(peer, path)
    return len(c) == connections and len(c[-1].binary) >= frames


def owners(daemon: WorkersProcess) -> dict[str, int]:
    return {(f"{r['uuid']}@{r['name']}" if r["name"] else r["uuid"]): r["worker"]
            for r in daemon.streams()}


def test_two_workers_share_the_calls_and_each_hears_only_its_own(esl, peer, fleet):
    uuids = [parked(esl, call_uuid(tail)) for tail in range(4)]  # workers 0, 1, 0, 1
    for i, uuid in enumerate(uuids):
        assert fleet.ctl(f"{uuid} start {peer.url(f'/a{i}')} mono 8k") == OK
    for i in range(4):
        assert wait_until(lambda i=i: streaming(peer, f"/a{i}"), 5)
    assert owners(fleet) == {u: shard_of(u, 2) for u in uuids} and set(owners(fleet).values()) \
        == {0, 1}
    text = fleet.metrics()
    for worker in (0, 1):
        assert value(text, "esl_audio_stream_streams_active", worker) == 2
        assert value(text, "esl_audio_stream_esl_events_total", worker) > 0
        # FreeSWITCH filtered each worker's connection to its own calls
        assert value(text, "esl_audio_stream_esl_events_foreign_total", worker) == 0
    assert value(text, "esl_audio_stream_workers") == 2
    table = gevent.get_hub().threadpool.apply(subprocess.run, ([*CLI, "status", "--control",
                                                                fleet.control],),
                                              {"capture_output": True, "text": True}).stdout
    assert table.splitlines()[0].split()[-1] == "WORKER" and len(table.splitlines()) == 5
    assert text.count("# TYPE esl_audio_stream_frames_in_total counter") == 1

    # commands through the one endpoint reach the call's worker
    one = uuids[1]
    assert fleet.ctl(f"{one} pause") == OK
    assert wait_until(lambda: [r["paused"] for r in fleet.streams() if r["uuid"] == one]
                      == [True], 3)
    assert fleet.ctl(f"{one} resume") == OK
    assert wait_until(lambda: [r["paused"] for r in fleet.streams() if r["uuid"] == one]
                      == [False], 3)
    assert fleet.ctl(f"{one}@two start {peer.url('/two')} mono 8k") == OK  # a second stream
    assert wait_until(lambda: streaming(peer, "/two"), 5)
    assert owners(fleet)[f"{one}@two"] == 1
    for uuid in [*uuids, f"{one}@two"]:
        assert fleet.ctl(f"{uuid} stop") == OK
    assert wait_until(lambda: fleet.streams() == [], 5)
    assert all(c.closed.is_set() and c.close_code == 1000 for c in peer.connections)
    assert fleet.ctl(f"{uuids[3]} stop").startswith(f"-ERR no audio stream on {uuids[3]}")
    for uuid in uuids:
        esl.api(f"uuid_kill {uuid}")


def replies(esl, uuid: str) -> list:
    return [e for e in esl.seen if e.subclass == intake.REPLY_SUBCLASS
            and e.get("Audio-Stream-UUID") == uuid]


def test_auto_start_and_the_command_event_reach_each_worker(esl, peer, fleet):
    auto = [parked(esl, call_uuid(tail), f",AUDIO_STREAM_URL={peer.url(f'/auto{tail}')}")
            for tail in (4, 5)]  # worker 0's and worker 1's
    for tail in (4, 5):
        assert wait_until(lambda t=tail: streaming(peer, f"/auto{t}"), 5)
    by_event = [parked(esl, call_uuid(tail)) for tail in (6, 7)]
    for tail, uuid in zip((6, 7), by_event, strict=True):
        esl.sendevent("CUSTOM", {"Event-Subclass": intake.COMMAND_SUBCLASS,
                                 "Command": f"{uuid} start {peer.url(f'/ev{tail}')} mono 8k"})
        assert wait_until(lambda u=uuid: replies(esl, u), 5)
        assert replies(esl, uuid)[0].body == OK.encode()
        assert wait_until(lambda t=tail: streaming(peer, f"/ev{t}"), 5)
    assert owners(fleet) == {u: shard_of(u, 2) for u in auto + by_event}
    # through the call (Unique-ID): the owner's reply is routed back through its channel
    esl.sendevent("CUSTOM", {"Event-Subclass": intake.COMMAND_SUBCLASS,
                             "Unique-ID": by_event[1], "Command": f"{by_event[1]} stop"})
    assert wait_until(lambda: len(replies(esl, by_event[1])) == 2, 5)
    assert replies(esl, by_event[1])[1].body == OK.encode()
    assert wait_until(lambda: conns(peer, "/ev7")[0].closed.is_set(), 5)
    for uuid in auto + by_event:
        esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: fleet.streams() == [], 5)


def worker_dir(pid: int) -> str:
    """The supervisor's private directory, as its worker `pid` was started with it."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return argv[argv.index("--worker-dir") + 1]


def test_a_supervisor_removes_what_killed_ones_left(tmp_path):
    """`sweep`: the directories whose supervisor is gone (its pid no longer runs, or no pid
    file and older than a starting supervisor's), ours, with the prefix; nothing else."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    made = {}
    for name, pid, age in [("dead", gone.pid, 0), ("alive", os.getpid(), 0),
                           ("starting", None, 0), ("old", None, 2 * YOUNG)]:
        d = tmp_path / f"{RUNDIR_PREFIX}{name}"
        d.mkdir()
        (d / "w0.sock").write_text("")
        if pid is not None:
            (d / PID_FILE).write_text(f"{pid}\n")
        if age:
            then = time.time() - age
            os.utime(d, (then, then))
        made[name] = d
    other = tmp_path / "esl-audio-stream-files"
    other.mkdir()
    assert sweep(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [made["alive"].name, made["starting"].name, other.name])
    assert sweep(str(tmp_path / "nowhere")) == 0


def test_workers_crash_only(tmp_path, esl, peer, sim):
    """A killed worker is replaced and carries its streams on while the other's never stop; a
    killed supervisor leaves no worker; the next run, with 3 workers, carries every stream on
    in its new owner; SIGTERM hands over, and 2 workers carry them on again."""
    fleet = WorkersProcess(tmp_path, sim.address, owner="workers-crash",
                           port_base=15000 + (os.getpid() % 10) * 100)
    try:
        fleet.start()
        uuids = [parked(esl, call_uuid(tail)) for tail in range(6)]
        paths = {uuid: f"/c{i}" for i, uuid in enumerate(uuids)}
        for uuid, path in paths.items():
            assert fleet.ctl(f"{uuid} start {peer.url(path)} mono 8k META") == OK
        for path in paths.values():
            assert wait_until(lambda p=path: streaming(peer, p), 5)
        mine = {1: [u for u in uuids if shard_of(u, 2) == 1],
                0: [u for u in uuids if shard_of(u, 2) == 0]}

        # SIGKILL worker 1: replaced, its streams back at their endpoints
        pids = fleet.worker_pids()
        assert set(pids) == {0, 1}
        os.kill(pids[1], signal.SIGKILL)
        assert wait_until(lambda: fleet.worker_pids().get(1, pids[1]) != pids[1], 10)
        for uuid in mine[1]:
            assert wait_until(lambda p=paths[uuid]: streaming(peer, p, 2), 10), uuid
        counts = {u: len(conns(peer, paths[u])[0].binary) for u in mine[0]}
        gevent.sleep(0.3)
        for uuid in mine[0]:  # worker 0's streams never stopped
            assert len(conns(peer, paths[uuid])) == 1
            assert len(conns(peer, paths[uuid])[0].binary) > counts[uuid]
        assert fleet.worker_pids()[0] == pids[0]
        assert value(fleet.metrics(), "esl_audio_stream_worker_restarts_total", 1) == 1
        assert wait_until(lambda: len(fleet.streams()) == 6, 5)

        # SIGKILL the supervisor: its workers go with it (its private directory stays)
        workers = list(fleet.worker_pids().values())
        rundir = worker_dir(workers[0])
        fleet.kill()
        assert wait_until(lambda: not any(alive(pid) for pid in workers), 10)
        have = {u: len(conns(peer, paths[u])) for u in uuids}
        assert os.path.isdir(rundir)

        # the next run, with 3 workers: each stream carried on by its owner now; the killed
        # supervisor's directory removed
        fleet.set_workers(3)
        fleet.start()
        assert not os.path.exists(rundir)
        for uuid in uuids:
            assert wait_until(lambda u=uuid: streaming(peer, paths[u], have[u] + 1), 10), uuid
            assert conns(peer, paths[uuid])[-1].messages[0] == "META"
        assert wait_until(lambda: owners(fleet) == {u: shard_of(u, 3) for u in uuids}, 5)
        assert set(owners(fleet).values()) == {0, 1, 2}

        # SIGTERM: handed over (close 1001), every worker gone, the supervisor exits 0
        workers = list(fleet.worker_pids().values())
        assert len(workers) == 3
        fleet.signal(signal.SIGTERM)
        assert fleet.wait_exit(15) == 0
        assert not any(alive(pid) for pid in workers)
        for uuid in uuids:
            last = conns(peer, paths[uuid])[-1]
            assert wait_until(last.closed.is_set, 3) and last.close_code == 1001
        fleet.set_workers(2)
        fleet.start()
        for uuid in uuids:
            assert wait_until(lambda u=uuid: streaming(peer, paths[u], have[u] + 2), 10), uuid
        assert wait_until(lambda: owners(fleet) == {u: shard_of(u, 2) for u in uuids}, 5)
        assert fleet.drain().startswith("+OK drained 6 streams")
        for uuid in uuids:
            esl.api(f"uuid_kill {uuid}")
    finally:
        fleet.close()


def test_sighup_and_the_status_feed_reach_every_worker(tmp_path, esl, peer, sim):
    """SIGHUP to the supervisor re-reads the file in every worker (a new stream default, for
    the streams started after it, on both); the status page's feed is every worker's rows, with
    their levels, and says ESL is up only when it is in every worker."""
    fleet = WorkersProcess(tmp_path, sim.address, owner="workers-hup",
                           port_base=16000 + (os.getpid() % 10) * 100)
    try:
        fleet.start()
        before = [parked(esl, call_uuid(tail)) for tail in range(2)]  # workers 0 and 1
        for i, uuid in enumerate(before):
            assert fleet.ctl(f"{uuid} start {peer.url(f'/h{i}')} mono 16k") == OK
            assert wait_until(lambda p=f"/h{i}": streaming(peer, p), 5)

        def feed() -> dict:
            status, body = gevent.get_hub().threadpool.apply(
                control_http, (fleet.control, "GET", "/streams?feed=1"), {"timeout": 10})
            assert status == 200, body
            return json.loads(body)

        assert wait_until(lambda: all(r["level_db"] > -20 for r in feed()["streams"]), 5)
        got = feed()
        assert got["esl"] is True
        assert sorted((r["uuid"], r["worker"]) for r in got["streams"]) == sorted(
            (u, shard_of(u, 2)) for u in before)

        with fleet.config.open("a") as f:
            f.write("[stream_defaults]\nSTREAM_BUFFER_SIZE = 100\n")
        fleet.signal(signal.SIGHUP)
        assert wait_until(lambda: fleet.logged().count("configuration reloaded") >= 2, 10), \
            fleet.logged()
        reloaded = [x for x in fleet.logged().splitlines() if "configuration reloaded" in x]
        assert len(reloaded) == 2 and all("stream_defaults" in x for x in reloaded)
        assert sorted(x.split(" INFO ")[1][:8] for x in reloaded) == ["worker 0", "worker 1"]
        after = [parked(esl, call_uuid(tail)) for tail in range(2)]
        for i, uuid in enumerate(after):
            assert fleet.ctl(f"{uuid} start {peer.url(f'/r{i}')} mono 16k") == OK
            assert wait_until(lambda p=f"/r{i}": streaming(peer, p), 5)
        for i in range(2):  # 100 ms at 16 kHz from both workers; the running streams as they were
            assert {len(m) for m in conns(peer, f"/r{i}")[0].binary} == {3200}
            assert {len(m) for m in conns(peer, f"/h{i}")[0].binary} == {640}
        for uuid in before + after:
            esl.api(f"uuid_kill {uuid}")
    finally:
        fleet.close()


def test_a_worker_that_cannot_start_stops_the_daemon_with_2(tmp_path, esl, sim):
    """A replacement worker that exits 2 (a daemon that cannot start: here the default CA file,
    good when the supervisor checked it, removed since) is not replaced again and again: the
    supervisor stops every worker and exits 2, with the reason in its log."""
    try:
        ca = make_ca(tmp_path, "ca")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no openssl to make a CA with: {exc}")
    fleet = WorkersProcess(tmp_path, sim.address, owner="workers-two",
                           port_base=16500 + (os.getpid() % 10) * 100)
    with fleet.config.open("a") as f:
        f.write(f'[stream_defaults]\nSTREAM_TLS_CA_FILE = "{ca}"\n')
    try:
        fleet.start()
        pids = fleet.worker_pids()
        os.remove(ca)
        os.kill(pids[1], signal.SIGKILL)
        assert fleet.wait_exit(30) == 2, fleet.logged()
        assert "worker 1 cannot start (exit 2): stopping" in fleet.logged()
        assert "STREAM_TLS_CA_FILE" in fleet.logged()
        assert wait_until(lambda: not alive(pids[0]), 10)
    finally:
        fleet.close()
