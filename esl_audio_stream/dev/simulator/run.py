"""Blocking entry point for `esl-audio-stream simulate`."""

from __future__ import annotations

import logging
import signal

import gevent
import gevent.event

from .core import Simulator

log = logging.getLogger(__name__)


def run_simulator(host: str, port: int, password: str, extensions: dict[str, str]) -> None:
    """Serve until SIGINT/SIGTERM, then hang up every call and close everything."""
    sim = Simulator(host=host, port=port, password=password, extensions=extensions)
    sim.start()
    h, p = sim.address
    log.info("simulator: ESL on %s:%d, extensions %s", h, p, extensions)
    done = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, done.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        done.wait()
    finally:
        for hnd in handlers:
            hnd.cancel()
        sim.stop()
