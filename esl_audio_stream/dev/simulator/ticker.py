"""The simulator's clock: one greenlet on an absolute 20 ms schedule, and timers counted in ticks.

Each tick first runs the timers that are due (the later steps of a hang-up, a tap ending one tick
after its target), then `on_tick` (every channel's own thread). Absolute deadlines, so no drift
accumulates; a ticker more than one tick behind restarts its schedule from now instead of
bursting ticks to catch up, as FreeSWITCH's soft timer does (src/switch_time.c `timer_next`:
"sync up timer if it's not been called for a while otherwise it will return instantly several
times until it catches up": `delta < -1` sets the reference to the current tick). The audio
then goes on where it was, later: nothing is lost, and the daemon must not fill it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable

import gevent

log = logging.getLogger(__name__)

TICK = 0.020
MAX_LATE_TICKS = 1  # further behind than this, the schedule is reset instead of bursting


class Ticker:
    """Owns the tick greenlet and the timer heap. `tick_no` counts ticks since construction."""

    def __init__(self, on_tick: Callable[[], None]) -> None:
        self._on_tick = on_tick
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()  # ties run in the order they were set
        self._greenlet: gevent.Greenlet | None = None
        self._running = False
        self.tick_no = 0
        self.late_resets = 0

    def start(self) -> None:
        self._running = True
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        """No further tick or timer runs; the greenlet is killed without waiting (see join)."""
        self._running = False
        self._timers.clear()
        g = self._greenlet
        if g is not None and g is not gevent.getcurrent():
            g.kill(block=False)

    def join(self, timeout: float | None = None) -> None:
        g = self._greenlet
        if g is not None and g is not gevent.getcurrent():
            g.join(timeout)

    def after(self, ticks: int, fn: Callable[[], None]) -> None:
        """Run `fn` at the start of the tick `ticks` from now (before any channel runs)."""
        heapq.heappush(self._timers, (self.tick_no + ticks, next(self._seq), fn))

    def _loop(self) -> None:
        """Absolute 20 ms schedule: deadline n is start + n*20 ms, so no drift accumulates."""
        start = time.monotonic()
        n = 0
        while self._running:
            n += 1
            delay = start + n * TICK - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            elif delay < -MAX_LATE_TICKS * TICK:
                self.late_resets += 1
                start = time.monotonic()
                n = 0
            try:
                self._tick()
            except Exception:  # one broken channel must not stop every call
                log.exception("simulator: tick failed")

    def _tick(self) -> None:
        self.tick_no += 1
        timers = self._timers
        while timers and timers[0][0] <= self.tick_no:
            _, _, fn = heapq.heappop(timers)
            fn()
        self._on_tick()
