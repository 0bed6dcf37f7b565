"""Which source a stream's audio comes from, and making it: the one place that knows all three.

`call/sources.py` is the interface the three implement; this module picks one (`choose`), says
how the pipeline pairs its two directions (`pairing`) and builds it (`make_source`), so the
stream itself never names a source class.
"""

from __future__ import annotations

from collections.abc import Callable

from ..media.files import CallFiles
from .direct import DirectSource
from .pipeline import FramePipeline
from .record_source import RecordSource
from .sources import Source, SourceEnv
from .tap_source import TapSource

#: How the pipeline pairs read and write frames for stereo/mixed, per source.
_PAIRING = {"direct": "clock", "record": "interleaved", "taps": "taps"}


def choose(setting: str, parked: bool) -> str:
    """The cheapest source that works: `direct` on a parked call (one unicast it already
    sends; the caller hears only what the daemon plays, which the clock pairing puts on the
    right), `record` on any other (one recording into a FIFO); STREAM_SOURCE overrides. Taps
    are nobody's default."""
    if setting != "auto":
        return setting
    return "direct" if parked else "record"


def pairing(source: str, mix: str) -> str:
    """The pipeline's pairing for this source and mix ("none" for mono)."""
    return "none" if mix == "mono" else _PAIRING[source]


def make_source(source: str, env: SourceEnv, pipeline: FramePipeline, mix: str,
                files: Callable[[], CallFiles], on_moved: Callable[[], None]) -> Source:
    """The source named; `files` is called only for a recording (its FIFO's directory)."""
    if source == "direct":
        return DirectSource(env, pipeline, on_moved=on_moved)
    if source == "record":
        return RecordSource(env, pipeline, mix, files(), on_moved=on_moved)
    return TapSource(env, pipeline, mix, on_moved=on_moved)
