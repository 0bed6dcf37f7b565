"""The benchmark: N simulated calls streamed through a daemon process into a sink process.

Three processes, so the daemon's own cost can be read off the kernel's accounting of its process
alone: this one (the FreeSWITCH simulator: calls, ESL, unicast UDP), the daemon (`esl-audio-stream
run`), and the sink (a WebSocket endpoint that records each message's arrival time). Latency is
datagram send time (recorded by the simulator) to WebSocket message arrival (recorded by the sink),
matched frame by frame; both use CLOCK_MONOTONIC, which all processes on a host share.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process, from the kernel's accounting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _cpu_seconds(pid: int) -> float:
    return sum(_cpu_times(pid))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _die_with_me() -> None:
    """In a child, before exec: SIGTERM when the bench dies, however it dies (a bench killed
    left its daemon and sink running, the daemon retrying a simulator that was gone)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wakeups(pid: int) -> int:
    """The times the process' main thread (its event loop) went to sleep and was woken
    (voluntary context switches): one per wake-up of the loop, at most."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def _workers_of(supervisor: int) -> list[int]:
    """The pids of `run --workers N`'s workers (its children started with --worker)."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"--worker" in argv:
            out.append(int(entry))
    return sorted(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(address: str, timeout: float) -> bool:
    """`address` (host:port) takes connections within `timeout` seconds: the daemon's control
    server is up (a loaded machine starts it later than the sink and the simulator)."""
    import gevent

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return True
        gevent.sleep(0.1)
    return False


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_sink(port_file: str, result_file: str, deflate: bool = False,
             lazy: float = 0.0) -> int:
    """The sink process: record arrival times until SIGTERM, then write them out as JSON."""
    import gevent

    from .sink import AudioSink

    sink = AudioSink(keep_audio=False, record_times=True, idle_timeout=3600, fast=True,
                     fast_deflate=deflate, lazy=lazy)
    sink.start()
    Path(port_file).write_text(str(sink.address[1]))
    done = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, done.set)
    done.wait()
    result = {s.path: list(s.times or ()) for s in sink.sessions}
    result["deflate"] = sum(s.deflate for s in sink.sessions)  # type: ignore[assignment]
    Path(result_file).write_text(json.dumps(result))
    sink.stop()
    return 0


