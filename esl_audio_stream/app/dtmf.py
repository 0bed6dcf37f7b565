"""The keys a caller presses, from FreeSWITCH's DTMF events to the stream of their call.

FreeSWITCH fires one `DTMF` event per digit on the channel that got it (facts file:
`uuid_recv_dtmf` on the call itself, `DTMF-Source: APP`; a loopback partner's
`uuid_send_dtmf`, `UNKNOWN`; RTP and in-band detection on real calls). `DTMF-Duration` is in
samples of the 8 kHz telephone-event clock (2000 = 250 ms), whatever the call's rate.

Which listener a digit is for: the call that reported it, or, for a loopback tap channel, the
call the tap feeds (the digit belongs to the target call) -- the daemon hands the router each
call's `CallAudio` (call/call_audio.py), which passes the press on to each stream of the call.
A digit may be reported more than once for one press -- by the call and one of its taps, or by
two detectors (RFC 2833 and in-band) -- so a digit equal to the last one, from another reporter,
before the last one's duration has run out (plus a little), is the same press and is dropped.
Presses from one reporter are never merged: `55` is two fives. Digits are passed on in the
order the ESL connection delivers them, at once. Pure but for the listener it hands each to.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .settings import atoi

#: What FreeSWITCH reports: 0-9, *, #, A-D.
DIGITS = frozenset("0123456789*#ABCD")
#: FreeSWITCH's durations are samples at 8 kHz.
SAMPLES_PER_MS = 8
#: A second report of a press may come this much after its duration has run out.
SAME_PRESS_SLACK = 0.1


class KeyListener(Protocol):
    """A stream, as the router sees it."""

    def on_dtmf(self, digit: str, duration_ms: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Keypress:
    digit: str
    duration_ms: int
    reporter: tuple[str, str]  # (channel uuid, DTMF-Source)


def keypress(headers: Mapping[str, str]) -> Keypress | None:
    """The key in a DTMF event's headers; None when it names none FreeSWITCH sends."""
    digit = (headers.get("DTMF-Digit") or "").upper()
    if len(digit) != 1 or digit not in DIGITS:
        return None
    samples = atoi(headers.get("DTMF-Duration") or "0")
    return Keypress(digit, max(0, samples) // SAMPLES_PER_MS,
                    (headers.get("Unique-ID", ""), headers.get("DTMF-Source", "")))


class _Last:
    __slots__ = ("at", "press")

    def __init__(self, press: Keypress, at: float) -> None:
        self.press = press
        self.at = at


class KeyRouter:
    """Hands each press to its stream once (see the module docstring)."""

    def __init__(self) -> None:
        self._last: weakref.WeakKeyDictionary[KeyListener, _Last] = weakref.WeakKeyDictionary()
        self.duplicates = 0  # reports of a press already passed on

    def route(self, headers: Mapping[str, str], streams: Mapping[str, KeyListener],
              tap_owners: Mapping[str, object], now: float) -> KeyListener | None:
        """One DTMF event; the stream it went to (None: no stream's, or the same press)."""
        press = keypress(headers)
        if press is None:
            return None
        channel = press.reporter[0]
        stream = streams.get(channel)
        if stream is None:
            owner = tap_owners.get(channel)
            if owner is None or not hasattr(owner, "on_dtmf"):
                return None
            stream = owner  # type: ignore[assignment]
        if not self.accept(stream, press, now):
            self.duplicates += 1
            return None
        stream.on_dtmf(press.digit, press.duration_ms)
        return stream

    def accept(self, stream: KeyListener, press: Keypress, now: float) -> bool:
        """False when `press` is another report of the last press passed to `stream`."""
        last = self._last.get(stream)
        if (last is not None and last.press.digit == press.digit
                and last.press.reporter != press.reporter
                and now - last.at < last.press.duration_ms / 1000 + SAME_PRESS_SLACK):
            return False
        self._last[stream] = _Last(press, now)
        return True
