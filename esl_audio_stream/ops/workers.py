"""`run --workers N`: the supervisor, which keeps N worker processes running and looks like one
daemon from outside.

Each worker is a whole daemon as `run` is without workers (its own ESL connection, streams,
crash-only records, the native pump), started as `run ... --worker I/N`: it owns the calls of
its shard (app/shard.py) and answers on its own unix socket in the supervisor's private
directory (ops/fleet.py). The supervisor owns the processes and that directory, and serves the
configured control endpoint over them all (ops/fleet.py `Fleet`). It has no ESL connection: a
supervisor has nothing of a call to lose.

- A worker that dies is replaced (after 0.1 s, doubling up to `BACKOFF_MAX` while they keep
  dying soon after they start; counted): the replacement carries on exactly that worker's
  streams (crash-only: the records on the calls, its shard of them), and the other workers'
  streams never stop.
- SIGTERM/SIGINT (hand-over), SIGHUP (re-read the file): passed to every worker; the supervisor
  exits once every worker has (a worker hands its streams over within about a second). A second
  stop signal is passed on too (the workers' own "do not wait").
- A worker dies with its supervisor: the kernel sends it SIGTERM when the supervisor dies
  (PR_SET_PDEATHSIG, Linux), and it checks its parent every second elsewhere (`die_with`): a
  SIGKILLed supervisor leaves no worker behind, and the next one's workers carry every stream
  on. Its private directory stays behind (nothing ran to remove it): the next supervisor
  removes every such directory of ours whose supervisor is gone (`sweep`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time

import gevent
import gevent.event
from gevent import subprocess

from .fleet import socket_path

log = logging.getLogger(__name__)

#: Longest pause before replacing a worker that keeps dying.
BACKOFF_MAX = 5.0
#: A worker that ran this long before dying is replaced at once again (the backoff starts over).
STABLE_AFTER = 30.0
#: Seconds the workers get to exit after the stop signal before they are killed.
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """In a worker: SIGTERM when the supervisor (`parent`) goes, however it goes."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:  # also where prctl is not (and if the parent went before it was set)
        while os.getppid() == parent:
            gevent.sleep(1.0)
        log.warning("the supervisor (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    gevent.spawn(watch)


#: The private directories' names begin so; each holds its supervisor's pid in PID_FILE.
RUNDIR_PREFIX = "esl-audio-stream-workers-"
PID_FILE = "supervisor.pid"
#: A directory with no pid file yet is left alone this long (a supervisor starting meanwhile).
YOUNG = 60.0


def sweep(base: str) -> int:
    """Remove the private directories under `base` that supervisors killed with SIGKILL left
    (ours only, their supervisor no longer running); how many."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(RUNDIR_PREFIX)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
            if st.st_uid != os.geteuid() or not os.path.isdir(path):
                continue
            try:
                with open(os.path.join(path, PID_FILE)) as f:
                    pid = int(f.read().strip() or 0)
            except FileNotFoundError:
                if time.time() - st.st_mtime < YOUNG:
                    continue
                pid = 0
            if pid > 0 and _running(pid):
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone's process has that pid now
        return True
    return True


class Supervisor:
    """N worker processes, kept running (see the module docstring)."""

    def __init__(self, count: int, run_args: list[str]) -> None:
        """`run_args`: the `run` command line the workers are started with (each gets `--worker
        I/N` and this directory added)."""
        self.count = count
        self.run_args = run_args
        swept = sweep(tempfile.gettempdir())
        if swept:
            log.info("removed %d workers' directories that killed supervisors left", swept)
        self.rundir = tempfile.mkdtemp(prefix=RUNDIR_PREFIX)  # 0700: ours only
        with open(os.path.join(self.rundir, PID_FILE), "w") as f:
            f.write(f"{os.getpid()}\n")
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.restarts = [0] * count
        self.closing = False
        self.gone = gevent.event.Event()  # every worker has exited, after stop()
        #: A worker exited with 2, the code of a daemon that cannot start (a setting FreeSWITCH
        #: or the files refuse): replacing it would only fail again.
        self.failed = gevent.event.Event()
        self._watchers: list[gevent.Greenlet] = []

    def socket(self, index: int) -> str:
        return socket_path(self.rundir, index)

    def start(self) -> None:
        for index in range(self.count):
            self._spawn(index)
        self._watchers = [gevent.spawn(self._keep, index) for index in range(self.count)]

    def up(self) -> dict[int, bool]:
        return {i: p is not None and p.poll() is None for i, p in enumerate(self.procs)}

    def own(self) -> tuple[dict[int, int], dict[int, bool]]:
        """What the metrics say of the supervisor: restarts by worker, up by worker."""
        return dict(enumerate(self.restarts)), self.up()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None and p.poll() is None]

    def _spawn(self, index: int) -> None:
        argv = [sys.executable, "-m", "esl_audio_stream.cli", *self.run_args,
                "--worker", f"{index}/{self.count}", "--worker-dir", self.rundir,
                "--supervisor-pid", str(os.getpid())]
        self.procs[index] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        log.info("worker %d/%d started (pid %d)", index, self.count, self.procs[index].pid)

    def _keep(self, index: int) -> None:
        """Replace worker `index` whenever it dies, until stop()."""
        pause = 0.1
        while True:
            proc = self.procs[index]
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self.closing:
                return
            if code == 2:
                log.error("worker %d cannot start (exit 2): stopping", index)
                self.failed.set()
                return
            self.restarts[index] += 1
            if time.monotonic() - started >= STABLE_AFTER:
                pause = 0.1
            log.error("worker %d (pid %d) died (%s): replaced in %.1f s", index, proc.pid,
                      _how(code), pause)
            gevent.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX)
            if self.closing:
                return
            self._spawn(index)

    def serve(self) -> int:
        """Start the workers and keep them until a stop signal (passed on, as SIGHUP is), then
        stop them: 0, or 2 when one could not start."""
        stop = gevent.event.Event()

        def on_stop() -> None:
            if stop.is_set():  # the workers' own "second signal: do not wait"
                self.pass_on(signal.SIGTERM)
            stop.set()

        handlers = [gevent.signal_handler(signal.SIGTERM, on_stop),
                    gevent.signal_handler(signal.SIGINT, on_stop),
                    gevent.signal_handler(signal.SIGHUP, lambda: self.pass_on(signal.SIGHUP))]
        try:
            self.start()
            gevent.wait([stop, self.failed], count=1)
            log.info("stopping: the workers hand their streams over to the next process")
            self.stop()
            return 2 if self.failed.is_set() else 0
        finally:
            for handler in handlers:
                handler.cancel()

    def pass_on(self, sig: int) -> None:
        """Pass a signal to every worker running."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """Stop replacing workers, pass `sig` on, wait for them to exit (SIGKILL after
        `timeout`), then remove the directory."""
        self.closing = True
        self.pass_on(sig)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop within %g s: killed", proc.pid, timeout)
                proc.kill()
                proc.wait()
        for watcher in self._watchers:
            watcher.kill(block=False)
        shutil.rmtree(self.rundir, ignore_errors=True)
        self.gone.set()


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"
