"""`esl-audio-stream run | ctl | simulate | demo | bench`."""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import signal
import sys

from .config import DaemonConfig, parse_hostport
from .settings import SettingsError, defaults_from_mapping

DEFAULT_CONTROL = "127.0.0.1:8089"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _wait_for_signal() -> None:
    """Block this greenlet until SIGINT or SIGTERM."""
    import gevent
    import gevent.event

    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGINT, stop.set)
    gevent.signal_handler(signal.SIGTERM, stop.set)
    stop.wait()


def cmd_run(ns: argparse.Namespace) -> int:
    from .daemon import Daemon

    _setup_logging(ns.verbose)
    esl_host, esl_port = parse_hostport(ns.esl, 8021)
    control_host, control_port = parse_hostport(ns.control, 8089)
    try:
        defaults = defaults_from_mapping(dict(_parse_pair(p) for p in ns.stream_default))
    except SettingsError as exc:
        print(f"esl-audio-stream: --stream-default {exc}", file=sys.stderr)
        return 2
    config = DaemonConfig(
        stream_defaults=defaults,
        esl_host=esl_host,
        esl_port=esl_port,
        esl_password=ns.esl_password,
        control_host=control_host,
        control_port=control_port,
    )
    daemon = Daemon(config)
    daemon.start()
    logging.getLogger("esl_audio_stream").info(
        "running: ESL %s:%d, control http://%s:%d", esl_host, esl_port, *daemon.control.address
    )
    profile = os.environ.get("ESL_AUDIO_STREAM_PROFILE")  # a file for cProfile's stats
    if profile:
        import cProfile

        cProfile.runctx("_wait_for_signal()", globals(), locals(), profile)
    else:
        _wait_for_signal()
    daemon.stop()
    return 0


def control_request(control: str, args: str, timeout: float = 30.0) -> str:
    """POST one argument string to a daemon's control endpoint; return its answer."""
    host, port = parse_hostport(control, 8089)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/api/uuid_audio_stream", body=args.encode("utf-8", "surrogateescape"),
                     headers={"Content-Type": "text/plain; charset=utf-8"})
        return conn.getresponse().read().decode("utf-8", "replace")
    finally:
        conn.close()


def cmd_ctl(ns: argparse.Namespace) -> int:
    args = " ".join(ns.args)
    try:
        answer = control_request(ns.control, args)
    except OSError as exc:
        print(f"-ERR cannot reach the daemon at {ns.control}: {exc}")
        return 2
    sys.stdout.write(answer if answer.endswith("\n") else answer + "\n")
    return 0 if answer.startswith("+OK") else 1


def cmd_simulate(ns: argparse.Namespace) -> int:
    from .simulator import run_simulator

    _setup_logging(ns.verbose)
    host, port = parse_hostport(ns.esl, 8021)
    extensions = dict(_parse_pair(e) for e in ns.extension)
    run_simulator(host, port, ns.password, extensions)
    return 0


def _parse_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"want NAME=VALUE, got {text!r}")
    return name, value


def cmd_demo(ns: argparse.Namespace) -> int:
    from .demo import run_demo

    _setup_logging(ns.verbose)
    return run_demo(seconds=ns.seconds, out_dir=ns.out)


def cmd_bench(ns: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(calls=ns.calls, seconds=ns.seconds, rate=ns.rate, channel_rate=ns.channel_rate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esl-audio-stream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--esl", default="127.0.0.1:8021", help="FreeSWITCH ESL HOST:PORT")
    run.add_argument("--esl-password", default="ClueCon")
    run.add_argument("--control", default=DEFAULT_CONTROL, help="control endpoint HOST:PORT")
    run.add_argument("--stream-default", action="append", default=[], metavar="STREAM_X=VALUE",
                     help="daemon-wide default for a STREAM_* channel variable (repeatable)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    ctl = sub.add_parser("ctl", help="send a uuid_audio_stream command to a running daemon")
    ctl.add_argument("--control", default=DEFAULT_CONTROL)
    ctl.add_argument("args", nargs=argparse.REMAINDER,
                     help="<uuid> start <ws-url> <mix-type> <sampling-rate> [metadata]"
                     " | <uuid> stop [text]")
    ctl.set_defaults(func=cmd_ctl)

    sim = sub.add_parser("simulate", help="run the FreeSWITCH simulator")
    sim.add_argument("--esl", default="127.0.0.1:8021")
    sim.add_argument("--password", default="ClueCon")
    sim.add_argument("--extension", action="append", default=[], metavar="EXT=SPEC",
                     help="e.g. 1000=tone:440, 2000=echo, 3000=silence, 4000=wav:/path.wav")
    sim.add_argument("-v", "--verbose", action="store_true")
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="simulator + daemon + local endpoint, end to end")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--out", default="demo-out", help="directory for the WAV")
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="N simulated calls through a daemon process")
    bench.add_argument("--calls", type=int, default=50)
    bench.add_argument("--seconds", type=float, default=10.0)
    bench.add_argument("--rate", type=int, default=16000, help="stream rate")
    bench.add_argument("--channel-rate", type=int, default=8000)
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
