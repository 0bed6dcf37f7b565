"""The outbox on its own: events fed in with the link state and the call's state, what to send
read out. No sockets, no greenlets, no FreeSWITCH (test_end_to_end checks the same through the
simulator)."""

from __future__ import annotations

import pytest

from esl_audio_stream.app import events
from esl_audio_stream.app.events import ROUTED_HEADER, STREAM_UUID_HEADER, CallState, Route
from esl_audio_stream.app.outbox import Fire, Kept, Outbox, Send, Wait

UP = {"connected": True, "tracked": None}


def json_event(uuid: str, n: int, **kw) -> Fire:
    return Fire(uuid, events.JSON, f'{{"n":{n}}}', **kw)


def test_a_parked_call_gets_its_event_through_the_channel_numbered_and_watched():
    box = Outbox()
    out = box.fire(json_event("a", 1, extra={"X-Mine": "yes"}), connected=True,
                   tracked=CallState.PARKED)
    assert isinstance(out, Send) and out.route is Route.VIA_CHANNEL
    assert out.headers == {"Event-Subclass": events.JSON, STREAM_UUID_HEADER: "a",
                           "Event-Name": "CUSTOM", "Unique-ID": "a", "X-Mine": "yes",
                           ROUTED_HEADER: "1"}
    assert list(out.headers)[-1] == ROUTED_HEADER  # the extra headers cannot replace it
    assert out.body == '{"n":1}' and box.routed == 1
    second = box.fire(json_event("a", 2), connected=True, tracked=CallState.PARKED)
    assert second.headers[ROUTED_HEADER] == "2" and box.routed == 2
    box.came_back("1")
    box.came_back("2")
    assert box.routed == 0
    assert box.channel_event("CHANNEL_DESTROY", "a") == []  # both came back: nothing again


@pytest.mark.parametrize(("state", "route", "unique_id"), [
    (CallState.GONE, Route.DIRECT, True),
    (CallState.BUSY, Route.UNROUTED, False),
    (None, Route.DIRECT, True),  # a call nobody knows is taken as gone
])
def test_the_route_follows_the_call_state(state, route, unique_id):
    box = Outbox()
    out = box.fire(json_event("a", 1), connected=True, tracked=state)
    assert isinstance(out, Send) and out.route is route
    assert ("Unique-ID" in out.headers) is unique_id and "Event-Name" not in out.headers
    assert ROUTED_HEADER not in out.headers and box.routed == 0


def test_the_tracked_state_wins_over_the_callers():
    box = Outbox()
    out = box.fire(json_event("a", 1, state=CallState.PARKED), connected=True,
                   tracked=CallState.BUSY)
    assert out.route is Route.UNROUTED
    # not tracked: the state the caller knew
    out = box.fire(json_event("a", 1, state=CallState.PARKED), **UP)
    assert out.route is Route.VIA_CHANNEL


@pytest.mark.parametrize(("destroyed", "route"), [(True, Route.DIRECT),
                                                  (False, Route.UNROUTED)])
def test_a_hung_up_call_waits_for_its_destroy(destroyed, route):
    box = Outbox()
    out = box.fire(json_event("a", 1), connected=True, tracked=CallState.HUNGUP)
    assert isinstance(out, Wait) and out.fire.uuid == "a"
    sent = box.waited(out, destroyed)
    assert sent.route is route and sent.body == '{"n":1}'
    assert ("Unique-ID" in sent.headers) is destroyed


def test_events_kept_while_esl_is_down_go_out_in_order_routed_for_the_state_then():
    box = Outbox()
    kept = [box.fire(json_event("a", n), connected=False, tracked=CallState.PARKED)
            for n in range(3)]
    assert kept == [Kept(1, False), Kept(2, False), Kept(3, False)]
    assert box.kept == 3 and box.unsent == 3 and box.routed == 0  # nothing numbered yet
    bodies = []
    while (event := box.next_unsent()) is not None:
        out = box.fire(event, connected=True, tracked=CallState.BUSY)  # unparked meanwhile
        assert isinstance(out, Send) and out.route is Route.UNROUTED
        bodies.append(out.body)
    assert bodies == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert box.unsent == 0 and box.failed == 0


def test_the_keep_is_bounded_the_oldest_dropped_and_counted():
    box = Outbox(unsent_max=3)
    outs = [box.fire(json_event("a", n), connected=False, tracked=None) for n in range(5)]
    assert [o.dropped for o in outs] == [False, False, False, True, True]
    assert [o.waiting for o in outs] == [1, 2, 3, 3, 3]
    assert box.kept == 5 and box.failed == 2 and box.unsent == 3
    left = []
    while (event := box.next_unsent()) is not None:
        left.append(event.body)
    assert left == ['{"n":2}', '{"n":3}', '{"n":4}']  # the newest stay


def test_a_routed_event_whose_call_is_destroyed_first_is_fired_again_direct():
    box = Outbox()
    box.fire(json_event("a", 0), connected=True, tracked=CallState.PARKED)
    box.fire(json_event("a", 1, extra={"X-Mine": "yes"}), connected=True,
             tracked=CallState.PARKED)
    box.fire(json_event("b", 9), connected=True, tracked=CallState.PARKED)
    box.came_back("1")  # the first one was delivered
    assert box.channel_event("CHANNEL_HANGUP", "a") == []  # not yet: it may still park-loop
    again = box.channel_event("CHANNEL_DESTROY", "a")
    assert [(s.uuid, s.route, s.body) for s in again] == [("a", Route.DIRECT, '{"n":1}')]
    assert again[0].headers == {"Event-Subclass": events.JSON, STREAM_UUID_HEADER: "a",
                                "Unique-ID": "a", "X-Mine": "yes"}  # not numbered again
    assert box.refired == 1 and box.routed == 1  # b's is still watched
    assert box.channel_event("CHANNEL_DESTROY", "a") == []  # fired again once only


def test_a_routed_event_whose_call_is_bridged_first_is_fired_again_unrouted():
    box = Outbox()
    box.fire(json_event("a", 1), connected=True, tracked=CallState.PARKED)
    again = box.channel_event("CHANNEL_BRIDGE", "a")
    assert len(again) == 1 and again[0].route is Route.UNROUTED
    assert "Unique-ID" not in again[0].headers
    assert box.refired == 1 and box.routed == 0


def test_the_watch_is_bounded_the_oldest_no_longer_watched_and_counted():
    box = Outbox(routed_max=2)
    for n in range(3):
        box.fire(json_event("a", n), connected=True, tracked=CallState.PARKED)
    assert box.routed == 2 and box.unwatched == 1
    again = box.channel_event("CHANNEL_DESTROY", "a")
    assert [s.body for s in again] == ['{"n":1}', '{"n":2}']


def test_what_comes_back_that_is_not_ours_changes_nothing():
    box = Outbox()
    box.fire(json_event("a", 1), connected=True, tracked=CallState.PARKED)
    for seq in ("", "x", "-1", "99"):
        box.came_back(seq)
    assert box.routed == 1


def test_failed_sends_are_counted():
    box = Outbox()
    box.send_failed()
    box.send_failed()
    assert box.failed == 2 and box.kept == 0 and box.refired == 0
