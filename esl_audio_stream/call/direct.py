"""The call's own unicast: the `direct` source, and the write-back port taps use for inject.

FreeSWITCH streams only a parked channel, and only what it reads (facts file); datagrams sent
back to its port are written into the call. So a parked call's own unicast is both the cheapest
source of a mono stream and the only way to inject audio into a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent

from ..app import events
from ..esl.connection import ESLError
from ..native.pump import Pump, PumpedReader, carrier
from .lease import LeaseError, UnicastFeed, UnicastLease
from .reader import FrameReader
from .sources import Playback, SourceEnv, SourceError

if TYPE_CHECKING:
    from ..app.resume import StreamRecord
    from .link import Link
    from .pipeline import FramePipeline
    from .player import Player

log = logging.getLogger(__name__)


class CallUnicast:
    """The call's own unicast: asked for on a port that works (call/lease.py), read into `take`,
    written back into, and ended in `close` (a zero-length datagram ends FreeSWITCH's write-back
    thread; its unicast only ends when the channel leaves park, so a parked call that goes on is
    re-parked)."""

    def __init__(self, env: SourceEnv, take: Callable[[bytes], None],
                 on_silent: Callable[[list[int]], None] | None = None,
                 on_moved: Callable[[], None] = lambda: None) -> None:
        self.env = env
        self._take = take
        self._on_silent = on_silent
        self._on_moved = on_moved  # the port changed: the stream's record says it again
        self._feed: UnicastFeed | None = None
        self.lease: UnicastLease | None = None  # the port FreeSWITCH streams from
        self._reader: FrameReader | PumpedReader | None = None
        #: How the socket is read: a FrameReader, or a native pump's reader (carry_natively).
        self.make_reader: Callable[..., FrameReader | PumpedReader] = FrameReader
        self._job: gevent.Greenlet | None = None  # a re-park and a new ask, after a stale port
        self.asked = False  # FreeSWITCH was asked to stream (so it must be told to stop)
        self._closed = False

    @property
    def ports(self) -> tuple[int, int]:
        """(FreeSWITCH's port, the daemon's) as the stream's record keeps them; zeros before a
        port delivered."""
        lease = self.lease
        if lease is None and self._feed is not None and self._feed.leases:
            lease = self._feed.leases[0]
        if lease is None or lease.endpoint is None:
            return 0, 0
        return lease.port, lease.endpoint.port

    def start(self, first: UnicastLease | None = None) -> None:
        """Ask FreeSWITCH (on `first`, else a port taken now; others while none delivers).
        Raises LeaseError with everything released."""
        self._feed_with(first, adopted=False)
        self.asked = True

    def adopt(self, fs_port: int, udp_port: int) -> None:
        """Carry on the unicast a previous process asked for: bind its port again and listen
        (FreeSWITCH never stopped sending). Where that port cannot be had, or gives nothing
        within a probe, the call is re-parked and asked again. Raises LeaseError."""
        env = self.env
        self.asked = True
        try:
            lease = UnicastLease.adopt(env.ports, env.media_host, env.fs_media_host, fs_port,
                                       udp_port)
        except LeaseError as exc:
            log.warning("%s: %s: re-parking the call and asking for its audio again", env.uuid,
                        exc)
            self._repark_and_ask(None)
            return
        self._feed_with(lease, adopted=True)

    def _feed_with(self, first: UnicastLease | None, adopted: bool) -> None:
        env = self.env
        if self._feed is not None:
            self._feed.close()
        self._feed = UnicastFeed(env.esl, env.ports, env.media_host, env.fs_media_host, env.uuid,
                                 probe=env.probe, silent_after=env.first_audio_timeout,
                                 on_first=self._on_first, on_silent=self._on_silent,
                                 on_retry=env.retried, first=first,
                                 on_stale=self._stale if adopted else None)
        try:
            self._feed.start()
        except LeaseError:
            self._feed = None  # it released its lease
            raise

    def _stale(self) -> None:
        """The adopted port gave nothing (the unicast ended while no process listened)."""
        feed = self._feed
        leases = feed.take_leases() if feed is not None else []
        log.warning("%s: no audio on the port carried on from the previous process: re-parking "
                    "the call and asking again", self.env.uuid)
        self._repark_and_ask(leases[0] if leases else None)

    def _repark_and_ask(self, lease: UnicastLease | None) -> None:
        """Only leaving park ends a unicast FreeSWITCH still holds; then ask anew."""
        env = self.env
        if not env.repark(wait=True):
            log.warning("%s: the call did not park again; asking anyway", env.uuid)
        if self._closed:
            if lease is not None:
                lease.release(held=True)
            return
        try:
            self._feed_with(lease, adopted=False)
        except LeaseError as exc:
            env.error(f"could not get the call's audio again: {exc}")
            return
        self._on_moved()

    def _on_first(self, lease: UnicastLease) -> None:
        assert self._feed is not None and lease.endpoint is not None
        moved = self.lease is not None or self._feed.retries > 0
        self.lease = self._feed.take_winner()
        self._reader = self.make_reader(lease.endpoint.sock, self._take, self.env.failed)
        if moved:
            self._on_moved()

    def restart(self) -> None:
        """Ask again, the same port first (its socket is kept): the unicast was torn down."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        lease, self.lease = self.lease, None
        self.start(lease)

    def write(self, frame: bytes) -> bool:
        """One frame into the call, through FreeSWITCH's write-back port."""
        lease = self.lease
        return lease is not None and lease.endpoint.send(frame)  # type: ignore[union-attr]

    def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.stop()

    def _let_go(self) -> UnicastLease | None:
        self._closed = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return self.lease

    def close(self, hung_up: bool) -> None:
        """Make FreeSWITCH stop sending; release the port and socket. Idempotent."""
        lease = self._let_go()
        self.lease = None
        if lease is not None and lease.endpoint is not None:
            lease.endpoint.end_write_back()
        if self.asked and not hung_up and self.env.parked():
            self.env.repark()
        self.asked = False
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if lease is not None:
            lease.release()

    def hand_over(self) -> None:
        """Leave FreeSWITCH streaming to this port for the next process: sockets closed, nothing
        asked of FreeSWITCH."""
        lease = self._let_go()
        self.lease = None
        if self._feed is not None:
            for other in self._feed.take_leases():
                other.release()
            self._feed = None
        if lease is not None:
            lease.release()


