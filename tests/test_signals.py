"""Graceful stop and reload: Daemon.drain and Daemon.reload in process, then `esl-audio-stream
run --config FILE` as a real process with real SIGTERM, SIGINT and SIGHUP (and the simulator as
another process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import gevent
import pytest
from conftest import REAL_FS, wait_until
from helpers.audio import stream_audio, tone
from helpers.calls import originate
from helpers.daemons import free_port, wait_port

from esl_audio_stream.app import events
from esl_audio_stream.app.config import DaemonConfig, load_config
from esl_audio_stream.app.settings import StreamSettings
from esl_audio_stream.esl.connection import ESLConnection
from esl_audio_stream.ops.client import control_http, control_request
from esl_audio_stream.service import build_daemon

CLI = [sys.executable, "-m", "esl_audio_stream.cli"]
#: FreeSWITCH-side unicast ports of these tests (the conftest daemon uses 12000-15499).
PORT_BASE = 15500 + (os.getpid() % 4) * 100


@pytest.fixture
def silent_endpoint():
    """A TCP port that takes connections (the kernel's backlog) and never answers the upgrade:
    a stream started towards it stays "connecting" until its connect timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/never"
    finally:
        sock.close()


@pytest.fixture
def own_daemon(fs, tmp_path):
    """A daemon of this file's own, with a short WebSocket connect timeout and a stop text."""
    d = build_daemon(DaemonConfig(esl_host=fs[0], esl_port=fs[1], esl_password=fs[2],
                                  control_port=0, destroy_wait=1.0, fs_port_min=PORT_BASE,
                                  fs_port_max=PORT_BASE + 49, files_dir=str(tmp_path / "files"),
                                  ws_connect_timeout=1.5, stop_text='{"bye":true}',
                                  drain_timeout=4.0))
    d.start()
    assert d.esl.wait_connected(5)
    try:
        yield d
    finally:
        d.stop()


def test_drain_refuses_new_streams_and_ends_running_ones_cleanly(
        own_daemon, esl, peer, sim, silent_endpoint, tmp_path):
    d = own_daemon
    esl.subscribe("CUSTOM", events.DISCONNECT)
    gevent.sleep(0.1)
    a, b, c = originate(esl), originate(esl), originate(esl)
    assert d.execute(f"{a} start {peer.url('/a')} mono 16k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    peer.send_text(conn, stream_audio(tone(500, 0.2, 8000), 8000))
    call_dir = tmp_path / "files" / a
    assert wait_until(lambda: any(call_dir.glob(f"{a}_*")), 3)
    connecting = gevent.spawn(d.execute, f"{b} start {silent_endpoint} mono 16k")
    assert wait_until(lambda: b in d.streams)

    began = time.monotonic()
    drain = gevent.spawn(d.drain)
    assert wait_until(lambda: d.closing)
    refused = d.execute(f"{c} start {peer.url('/c')} mono 16k")
    assert refused.startswith("-ERR ") and "shutting down" in refused
    assert drain.get(timeout=10) is True
    assert time.monotonic() - began < d.config.drain_timeout + 1  # the bound, not a speed
    assert connecting.get(timeout=1).startswith("-ERR ")
    assert conn.closed.wait(2) and conn.close_code == 1000
    assert conn.texts[-1] == '{"bye":true}'
    assert not call_dir.exists() and d.streams == {}
    assert len(peer.connections) == 1  # c never reached the endpoint
    assert wait_until(lambda: any(e.get(events.STREAM_UUID_HEADER) == a
                                  and e.subclass == events.DISCONNECT for e in esl.seen), 3)
    # the drain stopped the daemon: its control endpoint is closed
    with socket.socket() as s:
        assert s.connect_ex(d.control.address) != 0


def test_drain_gives_up_after_its_bound(own_daemon, esl, silent_endpoint):
    d = own_daemon
    uuid = originate(esl)
    connecting = gevent.spawn(d.execute, f"{uuid} start {silent_endpoint} mono 16k")
    assert wait_until(lambda: uuid in d.streams)
    began = time.monotonic()
    assert d.drain(timeout=0.2) is False  # the stream is stuck connecting for 1.5 s
    assert time.monotonic() - began < 1.4
    assert connecting.get(timeout=3).startswith("-ERR ")


def test_reload_applies_to_new_streams_and_keeps_what_needs_a_restart(own_daemon, esl, peer,
                                                                      caplog):
    d = own_daemon
    first = originate(esl)
    assert d.execute(f"{first} start {peer.url('/1')} mono 16k") == "+OK Success\n"
    one = peer.wait_connection(1)
    assert wait_until(lambda: len(one.binary) > 3)

    old = d.config
    new = replace(old, esl_port=old.esl_port + 1, control_port=1, reconnect_buffer_seconds=3.0,
                  stream_defaults=StreamSettings(buffer_ms=100))
    with caplog.at_level("INFO"):
        restart = d.reload(new)
    assert restart == ["esl.port", "control.listen"]
    assert (d.config.esl_port, d.config.control_port) == (old.esl_port, old.control_port)
    assert d.config.reconnect_buffer_seconds == 3.0
    assert "needs a restart" in caplog.text and str(old.esl_password) not in caplog.text

    second = originate(esl)
    assert d.execute(f"{second} start {peer.url('/2')} mono 16k") == "+OK Success\n"
    two = peer.wait_connection(2)
    assert wait_until(lambda: len(two.binary) > 2)
    assert {len(m) for m in two.binary} == {3200}  # 100 ms at 16 kHz: the new default
    assert {len(m) for m in one.binary} == {640}  # the running stream kept its 20 ms
    assert d.streams[first].config is old and d.streams[second].config is d.config

    # unusable TLS files in the new defaults: refused whole, the running config stays
    bad = replace(d.config, stream_defaults=StreamSettings(tls_cert="/nonexistent.pem",
                                                           tls_key="/nonexistent.key"))
    before = d.config
    with pytest.raises(ValueError):
        d.reload(bad)
    assert d.config is before


# -- real processes, real signals ----------------------------------------------------------------

PASSWORD = "pw-Zq7-never-logged"


def write_config(path: Path, esl_port: int, control_port: int, files: Path, **extra) -> None:
    stream_defaults = extra.pop("stream_defaults", "")
    path.write_text(f"""
[esl]
port = {esl_port}
password = "{PASSWORD}"
[control]
listen = "127.0.0.1:{control_port}"
[media]
port_min = {PORT_BASE + 50}
port_max = {PORT_BASE + 99}
[playback]
files_dir = "{files}"
[streams]
workers = "1"
drain_timeout = {extra.pop("drain_timeout", 8.0)}
stop_text = "goodbye"
[stream_defaults]
{stream_defaults}
""")
    assert not extra


class Processes:
    """The simulator and the daemon as child processes; logs in files; ended on the way out."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.esl_port, self.control_port = free_port(), free_port()
        self.control = f"127.0.0.1:{self.control_port}"
        self.config = tmp_path / "eas.toml"
        self.files = tmp_path / "files"
        self.log = tmp_path / "daemon.log"
        self.sim: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None
        self.esl: ESLConnection | None = None

    def start(self, *daemon_args: str, reach_esl: bool = True, **config) -> None:
        write_config(self.config, self.esl_port, self.control_port, self.files, **config)
        self.sim = subprocess.Popen(
            [*CLI, "simulate", "--esl", f"127.0.0.1:{self.esl_port}", "--password", PASSWORD,
             "--extension", "1000=tone:440"], stderr=open(self.tmp / "sim.log", "w"))  # noqa: SIM115
        wait_port(self.esl_port)
        self.daemon = subprocess.Popen(
            [*CLI, "run", "--config", str(self.config), *daemon_args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))  # noqa: SIM115
        wait_port(self.control_port)
        # the control endpoint answers before the daemon's ESL connection is up: wait for it
        if reach_esl:
            assert wait_until(self.esl_connected, 10), "the daemon never reached ESL"
        self.seen: list = []
        self.esl = ESLConnection("127.0.0.1", self.esl_port, PASSWORD, on_event=self.seen.append)
        self.esl.subscribe("CUSTOM", events.DISCONNECT)
        self.esl.start()
        assert self.esl.wait_connected(5)

    def esl_connected(self) -> bool:
        try:
            text = gevent.get_hub().threadpool.apply(
                control_http, (self.control, "GET", "/metrics"), {"timeout": 5})[1]
        except OSError:
            return False
        return "esl_audio_stream_esl_connected 1.0" in text

    def ctl(self, args: str) -> str:
        """One command through the control endpoint, in a thread (the hub keeps running)."""
        return gevent.get_hub().threadpool.apply(control_request, (self.control, args, 15))

    def logged(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int | None:
        assert self.daemon is not None
        wait_until(lambda: self.daemon.poll() is not None, timeout, 0.02)
        return self.daemon.poll()

    def close(self) -> None:
        if self.esl is not None:
            self.esl.stop()
        for proc in (self.daemon, self.sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.mark.skipif(bool(REAL_FS), reason="runs its own simulator process")
def test_drain_then_a_stop_signal_ends_the_streams_cleanly(procs, peer):
    """`esl-audio-stream drain` (the unit's optional ExecStop) ends every stream as a stop does;
    the stop signal after it has nothing left to hand over."""
    procs.start("-v", drain_timeout=6.0)
    uuid = originate(procs.esl)
    assert procs.ctl(f"{uuid} start {peer.url('/s')} mono 16k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    peer.send_text(conn, stream_audio(tone(500, 0.2, 8000), 8000))
    call_dir = procs.files / uuid
    assert wait_until(lambda: any(call_dir.glob(f"{uuid}_*")), 3)

    drained = run("drain", "--control", procs.control, timeout=20)
    assert (drained.returncode, drained.stdout) == (0, "+OK drained 1 streams\n"), drained.stderr
    assert conn.closed.wait(2) and conn.close_code == 1000
    assert conn.texts[-1] == "goodbye"
    assert not call_dir.exists()
    assert wait_until(lambda: any(e.subclass == events.DISCONNECT
                                  and e.get(events.STREAM_UUID_HEADER) == uuid
                                  for e in procs.seen), 3)
    refused = procs.ctl(f"{originate(procs.esl)} start {peer.url('/t')} mono 16k")
    assert refused.startswith("-ERR ") and "shutting down" in refused
    procs.daemon.send_signal(signal.SIGTERM)
    assert procs.wait_exit(5) == 0
    # the caller's call goes on, re-parked, with no unicast left
    assert procs.esl.api(f"uuid_exists {uuid}") == "true"
    log = procs.logged()
    assert "draining 1 streams" in log
    assert PASSWORD not in log


@pytest.mark.skipif(bool(REAL_FS), reason="runs its own simulator process")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_hands_the_streams_over_and_exits_at_once(procs, peer, signum):
    """Crash-only: a stop signal never ends a stream. The endpoint is told the daemon goes away
    (1001), no disconnect event is fired, the call keeps its record and FreeSWITCH keeps
    streaming to the daemon's port for the next process."""
    procs.start("-v", drain_timeout=6.0)
    uuid = originate(procs.esl)
    assert procs.ctl(f"{uuid} start {peer.url('/s')} mono 16k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    sent = time.monotonic()
    procs.daemon.send_signal(signum)
    assert procs.wait_exit(5) == 0
    print(f"\nexited {time.monotonic() - sent:.2f} s after the signal")
    assert conn.closed.wait(2) and conn.close_code == 1001
    gevent.sleep(0.3)
    assert not any(e.subclass == events.DISCONNECT for e in procs.seen)
    assert procs.esl.api(f"uuid_getvar {uuid} esl_audio_stream_resume") != "_undef_"
    log = procs.logged()
    assert "handed 1 streams over" in log and PASSWORD not in log


@pytest.mark.skipif(bool(REAL_FS), reason="runs its own simulator process")
def test_sighup_rereads_the_file_for_new_streams(procs, peer):
    procs.start("-v")
    first = originate(procs.esl)
    assert procs.ctl(f"{first} start {peer.url('/1')} mono 16k") == "+OK Success\n"
    one = peer.wait_connection(1)
    assert wait_until(lambda: len(one.binary) > 3)

    # a new stream default, and an ESL port that cannot change while running
    write_config(procs.config, procs.esl_port + 1, procs.control_port, procs.files,
                 stream_defaults="STREAM_BUFFER_SIZE = 100")
    procs.daemon.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "needs a restart" in procs.logged(), 5)
    log = procs.logged()
    assert "esl.port changed but needs a restart" in log
    assert "stream_defaults" in log.split("configuration reloaded: ")[1].splitlines()[0]

    second = originate(procs.esl)
    assert procs.ctl(f"{second} start {peer.url('/2')} mono 16k") == "+OK Success\n"
    two = peer.wait_connection(2)
    assert wait_until(lambda: len(two.binary) > 2)
    assert {len(m) for m in two.binary} == {3200}  # the new default: 100 ms at 16 kHz
    assert {len(m) for m in one.binary} == {640}  # the running stream is untouched

    # an invalid file on SIGHUP: one error line, the daemon goes on with what it had
    procs.config.write_text('[esl]\nport = "not a number"\n')
    procs.daemon.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "SIGHUP:" in procs.logged(), 5)
    line = [x for x in procs.logged().splitlines() if "SIGHUP:" in x]
    assert len(line) == 1 and "esl.port: expected an integer" in line[0]
    assert "the running configuration stays" in line[0]
    third = originate(procs.esl)
    assert procs.ctl(f"{third} start {peer.url('/3')} mono 16k") == "+OK Success\n"
    three = peer.wait_connection(3)
    assert wait_until(lambda: len(three.binary) > 2)
    assert {len(m) for m in three.binary} == {3200}
    assert procs.daemon.poll() is None

    assert run("drain", "--control", procs.control, timeout=20).returncode == 0
    procs.daemon.send_signal(signal.SIGTERM)
    assert procs.wait_exit(12) == 0
    for conn in (one, two, three):
        assert conn.closed.wait(2) and conn.close_code == 1000
    assert PASSWORD not in procs.logged()


@pytest.mark.skipif(bool(REAL_FS), reason="runs its own simulator process")
def test_the_password_is_not_logged_even_when_refused(procs, tmp_path):
    # a daemon whose password FreeSWITCH refuses logs the refusal, never the password
    procs.start("-v", "--esl-password", "wrong-" + PASSWORD, reach_esl=False)
    assert wait_until(lambda: "refused" in procs.logged(), 5)
    procs.daemon.send_signal(signal.SIGTERM)
    assert procs.wait_exit(10) == 0
    assert PASSWORD not in procs.logged()


def run(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_config_example_and_check(tmp_path):
    example = run("config", "--example")
    assert example.returncode == 0 and "[stream_defaults]" in example.stdout
    assert load_config(example.stdout).esl_port == 8021
    path = tmp_path / "eas.toml"
    path.write_text(example.stdout.replace('password = "change-me"', f'password = "{PASSWORD}"'))
    check = run("config", "--check", str(path), env={"ESL_AUDIO_STREAM_CONTROL_TOKEN": "tok-99"})
    assert check.returncode == 0, check.stderr
    assert PASSWORD not in check.stdout and "tok-99" not in check.stdout
    assert 'token = "********"  # ESL_AUDIO_STREAM_CONTROL_TOKEN' in check.stdout
    assert "port = 8021  # file" in check.stdout

    path.write_text('[media]\nport_min = 15000\nport_max = 14000\n')
    bad = run("config", "--check", str(path))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"esl-audio-stream: {path}: media.port_min: 15000 is above " \
                         "media.port_max (14000)\n"


@pytest.mark.parametrize(("args", "env", "words"), [
    (["--config", "{tmp}/missing.toml"], {}, "missing.toml: cannot read it"),
    (["--config", "{tmp}/bad.toml"], {}, "bad.toml: esl.port: must be between 1 and 65535"),
    ([], {"ESL_AUDIO_STREAM_ESL_TIMEOUT": "soon"}, "ESL_AUDIO_STREAM_ESL_TIMEOUT: expected a"),
    (["--control", "0.0.0.0:0"], {}, "control.token: required"),
    (["--esl", "127.0.0.1:x"], {}, "--esl: bad port"),
    (["--stream-default", "STREAM_BUFFER_SIZE=30"], {}, "STREAM_BUFFER_SIZE (command line): "),
    (["--stream-default", "NOPE"], {}, "--stream-default: want STREAM_X=VALUE"),
    (["--stream-default", "STREAM_TLS_CA_FILE=/nonexistent.pem"], {}, "STREAM_TLS_CA_FILE"),
])
def test_run_refuses_a_bad_configuration_with_one_line_and_exit_2(tmp_path, args, env, words):
    (tmp_path / "bad.toml").write_text("[esl]\nport = 0\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = run("run", *args, "--esl-password", PASSWORD, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert PASSWORD not in done.stderr


def test_run_says_when_the_control_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run("run", "--esl", "127.0.0.1:1", "--control", f"127.0.0.1:{port}")
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line == f"esl-audio-stream: control.listen: cannot listen on 127.0.0.1:{port}: " \
                   "Address already in use"


def test_the_control_endpoint_answers_after_a_reload(own_daemon):
    before = own_daemon.control.address
    own_daemon.reload(replace(own_daemon.config, drain_timeout=1.0))
    assert own_daemon.control.address == before
    answer = gevent.get_hub().threadpool.apply(
        control_request, ("{}:{}".format(*before), "x stop", 5))
    assert answer == "-ERR no audio stream on x\n"
