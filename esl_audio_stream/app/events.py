"""mod_audio_stream's events: exact subclasses and JSON bodies, and how each one is fired.

How it is fired matters as much as what it says. FreeSWITCH's `sendevent` hands an event that
names a live channel in `Unique-ID` to that channel's own loop (facts file): a parked channel
fires it ~27 ms later with all its channel headers (and keeps `Event-Name` only when we send it
explicitly); a channel running an application, bridged, or between hang-up and destroy never fires
it at all. So the route is chosen from the call's state (`route_for`):

- parked: `Unique-ID` + `Event-Name: CUSTOM` -> delivered by the park loop, channel headers added;
- gone (destroyed, or never known to FreeSWITCH): `Unique-ID` -> fired at once;
- hung up, not yet destroyed: wait for CHANNEL_DESTROY (bounded), then as gone;
- anything else (an application, bridged): no `Unique-ID`, which FreeSWITCH would swallow.

Every event also carries `Audio-Stream-UUID: <call uuid>`, the one header that names the call in
every state; subscribers that must see every event of a call filter on it. A named stream's
events (one of several on a call: app/registry.py) carry `Stream-Name: <name>` too; an unnamed
stream's (and a mod_audio_fork bug of the default bugname's) are exactly as they were.
"""

from __future__ import annotations

import enum

from ..jsonfmt import compact as _compact
from ..ws.errors import WSErrorCode

CONNECT = "mod_audio_stream::connect"
DISCONNECT = "mod_audio_stream::disconnect"
ERROR = "mod_audio_stream::error"
JSON = "mod_audio_stream::json"
PLAY = "mod_audio_stream::play"

#: Header naming the call in every event, whatever FreeSWITCH lets us put in Unique-ID.
STREAM_UUID_HEADER = "Audio-Stream-UUID"
#: Header naming the stream, on the events of a stream that has a name (see the docstring).
STREAM_NAME_HEADER = "Stream-Name"
#: On events routed through a parked channel: the daemon's number for it, so it can see the
#: event come back and fire it again if the channel never does (a hang-up or a bridge first).
ROUTED_HEADER = "Audio-Stream-Event"
SUBCLASSES = (CONNECT, DISCONNECT, ERROR, JSON, PLAY)

# libwsc's error numbering, used in mod_audio_stream's error events: the table is ws/errors.py;
# these names are kept for the code that builds error events.
WS_IO = WSErrorCode.IO
WS_INVALID_HEADER = WSErrorCode.INVALID_HEADER
WS_SERVER_MASKED = WSErrorCode.SERVER_MASKED
WS_NOT_SUPPORTED = WSErrorCode.NOT_SUPPORTED
WS_PING_TIMEOUT = WSErrorCode.PING_TIMEOUT
WS_CONNECT_FAILED = WSErrorCode.CONNECT_FAILED
WS_TLS_INIT_FAILED = WSErrorCode.TLS_INIT_FAILED
WS_SSL_HANDSHAKE_FAILED = WSErrorCode.SSL_HANDSHAKE_FAILED
WS_SSL_ERROR = WSErrorCode.SSL_ERROR
WS_TIMEOUT = WSErrorCode.TIMEOUT
WS_PROTOCOL = WSErrorCode.PROTOCOL

#: Standard reasons for close codes, as mod_audio_stream reports them when the peer sends none.
CLOSE_REASONS = {
    1000: "Normal closure",
    1001: "Going away",
    1002: "Protocol error",
    1003: "Unsupported data",
    1005: "No status received",
    1006: "Abnormal closure",
    1007: "Invalid frame payload data",
    1008: "Policy violation",
    1009: "Message too big",
    1010: "Mandatory extension",
    1011: "Internal server error",
    1015: "TLS handshake failure",
}



def connect_body() -> str:
    return '{"status":"connected"}'


def disconnect_body(code: int, reason: str | None = None) -> str:
    if not reason:
        reason = CLOSE_REASONS.get(code, "")
    return _compact({"status": "disconnected", "message": {"code": code, "reason": reason}})


def error_body(code: int, error: str, **extra: object) -> str:
    """`{"status":"error","message":{"code":..,"error":..,...}}`; extra fields where they apply
    (`retries`, `wait_time` in ms, `http_status`); None values are left out."""
    message: dict[str, object] = {"code": code, "error": error}
    message.update({k: v for k, v in extra.items() if v is not None})
    return _compact({"status": "error", "message": message})


class CallState(enum.Enum):
    """What the daemon knows of a channel, from FreeSWITCH's channel events."""

    PARKED = "parked"
    BUSY = "busy"  # running an application, bridged, or any other non-parked state
    HUNGUP = "hungup"  # hung up, not yet destroyed: FreeSWITCH drops routed events here
    GONE = "gone"  # destroyed (or unknown): FreeSWITCH fires routed events at once


class Route(enum.Enum):
    VIA_CHANNEL = "via-channel"  # Unique-ID + explicit Event-Name: delivered by the park loop
    DIRECT = "direct"  # Unique-ID, fired at once because no session holds it
    WAIT_DESTROY = "wait-destroy"  # wait for CHANNEL_DESTROY, then DIRECT
    UNROUTED = "unrouted"  # no Unique-ID: the only way FreeSWITCH fires it now


def route_for(state: CallState) -> Route:
    return {
        CallState.PARKED: Route.VIA_CHANNEL,
        CallState.GONE: Route.DIRECT,
        CallState.HUNGUP: Route.WAIT_DESTROY,
        CallState.BUSY: Route.UNROUTED,
    }[state]


def event_headers(route: Route, uuid: str, subclass: str) -> dict[str, str]:
    """The `sendevent CUSTOM` headers for one event on the given route."""
    headers = {"Event-Subclass": subclass, STREAM_UUID_HEADER: uuid}
    if route is Route.VIA_CHANNEL:
        headers["Event-Name"] = "CUSTOM"
        headers["Unique-ID"] = uuid
    elif route is Route.DIRECT:
        headers["Unique-ID"] = uuid
    return headers


def next_state(state: CallState, event_name: str, application: str = "") -> CallState:
    """Fold one channel event into the call state (pure, so it is tested without FreeSWITCH)."""
    if state is CallState.GONE:
        return state
    if event_name == "CHANNEL_PARK":
        return CallState.PARKED
    if event_name == "CHANNEL_DESTROY":
        return CallState.GONE
    if event_name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
        return CallState.HUNGUP
    if state is CallState.HUNGUP:
        return state
    if event_name in ("CHANNEL_UNPARK", "CHANNEL_BRIDGE"):
        return CallState.BUSY
    if event_name == "CHANNEL_EXECUTE" and application != "park":
        return CallState.BUSY
    return state