def run_bench(calls: int = 50, seconds: float = 10.0, rate: int = 16000,
              channel_rate: int = 8000, source: str = "direct", mix: str = "mono",
              protocol: str = "mod_audio_stream", encoding: str = "l16",
              native: bool = True, deflate: bool = False, streams_per_call: int = 1,
              workers: int = 1, realtime: bool = False,
              daemon_env: dict[str, str] | None = None, pin: bool = False,
              lazy_sink: bool = False) -> int:
    """`source` direct: unicast on each parked call; record: FreeSWITCH records it into a FIFO
    the daemon reads (read side for mono, stereo otherwise), as `auto` streams a bridged call;
    taps: loopback taps on it (one for mono, two for stereo/mixed), so the costs can be set side
    by side. `protocol` twilio: Twilio Media Streams (µ-law in base64 JSON, 8 kHz only);
    `encoding`: mod_audio_stream's STREAM_AUDIO_ENCODING (l16, or G.711 at 8 kHz). `native`:
    the daemon's [media] native; `deflate`: the sink accepts permessage-deflate.
    `streams_per_call` K: K named streams on each call (`<uuid>@s<k>`), each to its own sink
    path, all fed from the call's one source: what the 2nd and 3rd stream cost beside the
    first. `workers` N: the daemon runs N worker processes (`run --workers N`); its CPU is
    theirs and the supervisor's, summed (and each worker's is shown). `realtime`: the daemon
    runs SCHED_FIFO priority 1 (`chrt -f 1`, inherited by its workers); `daemon_env`: in the
    daemon's environment only. `pin`: the daemon (and its workers) on the first `workers`
    CPUs, this process (the simulator) and the sink on the others -- the daemon has cores of
    its own, as on a host with one worker per core. `lazy_sink`: the sink reads each connection
    every 0.2 s (it then costs a fraction; its latency figures mean nothing, the daemon's own
    latency still does)."""
    k_streams = max(1, streams_per_call)
    import gevent

    from ..esl.connection import ESLConnection
    from ..ops.client import control_request
    from .simulator import Simulator

    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) <= workers:
        print(f"--pin needs more than {workers} CPUs (the daemon's), this process has "
              f"{len(cpus)}")
        return 1
    daemon_cpus, other_cpus = cpus[:workers], cpus[workers:]
    if pin:  # the simulator (here) and the sink (inherits it) off the daemon's cores
        os.sched_setaffinity(0, other_cpus)
    workdir = Path(tempfile.mkdtemp(prefix="eas-bench-"))
    sim = Simulator(port=0, extensions={"1000": "tone:440"})
    sim.start()
    control = f"127.0.0.1:{_free_port()}"
    port_file, result_file = workdir / "sink.port", workdir / "sink.json"
    sink = subprocess.Popen([sys.executable, "-m", "esl_audio_stream.dev.bench", "--sink",
                             str(port_file), str(result_file), "deflate" if deflate else "-",
                             "lazy" if lazy_sink else "-"], preexec_fn=_die_with_me)
    daemon = subprocess.Popen(
        [*(["taskset", "-c", ",".join(map(str, daemon_cpus))] if pin else []),
         *(["chrt", "-f", "1"] if realtime else []),
         sys.executable, "-m", "esl_audio_stream.cli", "run", "--esl",
         "{}:{}".format(*sim.address), "--control", control, "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=open(workdir / "daemon.log", "w"),  # noqa: SIM115
        preexec_fn=_die_with_me,
        # its own files (and FIFOs), not the shared temporary directory's
        env={**os.environ, "ESL_AUDIO_STREAM_PLAYBACK_FILES_DIR": str(workdir / "files"),
             "ESL_AUDIO_STREAM_MEDIA_NATIVE": "true" if native else "false",
             **(daemon_env or {})},
    )
    print(f"daemon pid {daemon.pid}, its log in {workdir / 'daemon.log'}", file=sys.stderr)
    esl = ESLConnection(*sim.address)
    pool = gevent.get_hub().threadpool
    try:
        esl.start()
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        sink_port = int(port_file.read_text())
        if not esl.wait_connected(5):
            print("could not reach the simulator")
            return 1
        if not _listening(control, 30):
            print("the daemon's control server did not start")
            return 1
        gevent.sleep(1.0 if workers == 1 else 3.0)  # N interpreters start on the cores there are
        procs = [daemon.pid, *(_workers_of(daemon.pid) if workers > 1 else [])]
        rss0 = sum(_rss_kib(pid) for pid in procs)
        uuids = []
        for _ in range(calls):
            answer = esl.api(f"originate {{channel_rate={channel_rate},sim_record_times=true,"
                             f"STREAM_SOURCE={source},STREAM_PROTOCOL={protocol},"
                             f"STREAM_AUDIO_ENCODING={encoding}}}loopback/1000/default &park()")
            uuids.append(answer.split()[1])
        failed = 0
        names = [f"@s{k}" if k_streams > 1 else "" for k in range(k_streams)]
        for uuid in uuids:
            for k, name in enumerate(names):
                url = f"ws://127.0.0.1:{sink_port}/bench/{uuid}/{k}"
                answer = pool.apply(control_request,
                                    (control, f"{uuid}{name} start {url} {mix} {rate}"))
                failed += not answer.startswith("+OK")
        gevent.sleep(1.0)  # settle
        own1 = pool.apply(_own_latency, (control,))
        each1, sim_cpu1, t1 = [_cpu_times(p) for p in procs], time.process_time(), time.monotonic()
        woke1 = sum(_wakeups(p) for p in procs)
        sink_cpu1 = _cpu_seconds(sink.pid)
        gevent.sleep(seconds)
        each2, sim_cpu2, t2 = [_cpu_times(p) for p in procs], time.process_time(), time.monotonic()
        woke2 = sum(_wakeups(p) for p in procs)
        sink_cpu2 = _cpu_seconds(sink.pid)
        own2 = pool.apply(_own_latency, (control,))
        rss1 = sum(_rss_kib(pid) for pid in procs)
        (u1, s1), (u2, s2) = ([sum(t[i] for t in each) for i in (0, 1)] for each in (each1, each2))
        rows = json.loads(pool.apply(_get, (control, "/streams")))
        senders = {u: _sender(sim, u) for u in uuids}  # a recording is gone once stopped
        for uuid in uuids:
            for name in names:
                pool.apply(control_request, (control, f"{uuid}{name} stop"))
            esl.api(f"uuid_kill {uuid}")
        sent = {u: list(getattr(senders[u], "send_times", ()) or ()) for u in uuids}
    finally:
        esl.stop()
        sink.send_signal(signal.SIGTERM)
        daemon.send_signal(signal.SIGTERM)
        for proc in (sink, daemon):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        sim.stop()
    received = json.loads(result_file.read_text()) if result_file.exists() else {}
    deflated = received.pop("deflate", 0)
    latencies: list[float] = []
    late = 0
    skipped = {r["uuid"]: r.get("tap_frames_skipped", 0) for r in rows}
    # a stream that joined its call's running source missed the frames before it: as many as
    # the call's first stream had by then (their counts were read at the same moment)
    first = {r["uuid"]: r["frames_in"] for r in rows if r["name"] in ("", "s0")}
    joined = {(r["uuid"], r["name"]): first.get(r["uuid"], 0) - r["frames_in"] for r in rows}
    for path, times in received.items():
        _, _, uuid, k = path.split("/")  # /bench/<uuid>/<k>
        # frames a tap sent before the daemon lined the taps up were never streamed
        late_by = joined.get((uuid, f"s{k}"), 0) if k_streams > 1 else 0
        start = skipped.get(uuid, 0) + max(0, late_by)
        for s, r in zip(sent.get(uuid, [])[start:], times, strict=False):
            if t1 <= s <= t2:
                latencies.append((r - s) * 1000)
    late = sum(1 for x in latencies if x > 20)
    call_seconds = calls * (t2 - t1)
    stream_seconds = call_seconds * k_streams
    cpu1, cpu2 = u1 + s1, u2 + s2
    frames_in = sum(r["frames_in"] for r in rows)
    dropped = sum(r["dropped"] for r in rows)
    wire = protocol if protocol == "twilio" else f"{protocol} {encoding}"
    print(f"calls                     {calls} x {k_streams} streams ({failed} failed to start), "
          f"{channel_rate} Hz -> {rate} Hz {mix}, source {source}, {wire}, {t2 - t1:.1f} s "
          "measured")
    print(f"paths                     native {'on' if native else 'off'}, permessage-deflate "
          f"negotiated on {deflated} of {calls} connections"
          + (", the daemon SCHED_FIFO 1" if realtime else "")
          + (f", the daemon on CPU {daemon_cpus}, the rest on {other_cpus}" if pin else "")
          + (", the sink reads every 0.2 s" if lazy_sink else ""))
    print(f"daemon CPU per call-second {1000 * (cpu2 - cpu1) / call_seconds:.3f} ms "
          f"({1000 * (u2 - u1) / call_seconds:.3f} user + {1000 * (s2 - s1) / call_seconds:.3f} "
          f"system; {100 * (cpu2 - cpu1) / (t2 - t1):.0f}% of one core)"
          + (f"; per stream-second {1000 * (cpu2 - cpu1) / stream_seconds:.3f} ms"
             if k_streams > 1 else "")
          + f"; woke {(woke2 - woke1) / (t2 - t1):.0f} times a second")
    if workers > 1:
        per = ", ".join(f"{100 * (sum(b) - sum(a)) / (t2 - t1):.0f}%"
                        for a, b in zip(each1, each2, strict=True))
        print(f"processes                 {workers} workers (the daemon's CPU above is theirs "
              f"and the supervisor's): {per} of one core, supervisor first")
    print(f"load generator CPU         simulator {100 * (sim_cpu2 - sim_cpu1) / (t2 - t1):.0f}%, "
          f"sink {100 * (sink_cpu2 - sink_cpu1) / (t2 - t1):.0f}% of one core (2 cores in all)")
    print(f"frames                    {frames_in} in, {dropped} dropped by the daemon, "
          f"{late} late (> 20 ms) of {len(latencies)} matched")
    print(f"latency datagram->message p50 {_percentile(latencies, 0.5):.2f} ms, "
          f"p99 {_percentile(latencies, 0.99):.2f} ms, max {max(latencies, default=0):.2f} ms")
    own = own2.get(float("inf"), 0.0) - own1.get(float("inf"), 0.0)
    within = own2.get(0.005, 0.0) - own1.get(0.005, 0.0)
    print(f"daemon's own latency      arrival (kernel stamp) -> frame sent, 1 frame in 64: "
          f"p50 {1000 * _bucket_quantile(own1, own2, 0.5):.2f} ms, "
          f"p99 {1000 * _bucket_quantile(own1, own2, 0.99):.2f} ms, "
          f"{100 * within / max(own, 1):.2f}% within 5 ms ({own:.0f} timed)")
    print(f"daemon RSS                {rss0 / 1024:.1f} MiB idle, {rss1 / 1024:.1f} MiB with "
          f"{calls} calls: {(rss1 - rss0) / max(calls, 1):.1f} KiB per call"
          + (f" ({(rss1 - rss0) / max(calls * k_streams, 1):.1f} KiB per stream)"
             if k_streams > 1 else ""))
    return 0 if failed == 0 else 1


def _sender(sim, uuid: str):
    """What carries the call's caller, with the time each frame left: the call's recording (the
    time its media bug read the frame), its read tap (which records send times when its target
    does), or the call itself."""
    from ..call.taps import TAP_OF_VAR, TAP_VAR

    recordings = list(sim.channel(uuid).recordings.values())
    if recordings:
        return recordings[0]
    for ch in list(sim._all.values()) + list(sim._ended.values()):
        if (ch.leg == "a" and ch.variables.get(TAP_OF_VAR) == uuid
                and ch.variables.get(TAP_VAR) == "read"):
            return ch
    return sim.channel(uuid)


def _get(control: str, path: str) -> str:
    import http.client

    host, port = control.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _own_latency(control: str) -> dict[float, float]:
    """The daemon's `frame_latency_seconds` histogram (every worker's summed): cumulative
    counts by upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[float, float] = {}
    for family in text_string_to_metric_families(_get(control, "/metrics")):
        if family.name != "esl_audio_stream_frame_latency_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def _bucket_quantile(before: dict[float, float], after: dict[float, float],
                     q: float) -> float:
    """The q-quantile (seconds) of what a histogram gained between two scrapes, interpolated
    in its bucket as Prometheus' histogram_quantile does (nan: no observation)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--sink":
        sys.exit(run_sink(sys.argv[2], sys.argv[3], deflate=sys.argv[4] == "deflate",
                          lazy=0.2 if sys.argv[5] == "lazy" else 0.0))
    print("usage: python -m esl_audio_stream.dev.bench --sink PORT_FILE RESULT_FILE "
          "deflate|- lazy|-", file=sys.stderr)
    sys.exit(2)
