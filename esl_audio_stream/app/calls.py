"""Call tracking: what FreeSWITCH's channel events have said about each streamed call.

The outbox routes an event by the call's state (events.route_for), and a stream ends with its
call, so the daemon folds every channel event of a streamed call into its state here
(events.next_state). It also knows which loopback tap channels feed which stream, so that a tap
FreeSWITCH hangs up is reported to its owner.

No sockets and no greenlets: it is fed channel events and read. The one waitable is each call's
`destroyed` event, on which a shell waits (bounded) before firing an event to a call that hung
up (events.Route.WAIT_DESTROY).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

import gevent.event

from .events import CallState, next_state

_ENDED = ("CS_HANGUP", "CS_REPORTING", "CS_DESTROY")


def initial_state(channel: Mapping[str, str]) -> CallState:
    """A call's state from its `uuid_dump` (or the headers of one of its events)."""
    if channel.get("Channel-State") in _ENDED:
        return CallState.HUNGUP
    if channel.get("variable_current_application") == "park":
        return CallState.PARKED
    return CallState.BUSY


class CallTrack:
    """What the channel events have said about one streamed call."""

    __slots__ = ("destroyed", "state")

    def __init__(self, state: CallState) -> None:
        self.state = state
        self.destroyed = gevent.event.Event()  # set on CHANNEL_DESTROY (or found gone)

    def fold(self, event_name: str, application: str = "") -> CallState:
        """One channel event of this call."""
        self.state = next_state(self.state, event_name, application)
        if event_name == "CHANNEL_DESTROY":
            self.destroyed.set()
        return self.state

    def gone(self) -> None:
        """FreeSWITCH no longer knows the call (found after a reconnect, its events missed)."""
        self.state = CallState.GONE
        self.destroyed.set()


class TapOwner(Protocol):
    """A stream fed by loopback taps: told when FreeSWITCH hangs one of them up."""

    def tap_gone(self, tap_uuid: str) -> None: ...


class Calls:
    """The tracked calls (one per stream, from its start until it has ended) and the tap
    channels' owners."""

    def __init__(self) -> None:
        self._tracks: dict[str, CallTrack] = {}
        self._tap_owners: dict[str, TapOwner] = {}

    # -- streamed calls ---------------------------------------------------------------------

    def track(self, uuid: str, state: CallState) -> CallTrack:
        """Follow a call from now on (a stream is starting on it)."""
        track = self._tracks[uuid] = CallTrack(state)
        return track

    def forget(self, uuid: str) -> None:
        self._tracks.pop(uuid, None)

    def get(self, uuid: str) -> CallTrack | None:
        return self._tracks.get(uuid)

    def state(self, uuid: str) -> CallState:
        """The tracked state; a call not tracked is taken as gone."""
        track = self._tracks.get(uuid)
        return track.state if track is not None else CallState.GONE

    def fold(self, uuid: str, event_name: str, application: str = "") -> CallTrack | None:
        """One channel event: folded into its call's state if the call is tracked (returned)."""
        track = self._tracks.get(uuid)
        if track is not None:
            track.fold(event_name, application)
        return track

    def gone(self, uuid: str) -> None:
        track = self._tracks.get(uuid)
        if track is not None:
            track.gone()

    def __len__(self) -> int:
        return len(self._tracks)

    # -- tap channels -----------------------------------------------------------------------

    def tap_opened(self, tap_uuid: str, owner: TapOwner) -> None:
        self._tap_owners[tap_uuid] = owner

    def tap_closed(self, tap_uuid: str) -> None:
        self._tap_owners.pop(tap_uuid, None)

    def tap_hung_up(self, tap_uuid: str) -> TapOwner | None:
        """A tap channel hung up: its owner, which no longer owns it (None if not a tap)."""
        return self._tap_owners.pop(tap_uuid, None)

    @property
    def tap_owners(self) -> Mapping[str, TapOwner]:
        """tap channel uuid -> the stream it feeds (read-only)."""
        return MappingProxyType(self._tap_owners)
