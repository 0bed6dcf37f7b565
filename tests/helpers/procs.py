"""The daemon as a real child process (`esl-audio-stream run --config`), for tests that kill it,
signal it and start it again against a simulator the test holds in its own process."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gevent
from conftest import wait_until
from gevent import subprocess  # its exit status even when gevent's SIGCHLD reaper runs (below)

from esl_audio_stream.dev.simulator import Simulator
from esl_audio_stream.ops.client import control_http, control_request

from .daemons import free_port, wait_port

CLI = [sys.executable, "-m", "esl_audio_stream.cli"]


@contextmanager
def simulator(extensions: dict[str, str]) -> Iterator[Simulator]:
    """The FreeSWITCH simulator in this process, for daemons run as child processes."""
    sim = Simulator(port=0, extensions=extensions)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def control_port() -> int:
    """A free port below the kernel's ephemeral range (32768 up): a daemon killed and started
    again binds its control port again, and one from the ephemeral range can be taken meanwhile
    by any socket bound to port 0 (another test's simulator took one: seen)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()


class DaemonProcess:
    """One daemon's configuration, and the processes run from it one after another (a context
    manager: the one running is ended on the way out)."""

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __init__(self, tmp: Path, esl: tuple[str, int], *, owner: str = "test-daemon",
                 password: str = "ClueCon", orphan_timeout: float = 30.0,
                 port_base: int | None = None, extra: str = "", native: bool = True,
                 workers: int = 1) -> None:
        self.tmp = tmp
        self.control_port = control_port()
        self.control = f"127.0.0.1:{self.control_port}"
        self.files = tmp / "files"
        self.config = tmp / "eas.toml"
        base = port_base if port_base is not None else 13000 + (os.getpid() % 20) * 100
        if "workers" not in extra:  # one process unless the test is about workers
            extra = f'workers = "{workers}"\n{extra}'
        self.config.write_text(f"""
[esl]
host = "{esl[0]}"
port = {esl[1]}
password = "{password}"
[control]
listen = "{self.control}"
[media]
port_min = {base}
port_max = {base + 99}
native = {"true" if native else "false"}
[playback]
files_dir = "{self.files}"
[streams]
owner = "{owner}"
orphan_timeout = {orphan_timeout}
first_audio_timeout = 2.0
{extra}
""")
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self, wait_esl: bool = True) -> float:
        """A new process; returns when it answers (and has reached ESL): its start time."""
        self.runs += 1
        log = open(self.tmp / f"daemon-{self.runs}.log", "w")  # noqa: SIM115
        # gevent's Popen: once anything in this process has used gevent.subprocess, libev reaps
        # every child, and the standard Popen then reads a dead child's status as 0 (ECHILD)
        self.proc = subprocess.Popen([*CLI, "run", "-v", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        gevent.get_hub().threadpool.apply(wait_port, (self.control_port, 15))
        up = time.monotonic()
        if wait_esl:
            assert wait_until(self.esl_connected, 10), self.logged()
        return up

    def esl_connected(self) -> bool:
        try:
            text = gevent.get_hub().threadpool.apply(
                control_http, (self.control, "GET", "/metrics"), {"timeout": 5})[1]
        except OSError:
            return False
        return "esl_audio_stream_esl_connected 1.0" in text

    def ctl(self, args: str) -> str:
        return gevent.get_hub().threadpool.apply(control_request, (self.control, args, 15))

    def drain(self) -> str:
        return gevent.get_hub().threadpool.apply(
            control_http, (self.control, "POST", "/drain", b""), {"timeout": 30})[1]

    def streams(self) -> list[dict]:
        code, text = gevent.get_hub().threadpool.apply(
            control_http, (self.control, "GET", "/streams"), {"timeout": 10})
        assert code == 200, text
        return json.loads(text)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the process dies with no chance to do anything."""
        self.signal(signal.SIGKILL)
        self.wait_exit(10)

    def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        wait_until(lambda: self.proc.poll() is not None, timeout, 0.02)
        return self.proc.poll()

    def logged(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.tmp.glob("daemon-*.log")))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
