"""The call's own unicast: the `direct` source, and the write-back port taps use for inject.

FreeSWITCH streams only a parked channel, and only what it reads (facts file); datagrams sent
back to its port are written into the call. So a parked call's own unicast is both the cheapest
source of a mono stream and the only way to inject audio into a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent.event

from ..app import events
from ..esl.connection import ESLError
from .lease import LeaseError, UnicastFeed, UnicastLease
from .reader import FrameReader
from .sources import Playback, SourceEnv, SourceError

if TYPE_CHECKING:
    from .pipeline import FramePipeline
    from .player import Player

log = logging.getLogger(__name__)


class DirectSource:
    """FreeSWITCH's unicast of the (parked) call itself."""

    kind = "direct"

    def __init__(self, env: SourceEnv, pipeline: FramePipeline) -> None:
        self.env = env
        self.pipeline = pipeline
        self.restores = 0  # times the unicast was brought back after a broadcast
        self._first: UnicastLease | None = None
        self._feed: UnicastFeed | None = None
        self._lease: UnicastLease | None = None  # the port FreeSWITCH streams from
        self._reader: FrameReader | None = None
        self._parked = gevent.event.Event()  # CHANNEL_PARK seen (a re-park after a broadcast)
        self._asked = False  # FreeSWITCH was asked to stream (so it must be told to stop)
        self._closed = False

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
        self._start_feed(first)

    def _start_feed(self, first: UnicastLease | None) -> None:
        env = self.env
        if self._feed is not None:
            self._feed.close()
        self._feed = UnicastFeed(env.esl, env.ports, env.media_host, env.fs_media_host, env.uuid,
                                 probe=env.probe, silent_after=env.first_audio_timeout,
                                 on_first=self._on_first, on_silent=self._on_silent,
                                 on_retry=env.retried, first=first)
        try:
            self._feed.start()
        except LeaseError as exc:
            self._feed = None  # it released its lease
            raise SourceError(str(exc)) from None
        self._asked = True

    def _on_first(self, lease: UnicastLease) -> None:
        assert self._feed is not None and lease.endpoint is not None
        self._lease = self._feed.take_winner()
        self._reader = FrameReader(lease.endpoint.sock, self.pipeline.feed, self.env.failed)

    def _on_silent(self, ports: list[int]) -> None:
        env = self.env
        env.fire(events.ERROR, events.error_body(
            events.WS_TIMEOUT,
            f"no audio from FreeSWITCH {env.first_audio_timeout:g} s after start (is the channel "
            f"parked? is local-port {', '.join(map(str, ports))} free?)"))

    def attach(self, player: Player) -> None:
        pass

    def playback(self, mode: str) -> Playback:
        return Playback(mode, write=self._write_back, restore=self.restore)

    def _write_back(self, frame: bytes) -> bool:
        lease = self._lease
        return lease is not None and lease.endpoint.send(frame)  # type: ignore[union-attr]

    def restore(self) -> None:
        """After a broadcast FreeSWITCH's unicast is gone for good; only a re-park and a new
        unicast bring it back (facts file). The same port is asked for first (its socket was
        kept), others if it gives nothing: it was free while the broadcast played."""
        env = self.env
        if self._closed or self._lease is None:
            return
        self._parked.clear()
        try:
            env.esl.api(f"uuid_transfer {env.uuid} park inline")
            if not self._parked.wait(env.esl_timeout):
                raise ESLError("the call did not park again")
            if self._closed or self._lease is None:
                return
            self.pipeline.restart_timeline()  # the broadcast was a hole, not loss
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            lease, self._lease = self._lease, None
            self._start_feed(lease)
            self.restores += 1
        except (ESLError, SourceError) as exc:
            log.error("%s: could not bring the stream back after a broadcast: %s", env.uuid, exc)
            env.error(f"stream not restored after broadcast: {exc}")

    def pause(self) -> None:
        pass  # FreeSWITCH keeps sending: the frames pace what plays

    def resume(self) -> None:
        pass

    def on_call_event(self, name: str) -> None:
        if name == "CHANNEL_PARK":
            self._parked.set()

    def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.stop()

    def tap_gone(self, tap_uuid: str) -> None:
        pass

    def close(self, hung_up: bool) -> None:
        """Make FreeSWITCH stop sending and release everything: a zero-length datagram ends its
        write-back thread; its unicast only ends when the channel leaves park, so a parked call
        that goes on is re-parked. Idempotent."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        lease, self._lease = self._lease, None
        if lease is not None and lease.endpoint is not None:
            lease.endpoint.end_write_back()
        if self._asked and not hung_up and self.env.parked():
            self.env.repark()
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if lease is not None:
            lease.release()
        if self._first is not None:
            self._first.release()
            self._first = None


class WriteBackPort:
    """taps + inject on a parked call: a unicast on the call itself, for its write-back port
    only; its frames are the playback's clock (the read tap carries the same audio)."""

    def __init__(self, env: SourceEnv, tick: Callable[[], None]) -> None:
        self.env = env
        self._tick = tick
        self._feed: UnicastFeed | None = None
        self._lease: UnicastLease | None = None
        self._reader: FrameReader | None = None

    def open(self) -> None:
        """Ask for the call's unicast; raises LeaseError with everything released."""
        env = self.env
        self._feed = UnicastFeed(env.esl, env.ports, env.media_host, env.fs_media_host, env.uuid,
                                 probe=env.probe, silent_after=env.first_audio_timeout,
                                 on_first=self._on_first, on_retry=env.retried)
        try:
            self._feed.start()
        except LeaseError:
            self._feed = None
            raise

    def _on_first(self, lease: UnicastLease) -> None:
        assert self._feed is not None and lease.endpoint is not None
        self._lease = self._feed.take_winner()
        self._reader = FrameReader(lease.endpoint.sock, self._frame, self.env.failed)

    def _frame(self, data: bytes) -> None:
        self._tick()

    def write(self, frame: bytes) -> bool:
        lease = self._lease
        return lease is not None and lease.endpoint.send(frame)  # type: ignore[union-attr]

    def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.stop()

    def close(self, hung_up: bool) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        lease, self._lease = self._lease, None
        if lease is not None and lease.endpoint is not None:
            lease.endpoint.end_write_back()
        if self._feed is not None:
            if not hung_up and self.env.parked():
                self.env.repark()
            self._feed.close()
            self._feed = None
        if lease is not None:
            lease.release()
