"""What every part of the simulator shares, as switch_core does for FreeSWITCH's modules: the
session table, the clock, the far-end audio library and the way events leave for the ESL
listeners.

State and primitives only. What a channel's thread does is park.py; calls and their lifecycle
calls.py; playback playback.py; media bugs bugs.py; unicast unicast.py; api commands api.py.
Each takes the Switch it acts on, so none of them imports another's owner.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from .channel import SimChannel
from .events import CoreInfo, Event
from .media import Library
from .ticker import Ticker

ENDED_KEEP = 4096  # ended channels kept for inspection by sim.channel(uuid)


class Switch:
    """The shared state of one simulated FreeSWITCH."""

    def __init__(self, extensions: dict[str, str], written_limit: int, ticker: Ticker,
                 fire: Callable[[Event], None]) -> None:
        self.extensions = extensions
        self.written_limit = written_limit
        self.ticker = ticker
        self.fire = fire  # deliver to every subscribed ESL connection (never blocks)
        self.core = CoreInfo()
        self.lib = Library()
        self.all: dict[str, SimChannel] = {}  # created, not yet destroyed (show channels)
        self.ended: dict[str, SimChannel] = {}  # destroyed, kept for inspection
        self.active: dict[str, SimChannel] = {}  # channels whose thread the ticker runs
        self.sessions_since_startup = 0
        self.sessions_peak = 0
        self.started_at = time.time()
        self.globals: dict[str, str] = {}
        self.reset_core()

    def reset_core(self) -> None:
        """What a (re)start of FreeSWITCH sets: a new core UUID, the global variables
        (global_setvar/global_getvar) it sets at start-up, and nothing else."""
        self.core.core_uuid = str(uuid.uuid4())
        self.globals = {
            "hostname": "sim-freeswitch", "local_ip_v4": "127.0.0.1",
            "base_dir": "/usr/local/freeswitch", "temp_dir": "/tmp",
            "core_uuid": self.core.core_uuid}

    def live(self, uuid: str) -> SimChannel | None:
        """switch_core_session_locate: only channels that are up."""
        ch = self.all.get(uuid)
        return ch if ch is not None and ch.up else None

    def next_session(self) -> int:
        self.sessions_since_startup += 1
        return self.sessions_since_startup

    def add(self, *channels: SimChannel) -> None:
        for ch in channels:
            self.all[ch.uuid] = ch
        self.sessions_peak = max(self.sessions_peak, len(self.all))

    def destroyed(self, ch: SimChannel) -> None:
        """Out of the session table; kept (a bounded number) for inspection."""
        self.all.pop(ch.uuid, None)
        self.ended[ch.uuid] = ch
        while len(self.ended) > ENDED_KEEP:
            self.ended.pop(next(iter(self.ended)))

    def chan_event(self, ch: SimChannel, name: str,
                   extra: tuple[tuple[str, str], ...] = ()) -> None:
        """Fire a channel event: the channel's data headers, then `extra`."""
        if name == "CHANNEL_EXECUTE":
            # switch_core_session_execute_application sets it before firing CHANNEL_EXECUTE
            ch.variables["current_application"] = dict(extra).get("Application", "")
        ev = self.core.create(name, func="switch_channel")
        ev.headers += ch.data_headers(name)
        for k, v in extra:
            ev.add(k, v)
        self.fire(ev)
