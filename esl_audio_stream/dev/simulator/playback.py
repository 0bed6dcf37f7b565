"""Playback on a channel: `&playback()` and inline playback (an application), broadcasts into
the park loop, and `uuid_break`. A playback is a duration counted in ticks and its events
(CHANNEL_EXECUTE, PLAYBACK_START, then PLAYBACK_STOP and CHANNEL_EXECUTE_COMPLETE); its audio
is not heard anywhere (see README). The channel's thread (park.py) ends it when its tick comes.
"""

from __future__ import annotations

from ...app.settings import atoi
from .channel import APP, PARK_PLAYBACK, SimChannel
from .media import wav_duration
from .switch import Switch
from .ticker import TICK


def playback_seconds(path: str) -> float | None:
    """How long a simulated playback lasts; None = until stopped."""
    if path.startswith("silence_stream://"):
        ms = atoi(path[len("silence_stream://"):].split(",")[0])
        return None if ms <= 0 else ms / 1000.0
    if path.startswith("tone_stream://"):
        return None
    d = wav_duration(path)
    return d if d is not None else 1.0


def start(sw: Switch, ch: SimChannel, path: str, mode: str) -> None:
    """The channel's thread plays `path` from now on, as an application (APP) or inside the park
    loop (PARK_PLAYBACK)."""
    ch.mode = mode
    ch.play_path = path
    ch.play_status = "done"
    secs = playback_seconds(path)
    ch.play_end = -1 if secs is None else sw.ticker.tick_no + max(1, round(secs / TICK))
    sw.chan_event(ch, "CHANNEL_EXECUTE", (("Application", "playback"),
                                          ("Application-Data", path)))
    sw.chan_event(ch, "PLAYBACK_START", (("Playback-File-Path", path),))


def end(sw: Switch, ch: SimChannel, status: str) -> None:
    """The playback's end events; `status` is `done`, or `break` (uuid_break, hang-up,
    transfer)."""
    path = ch.play_path
    ch.play_path = ""
    sw.chan_event(ch, "PLAYBACK_STOP", (("Playback-File-Path", path),
                                        ("Playback-Status", status)))
    sw.chan_event(ch, "CHANNEL_EXECUTE_COMPLETE", (("Application", "playback"),
                                                   ("Application-Data", path),
                                                   ("Application-Response", "FILE PLAYED")))


def due(sw: Switch, ch: SimChannel) -> bool:
    """Has the playback running reached its end (or a break) this tick?"""
    return ch.play_end >= 0 and sw.ticker.tick_no >= ch.play_end


def break_playback(sw: Switch, ch: SimChannel, flush: bool) -> None:
    """CF_BREAK: the playback running (a broadcast in park, or an application's) stops at
    the channel's next frame, as if it had reached its end, with status `break`."""
    if flush:
        ch.private.clear()
    if ch.play_path and ch.mode in (PARK_PLAYBACK, APP):
        ch.play_end = sw.ticker.tick_no + 1
        ch.play_status = "break"
        sw.active[ch.uuid] = ch


def broadcast(sw: Switch, ch: SimChannel, path: str) -> None:
    """uuid_broadcast: queued to the channel; its park loop starts it when it parses messages
    (an A leg's thread is woken for it)."""
    ch.private.append(("broadcast", path))
    if ch.uuid not in sw.active and ch.leg == "a":
        sw.active[ch.uuid] = ch
