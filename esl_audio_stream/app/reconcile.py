"""After every connection to FreeSWITCH (the first, and each reconnection): make the daemon's
streams and FreeSWITCH agree.

- FreeSWITCH restarted (its core UUID changed): its calls are gone; every stream ends, with its
  disconnect event.
- A stream in the registry whose call is gone (it hung up while ESL was away) ends.
- A stream FreeSWITCH lists for this owner (app/resume.py) that is not in the registry was left
  by a previous daemon process: carried on (call/stream.py `carry_on`) when its call is up and
  the owner showed it was alive within `orphan_timeout`; ended (FreeSWITCH told to stop sending,
  taps killed, disconnect event) when the owner was away longer -- rather than carried on into a
  stale endpoint; forgotten (index entry and files removed, disconnect event) when its call
  ended meanwhile. A worker (`run --workers N`) takes only its own calls' streams (app/shard.py):
  the owner in the record is the daemon, the worker is the call's shard, so a worker's
  replacement carries on exactly its streams, and a run with another N carries each stream on
  in the worker that owns it now.

Its greenlet is the daemon's; one run at a time.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Protocol

from ..esl.connection import ESLError
from ..media.files import CallFiles, clean_base
from . import events
from .calls import initial_state
from .commands import CommandError, Start
from .resume import StreamRecord, default_name

if TYPE_CHECKING:
    from ..esl.connection import ESLConnection
    from .calls import Calls
    from .config import DaemonConfig
    from .keeper import Keeper
    from .registry import Streams
    from .shard import Shard


class Reconciled(Protocol):
    """What reconciling needs of the daemon."""

    esl: ESLConnection
    config: DaemonConfig
    keeper: Keeper
    calls: Calls
    owner: str
    shard: Shard
    streams: Streams
    closing: bool

    def carry_on(self, uuid: str, record: StreamRecord) -> None: ...
    def channel_info_or_empty(self, uuid: str) -> dict[str, str]: ...
    def fire(self, uuid: str, subclass: str, body: str, *,
             extra: dict[str, str] | None = None,
             state: events.CallState | None = None) -> None: ...

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, daemon: Reconciled) -> None:
        self.daemon = daemon
        self.core_uuid = ""  # FreeSWITCH's, when last seen
        self.carried_on = 0
        self.orphans_ended = 0
        self.forgotten = 0

    def run(self) -> None:
        d = self.daemon
        try:
            index = d.keeper.index()
        except ESLError as exc:
            log.warning("could not read the streams FreeSWITCH keeps: %s", exc)
            return
        if self.core_uuid and index.core_uuid and index.core_uuid != self.core_uuid:
            log.warning("FreeSWITCH restarted (core %s, was %s): its calls are gone; ending "
                        "%d streams", index.core_uuid, self.core_uuid, d.streams.count)
            for stream in d.streams.all():
                d.calls.gone(stream.uuid)
                stream.stop_async("hangup")
        self.core_uuid = index.core_uuid or self.core_uuid
        self._check_registry()
        away = time.time() - index.alive if index.alive is not None else float("inf")
        d.keeper.beat()
        for uuid in index.uuids:
            if d.streams.busy(uuid) or d.closing or not d.shard.owns(uuid):
                continue
            try:
                records = d.keeper.records(uuid)
            except ESLError as exc:
                log.warning("%s: could not read its stream record: %s", uuid, exc)
                continue
            if records is None:
                self._forget(uuid, away)
            elif any(record.owner != d.owner for record in records):
                log.warning("%s: listed for %s but its record names %s: left alone", uuid,
                            d.owner, records[0].owner)
            elif away > d.config.orphan_timeout:
                self._end_orphan(uuid, records, away)
            else:
                for record in records:  # the first adopts the call's source, the others join
                    self._carry_on(uuid, record)
        # what no stream claims: left by a process that died (start-up spares FIFOs for us);
        # a recording still going into such a FIFO is stopped (a process killed in the middle
        # of a stop), or FreeSWITCH would record into the void until the call ends
        keep = set(d.streams) | d.streams.starting_calls() | d.shard.foreign(d.config.files_dir)
        clean_base(d.config.files_dir, keep=keep, on_fifo=self._stop_recording)

    def _stop_recording(self, uuid: str, fifo: str) -> None:
        """That recording only (the path is ours): the user's own go on. An answer of -ERR (none
        runs) is the usual case."""
        with contextlib.suppress(ESLError):
            if self.daemon.esl.api(f"uuid_record {uuid} stop {fifo}").startswith("+OK"):
                log.warning("%s: a recording into %s nobody read: stopped", uuid, fifo)

    def _check_registry(self) -> None:
        """Streams whose calls went away while we could not hear."""
        d = self.daemon
        for uuid in list(d.streams):
            try:
                exists = d.esl.api(f"uuid_exists {uuid}").strip() == "true"
            except ESLError:
                return
            if not exists:
                d.calls.gone(uuid)
                for stream in d.streams.of(uuid):
                    stream.stop_async("hangup")

    def _carry_on(self, uuid: str, record: StreamRecord) -> None:
        d = self.daemon
        try:
            d.carry_on(uuid, record)
        except CommandError as exc:
            log.error("%s: could not carry the stream on: %s", uuid, exc.answer.strip())
            d.keeper.drop(uuid, record.name)
            return
        self.carried_on += 1
        log.info("%s: carried on from the previous process (%s to %s)", uuid, record.source,
                 record.url)

    def _forget(self, uuid: str, away: float) -> None:
        """The call ended while no daemon ran: its index entry and files go; subscribers hear
        that its stream ended."""
        d = self.daemon
        d.keeper.unlist(uuid)
        CallFiles(d.config.files_dir, uuid, d.config.files_group).remove_all()
        d.fire(uuid, events.DISCONNECT, events.disconnect_body(
            1006, "the call ended while no daemon was running"), state=events.CallState.GONE)
        self.forgotten += 1
        log.info("%s: its call ended while no daemon ran: forgotten", uuid)

    def _end_orphan(self, uuid: str, records: list[StreamRecord], away: float) -> None:
        """Left without a daemon longer than orphan_timeout: FreeSWITCH is told to stop sending
        (the write-back thread ended, a parked call re-parked, taps killed, the recording
        stopped: once, the call's streams share them), the records dropped, each stream's
        disconnect event fired."""
        d = self.daemon
        esl = d.esl
        record = records[0]
        if record.fs_port:  # a zero-length datagram from anyone ends the write-back thread
            with contextlib.suppress(OSError), socket.socket(socket.AF_INET,
                                                             socket.SOCK_DGRAM) as s:
                s.sendto(b"", (d.config.fs_media_host, record.fs_port))
        with contextlib.suppress(ESLError):
            for tap in record.taps:
                esl.api(f"uuid_kill {tap.uuid}")
            if record.fifo:  # that recording only: the user's own go on
                esl.api(f"uuid_record {uuid} stop {record.fifo}")
            if record.fs_port and esl.api(
                    f"uuid_getvar {uuid} current_application").strip() == "park":
                esl.api(f"uuid_transfer {uuid} park inline")
        d.keeper.drop(uuid)
        CallFiles(d.config.files_dir, uuid, d.config.files_group).remove_all()
        state = initial_state(d.channel_info_or_empty(uuid))
        for record in records:
            d.fire(uuid, events.DISCONNECT, events.disconnect_body(
                1006, f"no daemon for {away:.0f} s (orphan_timeout "
                f"{d.config.orphan_timeout:g} s): the stream was ended"), state=state,
                extra=named(record))
        self.orphans_ended += len(records)
        log.warning("%s: left without a daemon for %.0f s: stream ended", uuid, away)


def named(record: StreamRecord) -> dict[str, str] | None:
    """`Stream-Name`, as the stream's own events carried it (none for an unnamed stream)."""
    if record.name == default_name(record.protocol):
        return None
    return {events.STREAM_NAME_HEADER: record.name}


def start_of(uuid: str, record: StreamRecord) -> Start:
    """The start command the record stands for."""
    return Start(uuid, record.url, record.mix, record.rate, record.metadata, name=record.name)
