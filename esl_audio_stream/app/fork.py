"""`uuid_audio_fork` carried out: mod_audio_fork's bugs, kept by (call uuid, bugname), on the
daemon's streams.

Why not the uuid_audio_stream path: jambonz's module answers `start` once its bug is attached
and connects afterwards -- `mod_audio_fork::connect` or `::connect_failed` tell how it went --
and a bug outlives its connection (a failed connect, the endpoint closing) until `stop` or the
hang-up: meanwhile the commands naming it answer `+OK` and do nothing, and a second start with
its bugname is refused. Applications are written against exactly that, so a `Bug` here is that
attachment, and its stream (call/stream.py, speaking protocols/audio_fork.py) is what it holds
while there is one.

A call may carry several bugs, and uuid_audio_stream streams beside them (app/registry.py): a
bug's stream is named by its bugname, which no other stream of the call may have meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import gevent.event
from gevent.pool import Group

from ..call.state import LIVE
from ..protocols.audio_fork import (
    BUGNAME,
    NAME,
    PLAY_VAR,
    AudioFork,
    ForkOptions,
    channel_variable,
)
from . import fork_commands as fc
from .admission import Admitting, admit, channel_info, stream_settings
from .calls import initial_state
from .commands import CommandError, Start
from .events import STREAM_NAME_HEADER, CallState
from .settings import SettingsError, parse_bool

if TYPE_CHECKING:
    from ..call.stream import Stream
    from .config import DaemonConfig

log = logging.getLogger(__name__)

#: Calls with bugs kept; beyond it, calls whose bugs all lost their streams go, oldest first
#: (their CHANNEL_DESTROY was missed, e.g. while ESL was down).
MAX_CALLS = 20000


@dataclass(eq=False)
class Bug:
    """One mod_audio_fork media bug on a call."""

    uuid: str
    bugname: str
    state: CallState  # the call's, when it started (for events fired without a stream)
    stream: Stream | None = None  # None: being admitted, or its stream ended
    cancelled: bool = False  # stopped (or its call gone): its stream, if one comes, stops
    ended: bool = False  # its stream ended (or never started): only stop or the hang-up remain
    #: Set once admission has made its stream (or given up): commands that come between the
    #: +OK and then wait for it, so a pause right after the start is not lost.
    made: gevent.event.Event = field(default_factory=gevent.event.Event)

    @property
    def live(self) -> Stream | None:
        """The stream while it runs (connecting, streaming or paused)."""
        stream = self.stream
        return stream if stream is not None and stream.lifecycle in LIVE else None


class ForkHost(Admitting, Protocol):
    """What the front needs of the daemon: admission's needs, and these."""

    closing: bool

    def fire(self, uuid: str, subclass: str, body: str, *, extra: dict[str, str] | None = None,
             state: CallState | None = None) -> None: ...


def play_audio(channel: dict[str, str], config: DaemonConfig) -> bool:
    """AUDIO_FORK_PLAY_AUDIO on the channel, else the daemon's default."""
    value = channel_variable(channel, PLAY_VAR)
    return parse_bool(value) if value is not None else config.audio_fork_play_audio


