"""Call tracking on its own: channel events folded into each streamed call's state, the destroy
it waits for, and the tap channels' owners. No sockets, no FreeSWITCH."""

from __future__ import annotations

import pytest

from esl_audio_stream.app.calls import Calls, initial_state
from esl_audio_stream.app.events import CallState


@pytest.mark.parametrize(("channel", "state"), [
    ({"Channel-State": "CS_EXECUTE", "variable_current_application": "park"}, CallState.PARKED),
    ({"Channel-State": "CS_EXECUTE", "variable_current_application": "playback"},
     CallState.BUSY),
    ({"Channel-State": "CS_EXCHANGE_MEDIA"}, CallState.BUSY),
    ({"Channel-State": "CS_HANGUP", "variable_current_application": "park"}, CallState.HUNGUP),
    ({"Channel-State": "CS_REPORTING"}, CallState.HUNGUP),
    ({"Channel-State": "CS_DESTROY"}, CallState.HUNGUP),
])
def test_initial_state_from_a_dump(channel, state):
    assert initial_state(channel) is state


def test_channel_events_fold_into_the_call_state_until_destroyed():
    calls = Calls()
    track = calls.track("a", CallState.PARKED)
    assert calls.get("a") is track and calls.state("a") is CallState.PARKED and len(calls) == 1
    steps = [("CHANNEL_EXECUTE", "playback", CallState.BUSY),
             ("CHANNEL_EXECUTE_COMPLETE", "playback", CallState.BUSY),
             ("CHANNEL_PARK", "", CallState.PARKED),
             ("CHANNEL_EXECUTE", "park", CallState.PARKED),
             ("CHANNEL_BRIDGE", "", CallState.BUSY),
             ("CHANNEL_UNBRIDGE", "", CallState.BUSY),
             ("CHANNEL_HANGUP", "", CallState.HUNGUP),
             ("CHANNEL_EXECUTE", "playback", CallState.HUNGUP)]
    for name, app, want in steps:
        assert calls.fold("a", name, app) is track and track.state is want, name
    assert not track.destroyed.is_set()
    calls.fold("a", "CHANNEL_DESTROY")
    assert track.state is CallState.GONE and track.destroyed.is_set()
    calls.fold("a", "CHANNEL_PARK")
    assert track.state is CallState.GONE  # gone stays gone


def test_a_call_not_tracked_is_gone_and_its_events_are_not_folded():
    calls = Calls()
    assert calls.state("x") is CallState.GONE and calls.get("x") is None
    assert calls.fold("x", "CHANNEL_PARK") is None
    calls.track("a", CallState.BUSY)
    calls.forget("a")
    calls.forget("a")  # twice is fine
    assert calls.state("a") is CallState.GONE and len(calls) == 0


def test_a_call_found_gone_is_destroyed():
    calls = Calls()
    track = calls.track("a", CallState.PARKED)
    calls.gone("a")
    calls.gone("never-tracked")
    assert track.state is CallState.GONE and track.destroyed.is_set()


class Owner:
    def __init__(self) -> None:
        self.gone: list[str] = []

    def tap_gone(self, tap_uuid: str) -> None:
        self.gone.append(tap_uuid)


def test_tap_owners():
    calls = Calls()
    owner = Owner()
    calls.tap_opened("t1", owner)
    calls.tap_opened("t2", owner)
    assert dict(calls.tap_owners) == {"t1": owner, "t2": owner}
    with pytest.raises(TypeError):
        calls.tap_owners["t3"] = owner  # read-only
    assert calls.tap_hung_up("t1") is owner
    assert calls.tap_hung_up("t1") is None  # told once
    assert calls.tap_hung_up("not-a-tap") is None
    calls.tap_closed("t2")
    calls.tap_closed("t2")
    assert not calls.tap_owners
