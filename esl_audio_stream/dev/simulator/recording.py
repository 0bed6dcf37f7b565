"""`uuid_record`: recordings of a channel, as switch_ivr_record_session_event makes them, its
recording thread and switch_core_file_write write them, and mod_sndfile writes raw L16.

What a recording's media bug sees each tick is bugs.py's (`record_frame`, stepped from park.py);
this module is the rest: the recording variables (the 5th argument's `{...}`, for this recording
only; else the channel's), opening the file (a FIFO's open blocks until a reader is there), the
start stall of the bug's pre-buffer, the file layer's write buffer, writes that never block the
simulator, a reader that went away (EPIPE: the recording goes on), and the close (EOF for a FIFO's
reader) with the RECORD_STOP event and the record_* variables FreeSWITCH sets then. FreeSWITCH's
facts: the shared facts file, "recording into a FIFO"; the code: src/switch_ivr_async.c,
src/switch_core_file.c, src/switch_core_media_bug.c, src/mod/formats/mod_sndfile/mod_sndfile.c
(signalwire/freeswitch cc93a683).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

import gevent

from ...app.settings import atoi
from .dialstring import DialError, take_var_blocks
from .media import resample_linear
from .ticker import TICK

if TYPE_CHECKING:
    from .channel import SimChannel
    from .switch import Switch

log = logging.getLogger(__name__)

#: switch_core_media_bug_set_pre_buffer_framecount's default for recordings (RECORD_PRE_BUFFER_
#: FRAMES): the bug reads one frame, then nothing for this many reads, then all it holds.
PRE_BUFFER_FRAMES = 25
#: SWITCH_DEFAULT_FILE_BUFFER_LEN: the file layer's write buffer unless
#: enable_file_write_buffering is false (written in bursts of this many bytes).
FILE_BUFFER_LEN = 65536
#: switch_is_valid_rate: the rates record_sample_rate may name.
VALID_RATES = (8000, 12000, 16000, 24000, 32000, 11025, 22050, 44100, 48000)
#: What mod_sndfile records as raw 16-bit L16 (in write mode the extension does not set the
#: rate: the handle's rate -- record_sample_rate, else the channel's -- is written).
RAW_L16 = (".r8", ".r16", ".raw")

_TRUE = frozenset({"yes", "on", "true", "t", "enabled", "active", "allow"})


def switch_true(value: str | None) -> bool:
    if value is None:
        return False
    v = value.strip().lower()
    return v in _TRUE or (v.lstrip("+-").isdigit() and int(v) != 0)


class SimRecording:
    """One recording of a channel: the path FreeSWITCH keys it by, what its bug takes (read,
    write, stereo), the rate written, and the file it writes to."""

    __slots__ = ("_buffer", "_fd", "_held", "_resample_from", "buffered", "channels",
                 "errors", "frames", "path", "pre_buffer", "rate", "read", "reads",
                 "samples_out", "send_times", "seq", "stereo", "swap", "write", "written")

    def __init__(self, path: str, *, rate: int, channel_rate: int, read: bool, write: bool,
                 stereo: bool, swap: bool, buffered: int, seq: int,
                 pre_buffer: int = PRE_BUFFER_FRAMES) -> None:
        self.path = path
        self.rate = rate  # what is written (record_sample_rate, else the channel's)
        self._resample_from = channel_rate if channel_rate != rate else 0
        self.read, self.write = read, write
        self.stereo, self.swap = stereo, swap
        self.channels = 2 if stereo else 1
        self.buffered = buffered  # the file layer's buffer in bytes; 0: none
        self.pre_buffer = pre_buffer  # the bug's pre-buffer in frames: the start stall
        self.seq = seq  # media-bug order: a write-side displace attached before it is in it
        self._fd = -1
        self._held = bytearray()  # the bug's pre-buffer, then the file layer's buffer
        self._buffer = bytearray()  # handed to write(2) but not taken yet (a full pipe)
        self.reads = 0  # frames the bug read (the stall counts them)
        self.frames = 0  # frames handed to the file (rh->writes)
        self.samples_out = 0
        self.written = 0  # bytes the file took
        self.errors = 0  # writes that failed: nobody reading the FIFO (EPIPE)
        self.send_times: array | None = None  # when the bug read each frame, if asked

    # -- open ----------------------------------------------------------------------------------
    def try_open(self) -> bool:
        """switch_core_file_open for writing, without blocking: a FIFO opens only once a reader
        is there (FreeSWITCH's open blocks until then: the caller retries each tick); a regular
        file is created or truncated. Raises OSError when the path cannot be written at all."""
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISFIFO(st.st_mode):
            flags |= os.O_CREAT | os.O_TRUNC
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO with no reader yet
                return False
            raise
        return True

    def open_blocking(self) -> None:
        """FreeSWITCH's open, as the api command's thread does it: it waits for a FIFO's reader
        (here one tick at a time, so only this ESL connection waits, as on FreeSWITCH)."""
        while not self.try_open():
            gevent.sleep(TICK)

    # -- per tick --------------------------------------------------------------------------------
    def feed(self, frame: bytes) -> None:
        """One frame the bug read this tick (interleaved when stereo), at the channel's rate."""
        self.reads += 1
        self.samples_out += len(frame) // (2 * self.channels)  # at the channel's rate
        held = self._held
        if self._resample_from:
            frame = _resample(frame, self._resample_from, self.rate, self.channels)
        held += frame
        self.frames += 1
        if self.send_times is not None:
            self.send_times.append(time.monotonic())
        if 1 < self.reads <= self.pre_buffer + 1:
            return  # the start stall: the pre-buffer fills, then goes out at once
        if self.buffered:
            while len(held) >= self.buffered:
                self._write(bytes(held[: self.buffered]))
                del held[: self.buffered]
            return
        data = bytes(held)
        held.clear()
        self._write(data)

    def _write(self, data: bytes) -> None:
        """write(2) as the recording thread does it, but never blocking the simulator: what a
        full pipe does not take waits for the next tick (FreeSWITCH's thread would block and its
        buffer grow meanwhile); with no reader (EPIPE) the data is lost and the recording goes
        on ("Error writing"), so a reader that opens the FIFO again gets what follows."""
        buf = self._buffer
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        while data:
            try:
                n = os.write(self._fd, data)
            except BlockingIOError:
                buf += data
                return
            except BrokenPipeError:
                self.errors += 1
                log.debug("simulator: Error writing %s", self.path)
                return
            except OSError as exc:
                self.errors += 1
                log.debug("simulator: Error writing %s: %s", self.path, exc)
                return
            self.written += n
            data = data[n:]

    def drain(self) -> None:
        """A tick with nothing new: what a full pipe did not take, tried again."""
        if self._buffer:
            self._write(b"")

    # -- close ---------------------------------------------------------------------------------
    def close(self) -> None:
        """The bug's close: what it holds is written (as far as the file takes it without
        waiting), the file closed (a FIFO's reader sees EOF), and a file nothing was written to
        removed ("Discarding empty file"). Idempotent."""
        if self._fd < 0:
            return
        if self._held:
            data = bytes(self._held)
            self._held.clear()
            self._write(data)
        if self._buffer:
            self._write(b"")
        os.close(self._fd)
        self._fd = -1
        if not self.frames:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    @property
    def open(self) -> bool:
        return self._fd >= 0


def _resample(frame: bytes, src: int, dst: int, channels: int) -> bytes:
    """The core's resampler when record_sample_rate differs from the channel's (linear here)."""
    if channels == 1:
        return resample_linear(array("h", frame), src, dst).tobytes()
    both = array("h", frame)
    left = resample_linear(both[0::2], src, dst)
    right = resample_linear(both[1::2], src, dst)
    out = array("h", bytes(4 * len(left)))
    out[0::2], out[1::2] = left, right
    return out.tobytes()


# -- the api command's work -------------------------------------------------------------------
#: Channel variables a recording takes as its own metadata and clears from the channel, whether
#: the value came from the recording variables or from the channel (switch_ivr_async.c).
_CONSUMED = ("RECORD_TITLE", "RECORD_COPYRIGHT", "RECORD_SOFTWARE", "RECORD_ARTIST",
             "RECORD_COMMENT", "RECORD_DATE")


def _lookup(ch: SimChannel, variables: dict[str, str]) -> Callable[[str], str | None]:
    """get_recording_var: the recording's own variables first, else the channel's (both by
    name, whatever the case)."""
    own = {k.lower(): v for k, v in variables.items()}
    chan = {k.lower(): v for k, v in ch.variables.items()}

    def get(name: str) -> str | None:
        low = name.lower()
        return own[low] if low in own else chan.get(low)

    return get


def start(sw: Switch, ch: SimChannel, path: str, var_block: str) -> bool:
    """`uuid_record <uuid> start <path> <limit> {vars}`; False: -ERR Cannot record session!"""
    try:
        variables, _ = take_var_blocks(unquote(var_block.strip())) if var_block else ({}, "")
    except DialError:
        variables = {}
    get = _lookup(ch, variables)
    if path in ch.recordings:
        if switch_true(get("RECORD_TOGGLE_ON_REPEAT")):
            return stop(sw, ch, path)
        log.warning("simulator: %s Already recording [%s]", ch.name, path)
        return True
    ext = os.path.splitext(path)[1].lower()
    if ext not in RAW_L16:
        log.error("simulator: recording to %r not simulated (only %s, raw L16)", path,
                  "/".join(RAW_L16))
        return False
    read = write = True
    if switch_true(get("RECORD_WRITE_ONLY")):
        read, write = False, True
    if switch_true(get("RECORD_READ_ONLY")):
        read, write = True, False
    stereo = swap = False
    if switch_true(get("RECORD_STEREO")):
        stereo, swap = True, False
    if switch_true(get("RECORD_STEREO_SWAP")):
        stereo, swap = True, True
    rate = atoi(get("record_sample_rate") or "0")
    rate = rate if rate in VALID_RATES else ch.rate
    value = get("enable_file_write_buffering")
    if value is None:
        buffered = FILE_BUFFER_LEN
    else:
        buffered = atoi(value)
        buffered = buffered if buffered > 0 else FILE_BUFFER_LEN if switch_true(value) else 0
    value = get("RECORD_PRE_BUFFER_FRAMES")  # set but not > 0: no pre-buffer at all
    pre_buffer = PRE_BUFFER_FRAMES if value is None else max(atoi(value), 0)
    rec = SimRecording(path, rate=rate, channel_rate=ch.rate, read=read, write=write,
                       stereo=stereo, swap=swap, buffered=buffered, seq=0,
                       pre_buffer=pre_buffer)
    try:
        rec.open_blocking()  # FreeSWITCH's open waits for a FIFO's reader
    except OSError as exc:
        log.error("simulator: %s Error opening %s: %s", ch.name, path, exc)
        return False
    if not ch.up or path in ch.recordings:  # hung up (or recorded) while the open waited
        rec.frames = 1  # not "empty": nothing is removed
        rec.close()
        return False
    for name in _CONSUMED:
        if get(name) is not None:
            for key in [k for k in ch.variables if k.lower() == name.lower()]:
                del ch.variables[key]
    ch.bug_seq += 1  # media-bug order: a displace attached later is not in it
    rec.seq = ch.bug_seq
    if ch.send_times is not None:  # the bench's latency reference
        rec.send_times = array("d")
    ch.recordings[path] = rec
    sw.chan_event(ch, "RECORD_START", (("Record-File-Path", path),))
    return True


def stop(sw: Switch, ch: SimChannel, path: str) -> bool:
    """`uuid_record <uuid> stop <path>|all`; False: nothing of that name was recording."""
    if path.lower() == "all":
        recs = list(ch.recordings.values())
        for rec in recs:
            _close(sw, ch, rec, "success-maxtime")
        return bool(recs)
    rec = ch.recordings.get(path)
    if rec is None:
        return False
    _close(sw, ch, rec, "success-maxtime")
    return True


def close_all(sw: Switch, ch: SimChannel) -> None:
    """Hang-up: every recording of the channel ends with it (its reader sees EOF)."""
    for rec in list(ch.recordings.values()):
        _close(sw, ch, rec, "success-silence")


def drain_all(ch: SimChannel) -> None:
    """A tick: what a full pipe did not take is tried again (recordings in a state that reads
    no frame too)."""
    for rec in ch.recordings.values():
        rec.drain()


def _close(sw: Switch, ch: SimChannel, rec: SimRecording, cause: str) -> None:
    """The bug's close: the file closed, then what send_record_stop_event sets and fires."""
    ch.recordings.pop(rec.path, None)
    rec.close()
    if rec.errors:
        cause = "uri-failure"
    rate = ch.rate
    ch.variables["record_samples"] = str(rec.samples_out)
    ch.variables["record_seconds"] = str(rec.samples_out // rate)
    ch.variables["record_ms"] = str(rec.samples_out // (rate // 1000))
    ch.variables["record_completion_cause"] = cause
    sw.chan_event(ch, "RECORD_STOP", (("Record-File-Path", rec.path),
                                      ("Record-Completion-Cause", cause)))