class DirectSource:
    """FreeSWITCH's unicast of the (parked) call itself: its frames are the caller's side, and
    they pace the playback (the write-back port, or the queue's clock for displace)."""

    kind = "direct"

    def __init__(self, env: SourceEnv, pipeline: FramePipeline,
                 on_moved: Callable[[], None] = lambda: None) -> None:
        self.env = env
        self.pipeline = pipeline
        self.restores = 0  # times the unicast was brought back after a broadcast
        self._first: UnicastLease | None = None
        self._unicast = CallUnicast(env, pipeline.feed, self._on_silent, on_moved)
        self._pump: Pump | None = None
        self._closed = False

    def carry_natively(self, pipeline: FramePipeline, link: Link) -> None:
        """A native pump may carry the steady state of the call's one stream (`pipeline`, the
        one the fan-out feeds directly: native/pump.py), where the extension was built."""
        pump = self._pump = carrier(pipeline, link)
        if pump is not None:
            self._unicast.make_reader = lambda sock, take, failed: PumpedReader(
                sock, take, failed, pump)

    def retire_native(self) -> None:
        """Another stream joined the call: its frames go through the fan-out (Python) from
        now on, for every stream of the call."""
        pump = self._pump
        if pump is not None:
            pump.retire()

    def open(self) -> None:
        """A port now, before the WebSocket connects: a full pool is refused at once."""
        env = self.env
        try:
            self._first = UnicastLease(env.ports, env.media_host, env.fs_media_host)
        except LeaseError as exc:
            raise SourceError(str(exc)) from None

    def start(self) -> None:
        """Ask FreeSWITCH for the call's audio (on other ports too, while none comes)."""
        first, self._first = self._first, None
        try:
            self._unicast.start(first)
        except LeaseError as exc:
            raise SourceError(str(exc)) from None

    def adopt(self, record: StreamRecord) -> None:
        """Carry on the unicast of a stream a previous process started."""
        try:
            self._unicast.adopt(record.fs_port, record.udp_port)
        except LeaseError as exc:
            raise SourceError(str(exc)) from None

    def describe(self) -> dict:
        fs_port, udp_port = self._unicast.ports
        return {"fs_port": fs_port, "udp_port": udp_port}

    def _on_silent(self, ports: list[int]) -> None:
        env = self.env
        env.fire(events.ERROR, events.error_body(
            events.WS_TIMEOUT,
            f"no audio from FreeSWITCH {env.first_audio_timeout:g} s after start (is the channel "
            f"parked? is local-port {', '.join(map(str, ports))} free?)"))

    def attach(self, player: Player) -> None:
        pass

    def playback(self, mode: str) -> Playback:
        return Playback(mode, write=self._unicast.write, restore=self.restore)

    def restore(self) -> None:
        """After a broadcast FreeSWITCH's unicast is gone for good; only a re-park and a new
        unicast bring it back (facts file). The same port is asked for first, others if it gives
        nothing: it was free while the broadcast played."""
        env = self.env
        if self._closed or self._unicast.lease is None:
            return
        try:
            if not env.repark(wait=True):
                raise ESLError("the call did not park again")
            if self._closed:
                return
            self.pipeline.restart_timeline()  # the broadcast was a hole, not loss
            self._unicast.restart()
            self.restores += 1
        except (ESLError, LeaseError) as exc:
            log.error("%s: could not bring the stream back after a broadcast: %s", env.uuid, exc)
            env.error(f"stream not restored after broadcast: {exc}")

    def pause(self) -> None:
        pass  # FreeSWITCH keeps sending: the frames pace what plays

    def resume(self) -> None:
        pass

    def on_call_event(self, name: str) -> None:
        pass

    def stop_reading(self) -> None:
        self._unicast.stop_reading()

    def tap_gone(self, tap_uuid: str) -> None:
        pass

    def close(self, hung_up: bool) -> None:
        """FreeSWITCH told to stop sending; everything released. Idempotent."""
        self._closed = True
        self._unicast.close(hung_up)
        self._let_pump_go()
        if self._first is not None:
            self._first.release()
            self._first = None

    def hand_over(self) -> None:
        self._closed = True
        self._unicast.hand_over()
        self._let_pump_go()
        if self._first is not None:
            self._first.release()
            self._first = None

    def _let_pump_go(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.close()


class WriteBackPort(CallUnicast):
    """taps + inject on a parked call: a unicast on the call itself, for its write-back port
    only; its frames are the playback's clock (the read tap carries the same audio)."""

    def __init__(self, env: SourceEnv, tick: Callable[[], None],
                 on_moved: Callable[[], None] = lambda: None) -> None:
        self._tick = tick
        super().__init__(env, lambda data: self._tick(), on_moved=on_moved)

    def retarget(self, tick: Callable[[], None]) -> None:
        """Tick another source's playback (a richer source of the call took this port over)."""
        self._tick = tick
