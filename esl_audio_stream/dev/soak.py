"""The soak: N simulated calls streamed for M minutes with churn (every second one call ends and a
new one starts), printing what the daemon holds -- RSS, open fds, greenlets, ports, files,
streams -- at the start, every `every` seconds and at the end, so a leak shows as a column that
grows.

Three processes, as in the bench: this one (the simulator: calls, ESL, unicast), the daemon
(`esl-audio-stream run`), and a sink that reads and drops every message. One call in four is a
bridged call streamed stereo (`auto`: recorded into a FIFO); calls end alternately by a hang-up
and by a `stop` command followed by a hang-up.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from .bench import _free_port, _get, _rss_kib

COLUMNS = ("elapsed", "streams", "rss_mib", "fds", "greenlets", "ports", "held", "files")


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^esl_audio_stream_{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def run_sink(port_file: str) -> int:
    """A sink that keeps nothing: reads every message and drops it, until SIGTERM."""
    import gevent
    import gevent.event

    from .sink import AudioSink

    sink = AudioSink(keep_audio=False, record_times=False, idle_timeout=3600, fast=True)
    sink.start()
    Path(port_file).write_text(str(sink.address[1]))
    done = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, done.set)
    done.wait()
    sink.stop()
    return 0


def run_soak(calls: int = 200, minutes: float = 30.0, every: float = 300.0,
             quiet: bool = False) -> list[dict]:
    """Run the soak; print the table; return its rows (dicts of COLUMNS)."""
    import gevent

    from ..esl.connection import ESLConnection
    from ..ops.client import control_request
    from .simulator import Simulator

    workdir = Path(tempfile.mkdtemp(prefix="eas-soak-"))
    files = workdir / "files"
    sim = Simulator(port=0, extensions={"1000": "tone:440", "1001": "tone:1000"})
    sim.start()
    control = f"127.0.0.1:{_free_port()}"
    base = 14000 + (os.getpid() % 10) * 150  # well apart from the test suites' ranges
    config = workdir / "eas.toml"
    config.write_text(f"""
[esl]
host = "{sim.address[0]}"
port = {sim.address[1]}
password = "ClueCon"
[control]
listen = "{control}"
[media]
port_min = {base}
port_max = {base + 1499 if calls > 400 else base + 149 + 3 * calls}
[playback]
files_dir = "{files}"
[streams]
owner = "soak-{os.getpid()}"
workers = "1"
""")
    port_file = workdir / "sink.port"
    sink = subprocess.Popen([sys.executable, "-m", "esl_audio_stream.dev.soak", "--sink",
                             str(port_file)])
    log = open(workdir / "daemon.log", "w")  # noqa: SIM115
    daemon = subprocess.Popen([sys.executable, "-m", "esl_audio_stream.cli", "run", "--config",
                               str(config)], stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    esl = ESLConnection(*sim.address)
    pool = gevent.get_hub().threadpool
    rows: list[dict] = []
    calls_up: deque[tuple[str, bool]] = deque()
    started = failed = ended = 0

    def ctl(args: str) -> str:
        return pool.apply(control_request, (control, args, 30))

    def new_call(n: int) -> None:
        nonlocal started, failed
        bridged = n % 4 == 3
        app = "&bridge(loopback/1001/default)" if bridged else "&park()"
        uuid = esl.api(f"originate {{channel_rate=8000}}loopback/1000/default {app}").split()[1]
        deadline = time.monotonic() + 5
        want = "bridge" if bridged else "park"
        while esl.api(f"uuid_getvar {uuid} current_application") != want:
            if time.monotonic() > deadline:
                break
            gevent.sleep(0.02)
        mix = "stereo" if bridged else "mono"
        answer = ctl(f"{uuid} start ws://127.0.0.1:{sink_port}/soak/{n} {mix} 16k")
        started += 1
        if not answer.startswith("+OK"):
            failed += 1
            print(f"start {n} failed: {answer.strip()}", file=sys.stderr)
        calls_up.append((uuid, n % 2 == 0))

    def end_call() -> None:
        nonlocal ended
        uuid, by_stop = calls_up.popleft()
        if by_stop:
            ctl(f"{uuid} stop")
        esl.api(f"uuid_kill {uuid}")
        ended += 1

    def sample(t0: float) -> dict:
        pid = daemon.pid
        metrics = pool.apply(_get, (control, "/metrics"))
        row = {
            "elapsed": time.monotonic() - t0,
            "streams": _metric(metrics, "streams_active"),
            "rss_mib": _rss_kib(pid) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "greenlets": _metric(metrics, "greenlets"),
            "ports": _metric(metrics, "ports_in_use"),
            "held": _metric(metrics, "ports_held"),
            # playback files (not a call directory's marker, nor a recording's FIFO)
            "files": sum(1 for p in files.rglob("*") if p.is_file()
                         and p.name != ".esl-audio-stream") if files.exists() else 0,
        }
        rows.append(row)
        if not quiet:
            print(_format(row), flush=True)
        return row

    try:
        esl.start()
        deadline = time.monotonic() + 15
        while not port_file.exists() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        sink_port = int(port_file.read_text())
        if not esl.wait_connected(5):
            raise RuntimeError("could not reach the simulator")
        while "esl_connected 1" not in _safe_get(pool, control):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not come up: see {workdir / 'daemon.log'}")
            gevent.sleep(0.1)
        for n in range(calls):
            new_call(n)
        gevent.sleep(2.0)  # settle
        if not quiet:
            print(f"soak: {calls} calls, {minutes:g} min, one ends and one starts every "
                  f"second; daemon pid {daemon.pid}, its log {workdir / 'daemon.log'}")
            print(_format(dict(zip(COLUMNS, COLUMNS, strict=True))))
        t0 = time.monotonic()
        sample(t0)
        n = calls
        next_sample = t0 + every
        end = t0 + minutes * 60
        while time.monotonic() < end:
            tick = time.monotonic()
            if tick >= next_sample:  # before this second's churn: the last one had a second
                sample(t0)           # to settle (a stream ending is still in the registry)
                next_sample += every
            end_call()
            new_call(n)
            n += 1
            gevent.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        sample(t0)
        if not quiet:
            print(f"{started} streams started ({failed} failed), {ended} ended")
    finally:
        for uuid, _ in list(calls_up):
            with contextlib.suppress(Exception):  # tearing down regardless
                esl.api(f"uuid_kill {uuid}")
        esl.stop()
        for proc in (daemon, sink):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.stop()
    return rows


def _safe_get(pool, control: str) -> str:
    return pool.apply(_get_or_nothing, (control, "/metrics"))


def _get_or_nothing(control: str, path: str) -> str:
    try:
        return _get(control, path)
    except OSError:  # not listening yet
        return ""


def _format(row: dict) -> str:
    def cell(key: str, value: object) -> str:
        if isinstance(value, str):
            return value
        if key == "elapsed":
            return f"{int(value) // 60}:{int(value) % 60:02d}"
        if key == "rss_mib":
            return f"{value:.1f}"
        return f"{value:.0f}"

    return "  ".join(cell(k, row[k]).rjust(9) for k in COLUMNS)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--sink":
        sys.exit(run_sink(sys.argv[2]))
    print("usage: python -m esl_audio_stream.dev.soak --sink PORT_FILE", file=sys.stderr)
    sys.exit(2)
