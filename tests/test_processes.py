"""The commands as an operator runs them: `simulate`, `run` and `ctl` as real processes, and the
demo end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path

import pytest
from conftest import REAL_FS, wait_until
from helpers.daemons import free_port, wait_port

from esl_audio_stream.esl.connection import ESLConnection

CLI = [sys.executable, "-m", "esl_audio_stream.cli"]
#: FreeSWITCH-side ports of this file's daemon, apart from the other tests' (conftest: 12000-
#: 15499, test_signals: 15500-15899), so suites running side by side do not collide.
_BASE = 15900 + (os.getpid() % 2) * 50
PORTS = {"ESL_AUDIO_STREAM_MEDIA_PORT_MIN": str(_BASE),
         "ESL_AUDIO_STREAM_MEDIA_PORT_MAX": str(_BASE + 49)}






def ctl(control: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "ctl", "--control", control, *args], capture_output=True,
                          text=True, timeout=30)


def esl_up(control: str) -> bool:
    """Every worker's ESL connection is up: an `esl_connected` series of 1 for each of the
    `workers` (a worker that does not answer the supervisor yet is left out of /metrics)."""
    try:
        text = urllib.request.urlopen(f"http://{control}/metrics", timeout=5).read().decode()
    except OSError:
        return False
    lines = text.splitlines()
    up = [line.split()[-1] for line in lines
          if line.startswith("esl_audio_stream_esl_connected")]
    workers = [float(line.split()[-1]) for line in lines
               if line.startswith("esl_audio_stream_workers ")]
    return bool(up) and len(up) == int(workers[0] if workers else 1) and all(
        v == "1.0" for v in up)


@pytest.mark.skipif(bool(REAL_FS), reason="runs its own simulator process")
def test_simulate_run_and_ctl_as_processes(peer, tmp_path):
    esl_port, control_port = free_port(), free_port()
    control = f"127.0.0.1:{control_port}"
    sim = subprocess.Popen([*CLI, "simulate", "--esl", f"127.0.0.1:{esl_port}",
                            "--extension", "1000=tone:440"],
                           stderr=open(tmp_path / "sim.log", "w"))  # noqa: SIM115
    daemon = None
    esl = None
    try:
        wait_port(esl_port)
        daemon = subprocess.Popen([*CLI, "run", "--esl", f"127.0.0.1:{esl_port}", "--control",
                                   control], stderr=open(tmp_path / "daemon.log", "w"),  # noqa: SIM115
                                  env={**os.environ, **PORTS})
        wait_port(control_port)
        # the control endpoint answers before the daemon (each worker, by default one a core)
        # has reached FreeSWITCH: a command meanwhile is refused, as it should be
        assert wait_until(lambda: esl_up(control), 20)
        esl = ESLConnection("127.0.0.1", esl_port)
        esl.start()
        assert esl.wait_connected(5)
        uuid = esl.api("originate {channel_rate=8000}loopback/1000/default &park()").split()[1]
        assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")

        done = ctl(control, uuid, "start", peer.url("/p"), "mono", "16k", '{"from":"ctl"}')
        assert (done.stdout, done.returncode) == ("+OK Success\n", 0)
        conn = peer.wait_connection()
        assert wait_until(lambda: len(conn.binary) >= 10)

        again = ctl(control, uuid, "start", peer.url("/p"), "mono", "16k")
        assert again.returncode == 1 and again.stdout.startswith("-ERR ")
        usage = ctl(control, uuid)
        assert usage.returncode == 1 and usage.stdout.startswith("-USAGE: ")
        bad = ctl(control, uuid, "start", "http://x/", "mono", "16k")
        assert bad.returncode == 1 and "invalid websocket uri" in bad.stdout

        stop = ctl(control, uuid, "stop", "bye")
        assert (stop.stdout, stop.returncode) == ("+OK Success\n", 0)
        assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
        assert conn.messages[0] == '{"from":"ctl"}' and conn.messages[-1] == "bye"
        assert {len(m) for m in conn.binary} == {640}

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        gone = ctl(control, uuid, "stop")
        assert gone.returncode == 2 and "cannot reach the daemon" in gone.stdout
    finally:
        if esl is not None:
            esl.stop()
        for proc in (daemon, sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert sim.returncode == 0


@pytest.mark.skipif(bool(REAL_FS), reason="the demo runs its own simulator")
def test_demo_passes_and_writes_the_wav(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([*CLI, "demo", "--seconds", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout and "dominant freq   440" in done.stdout
    wavs = list(Path(out).glob("demo-*.wav"))
    assert len(wavs) == 1
    with wave.open(str(wavs[0])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert 1.8 <= w.getnframes() / 16000 <= 2.3
