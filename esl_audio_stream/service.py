"""The composition root: the daemon and its control endpoint, built and wired together.

The daemon (app/) knows nothing of the control endpoint, and the endpoint (ops/) serves any
`Controlled` without importing the daemon; this module, above both, is the one place that builds
them and hands each what it needs. `esl-audio-stream run`, the demo and the tests all build the
daemon here, so they run the same thing.
"""

from __future__ import annotations

from .app.config import DaemonConfig
from .app.daemon import Daemon
from .ops.control import ControlServer


def build(config: DaemonConfig | None = None) -> tuple[Daemon, ControlServer]:
    """The daemon and its control endpoint, attached as `daemon.control` (started and stopped
    with the daemon). Nothing is started or bound yet. Raises ValueError for a control address
    that is not loopback without a token."""
    daemon = Daemon(config)
    cfg = daemon.config
    control = ControlServer(daemon, cfg.control_host, cfg.control_port,
                            token=cfg.control_token, metrics_public=cfg.metrics_public)
    daemon.control = control
    return daemon, control


def build_daemon(config: DaemonConfig | None = None) -> Daemon:
    """`build`, for callers that reach the endpoint as `daemon.control` (the demo, the tests)."""
    return build(config)[0]
