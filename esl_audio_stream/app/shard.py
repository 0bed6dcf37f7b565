"""Which worker owns a call (`run --workers N`): its shard, and what follows from it.

A call belongs to worker `shard_of(uuid, N)`: the value of its uuid's last two hex digits modulo
N (a v4 uuid's last digits are random, so the calls spread evenly; anything else -- a uuid that
does not end in two hex digits -- goes to worker 0). Not Python's hash(), which changes from one
process to the next, and not a hash of the whole uuid either: because the shard is read off the
uuid's tail, FreeSWITCH itself can apply it, as a regular expression in an ESL `filter`
(`filters`). Each worker's connection then carries only its own calls' events, set once per
connection: no `filter` command per call, no window in which a new call's first events go
unseen, nothing to re-apply per call after a reconnect.

The rest of what a worker does differently follows from its `Shard`:

- its ESL filters: its calls (`Unique-ID`), the tap channels it makes for them (they carry the
  call's uuid in `esl_audio_stream_tap_of`), BACKGROUND_JOB; worker 0 also what intake needs --
  the command event, and every call's CHANNEL_PARK and CHANNEL_DESTROY for auto-start;
- its share of the FreeSWITCH-side port range (`ShardPorts`): N workers never hand out the same
  port. A stream carried on from a run with another N may hold a port of another slice: it is
  claimed all the same (FreeSWITCH holds it bound, so the slice's own worker, which probes each
  port before it hands it out, skips it);
- the call directories of the other workers' calls, which its clean-ups leave alone (`foreign`).

Pure but for `foreign`, which lists a directory. `WHOLE` is the one daemon of `run` without
workers: it owns every call and filters nothing, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..call.taps import TAP_OF_VAR
from ..media.unicast import PortPool
from .intake import COMMAND_SUBCLASS

_HEX = "0123456789abcdef"
#: Channel events worker 0 takes for every call: auto-start on park, forgotten on destroy.
INTAKE_EVENTS = ("CHANNEL_PARK", "CHANNEL_DESTROY")


def shard_of(uuid: str, count: int) -> int:
    """The worker (0..count-1) that owns the call `uuid`."""
    if count <= 1:
        return 0
    tail = uuid[-2:].lower()
    if len(tail) != 2 or tail[0] not in _HEX or tail[1] not in _HEX:
        return 0
    return int(tail, 16) % count


def _both(chars: str) -> str:
    return "".join(dict.fromkeys(chars + chars.upper()))


def uuid_regex(index: int, count: int) -> str:
    """A regular expression (PCRE and Python alike) that finds exactly the uuids of shard
    `index`: what `shard_of` computes, as alternatives on the last two characters."""
    parts = []
    for first in _HEX:
        seconds = "".join(s for s in _HEX if int(first + s, 16) % count == index)
        if seconds:
            parts.append(f"[{_both(first)}][{_both(seconds)}]")
    if index == 0:  # no two hex digits at the end: worker 0's
        parts.append("^.?|[^0-9a-fA-F].?")
    return "(?:" + "|".join(parts) + ")$"


@dataclass(frozen=True, slots=True)
class Shard:
    """Worker `index` of `count` (see the module docstring)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def intake(self) -> bool:
        """This worker runs the commands FreeSWITCH sends (command events, auto-start)."""
        return self.index == 0

    def owns(self, uuid: str) -> bool:
        return shard_of(uuid, self.count) == self.index

    def owner(self, uuid: str) -> int:
        return shard_of(uuid, self.count)

    def filters(self) -> list[tuple[str, str]]:
        """The ESL `filter <header> <value>` pairs of this worker's connection (none: every
        event, the daemon without workers). FreeSWITCH sends an event that any of them
        matches."""
        if not self.sharded:
            return []
        calls = f"/{uuid_regex(self.index, self.count)}/"
        out = [("Unique-ID", calls), (f"variable_{TAP_OF_VAR}", calls),
               ("Event-Name", "BACKGROUND_JOB")]
        if self.intake:
            out += [("Event-Subclass", COMMAND_SUBCLASS),
                    *(("Event-Name", name) for name in INTAKE_EVENTS)]
        return out

    def expected(self, name: str, uuid: str, subclass: str | None) -> bool:
        """Whether an event belongs on this worker's connection (one that does not shows the
        filters are not applied: counted, see Daemon.resources)."""
        if not uuid or self.owns(uuid):
            return True
        return self.intake and (name in INTAKE_EVENTS or subclass == COMMAND_SUBCLASS)

    def port_slice(self, low: int, high: int) -> tuple[int, int]:
        """This worker's part of the port range low..high (an equal share; the last takes what
        does not divide)."""
        span = (high - low + 1) // self.count
        if span < 1:
            raise ValueError(f"media ports {low}-{high}: fewer than one per worker "
                             f"({self.count} workers)")
        first = low + self.index * span
        return first, high if self.index == self.count - 1 else first + span - 1

    def ports(self, low: int, high: int, probe_host: str | None) -> PortPool:
        if not self.sharded:
            return PortPool(low, high, probe_host=probe_host)
        return ShardPorts(low, high, self.port_slice(low, high), probe_host=probe_host)

    def foreign(self, files_dir: str) -> set[str]:
        """The call directories in `files_dir` of other workers' calls (left alone)."""
        if not self.sharded:
            return set()
        try:
            names = os.listdir(files_dir)
        except OSError:
            return set()
        return {name for name in names if not self.owns(name)}


WHOLE = Shard()


class ShardPorts(PortPool):
    """A worker's slice of the port range to hand out, and any port of the whole range to
    claim (a stream carried on from a run with another number of workers)."""

    def __init__(self, low: int, high: int, part: tuple[int, int],
                 probe_host: str | None = None) -> None:
        super().__init__(part[0], part[1], probe_host=probe_host)
        self._whole = range(low, high + 1)
        self._part = range(part[0], part[1] + 1)
        self._strays: set[int] = set()  # claimed ports of another slice

    def claim(self, port: int) -> bool:
        if port in self._part:
            return super().claim(port)
        if port not in self._whole or port in self._strays:
            return False
        self._strays.add(port)
        return True

    def give(self, port: int) -> None:
        if port in self._strays:
            self._strays.discard(port)  # back to its own slice's worker, not to this line
        else:
            super().give(port)

    def hold(self, port: int) -> None:
        if port in self._strays:
            self._strays.discard(port)
        else:
            super().hold(port)

    @property
    def in_use(self) -> int:
        return super().in_use + len(self._strays)
