"""What a stream leaves on its call so that another daemon process can carry it on (crash-only).

The daemon is a process of its own: it can die alone (a bug, the OOM killer, `kill -9`, a
redeploy) while every call goes on. So everything needed to carry on a stream lives in
FreeSWITCH, not in the process:

- on the channel, one variable (`STATE_VAR`): each stream's `StreamRecord` -- name, url, mix,
  rate, metadata, protocol, source, the ports FreeSWITCH streams to and from, the tap channels,
  the FIFO it records into, the owner, the marks the endpoint still waits for. STREAM_*
  variables are not copied: they are on the channel already and are read again on resume. A
  record is base64url of compact JSON, because FreeSWITCH's argument splitting eats quotes and
  backslashes (switch_separate_string); a call with several streams keeps their records joined
  by `.` (in no base64url text), so a call with one stream keeps exactly one record, as before
  calls could carry several, and such a value is read as it always was (`decode_all`);
- among FreeSWITCH's global variables, one per stream (`index_var`: a daemon finds its streams
  with one `global_getvar`, not one command per channel) and one per owner (`alive_var`: when the
  owner last showed it was alive, so a stream left without a daemon for longer than the orphan
  timeout is ended rather than resumed into a stale endpoint).

The owner id names one daemon (the same one across its restarts); several daemons on one
FreeSWITCH (a worker per core) never take each other's streams. Pure: no ESL here, only what to
write and how to read it back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass, field, replace

#: The channel variable holding a stream's record.
STATE_VAR = "esl_audio_stream_resume"
VERSION = 1
_PREFIX = "esl_audio_stream::"
#: What an owner id may be made of: it goes into global variable names (no '=', no blank).
OWNER_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RecordError(ValueError):
    """A state variable that is not a record this daemon can carry on."""


@dataclass(frozen=True, slots=True)
class TapRecord:
    side: str  # read | write
    uuid: str  # the tap's A leg
    fs_port: int  # FreeSWITCH's local-port of its unicast
    udp_port: int  # the daemon's port it streams to


@dataclass(frozen=True, slots=True)
class StreamRecord:
    owner: str
    url: str
    mix: str
    rate: int
    metadata: str | None
    source: str  # direct | record | taps
    protocol: str = "mod_audio_stream"
    #: The call's own unicast (direct; or taps + inject's write-back port): FreeSWITCH's port
    #: and the daemon's; 0 when there is none.
    fs_port: int = 0
    udp_port: int = 0
    taps: tuple[TapRecord, ...] = ()
    paused: bool = False
    #: Marks the endpoint sent whose audio had not played: answered `cleared` on resume.
    marks: tuple[str, ...] = ()
    started: float = 0.0  # epoch seconds, when the stream first started
    #: The record source: the FIFO FreeSWITCH records the call into, and its rate.
    fifo: str = ""
    fifo_rate: int = 0
    extra: dict = field(default_factory=dict)  # room for what later protocols need
    #: The stream's name on its call ("": the unnamed one; mod_audio_fork's: its bugname).
    name: str = ""
    #: What the call's source (shared by its streams) was made for: mono or stereo ("": the
    #: stream's own mix, as before a call could carry several).
    source_mix: str = ""

    def encode(self) -> str:
        data = asdict(self)
        data["v"] = VERSION
        raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def with_(self, **changes: object) -> StreamRecord:
        return replace(self, **changes)


def decode(text: str) -> StreamRecord:
    """The record in a state variable's value; RecordError for anything else."""
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise RecordError("not a stream record") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise RecordError(f"not a version {VERSION} stream record")
    try:
        taps = tuple(TapRecord(str(t["side"]), str(t["uuid"]), int(t["fs_port"]),
                               int(t["udp_port"])) for t in data.get("taps", ()))
        record = StreamRecord(
            owner=str(data["owner"]), url=str(data["url"]), mix=str(data["mix"]),
            rate=int(data["rate"]),
            metadata=None if data.get("metadata") is None else str(data["metadata"]),
            source=str(data["source"]), protocol=str(data.get("protocol", "mod_audio_stream")),
            fs_port=int(data.get("fs_port", 0)), udp_port=int(data.get("udp_port", 0)),
            taps=taps, paused=bool(data.get("paused", False)),
            marks=tuple(str(m) for m in data.get("marks", ())),
            started=float(data.get("started", 0.0)),
            fifo=str(data.get("fifo", "")), fifo_rate=int(data.get("fifo_rate", 0)),
            extra=dict(data.get("extra") or {}), source_mix=str(data.get("source_mix", "")))
        record = replace(record, name=str(data["name"]) if "name" in data else _name_of(record))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"stream record without a usable {exc}") from None
    if (record.mix not in ("mono", "mixed", "stereo")
            or record.source not in ("direct", "record", "taps")):
        raise RecordError("stream record with an unknown mix or source")
    return record


def _name_of(record: StreamRecord) -> str:
    """The name of a stream whose record predates names: mod_audio_fork's bugname, else ""."""
    if record.protocol == "audio_fork":
        return str(record.extra.get("bugname") or "audio_fork")
    return ""


def default_name(protocol: str) -> str:
    """The name a stream of `protocol` has when its command names none: its events carry no
    name then (mod_audio_fork's default bugname; "" for uuid_audio_stream's)."""
    return "audio_fork" if protocol == "audio_fork" else ""


def encode_all(records: list[StreamRecord] | tuple[StreamRecord, ...]) -> str:
    """The records of one call's streams, as its state variable keeps them."""
    return ".".join(record.encode() for record in records)


def decode_all(text: str) -> list[StreamRecord]:
    """Every record in a state variable's value (one, from a daemon before several streams per
    call); RecordError when any is broken -- nothing is guessed."""
    return [decode(part) for part in text.strip().split(".")]


def index_var(owner: str, uuid: str) -> str:
    """The global variable that lists one stream of `owner` (its value: the call's uuid)."""
    return f"{_PREFIX}{owner}::{uuid}"


def alive_var(owner: str) -> str:
    """The global variable holding when `owner` last showed it was alive (epoch seconds)."""
    return f"{_PREFIX}{owner}::alive"


@dataclass(frozen=True, slots=True)
class Index:
    """What `global_getvar` (all of them) says of one owner: its streams, when it was alive,
    and FreeSWITCH's core UUID (a new one: FreeSWITCH restarted, every call is gone)."""

    uuids: tuple[str, ...]
    alive: float | None
    core_uuid: str


def read_index(dump: str, owner: str) -> Index:
    """Parse switch_core_dump_variables' `name=value` lines for `owner`."""
    head = f"{_PREFIX}{owner}::"
    uuids: list[str] = []
    alive = None
    core = ""
    for line in dump.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        if name == "core_uuid":
            core = value.strip()
        elif name.startswith(head):
            rest = name[len(head):]
            if rest == "alive":
                try:
                    alive = float(value)
                except ValueError:
                    alive = None
            elif rest:
                uuids.append(rest)
    return Index(tuple(uuids), alive, core)


def check_owner(owner: str) -> str:
    """An owner id as given in the configuration, or ValueError saying what is wrong."""
    if not OWNER_RE.fullmatch(owner):
        raise ValueError(f"owner id {owner!r}: 1-64 of A-Z a-z 0-9 . _ : - (it names "
                         "FreeSWITCH global variables)")
    return owner
