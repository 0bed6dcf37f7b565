"""A recording of the call into a FIFO the daemon reads: FreeSWITCH's cheapest real-time tap of
any call, parked, bridged or in an application (facts file, "recording into a FIFO": one media
bug, no extra channel; 1.3-2.0 ms of FreeSWITCH's CPU per call-second against 8.2-9.7 ms for two
loopback taps).

- Made: a FIFO in the call's private directory (media/files.py: FreeSWITCH can write it, nobody
  else), its read end opened first and without blocking (FreeSWITCH's open for writing blocks
  until a reader is there), then `uuid_record <uuid> start <fifo> 0 {vars}`: raw L16 (mod_sndfile
  writes `.r8`/`.r16`/`.raw` as 16-bit raw at the recording's rate whatever the extension says,
  so the rate is named: `record_sample_rate`), stereo (left what the call reads, right what it
  writes) or the read side alone, written as it comes (`enable_file_write_buffering=false`;
  else 64 KB bursts). Every recording variable FreeSWITCH would otherwise take from the channel
  is given, so a channel's own RECORD_* (set for the user's recordings) never changes ours,
  and none is left on the channel.
- Read: by a FifoReader (call/reader.py) in the event loop, cut into 20 ms frames.
- Stopped: `uuid_record <uuid> stop <fifo>` (never `all`: the user's recordings of the call go
  on), reading on meanwhile (a full pipe would block FreeSWITCH's recording thread, and its stop
  with it); then the FIFO is removed. A hang-up closes it by itself: EOF.
- A reader that goes away (the daemon killed): FreeSWITCH's recording thread gets EPIPE on each
  write, logs "Error writing" and goes on (src/switch_ivr_async.c recording_thread: a failed
  write only sets the completion cause, and hangs up only with RECORD_HANGUP_ON_ERROR, which we
  set false; libsndfile tries each write anew). So a new process opens the same FIFO and the
  audio flows again (`reattach`); what FreeSWITCH wrote meanwhile is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gevent.socket import wait_read

from ..esl.connection import ESLError
from ..media.frames import PTIME_MS, chunk_pattern
from .reader import FifoReader

if TYPE_CHECKING:
    from ..esl.connection import ESLConnection
    from ..media.files import CallFiles

log = logging.getLogger(__name__)

#: switch_is_valid_rate: the rates record_sample_rate may name (others are ignored by FreeSWITCH).
VALID_RATES = frozenset((8000, 12000, 16000, 24000, 32000, 11025, 22050, 44100, 48000))
#: What FreeSWITCH's argument splitting (switch_separate_string) leaves as it is.
_SAFE_PATH = re.compile(r"[^\s'\"\\{},]+")
_GEN = re.compile(r"_rec(\d+)\.")


class RecordingError(Exception):
    """The recording cannot be had; the message says why (the command's -ERR reason)."""


def record_rate(channel_rate: int, stream_rate: int) -> int:
    """The rate to record at: the channel's own (FreeSWITCH does no resampling; the pipeline
    does it, as for every source), else the stream's, else 8 kHz -- always one FreeSWITCH
    accepts, so the daemon knows what it reads."""
    for rate in (channel_rate, stream_rate):
        if rate in VALID_RATES:
            return rate
    return 8000


def fifo_name(uuid: str, gen: int, rate: int) -> str:
    """`<uuid>_rec<gen>.r8` (`.r16`, else `.raw`): raw L16 to mod_sndfile; a new name for each
    recording of a stream, so a stop or FreeSWITCH's removal of an empty file only ever touches
    its own."""
    ext = {8000: "r8", 16000: "r16"}.get(rate, "raw")
    return f"{uuid}_rec{gen}.{ext}"


def generation(path: str) -> int:
    """The number in a FIFO's name (0 when there is none)."""
    m = _GEN.search(Path(path).name)
    return int(m.group(1)) if m else 0


def record_variables(rate: int, channels: int) -> str:
    """The recording variables (the 5th argument of uuid_record: this recording only). Each one
    FreeSWITCH would otherwise read from the channel is named."""
    stereo = "true" if channels == 2 else "false"
    read_only = "false" if channels == 2 else "true"
    pairs = (
        ("RECORD_STEREO", stereo), ("RECORD_STEREO_SWAP", "false"),
        ("RECORD_READ_ONLY", read_only), ("RECORD_WRITE_ONLY", "false"),
        ("record_sample_rate", str(rate)),
        ("enable_file_write_buffering", "false"),  # real time: else ~64 KB bursts
        ("RECORD_USE_THREAD", "true"),  # its own thread writes: a full FIFO never stalls the call
        ("RECORD_HANGUP_ON_ERROR", "false"),  # no reader (a restart) never hangs the call up
        ("RECORD_APPEND", "false"), ("RECORD_TOGGLE_ON_REPEAT", "false"),
        ("RECORD_CHECK_BRIDGE", "false"), ("RECORD_ANSWER_REQ", "false"),
        ("RECORD_BRIDGE_REQ", "false"), ("RECORD_MIN_SEC", "0"),
        ("RECORD_PRE_BUFFER_FRAMES", "25"),  # FreeSWITCH's default: the ~0.5 s start stall
        ("RECORD_INITIAL_TIMEOUT_MS", "-1"), ("RECORD_FINAL_TIMEOUT_MS", "-1"),
        ("RECORD_SILENCE_THRESHOLD", "-1"),  # no silence detection (it would end the recording)
    )
    return "{" + ",".join(f"{k}={v}" for k, v in pairs) + "}"


def record_command(uuid: str, path: str, rate: int, channels: int) -> str:
    return f"uuid_record {uuid} start {path} 0 {record_variables(rate, channels)}"


def _discard(frame: bytes) -> None:
    pass


class Recording:
    """One recording of the call: its FIFO (path and read end), its reader, and FreeSWITCH's
    recording into it, started and stopped over ESL. Everything is released by `stop` (or left
    to the next process by `hand_over`)."""

    def __init__(self, esl: ESLConnection, files: CallFiles, uuid: str, *, rate: int,
                 channels: int, take: Callable[[bytes], None],
                 failed: Callable[[BaseException], None],
                 on_eof: Callable[[Recording], None]) -> None:
        self.esl = esl
        self.files = files
        self.uuid = uuid
        self.rate = rate
        self.channels = channels
        self.frame_bytes = rate * PTIME_MS // 1000 * 2 * channels
        self._take = take
        self._failed = failed
        self._on_eof = on_eof
        self.path = ""
        self.fd = -1
        self.reader: FifoReader | None = None
        self.asked = False  # FreeSWITCH records into it (so it must be told to stop)
        self.stopping = False

    @property
    def bytes_in(self) -> int:
        return self.reader.bytes_in if self.reader is not None else 0

    def start(self, gen: int, timeout: float) -> None:
        """Make the FIFO, open its read end, ask FreeSWITCH to record into it and wait for the
        first bytes. Raises RecordingError with everything released."""
        name = fifo_name(self.uuid, gen, self.rate)
        if not _SAFE_PATH.fullmatch(str(self.files.dir / name)):
            raise RecordingError(f"{self.files.dir}: FreeSWITCH's uuid_record cannot take a path "
                                 "with blanks, quotes, backslashes, braces or commas "
                                 "([playback] files_dir)")
        try:
            path, self.fd = self.files.make_fifo(name)
        except OSError as exc:
            raise RecordingError(f"cannot make the FIFO for the recording: {exc}") from None
        self.path = str(path)
        try:
            answer = self.esl.api(record_command(self.uuid, self.path, self.rate, self.channels))
        except ESLError as exc:
            self.asked = True  # it may have started after all
            self.stop(hung_up=False)
            raise RecordingError(f"uuid_record: {exc}") from None
        if not answer.startswith("+OK"):
            self.stop(hung_up=False)  # not asked: nothing to tell FreeSWITCH
            raise RecordingError(f"recording refused by FreeSWITCH: {answer.strip()}")
        self.asked = True
        if not self._readable(timeout):
            self.stop(hung_up=False)
            raise RecordingError(f"no audio in {self.path} {timeout:g} s after the recording "
                                 "started")
        self._read()

    def reattach(self, path: str, probe: float) -> bool:
        """Read the FIFO a previous daemon process made, which FreeSWITCH may still record into
        (its writes failed while nobody read, and go through again now). What waited in it is
        dropped (a new stream starts from now). False, with nothing held, when it is gone or
        gives nothing within `probe`."""
        self.path, self.asked = path, True  # the previous process asked FreeSWITCH
        fd = self.files.open_fifo(path)
        if fd is None:
            return False
        self.fd = fd
        if not self._readable(probe):
            os.close(fd)
            self.fd = -1
            return False
        with contextlib.suppress(OSError):  # BlockingIOError: empty
            while os.read(fd, 1 << 16):
                pass
        self._read()
        return True

    def _readable(self, timeout: float) -> bool:
        try:
            wait_read(self.fd, timeout)
        except TimeoutError:
            return False
        return True

    def _read(self) -> None:
        self.reader = FifoReader(self.fd, chunk_pattern(self.rate, PTIME_MS, self.channels),
                                 self._take, self._failed, self._ended)

    def _ended(self) -> None:
        """EOF: FreeSWITCH closed the file (its recording stopped, or the call hung up)."""
        self.asked = False
        if not self.stopping:
            self._on_eof(self)

    def discard(self) -> None:
        """Read on, feeding nothing (the stream stops: FreeSWITCH must not block on us)."""
        if self.reader is not None:
            self.reader.discard()

    def stop(self, hung_up: bool) -> None:
        """FreeSWITCH told to stop (unless the call hung up: it stopped by itself), reading on
        meanwhile; the reader, the read end and the FIFO released. Idempotent."""
        self.stopping = True
        self.discard()
        if self.asked and not hung_up:
            try:
                answer = self.esl.api(f"uuid_record {self.uuid} stop {self.path}")
                if not answer.startswith("+OK"):
                    log.debug("%s: uuid_record stop %s: %s", self.uuid, self.path,
                              answer.strip())
            except ESLError as exc:
                log.warning("%s: could not stop the recording into %s: %s", self.uuid,
                            self.path, exc)
        self.asked = False
        self._close()
        if self.path:
            self.files.remove(self.path)
            self.files.remove_if_empty()  # the player's files keep it while they are there

    def hand_over(self) -> None:
        """Leave FreeSWITCH recording into the FIFO for the next process: only the read end
        closes here (its writes fail until the next process opens the FIFO again)."""
        self.stopping = True
        self._close()

    def _close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
