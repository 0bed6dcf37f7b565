"""The `record` source: FreeSWITCH records the call into a FIFO the daemon reads
(call/recording.py) -- any call, parked, bridged or in an application, with one media bug and no
extra channel.

Mono is the read side alone; stereo and mixed are one stereo recording (left what the call
reads, right what it writes), which FreeSWITCH already keeps aligned: the pipeline only
de-interleaves (call/pipeline.py, pairing `interleaved`). The recording's frames pace displace
playback, whose audio the daemon adds to the right side itself (a displace started after the
recording's media bug is not in it: facts file), unless FreeSWITCH already has it there (one
that was playing when the recording started). Inject on a parked call goes through the call's
own unicast (`WriteBackPort`, as with taps), whose audio FreeSWITCH puts in the recording.

The recording is stopped (and its FIFO removed) on pause -- once what plays through it has
played -- and on stop; made again on resume, and when it ends while the call goes on (someone
stopped it); left running for the next process at a hand-over, and re-attached by it.

A mono recording of a call with one stream may be read by a native pump (native/pump.py,
`carry_natively`): each recording's FifoReader is handed to it as it is made; the pump lets go of
a reader before it discards, stops or closes, and is closed with the source (or retired when a
second stream joins).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent

from ..native.pump import Pump, carrier
from .bug_playback import BugPlayback
from .recording import Recording, RecordingError, generation, record_rate
from .sources import SourceEnv, SourceError

if TYPE_CHECKING:
    from ..app.resume import StreamRecord
    from ..media.files import CallFiles
    from .link import Link
    from .pipeline import FramePipeline

log = logging.getLogger(__name__)


class RecordSource(BugPlayback):
    """A recording of the call into a FIFO: the read side for mono, stereo otherwise."""

    kind = "record"
    _moved_after_pause = True  # a new FIFO name when it is made again

    def __init__(self, env: SourceEnv, pipeline: FramePipeline, mix: str, files: CallFiles,
                 on_moved: Callable[[], None] = lambda: None) -> None:
        self.env = env
        self.pipeline = pipeline
        self.files = files
        self._on_moved = on_moved  # the FIFO or ports changed: the stream's record says it again
        self.channels = 1 if mix == "mono" else 2
        self.rate = record_rate(pipeline.channel_rate, pipeline.stream_rate)
        self.recording: Recording | None = None
        self.gen = 0  # recordings made so far: each has a FIFO of its own name
        self.restarts = 0  # recordings made again after one ended while the call went on
        self.reattached = False  # carried on a previous process's recording as it was
        self._pump: Pump | None = None
        self._init_playback()

    @property
    def path(self) -> str:
        rec = self.recording
        return rec.path if rec is not None else ""

    # -- a native pump ------------------------------------------------------------------------

    def carry_natively(self, pipeline: FramePipeline, link: Link) -> None:
        """A native pump may carry the steady state of the call's one stream (`pipeline`, the
        one the fan-out feeds directly: native/pump.py) from a mono recording, where the
        extension was built and the recording's frames are all of one size."""
        if self.channels != 1 or self._pump is not None:
            return
        self._pump = carrier(pipeline, link, fifo_rate=self.rate)
        self._carry(self.recording)

    def _carry(self, rec: Recording | None) -> None:
        """The pump may read `rec`'s FIFO (each recording made hands its reader over)."""
        pump = self._pump
        if pump is not None and rec is not None and rec.reader is not None:
            pump.attach(rec.reader)

    def retire_native(self) -> None:
        """Another stream joined the call: its frames go through the fan-out (Python) from
        now on, for every stream of the call."""
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.retire()

    def _let_pump_go(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.close()

    # -- the recording ------------------------------------------------------------------------

    def open(self) -> None:
        """Record the call (before the WebSocket connects: nothing plays before the recording's
        media bug is attached) and wait for its first bytes. Raises SourceError."""
        self.pipeline.channel_rate = self.rate
        self._record()

    def _new(self) -> Recording:
        return Recording(self.env.esl, self.files, self.env.uuid, rate=self.rate,
                         channels=self.channels, take=self.pipeline.feed,
                         failed=self.env.failed, on_eof=self._ended)

    def _record(self) -> None:
        self.gen += 1
        rec = self._new()
        try:
            rec.start(self.gen, self.env.first_audio_timeout)
        except RecordingError as exc:
            raise SourceError(str(exc)) from None
        self.recording = rec
        self._carry(rec)
        self._line_up_playback()

    def _line_up_playback(self) -> None:
        player = self._player
        self._in_bug.clear()
        if player is not None and player.displacing is not None:
            self._in_bug.add(player.displacing)  # started before this recording: in it

    def _halt(self) -> None:
        self._stop_recording()

    def _stop_recording(self) -> None:
        rec, self.recording = self.recording, None
        if rec is not None:
            rec.stop(hung_up=self.env.gone())

    def start(self) -> None:
        """The recording is read from the moment it starts (open): its first frames wait in the
        link's backlog until the WebSocket connects, after the metadata."""

    def adopt(self, record: StreamRecord) -> None:
        """Carry on the recording a previous process started: FreeSWITCH still records into its
        FIFO (writes fail while nobody reads, and go through again once it is open). Where the
        FIFO is gone or gives nothing within a probe, that recording is stopped and a new one
        made (never two). Raises SourceError."""
        env = self.env
        if record.fifo_rate:
            self.rate = record.fifo_rate
        self.pipeline.channel_rate = self.rate
        self.gen = generation(record.fifo)
        if record.fifo:
            rec = self._new()
            if rec.reattach(record.fifo, env.probe):
                self.recording = rec
                self.reattached = True
                self._carry(rec)
            else:
                log.warning("%s: no audio from the recording into %s: recording again",
                            env.uuid, record.fifo)
                rec.stop(hung_up=env.gone())  # FreeSWITCH told to stop that one; FIFO removed
        self._adopt_write_back(record)
        if self.recording is None and not record.paused:
            self._record()

    def describe(self) -> dict:
        fs_port, udp_port = self._write_back_ports()
        return {"fifo": self.path, "fifo_rate": self.rate, "fs_port": fs_port,
                "udp_port": udp_port}

    # -- pause, resume, a recording ended ---------------------------------------------------

    def resume(self) -> None:
        """A new recording (the stream's resume waits for its first bytes). Raises
        SourceError."""
        if self._resuming() and self.recording is None:
            self._record()
            self._on_moved()

    def on_call_event(self, name: str) -> None:
        pass

    def tap_gone(self, tap_uuid: str) -> None:
        pass

    def _ended(self, rec: Recording) -> None:
        """EOF that nobody here asked for (from the event loop: no waiting): the call hung up
        (the stream stops on its hang-up event) or someone stopped the recording while the
        call goes on -- then it is made again."""
        if self._closing or rec is not self.recording or self._job is not None:
            return
        self._job = gevent.spawn(self._record_again, rec)

    def _record_again(self, rec: Recording) -> None:
        env = self.env
        try:
            gevent.sleep(0.2)  # a hang-up of the call itself is seen first: then we stop
            if self._closing or env.gone() or rec is not self.recording:
                return
            env.error(f"the recording into {rec.path} ended while the call goes on: recording "
                      "again")
            self.recording = None
            rec.stop(hung_up=True)  # it ended: only the FIFO to remove
            if self._paused:
                return
            try:
                self._record()
            except SourceError as exc:
                env.error(str(exc))
                env.failed(exc)
                return
            self.restarts += 1
            if self._closing:
                self._stop_recording()
            else:
                self._on_moved()
        finally:
            self._job = None

    # -- the end ----------------------------------------------------------------------------

    def stop_reading(self) -> None:
        """No more frames to the pipeline; the FIFO is still read (FreeSWITCH must never block
        on it) until close() stops the recording."""
        if self.recording is not None:
            self.recording.discard()
        if self._write_back is not None:
            self._write_back.stop_reading()

    def hand_over(self) -> None:
        """Leave FreeSWITCH recording into the FIFO for the next process: the read end closed
        here, nothing asked of FreeSWITCH."""
        self._end_job(wait=False)
        rec, self.recording = self.recording, None
        if rec is not None:
            rec.hand_over()
        self._let_pump_go()
        self._release_write_back(None)

    def close(self, hung_up: bool) -> None:
        """Stop the recording, remove its FIFO and release everything. A background job is let
        finish (it sees the close and stops what it made) rather than killed in the middle of
        an api call whose recording would then be nobody's."""
        self._end_job(wait=True)
        rec, self.recording = self.recording, None
        if rec is not None:
            rec.stop(hung_up=hung_up)
        self._let_pump_go()
        self._release_write_back(hung_up)
