"""DTMF as FreeSWITCH reports it (facts file, observed on loopback calls).

- `uuid_recv_dtmf <uuid> <digits>`: the digits are queued on that channel as if received;
  one `DTMF` event per digit, the first on the next 20 ms tick and each next one a tick later,
  on that channel only (parked or bridged), `DTMF-Source: APP`.
- `uuid_send_dtmf <uuid> <digits>`: the channel sends them; on a loopback pair its partner
  receives them: one `DTMF` event per digit on the partner, a tick apart, `DTMF-Source:
  UNKNOWN`, none on the sender.
- `DTMF-Duration` is in samples at 8 kHz: 2000 (250 ms) unless `<digits>@<ms>` asks otherwise.
  The events carry the channel's data headers (no variables: DTMF is not a verbose event).
  Digits are 0-9, *, #, A-D (a-d taken as A-D); anything else in the string is skipped, but
  `w`/`W` in what is sent wait 500 ms / 1 s, as switch_core_session_send_dtmf_string does.
The audio goes on meanwhile (the events come from timers, not from the channel's own loop).
"""

from __future__ import annotations

from ...app.settings import atoi
from .channel import SimChannel
from .switch import Switch

DEFAULT_DURATION = 2000  # samples (switch_core_default_dtmf_duration)
_DIGITS = frozenset("0123456789*#ABCD")
_PAUSE_TICKS = {"w": 25, "W": 50}


def _parse(data: str) -> tuple[str, int]:
    """`digits[@ms]` -> (digits as given, duration in samples)."""
    digits, _, ms = data.partition("@")
    duration = atoi(ms) * 8 if ms else DEFAULT_DURATION
    return digits, duration if duration > 0 else DEFAULT_DURATION


def receive(sw: Switch, ch: SimChannel, data: str, source: str = "APP") -> None:
    """`data` arrives at `ch`: a DTMF event per digit, a tick apart from the next tick on."""
    digits, duration = _parse(data)
    tick = 1
    for c in digits:
        if c in _PAUSE_TICKS and source != "APP":
            tick += _PAUSE_TICKS[c]
            continue
        digit = c.upper()
        if digit not in _DIGITS:
            continue
        sw.ticker.after(tick, lambda d=digit: _fire(sw, ch, d, duration, source))
        tick += 1


def send(sw: Switch, ch: SimChannel, data: str) -> None:
    """`ch` sends `data`: its loopback partner receives it."""
    other = ch.other
    if other is not None and other.up:
        receive(sw, other, data, source="UNKNOWN")


def _fire(sw: Switch, ch: SimChannel, digit: str, duration: int, source: str) -> None:
    if not ch.up:
        return
    ev = sw.core.create("DTMF", func="switch_channel_dequeue_dtmf")
    ev.headers += ch.data_headers("DTMF")
    ev.add("DTMF-Digit", digit)
    ev.add("DTMF-Duration", str(duration))
    ev.add("DTMF-Source", source)
    sw.fire(ev)
