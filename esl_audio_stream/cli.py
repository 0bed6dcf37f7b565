"""`esl-audio-stream run | ctl | status | simulate | demo | bench`."""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import sys

from .config import DaemonConfig, parse_hostport
from .settings import SettingsError, defaults_from_mapping

DEFAULT_CONTROL = "127.0.0.1:8089"
TOKEN_ENV = "ESL_AUDIO_STREAM_CONTROL_TOKEN"


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


def _control_http(control: str, method: str, path: str, body: bytes | None = None,
                  token: str | None = None, timeout: float = 30.0) -> tuple[int, str]:
    """One request to a daemon's control endpoint: (HTTP status, body text)."""
    host, port = parse_hostport(control, 8089)
    headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def control_request(control: str, args: str, timeout: float = 30.0,
                    token: str | None = None) -> str:
    """POST one argument string to a daemon's control endpoint; return its answer."""
    return _control_http(control, "POST", "/api/uuid_audio_stream",
                         args.encode("utf-8", "surrogateescape"), token, timeout)[1]


def cmd_ctl(ns: argparse.Namespace) -> int:
    args = " ".join(ns.args)
    try:
        answer = control_request(ns.control, args, token=ns.token)
    except OSError as exc:
        print(f"-ERR cannot reach the daemon at {ns.control}: {exc}")
        return 2
    sys.stdout.write(answer if answer.endswith("\n") else answer + "\n")
    return 0 if answer.startswith("+OK") else 1


def cmd_status(ns: argparse.Namespace) -> int:
    from .status import format_table

    try:
        code, text = _control_http(ns.control, "GET", "/streams", token=ns.token, timeout=10)
    except OSError as exc:
        print(f"-ERR cannot reach the daemon at {ns.control}: {exc}", file=sys.stderr)
        return 2
    if code != 200:
        print(text.strip() or f"-ERR HTTP {code}", file=sys.stderr)
        return 1
    if ns.json:
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(format_table(json.loads(text)))
    return 0


def _add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", default=DEFAULT_CONTROL, help="the daemon's control HOST:PORT")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None,
                   help=f"the control endpoint's bearer token (default: ${TOKEN_ENV})")


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
    _add_client_options(ctl)
    ctl.add_argument("args", nargs=argparse.REMAINDER,
                     help="<uuid> start <ws-url> <mix-type> <sampling-rate> [metadata]"
                     " | <uuid> stop [text]")
    ctl.set_defaults(func=cmd_ctl)

    st = sub.add_parser("status", help="print a running daemon's live streams as a table")
    _add_client_options(st)
    st.add_argument("--json", action="store_true", help="the rows as JSON instead")
    st.set_defaults(func=cmd_status)

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
