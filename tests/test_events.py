"""Event bodies and the routing that makes FreeSWITCH deliver them (pure)."""

import json

from esl_audio_stream.app import events
from esl_audio_stream.app.events import CallState, Route


def test_bodies_are_mod_audio_streams():
    assert events.connect_body() == '{"status":"connected"}'
    assert events.disconnect_body(1000) == (
        '{"status":"disconnected","message":{"code":1000,"reason":"Normal closure"}}'
    )
    assert json.loads(events.disconnect_body(4001, "bye"))["message"] == {
        "code": 4001, "reason": "bye"}
    body = json.loads(events.error_body(6, "refused", retries=2, wait_time=None))
    assert body == {"status": "error", "message": {"code": 6, "error": "refused", "retries": 2}}


def test_routes():
    assert events.route_for(CallState.PARKED) is Route.VIA_CHANNEL
    assert events.route_for(CallState.GONE) is Route.DIRECT
    assert events.route_for(CallState.HUNGUP) is Route.WAIT_DESTROY
    assert events.route_for(CallState.BUSY) is Route.UNROUTED


def test_headers_per_route():
    u, sub = "abc", events.JSON
    via = events.event_headers(Route.VIA_CHANNEL, u, sub)
    assert via == {"Event-Subclass": sub, "Event-Name": "CUSTOM", "Unique-ID": u,
                   "Audio-Stream-UUID": u}
    assert events.event_headers(Route.DIRECT, u, sub)["Unique-ID"] == u
    unrouted = events.event_headers(Route.UNROUTED, u, sub)
    assert "Unique-ID" not in unrouted and unrouted["Audio-Stream-UUID"] == u


def test_state_follows_channel_events():
    s = CallState.BUSY
    s = events.next_state(s, "CHANNEL_EXECUTE", "park")
    assert s is CallState.BUSY
    s = events.next_state(s, "CHANNEL_PARK")
    assert s is CallState.PARKED
    assert events.next_state(s, "CHANNEL_EXECUTE", "playback") is CallState.BUSY
    assert events.next_state(s, "CHANNEL_UNPARK") is CallState.BUSY
    assert events.next_state(s, "CHANNEL_BRIDGE") is CallState.BUSY
    s = events.next_state(s, "CHANNEL_HANGUP")
    assert s is CallState.HUNGUP
    assert events.next_state(s, "CHANNEL_UNPARK") is CallState.HUNGUP
    s = events.next_state(s, "CHANNEL_DESTROY")
    assert s is CallState.GONE
    assert events.next_state(s, "CHANNEL_PARK") is CallState.GONE
