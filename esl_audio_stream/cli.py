"""`esl-audio-stream run | config | ctl | status | simulate | demo | bench`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .app.config import (
    ENV_PREFIX,
    EXAMPLE,
    FLAGS,
    ConfigError,
    DaemonConfig,
    Resolved,
    config_from_resolved,
    parse_hostport,
    render,
    resolve,
)
from .app.settings import SettingsError
from .ops.client import control_http, control_request

if TYPE_CHECKING:
    from .app.daemon import Daemon

DEFAULT_CONTROL = "127.0.0.1:8089"
TOKEN_ENV = "ESL_AUDIO_STREAM_CONTROL_TOKEN"
_log = logging.getLogger("esl_audio_stream")
#: esl.password in `config --example` and freeswitch/autoload_configs/event_socket.conf.xml.
PLACEHOLDER_PASSWORD = "change-me"


def _setup_logging(verbose: bool, who: str = "") -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )


class _Signals:
    """SIGTERM/SIGINT: hand the streams over to the next process and exit within about a second
    (crash-only: a restart never ends a stream; `esl-audio-stream drain` ends them first when
    that is what is wanted); SIGHUP: re-read the configuration. Installed before the daemon
    starts, so an early SIGHUP cannot kill it."""

    def __init__(self, daemon: Daemon, reread: Callable[[], DaemonConfig] | None) -> None:
        import gevent
        import gevent.event

        self.daemon = daemon
        self.reread = reread
        self.stop = gevent.event.Event()
        self.hurry = gevent.event.Event()
        self._handlers = [gevent.signal_handler(signal.SIGTERM, self._on_stop),
                          gevent.signal_handler(signal.SIGINT, self._on_stop),
                          gevent.signal_handler(signal.SIGHUP, self._on_hup)]

    def _on_stop(self) -> None:
        if self.stop.is_set():
            _log.warning("second stop signal: not waiting for the streams")
            self.hurry.set()
        self.stop.set()

    def _on_hup(self) -> None:
        if self.reread is None:
            _log.warning("SIGHUP: no --config file to re-read")
            return
        try:
            self.daemon.reload(self.reread())
        except (ConfigError, SettingsError, OSError) as exc:
            _log.error("SIGHUP: %s; the running configuration stays", exc)

    def serve(self) -> int:
        """Wait for a stop signal, then hand the streams over and stop."""
        try:
            self.stop.wait()
            _log.info("stopping: new streams are refused; running ones are left to the next "
                      "process")
            self.daemon.hand_over()
            return 0
        finally:
            self.cancel()

    def cancel(self) -> None:
        for handler in self._handlers:
            handler.cancel()


def _overrides(ns: argparse.Namespace) -> dict[str, str]:
    """The run flags as load_config overrides ("section.key" -> text): the table's one-key
    flags (config.FLAGS), the two that are more than one key, and --workers."""
    out: dict[str, str] = {}
    if ns.esl is not None:  # HOST[:PORT]: esl.host and, when given, esl.port
        try:
            host, port = parse_hostport(ns.esl, -1)
        except ValueError as exc:
            raise ConfigError("--esl", str(exc)) from None
        out["esl.host"] = host
        if port >= 0:
            out["esl.port"] = str(port)
    for flag, key in FLAGS.items():
        value = getattr(ns, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            out[key] = value
    if ns.workers is not None:
        out["streams.workers"] = ns.workers
    for pair in ns.stream_default:  # STREAM_X=VALUE: any [stream_defaults] key
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError("--stream-default", f"want STREAM_X=VALUE, got {pair!r}")
        out[f"stream_defaults.{name}"] = value
    return out


def _read_config(path: str | None, overrides: dict[str, str]) -> DaemonConfig:
    """The file (if any), this process's environment, then the flags."""
    return config_from_resolved(_resolve(path, overrides))


def _resolve(path: str | None, overrides: dict[str, str]) -> Resolved:
    text = None
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(path, f"cannot read it: {getattr(exc, 'strerror', None) or exc}"
                              ) from None
    try:
        return resolve(text, os.environ, overrides)
    except ConfigError as exc:
        if exc.key == "file" and path is not None:
            raise ConfigError(path, exc.problem) from None
        raise


