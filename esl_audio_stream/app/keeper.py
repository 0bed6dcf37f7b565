"""Keeps each stream's record on its call and this daemon's heartbeat in FreeSWITCH
(app/resume.py says what they are), and reads them back after a restart.

One writer greenlet for every stream: a stream that changes (a port, taps made again, a pause,
a mark) asks for its record to be written, and what is waiting for the same call is replaced,
so a burst of changes costs one `uuid_setvar`; the pending records are bounded by the number of
streams. What a start writes and what a stop removes is written at once, in the caller's
greenlet: a stream is carried on only if its record was there before `+OK`, and never after its
stop began. While ESL is down, records wait and are written when it is back.

The streams of one call share its one variable (app/resume.py `encode_all`), so the keeper
holds the last record of each of its streams and writes them together: one stream's change or
stop rewrites the call's variable with the others' records as they were. After a restart the
records read back are held the same way (`records`) before any is carried on, so carrying on
the first stream of a call never writes its others out of the variable.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import gevent
import gevent.event

from ..esl.connection import ESLError
from .resume import (
    STATE_VAR,
    Index,
    RecordError,
    StreamRecord,
    alive_var,
    decode_all,
    encode_all,
    index_var,
    read_index,
)

if TYPE_CHECKING:
    from ..esl.connection import ESLConnection

log = logging.getLogger(__name__)


class Keeper:
    """The records of one owner's streams, written to and read from FreeSWITCH."""

    def __init__(self, esl: ESLConnection, owner: str, heartbeat: float) -> None:
        self.esl = esl
        self.owner = owner
        self.heartbeat = heartbeat  # seconds between two writes of the alive variable
        #: call uuid -> stream name -> its last record (what the call's variable says)
        self._records: dict[str, dict[str, StreamRecord]] = {}
        self._pending: dict[str, None] = {}  # calls whose variable waits to be written
        self._wake = gevent.event.Event()
        self._writer: gevent.Greenlet | None = None
        self._beater: gevent.Greenlet | None = None
        self.written = 0  # records written (counted for the soak and the metrics)
        self.failed = 0  # writes FreeSWITCH refused or did not answer

    def start(self) -> None:
        self._writer = gevent.spawn(self._write_loop)
        self._beater = gevent.spawn(self._beat_loop)

    def stop(self) -> None:
        for glet in (self._writer, self._beater):
            if glet is not None:
                glet.kill(block=True, timeout=2)
        self._writer = self._beater = None

    # -- writing ----------------------------------------------------------------------------

    def save(self, uuid: str, record: StreamRecord, now: bool = False) -> bool:
        """A stream's record (its call's variable, with its other streams'), written by the
        writer greenlet (or `now`, in this one: then whether it was written)."""
        self._records.setdefault(uuid, {})[record.name] = record
        if now:
            self._pending.pop(uuid, None)
            return self._write(uuid)
        self._pending[uuid] = None
        self._wake.set()
        return True

    def drop(self, uuid: str, name: str | None = None) -> None:
        """The stream `name` ends for good (None: every stream of the call): its record goes
        now; with the call's last, the variable and its index entry."""
        records = self._records.get(uuid, {})
        if name is not None:
            records.pop(name, None)
        if name is not None and records:  # the call's other streams go on
            self._pending.pop(uuid, None)
            self._write(uuid)
            return
        self._records.pop(uuid, None)
        self._pending.pop(uuid, None)
        try:
            self.esl.api(f"uuid_setvar {uuid} {STATE_VAR}")
        except ESLError as exc:
            log.warning("%s: could not remove the stream's record: %s", uuid, exc)
        self.unlist(uuid)

    def unlist(self, uuid: str) -> None:
        try:
            self.esl.api(f"global_setvar {index_var(self.owner, uuid)}=")
        except ESLError as exc:
            log.warning("%s: could not remove the stream from the index: %s", uuid, exc)

    def beat(self) -> None:
        """This owner is alive now (also at a hand-over: the next process is within reach)."""
        with contextlib.suppress(ESLError):  # down: the next beat, or the scan, says it again
            self.esl.api(f"global_setvar {alive_var(self.owner)}={time.time():.3f}")

    def _write(self, uuid: str) -> bool:
        records = list(self._records.get(uuid, {}).values())
        if not records:
            return True
        try:
            answer = self.esl.api(f"uuid_setvar {uuid} {STATE_VAR} {encode_all(records)}")
            if not answer.startswith("+OK"):
                return False  # the call is gone: nothing to carry on
            started = min(record.started for record in records)
            self.esl.api(f"global_setvar {index_var(self.owner, uuid)}={started:.3f}")
        except ESLError as exc:
            self.failed += 1
            log.warning("%s: could not write the stream's record: %s", uuid, exc)
            return False
        self.written += 1
        return True

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._pending:
                if not self.esl.connected:
                    gevent.sleep(0.5)  # kept until FreeSWITCH is back
                    continue
                uuid = next(iter(self._pending))
                del self._pending[uuid]
                if not self._write(uuid) and self.esl.connected is False:
                    self._pending.setdefault(uuid, None)

    def _beat_loop(self) -> None:
        while True:
            if self.esl.connected:
                self.beat()
            gevent.sleep(self.heartbeat)

    # -- reading ----------------------------------------------------------------------------

    def index(self) -> Index:
        """This owner's streams, its last heartbeat and FreeSWITCH's core UUID: one command."""
        return read_index(self.esl.api("global_getvar"), self.owner)

    def records(self, uuid: str) -> list[StreamRecord] | None:
        """The records of the call's streams, held from now on as the call's (see the module
        docstring); None when the call is gone (or carries none, or a broken one)."""
        value = self.esl.api(f"uuid_getvar {uuid} {STATE_VAR}").strip()
        if not value or value == "_undef_" or value.startswith("-ERR"):
            return None
        try:
            records = decode_all(value)
        except RecordError as exc:
            log.error("%s: its stream records are unreadable (%s): not carried on", uuid, exc)
            return None
        held = self._records.setdefault(uuid, {})
        for record in records:
            held.setdefault(record.name, record)
        return records
