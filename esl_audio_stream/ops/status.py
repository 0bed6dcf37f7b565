"""What the status table says about each live stream: one row per stream, as JSON and as text.

Shared by `GET /streams` (and so `esl-audio-stream status`) and the status page's feed. Pure: it
reads the counters streams already keep and is handed the clock. The level meter is computed
here, a few times a second per stream, from the last frame the stream holds, so the per-frame
path does nothing for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..media.pcm import audioop

if TYPE_CHECKING:
    from ..call.stream import Stream

#: The table's columns, in order (`esl-audio-stream status`, the status page).
COLUMNS = ("uuid", "url", "mix", "rate", "state", "seconds", "frames", "dropped", "reconnects")

#: Quietest level the meter shows, in dBFS; anything below (and silence) reads as this.
FLOOR_DB = -90.0


def level_db(frame: bytes) -> float:
    """RMS level of an L16 frame in dBFS (full-scale sine: -3 dB), floored at FLOOR_DB."""
    if len(frame) < 2:
        return FLOOR_DB
    rms = audioop.rms(frame[: len(frame) & ~1], 2)
    if rms <= 0:
        return FLOOR_DB
    return max(FLOOR_DB, round(20 * math.log10(rms / 32768), 1))


def row(stream: Stream, now: float, *, level: bool = False,
        seen: dict[str, int] | None = None) -> dict[str, Any]:
    """One stream's row. With `level`, its audio level now (`seen` maps the stream (uuid, or
    uuid@name) -> frames_in at the previous look: one that received nothing since reads as
    silent)."""
    r: dict[str, Any] = {
        "uuid": stream.uuid,
        "name": stream.name,  # on its call ("": the unnamed one)
        "url": stream.url,
        "mix": stream.mix,
        "rate": stream.rate,
        "state": stream.state,
        "seconds": round(max(0.0, now - stream.started_at), 1),
        "frames": stream.frames_in,
        "dropped": stream.dropped_total,
        "reconnects": stream.reconnects,
        # more than the table shows
        "paused": stream.paused,
        "frames_in": stream.frames_in,
        "frames_out": stream.frames_out,
        "bytes_out": stream.bytes_out,
        "playback_seconds": round(stream.playback_queued_seconds, 2),
        "source": stream.source,
        "taps": stream.tap_uuids,
        "recording": stream.recording,
        "tap_frames_skipped": stream.tap_frames_skipped,
        "port_retries": stream.port_retries,
    }
    if level:
        key = _key(r)
        moved = seen is None or seen.get(key) != stream.frames_in
        fresh = moved and r["state"] == "streaming"
        r["level_db"] = level_db(stream.last_frame) if fresh else FLOOR_DB
        if seen is not None:
            seen[key] = stream.frames_in
    return r


def rows(streams: Iterable[Stream], now: float, *, level: bool = False,
         seen: dict[str, int] | None = None) -> list[dict[str, Any]]:
    out = [row(s, now, level=level, seen=seen) for s in streams]
    if seen is not None:  # forget streams that are gone
        live = {_key(r) for r in out}
        for uuid in [u for u in seen if u not in live]:
            del seen[uuid]
    return out


def _key(r: Mapping[str, Any]) -> str:
    """A stream among the streams of every call: its call, and its name there."""
    return f"{r['uuid']}@{r['name']}" if r["name"] else r["uuid"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_table(table: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """A plain-text table, columns aligned; numbers to the right. The rows of a daemon with
    workers (ops/fleet.py) say which worker carries each stream: a last column."""
    if not table:
        return "no live streams\n"
    if "worker" in table[0] and "worker" not in columns:
        columns = (*columns, "worker")
    cells = [[_key(r) if c == "uuid" and r.get("name") else _cell(r.get(c, ""))
              for c in columns] for r in table]  # a named stream: uuid@name
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), int | float) for r in table) for c in columns]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w)
                 for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [fmt([c.upper() for c in columns]), *(fmt(line) for line in cells)]
    return "\n".join(lines) + "\n"