def cmd_run(ns: argparse.Namespace) -> int:
    """The composition root at work: the daemon and its control endpoint (service.py), the
    signals, then serve until a stop signal. With workers: the supervisor, or one worker."""
    from .app.shard import WHOLE, Shard
    from .ops.workers import die_with
    from .service import build

    shard = Shard(*map(int, ns.worker.split("/"))) if ns.worker is not None else WHOLE
    _setup_logging(ns.verbose, f"worker {shard.index} " if shard.sharded else "")
    log = _log
    try:
        overrides = _overrides(ns)
        config = _read_config(ns.config, overrides)
    except ConfigError as exc:
        return _config_failed(ns.config, exc)
    if config.esl_password == PLACEHOLDER_PASSWORD and ns.worker is None:
        log.warning("esl.password is still the example's placeholder: set your own, in "
                    "event_socket.conf.xml and here")
    if ns.worker is None and config.workers > 1:
        return _supervise(ns, config)
    daemon, control = build(config, shard, ns.worker_dir)
    if ns.supervisor_pid:  # a worker ends with its supervisor
        die_with(ns.supervisor_pid)
    reread = None if ns.config is None else (lambda: _read_config(ns.config, overrides))
    signals = _Signals(daemon, reread)
    try:
        daemon.start()
    except SettingsError as exc:
        signals.cancel()
        print(f"esl-audio-stream: stream_defaults: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        signals.cancel()
        daemon.stop(timeout=0)
        print(f"esl-audio-stream: control.listen: cannot listen on {config.control_host}:"
              f"{config.control_port}: {os.strerror(exc.errno) if exc.errno else exc}",
              file=sys.stderr)
        return 2
    log.info("running: %sESL %s:%d, control %s%s", f"worker {ns.worker}, " if ns.worker else "",
             config.esl_host, config.esl_port, "http://{}:{}".format(*control.address) if
             ns.worker is None else "its own socket", f", config {ns.config}" if ns.config else "")
    profile = os.environ.get("ESL_AUDIO_STREAM_PROFILE")  # a file for cProfile's stats
    if profile:
        import cProfile

        result: list[int] = []
        cProfile.runctx("result.append(signals.serve())", globals(), locals(), profile)
        return result[0]
    return signals.serve()


def _supervise(ns: argparse.Namespace, config: DaemonConfig) -> int:
    """`run --workers N` (ops/workers.py): the workers, one control endpoint, the signals."""
    from .app.settings import SettingsError
    from .app.tls import ssl_context_for
    from .service import build_supervisor

    try:  # what each worker would refuse, refused once, before any starts
        ssl_context_for(config.stream_defaults)
    except SettingsError as exc:
        print(f"esl-audio-stream: stream_defaults: {exc}", file=sys.stderr)
        return 2
    supervisor, control = build_supervisor(config, ns.argv)
    try:
        control.start()
    except OSError as exc:
        print(f"esl-audio-stream: control.listen: cannot listen on {config.control_host}:"
              f"{config.control_port}: {os.strerror(exc.errno) if exc.errno else exc}",
              file=sys.stderr)
        supervisor.stop()
        return 2
    _log.info("running: %d workers, ESL %s:%d, control http://%s:%d%s", supervisor.count,
              config.esl_host, config.esl_port, *control.address,
              f", config {ns.config}" if ns.config else "")
    try:
        return supervisor.serve()
    finally:
        control.stop()


def _config_failed(path: str | None, exc: ConfigError) -> int:
    from_file = not (exc.key == path or exc.key.startswith(("--", ENV_PREFIX))
                     or exc.key.endswith("(command line)"))
    where = f"{path}: " if path and from_file else ""
    print(f"esl-audio-stream: {where}{exc}", file=sys.stderr)
    return 2


def cmd_config(ns: argparse.Namespace) -> int:
    if ns.example:
        sys.stdout.write(EXAMPLE)
        return 0
    try:
        resolved = _resolve(ns.check, {})
        config_from_resolved(resolved)
    except ConfigError as exc:
        return _config_failed(ns.check, exc)
    sys.stdout.write(render(resolved))
    return 0


def cmd_ctl(ns: argparse.Namespace) -> int:
    args = " ".join(ns.args)
    try:
        answer = control_request(ns.control, args, token=ns.token, api=ns.api)
    except OSError as exc:
        print(f"-ERR cannot reach the daemon at {ns.control}: {exc}")
        return 2
    sys.stdout.write(answer if answer.endswith("\n") else answer + "\n")
    return 0 if answer.startswith("+OK") else 1


def cmd_drain(ns: argparse.Namespace) -> int:
    """End every stream of a running daemon cleanly (the stop text, close 1000, disconnect
    events, FreeSWITCH told to stop sending) and make it refuse new ones: before a stop that
    must not leave the streams to a next process."""
    try:
        code, text = control_http(ns.control, "POST", "/drain", b"", token=ns.token,
                                  timeout=ns.timeout)
    except OSError as exc:
        print(f"-ERR cannot reach the daemon at {ns.control}: {exc}")
        return 2
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0 if code == 200 and text.startswith("+OK") else 1


def cmd_status(ns: argparse.Namespace) -> int:
    from .ops.status import format_table

    try:
        code, text = control_http(ns.control, "GET", "/streams", token=ns.token, timeout=10)
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
    from .dev.simulator import run_simulator

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
    from .dev.demo import run_demo

    _setup_logging(ns.verbose)
    return run_demo(seconds=ns.seconds, out_dir=ns.out)


def cmd_bench(ns: argparse.Namespace) -> int:
    if ns.scan:
        from .dev.scanbench import run_scan

        run_scan(channels=ns.scan)
        return 0
    from .dev.bench import run_bench

    names = "calls seconds rate channel_rate source mix protocol encoding native deflate " \
        "streams_per_call workers realtime pin lazy_sink"
    return run_bench(**{n: getattr(ns, n) for n in names.split()},
                     daemon_env=dict(pair.partition("=")[::2] for pair in ns.daemon_env))


def cmd_soak(ns: argparse.Namespace) -> int:
    from .dev.soak import run_soak

    return 0 if run_soak(calls=ns.calls, minutes=ns.minutes, every=ns.every) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esl-audio-stream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run the daemon",
        description="Run the daemon. Settings come from --config FILE (TOML; see `config "
        "--example`), then ESL_AUDIO_STREAM_<SECTION>_<KEY> environment variables, then these "
        "flags. SIGTERM/SIGINT hand the streams over to the next process and exit (`drain` ends "
        "them first); SIGHUP re-reads the file.")
    run.add_argument("--config", metavar="FILE", help="TOML configuration file")
    run.add_argument("--esl", help="FreeSWITCH ESL HOST[:PORT] (default 127.0.0.1:8021)")
    run.add_argument("--esl-password", help="ESL password (default ClueCon; a flag shows in ps: "
                     "prefer the file or ESL_AUDIO_STREAM_ESL_PASSWORD)")
    run.add_argument("--control", help=f"control endpoint HOST:PORT (default {DEFAULT_CONTROL})")
    run.add_argument("--stream-default", action="append", default=[], metavar="STREAM_X=VALUE",
                     help="daemon-wide default for a STREAM_* channel variable (repeatable)")
    run.add_argument("--workers", help="worker processes sharing the calls: a number, or auto "
                     "(one per core); default 1, no supervisor")
    run.add_argument("-v", "--verbose", action="store_true")
    # how the supervisor starts each worker (ops/workers.py)
    run.add_argument("--worker", help=argparse.SUPPRESS)  # I/N
    run.add_argument("--worker-dir", help=argparse.SUPPRESS)
    run.add_argument("--supervisor-pid", type=int, default=0, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="print an example configuration or check a file")
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument("--example", action="store_true", help="print a commented example")
    what.add_argument("--check", metavar="FILE", help="print the effective configuration (file "
                      "and environment; secrets masked); exit 2 when it is invalid")
    config.set_defaults(func=cmd_config)

    ctl = sub.add_parser("ctl", help="send a uuid_audio_stream (or uuid_audio_fork) command to "
                         "a running daemon")
    _add_client_options(ctl)
    ctl.add_argument("--api", choices=("uuid_audio_stream", "uuid_audio_fork"),
                     default="uuid_audio_stream", help="which command: mod_audio_stream's "
                     "(default) or mod_audio_fork's")
    ctl.add_argument("args", nargs=argparse.REMAINDER,
                     help="<uuid> start <ws-url> <mix-type> <sampling-rate> [metadata]"
                     " | <uuid> stop [text]")
    ctl.set_defaults(func=cmd_ctl)

    drain = sub.add_parser("drain", help="end a running daemon's streams cleanly, refuse new "
                           "ones (a stop signal hands streams over instead)")
    _add_client_options(drain)
    drain.add_argument("--timeout", type=float, default=120.0,
                       help="seconds to wait for the answer (the daemon's drain_timeout bounds "
                       "the drain itself)")
    drain.set_defaults(func=cmd_drain)

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
    bench.add_argument("--source", choices=("direct", "record", "taps"), default="direct",
                       help="unicast on the call, a recording into a FIFO, or loopback taps")
    bench.add_argument("--mix", choices=("mono", "stereo", "mixed"), default="mono")
    bench.add_argument("--protocol", choices=("mod_audio_stream", "twilio"),
                       default="mod_audio_stream", help="twilio: give --rate 8000")
    bench.add_argument("--encoding", choices=("l16", "pcmu", "pcma"), default="l16",
                       help="mod_audio_stream's audio on the wire (G.711: --rate 8000)")
    bench.add_argument("--native", action=argparse.BooleanOptionalAction, default=True,
                       help="the daemon's [media] native (the C frame pump where it applies)")
    bench.add_argument("--deflate", action=argparse.BooleanOptionalAction, default=False,
                       help="the sink accepts permessage-deflate (texts compressed; audio never)")
    bench.add_argument("--streams-per-call", type=int, default=1, metavar="K",
                       help="K streams on each call, fed from its one source")
    bench.add_argument("--workers", type=int, default=1, metavar="N", help="run --workers N")
    bench.add_argument("--realtime", action="store_true", help="the daemon under chrt -f 1")
    bench.add_argument("--pin", action="store_true", help="the daemon on cores of its own")
    bench.add_argument("--lazy-sink", action="store_true", help="the sink reads every 0.2 s")
    bench.add_argument("--daemon-env", action="append", default=[], metavar="NAME=VALUE")
    bench.add_argument("--scan", type=int, default=0, metavar="N",
                       help="instead: time the crash-only resume scan over N parked calls")
    bench.set_defaults(func=cmd_bench)
    soak = sub.add_parser("soak", help="simulated calls with churn for a long while: what the "
                          "daemon holds (RSS, fds, greenlets, ports, files), now and then")
    soak.add_argument("--calls", type=int, default=200)
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--every", type=float, default=300.0, help="seconds between two rows")
    soak.set_defaults(func=cmd_soak)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    ns.argv = list(sys.argv[1:] if argv is None else argv)  # the workers' command line
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
