"""The native pump's engine: every steady stream's UDP socket in one epoll set, read by ONE
gevent watcher (on the epoll fd) that hands the whole set to C.

Why one watcher for all: a watcher per socket costs a Python callback per datagram; with one,
a wake-up costs one callback and one C call however many streams had a frame (the simulator and
FreeSWITCH send every call's frame at about the same instant). C stops at the first pump that
needs Python (`eas_engine_run` returns its slot: its `why`); the pump does what the Python path
would do, and the run goes on where it stopped.

One engine per event loop (`engine()`): the process's, made on first use. Its watcher runs only
while a pump is in the set; the epoll fd and the C buffers live as long as the loop.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Protocol

import gevent

try:
    from ._pump import ffi, lib
except ImportError:  # the optional extension was not built: every stream takes the Python path
    ffi = lib = None

log = logging.getLogger(__name__)

#: The extension is there (`[media] native` can be true).
AVAILABLE = lib is not None


class Attended(Protocol):
    """A pump, as the engine sees it: its C state, and what it does when C stops on it."""

    st: Any

    def attention(self) -> None: ...
    def broken(self, exc: BaseException) -> None: ...


class Engine:
    """The epoll set of armed pumps and its one watcher (see the module docstring)."""

    def __init__(self, loop: Any) -> None:
        e = lib.eas_engine_new()
        if e == ffi.NULL:
            raise OSError("the native pump's engine could not be made")
        self._e = ffi.gc(e, lib.eas_engine_free)
        self._pumps: dict[int, Attended] = {}
        self._watcher = loop.io(lib.eas_engine_fd(self._e), 1)

    @property
    def c(self) -> Any:
        """The C engine (the pump's resume and the tests' feed take it)."""
        return self._e

    def __len__(self) -> int:
        return len(self._pumps)

    def add(self, pump: Attended) -> bool:
        """The pump's socket joins the set; False when epoll refuses it (the Python path goes
        on)."""
        rc = lib.eas_engine_add(self._e, pump.st)
        if rc:
            log.warning("native pump: socket not added (errno %d): the Python path goes on", -rc)
            return False
        if not self._pumps:
            self._watcher.start(self._ready)
        self._pumps[pump.st.slot] = pump
        return True

    def remove(self, pump: Attended) -> None:
        slot = pump.st.slot
        if slot < 0:
            return
        lib.eas_engine_remove(self._e, pump.st)
        self._pumps.pop(slot, None)
        if not self._pumps:
            self._watcher.stop()

    def _ready(self) -> None:
        """The watcher's callback, in the event loop: it must never raise into the hub."""
        run, e, pumps = lib.eas_engine_run, self._e, self._pumps
        slot = run(e, 1)
        while slot >= 0:
            pump = pumps.get(slot)
            if pump is not None:
                try:
                    pump.attention()
                except Exception as exc:  # a bug: that stream stops, the others go on
                    pump.broken(exc)
            slot = run(e, 0)


_engines: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()


def engine() -> Engine:
    """This event loop's engine (made on first use)."""
    hub = gevent.get_hub()
    found = _engines.get(hub)
    if found is None:
        found = _engines[hub] = Engine(hub.loop)
    return found
