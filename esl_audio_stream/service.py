"""The composition root: the daemon and its control endpoint, built and wired together.

The daemon (app/) knows nothing of the control endpoint, and the endpoint (ops/) serves any
`Controlled` without importing the daemon; this module, above both, is the one place that builds
them and hands each what it needs. `esl-audio-stream run`, the demo and the tests all build the
daemon here, so they run the same thing. With workers (`run --workers N`), it also builds the
supervisor and its endpoint over the workers (`build_supervisor`), and each worker (`build` with
its shard): its endpoint on its own unix socket, and the commands FreeSWITCH sends for another
worker's calls handed to that worker.
"""

from __future__ import annotations

import logging

from .app import intake
from .app.config import DaemonConfig
from .app.daemon import Daemon
from .app.events import CallState
from .app.shard import WHOLE, Shard
from .ops import fleet
from .ops.control import ControlServer
from .ops.workers import Supervisor

log = logging.getLogger(__name__)


def build(config: DaemonConfig | None = None, shard: Shard = WHOLE,
          rundir: str | None = None) -> tuple[Daemon, ControlServer]:
    """The daemon and its control endpoint, attached as `daemon.control` (started and stopped
    with the daemon). Nothing is started yet. Raises ValueError for a control address that is
    not loopback without a token. A worker (`rundir`: its supervisor's directory) answers on
    its own unix socket there."""
    daemon = Daemon(config, shard)
    cfg = daemon.config
    if rundir is None:
        control = ControlServer(daemon, cfg.control_host, cfg.control_port,
                                token=cfg.control_token, metrics_public=cfg.metrics_public)
    else:
        control = ControlServer(daemon, cfg.control_host, cfg.control_port,
                                unix=fleet.socket_path(rundir, shard.index),
                                intake=lambda body: _take(daemon, body))
        daemon.hand_intake = lambda found, state: _hand(daemon, rundir, found, state)
    daemon.control = control
    return daemon, control


def build_supervisor(config: DaemonConfig, run_args: list[str],
                     ) -> tuple[Supervisor, ControlServer]:
    """`run --workers N`: the supervisor (nothing started) and the configured control endpoint
    over its workers (not bound yet)."""
    supervisor = Supervisor(config.workers, run_args)
    served = fleet.Fleet(supervisor.rundir, supervisor.count, supervisor.own)
    control = ControlServer(None, config.control_host, config.control_port,
                            token=config.control_token, metrics_public=config.metrics_public,
                            served=served)
    return supervisor, control


def _take(daemon: Daemon, body: bytes) -> str:
    """A worker's POST /intake: a command the intake worker handed over, run here."""
    try:
        found, state = fleet.intake_from(body)
    except (ValueError, KeyError, TypeError):
        return "-ERR not a command handed over\n"
    daemon.take_intake(found, state)
    return "+OK\n"


def _hand(daemon: Daemon, rundir: str, found: intake.Intake, state: CallState) -> None:
    """The intake worker's: a command for another worker's call, to that worker; when it cannot
    be handed over, its -ERR is the command's reply."""
    owner = daemon.shard.owner(found.uuid)
    answer = fleet.hand_intake(rundir, owner, found, state)
    if not answer.startswith("+OK"):
        log.error("%s: could not hand the command to worker %d: %s", found.uuid, owner,
                  answer.strip())
        daemon.fire(found.uuid, intake.REPLY_SUBCLASS, answer, extra=intake.reply_headers(found),
                    state=state)


def build_daemon(config: DaemonConfig | None = None) -> Daemon:
    """`build`, for callers that reach the endpoint as `daemon.control` (the demo, the tests)."""
    return build(config)[0]
