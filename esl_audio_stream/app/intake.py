"""Commands that come from FreeSWITCH itself: CUSTOM command events and auto-start on park.

Pure: it turns one ESL event into the `uuid_audio_stream` argument string to run (or nothing),
so a dialplan can drive the daemon with stock applications:

- `event` application (or any ESL client's `sendevent CUSTOM`) with
  `Event-Subclass: esl_audio_stream::command` and `Command: <uuid> start <url> mono 16k ...`
  (`API: uuid_audio_fork` for mod_audio_fork's command; `uuid_audio_stream` by default);
  the answer goes back as a CUSTOM `esl_audio_stream::reply` event.
- a channel that parks carrying `AUDIO_STREAM_URL` (and optionally AUDIO_STREAM_MIX,
  AUDIO_STREAM_RATE, AUDIO_STREAM_METADATA) starts streaming, once per call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..call.taps import TAP_VAR
from ..esl.protocol import Event
from .commands import API

COMMAND_SUBCLASS = "esl_audio_stream::command"
REPLY_SUBCLASS = "esl_audio_stream::reply"
#: The command event's header naming the API its Command is for (uuid_audio_stream if none).
API_HEADER = "API"
#: Events the daemon subscribes to for intake (CUSTOM subclasses go last in `event plain`).
SUBSCRIPTIONS = ("CUSTOM", COMMAND_SUBCLASS)

#: mod_event_socket names the ESL command line itself `Command` in events it queues through a
#: channel ("sendevent CUSTOM"); that value is not ours.
_ESL_COMMAND_PREFIXES = ("sendevent ", "sendmsg ")


@dataclass(frozen=True, slots=True)
class Intake:
    args: str  # the uuid_audio_stream argument string
    uuid: str  # the call it is about (for the reply)
    source: str  # "event" | "auto-start"
    event_uuid: str  # Event-UUID of the command event, for the reply ("" for auto-start)
    api: str = API  # uuid_audio_stream | uuid_audio_fork


def from_event(event: Event) -> Intake | None:
    """The command carried by a CUSTOM command event, or None if this is not one. (Routed through
    a parked channel, FreeSWITCH delivers it without Event-Name: the subclass decides.)"""
    if event.subclass != COMMAND_SUBCLASS or event.name not in ("CUSTOM", ""):
        return None
    args = event.get("Command", "") or ""
    if args.startswith(_ESL_COMMAND_PREFIXES):
        args = ""
    if not args and event.body:  # the argument string may also come as the event's body
        args = event.body.decode("utf-8", "surrogateescape")
    args = args.strip()
    uuid = args.split(" ", 1)[0].partition("@")[0] if args else event.uuid  # `<uuid>@<name>`
    api = (event.get(API_HEADER) or "").strip() or API
    return Intake(args, uuid, "event", event.get("Event-UUID", "") or "", api)


def auto_start(event: Event) -> Intake | None:
    """The start command for a CHANNEL_PARK event whose channel carries AUDIO_STREAM_URL."""
    if event.name != "CHANNEL_PARK" or event.get(f"variable_{TAP_VAR}"):
        return None  # never on our own tap channels, whatever they carry
    url = (event.get("variable_AUDIO_STREAM_URL") or "").strip()
    if not url or not event.uuid:
        return None
    mix = (event.get("variable_AUDIO_STREAM_MIX") or "mono").strip()
    rate = (event.get("variable_AUDIO_STREAM_RATE") or "8k").strip()
    metadata = (event.get("variable_AUDIO_STREAM_METADATA") or "").strip()
    args = f"{event.uuid} start {url} {mix} {rate}"
    if metadata:
        args += f" {metadata}"
    return Intake(args, event.uuid, "auto-start", "")


def reply_headers(intake: Intake) -> dict[str, str]:
    """Headers (besides routing) of the reply event."""
    headers = {"Command-Source": intake.source}
    if intake.event_uuid:
        headers["Command-Event-UUID"] = intake.event_uuid
    return headers
