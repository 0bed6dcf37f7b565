"""The daemon: one ESL connection, the registry of streams, and the commands that change it.

It turns command strings into streams, follows FreeSWITCH's channel events so each stream ends
with its call and each event is fired on a route FreeSWITCH will deliver (see events.py), and on
shutdown stops every stream before letting go of FreeSWITCH.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque

import gevent
import gevent.event
from gevent.pool import Group

from ..call.stream import Stream
from ..esl.connection import ESLConnection, ESLError
from ..esl.protocol import Event
from ..media.files import clean_base
from ..media.unicast import PortPool
from ..ops.metrics import Counters
from . import commands, events, intake
from .commands import CommandError
from .config import DaemonConfig, changed_keys, reloadable
from .settings import SettingsError, settings_from_variables, variables_from_dump
from .tls import ssl_context_for

log = logging.getLogger(__name__)

#: Events kept while the ESL connection is down; beyond it the oldest are dropped (counted).
UNSENT_MAX = 1000
#: Routed events awaiting their return; beyond it the oldest are no longer watched.
ROUTED_MAX = 10000

CHANNEL_EVENTS = (
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
)


class CallTrack:
    """What the channel events have said about one streamed call."""

    __slots__ = ("destroyed", "state")

    def __init__(self, state: events.CallState) -> None:
        self.state = state
        self.destroyed = gevent.event.Event()


class Daemon:
    def __init__(self, config: DaemonConfig | None = None) -> None:
        self.config = config or DaemonConfig()
        cfg = self.config
        self.esl = ESLConnection(
            cfg.esl_host,
            cfg.esl_port,
            cfg.esl_password,
            on_event=self._on_event,
            on_connect=self._on_esl_connect,
            command_timeout=cfg.esl_timeout,
        )
        # Our own events too: one routed through a parked channel is confirmed when it comes
        # back, and fired again if the channel never fires it (see _confirm_routed).
        self.esl.subscribe(*CHANNEL_EVENTS, *intake.SUBSCRIPTIONS, *events.SUBCLASSES,
                           intake.REPLY_SUBCLASS)
        self.ports = PortPool(cfg.fs_port_min, cfg.fs_port_max)
        self.streams: dict[str, Stream] = {}
        self._starting: set[str] = set()
        self._tracks: dict[str, CallTrack] = {}
        self._checker: gevent.Greenlet | None = None
        self._intake = Group()  # greenlets running commands that came as events
        self._auto_started: set[str] = set()  # calls auto-started once (a re-park must not)
        self._tap_owners: dict[str, Stream] = {}  # tap channel uuid -> the stream it feeds
        self._unsent: deque = deque()  # events fired while ESL was down (see _keep_unsent)
        self.events_kept = 0
        # events routed through a parked channel, until they come back: seq -> (uuid, ...)
        self._routed: dict[int, tuple[str, str, str, dict[str, str] | None]] = {}
        self._routed_seq = 0
        self.events_refired = 0
        self._flusher: gevent.Greenlet | None = None
        self.events_failed = 0
        self.counters = Counters()  # read by metrics.py at scrape time
        self._closing = False
        from ..ops.control import (
            ControlServer,  # control imports nothing of ours but the daemon API
        )

        self.control = ControlServer(self, cfg.control_host, cfg.control_port)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Raises SettingsError when the daemon-wide TLS defaults name unusable files."""
        ssl_context_for(self.config.stream_defaults)  # checks the files, pays the ~50 ms once
        removed = clean_base(self.config.files_dir)  # no audio file survives a restart
        if removed:
            log.info("removed %d call directories left by a previous run", removed)
        self.esl.start()
        self.control.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every stream (close 1000, disconnect events), then the control endpoint and ESL."""
        self._closing = True
        streams = list(self.streams.values())
        for stream in streams:
            stream.stop_async("shutdown")
        with gevent.Timeout(timeout, False):
            for stream in streams:
                stream.done.wait()
        if self._checker is not None:
            self._checker.kill()
        if self._flusher is not None:
            self._flusher.kill()
        if self._unsent:
            log.error("stopping with %d events never fired (FreeSWITCH not connected)",
                      len(self._unsent))
        self._intake.kill(timeout=2)
        self.control.stop()
        self.esl.stop()

    # -- drain and reload (SIGTERM, SIGHUP) ----------------------------------------------------

    def drain(self, timeout: float | None = None,
              hurry: gevent.event.Event | None = None) -> bool:
        """SIGTERM: refuse new streams (`-ERR ... shutting down`), end the running ones cleanly
        (the configured stop text, close 1000, disconnect events, files removed) within
        `timeout` (default: config.drain_timeout) or until `hurry` is set, then stop. ESL and the
        control endpoint stay up meanwhile, since the streams need FreeSWITCH to end and the
        refusals need an answer. Returns whether every stream ended in time."""
        cfg = self.config
        timeout = cfg.drain_timeout if timeout is None else timeout
        self._closing = True
        deadline = time.monotonic() + timeout
        if self.streams or self._starting:
            log.info("draining %d streams (up to %g s)",
                     len(self.streams) + len(self._starting), timeout)
        while self.streams or self._starting:
            for stream in list(self.streams.values()):  # also those registered since
                stream.stop_async("shutdown", cfg.stop_text)
            left = deadline - time.monotonic()
            if left <= 0 or (hurry is not None and hurry.is_set()):
                break
            if hurry is not None:
                hurry.wait(min(left, 0.05))
            else:
                gevent.sleep(min(left, 0.05))
        drained = not self.streams and not self._starting
        if not drained:
            log.warning("%d streams did not end within the drain time: stopping anyway",
                        len(self.streams) + len(self._starting))
        self.stop(timeout=0.1)
        return drained

    def reload(self, new: DaemonConfig) -> list[str]:
        """SIGHUP: streams started from now on use `new`; running streams keep what they started
        with. Returns the keys that need a restart (changed in `new`, kept as they were).
        Raises SettingsError when the new daemon-wide TLS defaults name unusable files (the
        running configuration is then kept whole)."""
        ssl_context_for(new.stream_defaults)
        kept, restart = reloadable(self.config, new)
        applied = changed_keys(self.config, kept)
        self.config = kept
        log.info("configuration reloaded: %s", ", ".join(applied) + " changed (new streams use"
                 " them)" if applied else "nothing changed that can change without a restart")
        if restart:
            log.warning("configuration reloaded: %s changed but needs a restart: kept as it was",
                        ", ".join(restart))
        return restart

    # -- commands ---------------------------------------------------------------------------

    def execute(self, args: str | bytes) -> str:
        """Carry out one `uuid_audio_stream` argument string; return mod_audio_stream's answer."""
        try:
            cmd = commands.parse_command(args)
            if isinstance(cmd, commands.Start):
                self._start(cmd)
            else:
                stream = self.streams.get(cmd.uuid)
                if stream is None:
                    raise CommandError(f"no audio stream on {cmd.uuid}")
                if isinstance(cmd, commands.Stop):
                    stream.stop("command", cmd.text)
                elif isinstance(cmd, commands.Pause):
                    stream.pause()
                elif isinstance(cmd, commands.Resume):
                    stream.resume()
                elif isinstance(cmd, commands.SendText):
                    stream.send_text(cmd.text)
        except CommandError as exc:
            return exc.answer
        except Exception as exc:
            log.exception("command %r failed", args)
            return commands.err(f"internal error: {exc}")
        return commands.OK

    def _start(self, cmd: commands.Start) -> None:
        if self._closing:
            raise CommandError("the daemon is shutting down")
        uuid = cmd.uuid
        if uuid in self.streams or uuid in self._starting:
            raise CommandError(f"an audio stream is already running on {uuid}")
        self._starting.add(uuid)
        try:
            channel = self._channel_info(uuid)
            track = CallTrack(_initial_state(channel))
            self._tracks[uuid] = track
            rate = int(channel.get("variable_read_rate") or 0)
            try:
                settings = settings_from_variables(
                    variables_from_dump(channel), self.config.stream_defaults,
                    warn=lambda text: log.warning("%s: %s", uuid, text))
            except SettingsError as exc:
                self._tracks.pop(uuid, None)
                raise CommandError(str(exc)) from None
            stream = Stream(self, cmd, rate, settings)
            # Registered while it connects, so stop and send_text reach it (texts are queued).
            self.streams[uuid] = stream
            try:
                stream.start()
            except BaseException:
                if self.streams.get(uuid) is stream:
                    del self.streams[uuid]
                self._tracks.pop(uuid, None)
                raise
            self.counters.started += 1
            if track.state in (events.CallState.HUNGUP, events.CallState.GONE):
                stream.stop_async("hangup")  # the call ended while we were connecting
            log.info("%s: streaming to %s (%s, %d Hz)", uuid, cmd.url, cmd.mix, cmd.rate)
        finally:
            self._starting.discard(uuid)

    def _channel_info(self, uuid: str) -> dict[str, str]:
        try:
            body = self.esl.api(f"uuid_dump {uuid} json")
        except ESLError as exc:
            raise CommandError(f"FreeSWITCH did not answer: {exc}") from None
        if not body.lstrip().startswith("{"):
            raise CommandError(f"no such channel: {uuid}")
        try:
            info = json.loads(body)
        except ValueError:
            raise CommandError(f"unreadable uuid_dump for {uuid}") from None
        return {str(k): str(v) for k, v in info.items()}

    # -- what streams need from us ----------------------------------------------------------

    def call_state(self, uuid: str) -> events.CallState:
        track = self._tracks.get(uuid)
        return track.state if track is not None else events.CallState.GONE

    def fire(self, uuid: str, subclass: str, body: str, *, extra: dict[str, str] | None = None,
             state: events.CallState | None = None) -> None:
        """Fire one event on a route FreeSWITCH delivers in the call's state (the tracked state of
        a streamed call, else `state`, else the call is taken as gone)."""
        if subclass in (events.ERROR, events.DISCONNECT):
            self.counters.count_event(subclass, body)
        self._route_and_send(uuid, subclass, body, extra, state)

    def _route_and_send(self, uuid: str, subclass: str, body: str,
                        extra: dict[str, str] | None, state: events.CallState | None) -> None:
        if not self.esl.connected:  # surely not sent: kept, and fired when FreeSWITCH is back
            self._keep_unsent(uuid, subclass, body, extra, state)
            return
        track = self._tracks.get(uuid)
        if track is not None:
            state = track.state
        route = events.route_for(state or events.CallState.GONE)
        if route is events.Route.WAIT_DESTROY:
            seen = track is not None and track.destroyed.wait(self.config.destroy_wait)
            route = events.Route.DIRECT if seen else events.Route.UNROUTED
        self._send(uuid, subclass, body, extra, route)

    def _send(self, uuid: str, subclass: str, body: str, extra: dict[str, str] | None,
              route: events.Route) -> None:
        headers = events.event_headers(route, uuid, subclass)
        if extra:
            headers.update(extra)
        if route is events.Route.VIA_CHANNEL:  # the park loop fires it, if the call stays
            self._routed_seq += 1
            headers[events.ROUTED_HEADER] = str(self._routed_seq)
            if len(self._routed) >= ROUTED_MAX:
                self._routed.pop(next(iter(self._routed)))
            self._routed[self._routed_seq] = (uuid, subclass, body, extra)
        try:
            self.esl.sendevent("CUSTOM", headers, body)
        except ESLError as exc:  # maybe sent, maybe not: not fired twice
            self.events_failed += 1
            log.error("%s: could not fire %s: %s", uuid, subclass, exc)

    def _keep_unsent(self, uuid: str, subclass: str, body: str,
                     extra: dict[str, str] | None, state: events.CallState | None) -> None:
        """Events fired while the ESL connection is down wait (bounded, oldest dropped and
        counted) and go out, in order, when it is back, routed for the call's state then."""
        if len(self._unsent) >= UNSENT_MAX:
            self._unsent.popleft()
            self.events_failed += 1
            if not self.events_failed % 100:
                log.error("ESL down: %d events lost so far (the oldest go first)",
                          self.events_failed)
        self._unsent.append((uuid, subclass, body, extra, state))
        self.events_kept += 1
        if len(self._unsent) == 1:
            log.warning("%s: FreeSWITCH is not connected: %s kept until it is", uuid, subclass)

    def _fire_unsent(self) -> None:
        """After a reconnect: the events kept while it was down, oldest first."""
        sent = 0
        while self._unsent and self.esl.connected:
            self._route_and_send(*self._unsent.popleft())
            sent += 1
        if sent:
            log.info("fired %d events kept while FreeSWITCH was not connected", sent)

    def _refire_routed(self, uuid: str, why: str) -> None:
        """Events queued to a channel that will never fire them: a call destroyed before its
        park loop dequeued them, or one bridged (the bridge drops them: facts file). They were
        not delivered (it delivers in order, so a delivered one came back before this event):
        fire them again, on the route of the call's state now."""
        stuck = [seq for seq, item in self._routed.items() if item[0] == uuid]
        if not stuck:
            return
        # destroyed: Unique-ID is fired at once; bridged: without it, or the bridge drops it
        route = events.Route.DIRECT if why == "CHANNEL_DESTROY" else events.Route.UNROUTED
        for seq in stuck:
            _, subclass, body, extra = self._routed.pop(seq)
            self.events_refired += 1
            self._intake.spawn(self._send, uuid, subclass, body, extra, route)
        log.info("%s: %d events the channel never fired (%s): fired again", uuid, len(stuck),
                 why)

    def tap_opened(self, tap_uuid: str, stream: Stream) -> None:
        self._tap_owners[tap_uuid] = stream

    def tap_closed(self, tap_uuid: str) -> None:
        self._tap_owners.pop(tap_uuid, None)

    def stream_ended(self, stream: Stream) -> None:
        if self.streams.get(stream.uuid) is stream:
            del self.streams[stream.uuid]
        self._tracks.pop(stream.uuid, None)
        self.counters.add_ended(stream)
        log.info("%s: stream ended (%s): %d frames in, %d out, %d dropped", stream.uuid,
                 stream.cause, stream.frames_in, stream.frames_out, stream.dropped)

    # -- FreeSWITCH's events ----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        name = event.name
        if name == "CUSTOM" or (not name and event.subclass):
            seq = event.get(events.ROUTED_HEADER)
            if seq is not None:  # one of ours, delivered by the channel
                self._routed.pop(int(seq) if seq.isdigit() else -1, None)
                return
            found = intake.from_event(event)
            if found is not None:
                self._intake.spawn(self._run_intake, found, _initial_state(event.headers))
            return
        if name == "CHANNEL_PARK" and event.uuid not in self._auto_started:
            found = intake.auto_start(event)
            if found is not None:
                self._auto_started.add(event.uuid)
                self._intake.spawn(self._run_intake, found, events.CallState.PARKED)
        elif name == "CHANNEL_DESTROY":
            self._auto_started.discard(event.uuid)
        if name in ("CHANNEL_DESTROY", "CHANNEL_BRIDGE") and self._routed:
            self._refire_routed(event.uuid, name)
        track = self._tracks.get(event.uuid)
        if track is None:
            if name == "CHANNEL_HANGUP" and event.uuid in self._tap_owners:
                self._tap_owners.pop(event.uuid).tap_gone(event.uuid)
            return
        track.state = events.next_state(track.state, name, event.get("Application", ""))
        if name == "CHANNEL_DESTROY":
            track.destroyed.set()
        stream = self.streams.get(event.uuid)
        if stream is None:
            return
        if track.state is events.CallState.HUNGUP or name == "CHANNEL_DESTROY":
            stream.stop_async("hangup")
        elif name in ("CHANNEL_PARK", "CHANNEL_EXECUTE_COMPLETE"):
            stream.on_call_event(name, event.get("Application", ""),
                                 event.get("Application-Data", ""))

    def _run_intake(self, found: intake.Intake, state: events.CallState) -> None:
        """Run a command that came from FreeSWITCH; answer with an esl_audio_stream::reply."""
        if self._closing:
            return
        answer = self.execute(found.args)
        if found.source == "auto-start" and not answer.startswith("+OK"):
            log.error("%s: auto-start failed: %s", found.uuid, answer.strip())
        self.fire(found.uuid, intake.REPLY_SUBCLASS, answer, extra=intake.reply_headers(found),
                  state=state)

    def _on_esl_connect(self) -> None:
        """After a reconnect, end the streams whose calls went away while we could not hear,
        and fire the events kept meanwhile."""
        if self.streams and (self._checker is None or self._checker.dead):
            self._checker = gevent.spawn(self._check_calls)
        if self._unsent and (self._flusher is None or self._flusher.dead):
            self._flusher = gevent.spawn(self._fire_unsent)

    def _check_calls(self) -> None:
        for uuid, stream in list(self.streams.items()):
            try:
                exists = self.esl.api(f"uuid_exists {uuid}").strip() == "true"
            except ESLError:
                return
            if not exists:
                track = self._tracks.get(uuid)
                if track is not None:
                    track.state = events.CallState.GONE
                    track.destroyed.set()
                stream.stop_async("hangup")


def _initial_state(channel: dict[str, str]) -> events.CallState:
    if channel.get("Channel-State") in ("CS_HANGUP", "CS_REPORTING", "CS_DESTROY"):
        return events.CallState.HUNGUP
    if channel.get("variable_current_application") == "park":
        return events.CallState.PARKED
    return events.CallState.BUSY
