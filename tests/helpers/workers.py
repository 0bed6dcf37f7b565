"""The daemon as a supervisor and its workers (`run --workers N`, real processes): its workers'
pids (read from /proc: the children of the supervisor, each with its `--worker I/N`), and what
its one /metrics says of each worker."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import gevent
from conftest import wait_until

from esl_audio_stream.ops.client import control_http

from .procs import DaemonProcess


class WorkersProcess(DaemonProcess):
    """A DaemonProcess whose configuration asks for `workers` worker processes."""

    def __init__(self, tmp: Path, esl: tuple[str, int], *, workers: int = 2, **kw) -> None:
        super().__init__(tmp, esl, extra=f'workers = "{workers}"', **kw)
        self.workers = workers

    def set_workers(self, workers: int) -> None:
        """For the next start (a change needs a restart)."""
        text = self.config.read_text()
        self.config.write_text(re.sub(r'workers = "\d+"', f'workers = "{workers}"', text))
        self.workers = workers

    def start(self, wait_esl: bool = True) -> float:
        """As DaemonProcess's, and then every worker connected: N interpreters start on the
        two cores the test suites share (the supervisor answers before its workers do)."""
        up = super().start(wait_esl=False)
        if wait_esl:
            assert wait_until(self.esl_connected, 60), self.logged()
        return up

    def metrics(self) -> str:
        return gevent.get_hub().threadpool.apply(
            control_http, (self.control, "GET", "/metrics"), {"timeout": 10})[1]

    def esl_connected(self) -> bool:
        try:
            text = self.metrics()
        except OSError:
            return False
        return all(value(text, "esl_audio_stream_esl_connected", i) == 1.0
                   for i in range(self.workers))

    def close(self) -> None:
        """The supervisor killed; its workers stop with it (and are killed if they do not)."""
        workers = list(self.worker_pids().values()) if self.proc is not None else []
        super().close()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid, of the workers running now."""
        assert self.proc is not None
        return worker_pids(self.proc.pid)


def worker_pids(supervisor: int) -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        state = stat.rpartition(")")[2].split()[0]
        if ppid == supervisor and "--worker" in argv and state != "Z":
            out[int(argv[argv.index("--worker") + 1].partition("/")[0])] = int(entry)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def value(text: str, name: str, worker: int | None = None) -> float | None:
    """One series' value in a metrics text (`worker`: the one labelled so)."""
    for line in text.splitlines():
        if not line.startswith(name + "{" if worker is not None else name + " "):
            continue
        if worker is not None and f'worker="{worker}"' not in line:
            continue
        return float(line.rpartition(" ")[2])
    return None
