"""Where a stream's audio comes from, behind one interface: the call's own unicast
(`DirectSource`, call/direct.py), a recording of the call into a FIFO (`RecordSource`,
call/record_source.py) or loopback taps (`TapSource`, call/taps.py).

A source owns everything that brings FreeSWITCH's frames in -- its ports and sockets (leases,
call/lease.py), io watchers (call/reader.py), tap channels, a recording and its FIFO, the job
that makes them again -- feeds the frames to the stream's pipeline, says how the endpoint's
audio can be played into the call (`playback`), and releases it all in `close`.

- `direct`: unicast on the call itself, which must be parked. Its datagrams are the caller's
  frames; they also pace the playback (write-back port, or the queue's clock for displace).
- `record`: FreeSWITCH records the call into a FIFO in the call's private directory (one media
  bug, no extra channel): the read side for mono, stereo (left read, right write) otherwise. Any
  call. Its frames pace displace playback; inject on a parked call goes through `WriteBackPort`.
- `taps`: one loopback tap for the read side and, for stereo/mixed, one for the write side. Any
  call, bridged or running an application. The tap frames pace displace playback. Inject
  playback on a parked call goes through a unicast on the call itself (`WriteBackPort`), used
  only for its write-back port and as the playback's clock; FreeSWITCH puts that audio in the
  write tap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import gevent.event

from ..app import events
from ..esl.connection import ESLError

if TYPE_CHECKING:
    from ..app.resume import StreamRecord
    from ..esl.connection import ESLConnection
    from ..media.unicast import PortPool
    from .player import Player

log = logging.getLogger(__name__)


class SourceError(Exception):
    """The audio cannot be had; the message is the command's -ERR reason."""


@dataclass
class SourceEnv:
    """What a source needs from the daemon and the configuration, handed in by the stream."""

    uuid: str
    esl: ESLConnection
    ports: PortPool
    media_host: str
    fs_media_host: str
    first_audio_timeout: float
    esl_timeout: float
    fire: Callable[[str, str], None]  # (subclass, body): an event of this call
    parked: Callable[[], bool]  # whether the call is parked now (tracked from its events)
    gone: Callable[[], bool]  # whether the call has hung up
    failed: Callable[[BaseException], None]  # the audio path broke: the stream stops
    tap_opened: Callable[[str], None] = lambda uuid: None
    tap_closed: Callable[[str], None] = lambda uuid: None
    #: A port gave nothing and another is being tried (counted by the stream).
    retried: Callable[[], None] = lambda: None
    #: Set on each CHANNEL_PARK of the call (the stream passes it on).
    park_seen: gevent.event.Event = field(default_factory=gevent.event.Event)

    @property
    def probe(self) -> float:
        """How long one port is given to deliver before the next is tried."""
        return min(1.0, self.first_audio_timeout / 3)

    def error(self, message: str) -> None:
        self.fire(events.ERROR, events.error_body(events.WS_PROTOCOL, message))

    def repark(self, wait: bool = False) -> bool:
        """End FreeSWITCH's unicast: it only ends when the channel leaves park. With `wait`,
        until the call is parked again (a unicast asked for before that could be taken by the
        park loop that is ending); False when it did not (in esl_timeout)."""
        self.park_seen.clear()
        try:
            self.esl.api(f"uuid_transfer {self.uuid} park inline")
        except ESLError as exc:
            log.warning("%s: could not end unicast: %s", self.uuid, exc)
            return False
        return not wait or self.park_seen.wait(self.esl_timeout)


@dataclass(frozen=True)
class Playback:
    """How the endpoint's audio can be played into the call, as a source offers it."""

    mode: str
    write: Callable[[bytes], bool] | None = None  # inject: one frame into the call
    restore: Callable[[], None] | None = None  # broadcast: bring the stream back afterwards
    paced_here: bool = True  # the frames fed to the pipeline pace the player
    in_tap: set = field(default_factory=set)  # tags FreeSWITCH already puts in the write tap


class Source(Protocol):
    kind: str

    def open(self) -> None: ...
    def start(self) -> None: ...
    def stop_reading(self) -> None: ...
    def attach(self, player: Player) -> None: ...
    def playback(self, mode: str) -> Playback: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def on_call_event(self, name: str) -> None: ...
    def tap_gone(self, tap_uuid: str) -> None: ...
    def close(self, hung_up: bool) -> None: ...
    def adopt(self, record: StreamRecord) -> None: ...
    def hand_over(self) -> None: ...
    def describe(self) -> dict: ...