class ForkFront:
    """The uuid_audio_fork API of one daemon: its bugs, and the greenlets connecting them."""

    def __init__(self, daemon: ForkHost) -> None:
        self.d = daemon
        self.bugs: dict[str, dict[str, Bug]] = {}  # call uuid -> bugname -> Bug
        self._jobs = Group()  # starts connecting after their +OK

    def bug(self, uuid: str, bugname: str) -> Bug | None:
        return self.bugs.get(uuid, {}).get(bugname)

    def execute(self, args: str | bytes) -> str:
        """Carry out one `uuid_audio_fork` argument string; return mod_audio_fork's answer."""
        try:
            cmd = fc.parse(args)
            if isinstance(cmd, fc.ForkStart):
                self._start(cmd)
            else:
                self._on_bug(cmd)
        except fc.Refused as exc:
            log.warning("uuid_audio_fork %.200r: %s", args, exc)
            return exc.answer
        except Exception:
            log.exception("uuid_audio_fork %.200r failed", args)
            return fc.ERR
        return fc.OK

    # -- start --------------------------------------------------------------------------------

    def _start(self, cmd: fc.ForkStart) -> None:
        d, uuid = self.d, cmd.uuid
        if d.closing:
            raise fc.Refused(fc.ERR, "the daemon is shutting down")
        if self.bug(uuid, cmd.bugname) is not None:
            raise fc.Refused(fc.ERR, f"bug {cmd.bugname} already attached")
        if d.streams.taken(uuid, cmd.bugname):  # a uuid_audio_stream stream of that name
            raise fc.Refused(fc.ERR, f"a stream named {cmd.bugname} already runs on {uuid}")
        bug = Bug(uuid, cmd.bugname, CallState.GONE)
        self._keep(bug)  # taken now: asking FreeSWITCH below lets other commands in
        d.streams.reserve(uuid, cmd.bugname)  # until admission has the stream registered
        try:
            channel = channel_info(d.esl, uuid)
            options = ForkOptions(cmd.bugname, cmd.bidi_enabled, cmd.bidi_stream, cmd.bidi_rate,
                                  play_audio(channel, d.config))
            start = Start(uuid, cmd.url, cmd.mix, cmd.rate, cmd.metadata, protocol=NAME,
                          options=options.as_extra(), name=cmd.bugname)
            stream_settings(d.config, channel, start)  # refused now rather than after +OK
        except (CommandError, SettingsError) as exc:
            self._drop(bug)
            d.streams.release(uuid, cmd.bugname)
            bug.ended = True
            bug.made.set()
            raise fc.Refused(fc.ERR, str(exc)) from None
        bug.state = initial_state(channel)
        self._jobs.spawn(self._connect, bug, start)

    def _connect(self, bug: Bug, start: Start) -> None:
        def made(stream: Stream) -> None:
            bug.stream = stream
            bug.made.set()

        try:
            if bug.cancelled:
                return
            stream = admit(self.d, start, made=made)
        except CommandError as exc:
            log.warning("%s: uuid_audio_fork %s did not start: %s", bug.uuid, bug.bugname,
                        exc.answer.strip())
            self._failed(bug, str(exc))
            bug.stream, bug.ended = None, True
            return
        finally:
            self.d.streams.release(bug.uuid, bug.bugname)
            bug.made.set()
        if bug.cancelled:  # stopped while its stream was being made
            stream.stop("command")

    def _failed(self, bug: Bug, reason: str) -> None:
        """::connect_failed, unless the stream said so, or was stopped (jambonz fires nothing
        for a bug removed before its connection came up)."""
        stream = bug.stream
        if bug.cancelled or (stream is not None and stream.cause):
            return
        protocol = stream.protocol if stream is not None else AudioFork(
            ForkOptions(), metadata=None, rate=8000, channels=1)
        said = protocol.connect_failed(reason) if isinstance(protocol, AudioFork) else None
        if said is not None:
            named = bug.bugname != BUGNAME  # as its stream's events would say it
            self.d.fire(bug.uuid, *said, state=bug.state,
                        extra={STREAM_NAME_HEADER: bug.bugname} if named else None)

    # -- the commands on a bug ----------------------------------------------------------------

    def _on_bug(self, cmd: fc.ForkCommand) -> None:
        bug = self.bug(cmd.uuid, cmd.bugname)
        if bug is None:
            raise fc.Refused(fc.ERR, f"no bug {cmd.bugname} on {cmd.uuid}")
        if not bug.made.is_set():  # between its +OK and its stream: a few ms
            bug.made.wait(self.d.config.esl_timeout + 1)
        stream = bug.live
        if isinstance(cmd, fc.ForkStop):
            self._drop(bug)
            bug.cancelled = True
            if stream is not None:
                stream.stop("command", cmd.text)
            return
        if stream is None:
            return  # the bug is there, its connection is not: jambonz answers +OK
        protocol = stream.protocol
        graceful = isinstance(protocol, AudioFork) and protocol.graceful
        if isinstance(cmd, fc.ForkSendText):
            if cmd.text is not None and not graceful:
                try:
                    stream.send_text(cmd.text)
                except CommandError as exc:  # jambonz drops it as silently
                    log.warning("%s: send_text: %s", cmd.uuid, exc)
        elif isinstance(cmd, fc.ForkPause):
            stream.pause()
        elif isinstance(cmd, fc.ForkResume):
            if not graceful:  # after graceful-shutdown no audio goes out, resumed or not
                try:
                    stream.resume()
                except CommandError as exc:
                    raise fc.Refused(fc.ERR, str(exc)) from None
        elif isinstance(cmd, fc.ForkGracefulShutdown):
            if isinstance(protocol, AudioFork):
                protocol.shut_down_gracefully()  # the zero-length message, after what is queued
            stream.pause()
        elif isinstance(cmd, fc.ForkStopPlay) and stream.player is not None:
            stream.player.clear()

    # -- what the daemon tells -----------------------------------------------------------------

    def adopt(self, stream: Stream) -> None:
        """A stream a previous process left, carried on: its bug is attached again."""
        protocol = stream.protocol
        if isinstance(protocol, AudioFork):
            name = protocol.options.bugname
            bug = Bug(stream.uuid, name, CallState.BUSY, stream)
            bug.made.set()
            self._keep(bug)

    def stream_ended(self, stream: Stream) -> None:
        """The bug stays (until stop or the hang-up) without its stream."""
        protocol = stream.protocol
        if not isinstance(protocol, AudioFork):
            return
        bug = self.bug(stream.uuid, protocol.options.bugname)
        if bug is not None and bug.stream is stream:
            bug.stream, bug.ended = None, True
            if stream.cause == "hangup":
                self._drop(bug)

    def call_gone(self, uuid: str) -> None:
        """CHANNEL_DESTROY: the call's bugs go with it."""
        for bug in self.bugs.pop(uuid, {}).values():
            bug.cancelled = True

    def stop(self) -> None:
        self._jobs.kill(timeout=2)

    def _keep(self, bug: Bug) -> None:
        if len(self.bugs) >= MAX_CALLS:
            dead = [u for u, bugs in self.bugs.items() if all(b.ended for b in bugs.values())]
            for uuid in dead[:len(self.bugs) - MAX_CALLS + 1]:
                del self.bugs[uuid]
        self.bugs.setdefault(bug.uuid, {})[bug.bugname] = bug

    def _drop(self, bug: Bug) -> None:
        bugs = self.bugs.get(bug.uuid)
        if bugs is not None and bugs.get(bug.bugname) is bug:
            del bugs[bug.bugname]
            if not bugs:
                del self.bugs[bug.uuid]
