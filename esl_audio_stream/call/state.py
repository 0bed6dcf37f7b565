"""A stream's lifecycle as one explicit state machine (the shape of h11's `_state.py`).

Every stream is in exactly one of these states, and only the transitions in `TRANSITIONS` exist:
a command that makes no sense in the current state is refused by the table, not by a scattered
boolean. The stream (call/stream.py) is the only one that moves it.

    CONNECTING --(WebSocket up, audio asked for)--> STREAMING <--(pause/resume)--> PAUSED
        |                                              |                             |
        +--(failed, or stopped while connecting)--+    +---------(stop)------+-------+
                                                  v                          v
                                                ENDED <--(all released)-- STOPPING
"""

from __future__ import annotations

import enum


class StreamState(enum.Enum):
    CONNECTING = "connecting"  # choosing the source, making taps, connecting the WebSocket
    STREAMING = "streaming"  # audio flows (or is awaited) to the endpoint
    PAUSED = "paused"  # the WebSocket stays open; no audio is sent
    STOPPING = "stopping"  # the close handshake, the events, FreeSWITCH told to stop
    ENDED = "ended"  # everything the stream held is released


S = StreamState

TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    S.CONNECTING: frozenset({S.STREAMING, S.PAUSED, S.STOPPING, S.ENDED}),
    S.STREAMING: frozenset({S.PAUSED, S.STOPPING}),
    S.PAUSED: frozenset({S.STREAMING, S.STOPPING}),
    S.STOPPING: frozenset({S.ENDED}),
    S.ENDED: frozenset(),
}

#: States in which the stream still holds anything (sockets, taps, a WebSocket).
LIVE = frozenset({S.CONNECTING, S.STREAMING, S.PAUSED})


class StateError(RuntimeError):
    """A transition the table does not have: a bug in the caller, never an operator error."""


def advance(current: StreamState, new: StreamState) -> StreamState:
    """`new` when the table allows it from `current`; raises StateError otherwise."""
    if new not in TRANSITIONS[current]:
        raise StateError(f"no transition from {current.value} to {new.value}")
    return new
