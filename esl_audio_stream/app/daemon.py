"""The daemon: one ESL connection, the registry of streams, and the commands that change it.

It turns command strings into streams, follows FreeSWITCH's channel events so each stream ends
with its call (calls.py) and each event is fired on a route FreeSWITCH will deliver (the outbox,
outbox.py: this module is its shell, which sends, waits and logs), and on shutdown stops every
stream before letting go of FreeSWITCH. It knows nothing of the control endpoint: whoever builds
the daemon (service.py) attaches it as `control`, started after ESL and stopped before it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

import gevent
import gevent.event
from gevent.pool import Group

from ..call.call_audio import CallAudio
from ..call.stream import Stream
from ..esl.connection import ESLConnection, ESLError
from ..esl.protocol import Event
from ..media.files import clean_base
from ..media.unicast import PortPool
from ..protocols import audio_fork
from . import commands, dtmf, events, fork_commands, intake
from .admission import admit, channel_info
from .calls import Calls, initial_state
from .commands import CommandError
from .config import DaemonConfig, changed_keys, reloadable
from .fork import ForkFront
from .keeper import Keeper
from .outbox import Fire, Kept, Outbox, Send, Wait
from .reconcile import Reconciler, start_of
from .registry import Streams
from .resume import StreamRecord
from .shard import WHOLE, Shard
from .stats import Counters
from .tls import ssl_context_for

log = logging.getLogger(__name__)

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


class Attached(Protocol):
    """A server run alongside the daemon (the control endpoint): started after ESL, stopped
    before it, so it answers for as long as the daemon does."""

    @property
    def address(self) -> tuple[str, int]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class Daemon:
    def __init__(self, config: DaemonConfig | None = None, shard: Shard = WHOLE) -> None:
        self.config = config or DaemonConfig()
        cfg = self.config
        self.shard = shard  # the calls it owns: all, or a worker's share (app/shard.py)
        #: A worker's: a command FreeSWITCH sent for another worker's call, to that worker.
        self.hand_intake: Callable[[intake.Intake, events.CallState], None] | None = None
        self.events_seen = self.events_foreign = 0  # a worker's: another's calls' (0: filtered)
        self.esl = ESLConnection(
            cfg.esl_host,
            cfg.esl_port,
            cfg.esl_password,
            on_event=self._on_event,
            on_connect=self._on_esl_connect,
            command_timeout=cfg.esl_timeout,
            backoff_max=1.0,  # back within a second of FreeSWITCH: the streams wait for it
            filters=shard.filters(),  # a worker's calls only (app/shard.py)
        )
        # Our own events too: one routed through a parked channel is confirmed when it comes
        # back, and fired again if the channel never fires it (see outbox.py).
        self.esl.subscribe(*CHANNEL_EVENTS, "DTMF", *intake.SUBSCRIPTIONS, *events.SUBCLASSES,
                           *audio_fork.SUBCLASSES, intake.REPLY_SUBCLASS)
        self.ports: PortPool = shard.ports(cfg.fs_port_min, cfg.fs_port_max, cfg.fs_media_host)
        #: The streams, by call and name (app/registry.py); as a Mapping, each call's first.
        self.streams = Streams()
        #: This daemon's name in FreeSWITCH: its streams' records carry it (app/resume.py).
        self.owner = cfg.owner or f"{socket.gethostname()}:{cfg.control_port}"
        self.keeper = Keeper(self.esl, self.owner, heartbeat=cfg.orphan_timeout / 3)
        self.reconciler = Reconciler(self)
        self.greenlets = 0  # alive at the last count (at each scrape: ops/metrics.py)
        self.calls = Calls()  # the streamed calls' states, the tap channels' owners
        self.keys = dtmf.KeyRouter()  # the caller's keys, once each, to their streams
        self.outbox = Outbox()  # how events are routed, kept while ESL is down, fired again
        self._checker: gevent.Greenlet | None = None
        # greenlets running commands that came as events, and events fired again
        self._intake = Group()
        self._auto_started: set[str] = set()  # calls auto-started once (a re-park must not)
        self._flusher: gevent.Greenlet | None = None
        self.counters = Counters()  # read by ops/metrics.py at scrape time
        self.fork = ForkFront(self)  # the uuid_audio_fork API: mod_audio_fork's bugs
        self.closing = False
        #: The control endpoint, attached by whoever builds the daemon (service.build_daemon).
        self.control: Attached | None = None

    # -- what the control endpoint and the metrics read -------------------------------------

    @property
    def esl_connected(self) -> bool:
        return self.esl.connected

    @property
    def events_kept(self) -> int:
        return self.outbox.kept

    @property
    def events_failed(self) -> int:
        return self.outbox.failed

    @property
    def events_refired(self) -> int:
        return self.outbox.refired

    def resources(self) -> dict[str, float]:
        """What the daemon holds now and what it carried over restarts (read at scrape time;
        the greenlets as last counted at a scrape: ops/metrics.py `count_greenlets`)."""
        r = self.reconciler
        worker = ({"esl_events": self.events_seen, "esl_events_foreign": self.events_foreign}
                  if self.shard.sharded else {})
        return {**worker, "ports_in_use": self.ports.in_use, "ports_held": self.ports.held,
                "greenlets": self.greenlets,
                "streams_carried_on": r.carried_on, "streams_orphaned": r.orphans_ended,
                "streams_forgotten": r.forgotten, "records_written": self.keeper.written}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Raises SettingsError when the daemon-wide TLS defaults name unusable files."""
        ssl_context_for(self.config.stream_defaults)  # checks the files, pays the ~50 ms once
        # no audio file survives a restart; a FIFO FreeSWITCH may still record into waits for
        # the reconcile after connecting (the stream is carried on, or its files go)
        removed = clean_base(self.config.files_dir, spare_fifos=True,
                             keep=self.shard.foreign(self.config.files_dir))
        if removed:
            log.info("removed %d call directories left by a previous run", removed)
        self.keeper.start()
        self.esl.start()
        if self.control is not None:
            self.control.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every stream (close 1000, disconnect events), then the control endpoint and ESL."""
        self.closing = True
        streams = self.streams.all()
        for stream in streams:
            stream.stop_async("shutdown")
        with gevent.Timeout(timeout, False):
            for stream in streams:
                stream.done.wait()
        if self._checker is not None:
            self._checker.kill()
        if self._flusher is not None:
            self._flusher.kill()
        if self.outbox.unsent:
            log.error("stopping with %d events never fired (FreeSWITCH not connected)",
                      self.outbox.unsent)
        self._intake.kill(timeout=2)
        self.fork.stop()
        if self.control is not None:
            self.control.stop()
        self.keeper.stop()
        self.esl.stop()

    # -- drain and reload (SIGTERM, SIGHUP) ----------------------------------------------------

    def hand_over(self, timeout: float = 0.8) -> int:
        """SIGTERM: leave every stream to the next process (crash-only: their records stay on
        their calls, FreeSWITCH keeps streaming to the same ports) and stop within about a
        second. Returns how many were handed over."""
        self.closing = True
        self.keeper.beat()  # the next process is within orphan_timeout of now
        streams = self.streams.all()
        jobs = [gevent.spawn(stream.hand_over, timeout / 2) for stream in streams]
        gevent.joinall(jobs, timeout=timeout)
        if streams:
            log.info("handed %d streams over to the next process", len(streams))
        self.stop(timeout=0.1)
        return len(streams)

    def drain(self, timeout: float | None = None,
              hurry: gevent.event.Event | None = None, then_stop: bool = True) -> bool:
        """SIGTERM: refuse new streams (`-ERR ... shutting down`), end the running ones cleanly
        (the configured stop text, close 1000, disconnect events, files removed) within
        `timeout` (default: config.drain_timeout) or until `hurry` is set, then stop. ESL and the
        control endpoint stay up meanwhile, since the streams need FreeSWITCH to end and the
        refusals need an answer. Returns whether every stream ended in time."""
        cfg = self.config
        timeout = cfg.drain_timeout if timeout is None else timeout
        self.closing = True
        deadline = time.monotonic() + timeout
        streams = self.streams
        if streams or streams.starting:
            log.info("draining %d streams (up to %g s)",
                     streams.count + len(streams.starting), timeout)
        while streams or streams.starting:
            for stream in streams.all():  # also those registered since
                stream.stop_async("shutdown", cfg.stop_text)
            left = deadline - time.monotonic()
            if left <= 0 or (hurry is not None and hurry.is_set()):
                break
            if hurry is not None:
                hurry.wait(min(left, 0.05))
            else:
                gevent.sleep(min(left, 0.05))
        drained = not streams and not streams.starting
        if not drained:
            log.warning("%d streams did not end within the drain time: stopping anyway",
                        streams.count + len(streams.starting))
        if then_stop:
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

    def execute(self, args: str | bytes, api: str = commands.API) -> str:
        """Carry out one argument string of `api` (uuid_audio_stream, or uuid_audio_fork: see
        fork.py); return that module's answer."""
        if api == fork_commands.API:
            return self.fork.execute(args)
        if api != commands.API:
            return commands.err(f"unknown API {api!r}: {commands.API} or {fork_commands.API}")
        try:
            cmd = commands.parse_command(args)
            if isinstance(cmd, commands.Start):
                self._start(cmd)
            else:
                stream = self.streams.named(cmd.uuid, cmd.name)
                if stream is None or stream.protocol.name == audio_fork.NAME:
                    named = f" {cmd.name}" if cmd.name else ""
                    raise CommandError(f"no audio stream{named} on {cmd.uuid}")
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
        if self.closing:
            raise CommandError("the daemon is shutting down")
        uuid, name = cmd.uuid, cmd.name
        if self.streams.taken(uuid, name):  # another name: another stream on the call
            named = f" named {name}" if name else ""
            raise CommandError(f"an audio stream{named} is already running on {uuid}")
        admit(self, cmd)

    def carry_on(self, uuid: str, record: StreamRecord) -> None:
        """A stream a previous process left on its call, carried on (reconcile.py)."""
        self.fork.adopt(admit(self, start_of(uuid, record), record))

    def channel_info_or_empty(self, uuid: str) -> dict[str, str]:
        try:
            return channel_info(self.esl, uuid)
        except CommandError:
            return {}

    # -- what streams need from us ----------------------------------------------------------

    def call_state(self, uuid: str) -> events.CallState:
        return self.calls.state(uuid)

    def fire(self, uuid: str, subclass: str, body: str, *, extra: dict[str, str] | None = None,
             state: events.CallState | None = None) -> None:
        """Fire one event on a route FreeSWITCH delivers in the call's state (the tracked state of
        a streamed call, else `state`, else the call is taken as gone)."""
        if subclass in (events.ERROR, events.DISCONNECT):
            self.counters.count_event(subclass, body)
        self._deliver(Fire(uuid, subclass, body, extra, state))

    def _deliver(self, event: Fire) -> None:
        """The outbox's shell: send what it says, after waiting (bounded) for a hung-up call's
        CHANNEL_DESTROY when it says to (in the caller's greenlet: what it fires next waits)."""
        track = self.calls.get(event.uuid)
        out = self.outbox.fire(event, connected=self.esl.connected,
                               tracked=track.state if track is not None else None)
        if isinstance(out, Kept):
            if out.dropped and not self.outbox.failed % 100:
                log.error("ESL down: %d events lost so far (the oldest go first)",
                          self.outbox.failed)
            if out.waiting == 1:
                log.warning("%s: FreeSWITCH is not connected: %s kept until it is", event.uuid,
                            event.subclass)
            return
        if isinstance(out, Wait):
            seen = track is not None and track.destroyed.wait(self.config.destroy_wait)
            out = self.outbox.waited(out, bool(seen))
        self._send(out)

    def _send(self, send: Send) -> None:
        try:
            self.esl.sendevent("CUSTOM", send.headers, send.body)
        except ESLError as exc:  # maybe sent, maybe not: not fired twice
            self.outbox.send_failed()
            log.error("%s: could not fire %s: %s", send.uuid, send.subclass, exc)

    def _fire_unsent(self) -> None:
        """After a reconnect: the events kept while it was down, oldest first."""
        sent = 0
        while self.esl.connected and (event := self.outbox.next_unsent()) is not None:
            self._deliver(event)
            sent += 1
        if sent:
            log.info("fired %d events kept while FreeSWITCH was not connected", sent)

    def tap_opened(self, tap_uuid: str, owner: CallAudio) -> None:
        self.calls.tap_opened(tap_uuid, owner)

    def tap_closed(self, tap_uuid: str) -> None:
        self.calls.tap_closed(tap_uuid)

    def call_audio(self, uuid: str, kind: str, channel_rate: int) -> CallAudio:
        return self.streams.shared(uuid, lambda: CallAudio(
            self, uuid, kind, channel_rate, on_empty=self.streams.unshare))

    def stream_ended(self, stream: Stream) -> None:
        self.streams.remove(stream)
        if not self.streams.busy(stream.uuid):  # its call's last stream
            self.calls.forget(stream.uuid)
        self.fork.stream_ended(stream)
        self.counters.add_ended(stream)
        log.info("%s: stream ended (%s): %d frames in, %d out, %d dropped", stream.uuid,
                 stream.cause, stream.frames_in, stream.frames_out, stream.dropped_total)

    # -- FreeSWITCH's events ----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        name = event.name
        if self.shard.sharded:
            self.events_seen += 1
            if not self.shard.expected(name, event.uuid, event.subclass):
                self.events_foreign += 1
        if name == "DTMF":
            # to the call's CallAudio: each press once, to each of its streams
            self.keys.route(event.headers, self.streams.audio, self.calls.tap_owners,
                            time.monotonic())
            return
        if name == "CUSTOM" or (not name and event.subclass):
            seq = event.get(events.ROUTED_HEADER)
            if seq is not None:  # one of ours, delivered by the channel
                self.outbox.came_back(seq)
                return
            found = intake.from_event(event)
            if found is not None and self.shard.intake:
                self._route_intake(found, initial_state(event.headers))
            return
        if (name == "CHANNEL_PARK" and event.uuid not in self._auto_started
                and self.shard.intake):
            found = intake.auto_start(event)
            if found is not None:
                self._auto_started.add(event.uuid)
                self._route_intake(found, events.CallState.PARKED)
        elif name == "CHANNEL_DESTROY":
            self._auto_started.discard(event.uuid)
            self.fork.call_gone(event.uuid)
        again = self.outbox.channel_event(name, event.uuid)
        if again:
            for send in again:
                self._intake.spawn(self._send, send)
            log.info("%s: %d events the channel never fired (%s): fired again", event.uuid,
                     len(again), name)
        track = self.calls.fold(event.uuid, name, event.get("Application", ""))
        if track is None:
            if name == "CHANNEL_HANGUP":
                owner = self.calls.tap_hung_up(event.uuid)
                if owner is not None:
                    owner.tap_gone(event.uuid)
            return
        ended = track.state is events.CallState.HUNGUP or name == "CHANNEL_DESTROY"
        for stream in self.streams.of(event.uuid):
            if ended:
                stream.stop_async("hangup")
            elif name in ("CHANNEL_PARK", "CHANNEL_EXECUTE_COMPLETE"):
                stream.on_call_event(name, event.get("Application", ""),
                                     event.get("Application-Data", ""))

    def _route_intake(self, found: intake.Intake, state: events.CallState) -> None:
        """Here, or handed to the worker owning the call (its reply comes back to it)."""
        if self.hand_intake is not None and not self.shard.owns(found.uuid):
            self._intake.spawn(self.hand_intake, found, state)
        else:
            self.take_intake(found, state)

    def take_intake(self, found: intake.Intake, state: events.CallState) -> None:
        """A command FreeSWITCH sent, to run (from this daemon's events, or handed over by the
        intake worker)."""
        self._intake.spawn(self._run_intake, found, state)

    def _run_intake(self, found: intake.Intake, state: events.CallState) -> None:
        """Run a command that came from FreeSWITCH; answer with an esl_audio_stream::reply."""
        if self.closing:
            return
        answer = self.execute(found.args, found.api)
        if found.source == "auto-start" and not answer.startswith("+OK"):
            log.error("%s: auto-start failed: %s", found.uuid, answer.strip())
        self.fire(found.uuid, intake.REPLY_SUBCLASS, answer, extra=intake.reply_headers(found),
                  state=state)

    def _on_esl_connect(self) -> None:
        """After every connection: streams and FreeSWITCH made to agree (reconcile.py: calls
        gone meanwhile, FreeSWITCH restarted, streams a previous process left), then the
        events kept meanwhile fired."""
        if self._checker is None or self._checker.dead:
            self._checker = gevent.spawn(self.reconciler.run)
        if self.outbox.unsent and (self._flusher is None or self._flusher.dead):
            self._flusher = gevent.spawn(self._fire_unsent)
