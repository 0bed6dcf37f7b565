"""The outbox: how each event we fire reaches FreeSWITCH, and what becomes of it after (sans-IO).

FreeSWITCH delivers a `sendevent` only on a route that fits the call's state (events.py): through
the park loop of a parked call, at once for a call that is gone, never with `Unique-ID` for a call
busy with an application or bridged. What it does not deliver is lost silently, so the outbox:

- routes each event by the call's state at the moment it goes out (`route_for`, `event_headers`);
- keeps the events fired while the ESL connection is down (bounded: `UNSENT_MAX`, the oldest
  dropped and counted as failed) and hands them back, oldest first, when it is up again, to be
  routed for the call's state then;
- numbers each event routed through a parked channel (`events.ROUTED_HEADER`) and watches for it
  to come back (bounded: `ROUTED_MAX`, the oldest no longer watched, counted); when the call is
  destroyed or bridged first, the channel never fires it (facts file), so the outbox says to fire
  it again: DIRECT once destroyed (no session holds the uuid), UNROUTED once bridged (the bridge
  drops events that name the channel).

Like h11: fed inputs (an event to fire with the link state and the call's tracked state, channel
events, our events coming back), read for outputs (`Send`: the headers and body of one
`sendevent CUSTOM`; `Wait`: the call hung up, wait for its destroy first; `Kept`). No sockets, no
greenlets, no clock: the daemon's shell sends, waits (up to `destroy_wait`) and logs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from .events import ROUTED_HEADER, CallState, Route, event_headers, route_for

#: Events kept while the ESL connection is down; beyond it the oldest are dropped (counted).
UNSENT_MAX = 1000
#: Routed events awaiting their return; beyond it the oldest are no longer watched (counted).
ROUTED_MAX = 10000

#: Channel events after which a call's channel never fires the events queued to it.
REFIRE_ON = ("CHANNEL_DESTROY", "CHANNEL_BRIDGE")


@dataclass(frozen=True, slots=True)
class Fire:
    """One event to fire, as a stream (or the daemon) handed it over."""

    uuid: str
    subclass: str
    body: str
    extra: Mapping[str, str] | None = None  # headers besides the routing ones
    state: CallState | None = None  # what the caller knows, for a call that is not tracked


@dataclass(frozen=True, slots=True)
class Send:
    """A `sendevent CUSTOM` to make now."""

    uuid: str
    subclass: str
    route: Route
    headers: dict[str, str]
    body: str


@dataclass(frozen=True, slots=True)
class Wait:
    """The call hung up and is not destroyed yet: wait (bounded) for its CHANNEL_DESTROY, then
    hand this to `Outbox.waited`."""

    fire: Fire


@dataclass(frozen=True, slots=True)
class Kept:
    """The ESL connection is down: the event waits for it (`Outbox.next_unsent`)."""

    waiting: int  # events kept now, this one included
    dropped: bool  # the oldest kept event was dropped to make room (counted as failed)


class Outbox:
    """Routes, keeps and watches the events fired to FreeSWITCH."""

    def __init__(self, unsent_max: int = UNSENT_MAX, routed_max: int = ROUTED_MAX) -> None:
        self.unsent_max = unsent_max
        self.routed_max = routed_max
        self._unsent: deque[Fire] = deque()
        self._routed: dict[int, Fire] = {}  # seq -> the event, until it comes back
        self._seq = 0
        self.kept = 0  # events kept while ESL was down
        self.failed = 0  # events lost: sendevent failed, or dropped from a full keep
        self.refired = 0  # routed events fired again (their channel never fired them)
        self.unwatched = 0  # routed events no longer watched (more than routed_max awaited)

    # -- inputs -----------------------------------------------------------------------------

    def fire(self, event: Fire, *, connected: bool,
             tracked: CallState | None) -> Send | Wait | Kept:
        """An event to fire now. `connected`: the ESL link is up; `tracked`: the call's tracked
        state (None when the call is not tracked: the event's own `state`, else gone)."""
        if not connected:  # surely not sent: kept, and fired when FreeSWITCH is back
            return self._keep(event)
        state = tracked if tracked is not None else event.state
        route = route_for(state or CallState.GONE)
        if route is Route.WAIT_DESTROY:
            return Wait(event)
        return self._send(event, route)

    def waited(self, wait: Wait, destroyed: bool) -> Send:
        """After the wait: DIRECT if the call was destroyed meanwhile (its Unique-ID is free),
        else UNROUTED (FreeSWITCH drops an event naming a channel between hang-up and destroy)."""
        return self._send(wait.fire, Route.DIRECT if destroyed else Route.UNROUTED)

    def next_unsent(self) -> Fire | None:
        """The oldest event kept while ESL was down (to be fired again), or None."""
        return self._unsent.popleft() if self._unsent else None

    def send_failed(self) -> None:
        """FreeSWITCH did not take a Send (maybe sent, maybe not: not fired twice)."""
        self.failed += 1

    def came_back(self, seq: str) -> None:
        """One of our routed events, delivered by its channel (its ROUTED_HEADER value)."""
        self._routed.pop(int(seq) if seq.isdigit() else -1, None)

    def channel_event(self, name: str, uuid: str) -> list[Send]:
        """A channel event: after a destroy or a bridge, the routed events of that call that have
        not come back will never be fired by its channel (it delivers in order, so a delivered one
        came back before this event): fire them again."""
        if name not in REFIRE_ON or not self._routed:
            return []
        stuck = [seq for seq, event in self._routed.items() if event.uuid == uuid]
        # destroyed: Unique-ID is fired at once; bridged: without it, or the bridge drops it
        route = Route.DIRECT if name == "CHANNEL_DESTROY" else Route.UNROUTED
        sends = []
        for seq in stuck:
            sends.append(self._send(self._routed.pop(seq), route))
            self.refired += 1
        return sends

    # -- reading ----------------------------------------------------------------------------

    @property
    def unsent(self) -> int:
        """Events kept, waiting for the ESL connection."""
        return len(self._unsent)

    @property
    def routed(self) -> int:
        """Routed events watched, not come back yet."""
        return len(self._routed)

    # -- internals --------------------------------------------------------------------------

    def _keep(self, event: Fire) -> Kept:
        dropped = len(self._unsent) >= self.unsent_max
        if dropped:
            self._unsent.popleft()
            self.failed += 1
        self._unsent.append(event)
        self.kept += 1
        return Kept(len(self._unsent), dropped)

    def _send(self, event: Fire, route: Route) -> Send:
        headers = event_headers(route, event.uuid, event.subclass)
        if event.extra:
            headers.update(event.extra)
        if route is Route.VIA_CHANNEL:  # the park loop fires it, if the call stays parked
            self._seq += 1
            headers[ROUTED_HEADER] = str(self._seq)
            if len(self._routed) >= self.routed_max:
                self._routed.pop(next(iter(self._routed)))
                self.unwatched += 1
            self._routed[self._seq] = event
        return Send(event.uuid, event.subclass, route, headers, event.body)
