"""How a stream is admitted: the call checked (`uuid_dump`), its STREAM_* variables read over the
daemon's defaults, the stream built, registered while it connects (so a stop or a send_text
reaches it), and started -- or, for a stream a previous process left on the call, carried on.
A stream that cannot start leaves nothing behind: not in the registry, its call not tracked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from ..call.host import StreamHost
from ..call.stream import Stream
from ..esl.connection import ESLError
from ..protocols import choose as protocols
from . import events
from .calls import initial_state
from .commands import CommandError, Start
from .settings import SettingsError, StreamSettings, settings_from_variables, variables_from_dump
from .start_message import encoding, start_message

if TYPE_CHECKING:
    from ..esl.connection import ESLConnection
    from .calls import Calls
    from .config import DaemonConfig
    from .registry import Streams
    from .resume import StreamRecord


class Admitting(StreamHost, Protocol):
    """What admission needs of the daemon: a stream's host, the registry and the tracked calls."""

    streams: Streams
    calls: Calls

log = logging.getLogger(__name__)


def admit(d: Admitting, cmd: Start, record: StreamRecord | None = None,
          made: Callable[[Stream], object] | None = None) -> Stream:
    """Start a stream for `cmd` (or carry on the one `record` says); raises CommandError.
    `made`: told of the stream as soon as it is registered (before it connects)."""
    uuid, name = cmd.uuid, cmd.name
    d.streams.reserve(uuid, name)
    try:
        channel = channel_info(d.esl, uuid)
        # the call's track: its other streams' (their events have told more), else a new one
        track = d.calls.get(uuid) or d.calls.track(uuid, initial_state(channel))
        try:
            settings = stream_settings(d.config, channel, cmd, record)
        except SettingsError as exc:
            _forget_call(d, uuid, name)
            raise CommandError(str(exc)) from None
        stream = Stream(d, cmd, int(channel.get("variable_read_rate") or 0), settings, record,
                        start_text=_start_text(channel, cmd, settings, record))
        d.streams.add(stream)
        if made is not None:
            made(stream)
        try:
            if record is None:
                stream.start()
            else:
                stream.carry_on()
        except BaseException:
            d.streams.remove(stream)
            _forget_call(d, uuid, name)
            raise
        d.counters.started += 1
        if track.state in (events.CallState.HUNGUP, events.CallState.GONE):
            stream.stop_async("hangup")  # the call ended while we were connecting
        if record is None:
            log.info("%s: streaming to %s (%s, %d Hz)", uuid, cmd.url, cmd.mix, cmd.rate)
        return stream
    finally:
        d.streams.release(uuid, name)


def _start_text(channel: Mapping[str, str], cmd: Start, settings: StreamSettings,
                record: StreamRecord | None) -> str | None:
    """The start message, when STREAM_START_MESSAGE asks for it (app/start_message.py)."""
    if not settings.start_message:
        return None
    protocol = record.protocol if record is not None else cmd.protocol or settings.protocol
    return start_message(channel, uuid=cmd.uuid, name=cmd.name, mix=cmd.mix, rate=cmd.rate,
                         encoding=encoding(protocol, settings.audio_encoding),
                         variables=settings.start_variables)


def _forget_call(d: Admitting, uuid: str, name: str) -> None:
    """A stream that did not start: its call is no longer tracked unless another stream of
    it runs or is being admitted."""
    if not d.streams.of(uuid) and not any(u == uuid and n != name for u, n in d.streams.starting):
        d.calls.forget(uuid)


def stream_settings(config: DaemonConfig, channel: Mapping[str, str], cmd: Start,
                    record: StreamRecord | None = None) -> StreamSettings:
    """The stream's settings: its STREAM_* variables over the daemon's defaults, as its protocol
    connects (the record's, the command's, else STREAM_PROTOCOL's); SettingsError if unusable."""
    uuid = cmd.uuid
    settings = settings_from_variables(variables_from_dump(channel), config.stream_defaults,
                                       warn=lambda text: log.warning("%s: %s", uuid, text))
    name = record.protocol if record is not None else cmd.protocol or settings.protocol
    settings = protocols.fit(name, settings, channel, config.audio_fork_subprotocol)
    protocols.check(settings, cmd.rate, name)
    return settings


def channel_info(esl: ESLConnection, uuid: str) -> dict[str, str]:
    """The call as `uuid_dump <uuid> json` says it is; CommandError when there is none."""
    try:
        body = esl.api(f"uuid_dump {uuid} json")
    except ESLError as exc:
        raise CommandError(f"FreeSWITCH did not answer: {exc}") from None
    if not body.lstrip().startswith("{"):
        raise CommandError(f"no such channel: {uuid}")
    try:
        info = json.loads(body)
    except ValueError:
        raise CommandError(f"unreadable uuid_dump for {uuid}") from None
    return {str(k): str(v) for k, v in info.items()}
