"""The configuration table: the daemon's keys, each declared once, in SETTINGS.

Why one table: every key used to be written six times (a dataclass field, a schema entry, a
default, its mapping to the field, the reload rule, the example) and the copies could drift. A
`Setting` says everything about one key -- where it is in the file, which DaemonConfig field it
sets, its type, check and default, whether it is secret or needs a restart, its flag and its line
in `config --example` -- and DaemonConfig, the environment names, the flags, the reload rule and
both renderings are read from the table. Adding a key is adding one entry.

Pure but for two look-ups, made when a value is checked or defaulted: playback.files_group's
group, playback.files_dir's temporary directory. The checks return a problem (a string) or None.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from .resume import OWNER_RE
from .settings import PLAYBACK_MODES, StreamSettings

ENV_PREFIX = "ESL_AUDIO_STREAM_"
#: Its keys are the STREAM_* channel variable names, checked by settings.defaults_from_mapping.
STREAM_DEFAULTS = "stream_defaults"
#: Per-stream memory is this times the stream's byte rate (up to 192 kB/s for 48 kHz stereo).
MAX_RECONNECT_BUFFER_SECONDS = 600.0
#: The control endpoint's port when control.listen gives none.
CONTROL_PORT = 8089


class ConfigError(ValueError):
    """One bad key (or combination): `key` is named as the operator wrote it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


# -- addresses -----------------------------------------------------------------------------------


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port and not port.isdigit():
        raise ValueError(f"bad port in {text!r}")
    return host, int(port) if port else default_port


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") can only be reached from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- checks: a value of the key's type -> a problem, or None -------------------------------------

Check = Callable[[Any], str | None]


def _between(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        if not low <= value <= high:
            return f"must be between {low:g} and {high:g}, got {value!r}"
        return None
    return check


def _above(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        if not low < value <= high:
            return f"must be above {low:g} and at most {high:g}, got {value!r}"
        return None
    return check


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _path(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return "contains a NUL byte" if "\x00" in value else None


def _ipv4(value: str) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return f"must be an IPv4 address (FreeSWITCH's unicast is IPv4 only), got {value!r}"
    return None


def _listen(value: str) -> str | None:
    try:
        _host, port = parse_hostport(value, CONTROL_PORT)
    except ValueError as exc:
        return f"expected HOST:PORT, {exc}"
    if not 0 <= port <= 65535:
        return f"expected HOST:PORT with a port from 0 to 65535, got {value!r}"
    return None


def _mode(value: str) -> str | None:
    if value.strip().lower() not in PLAYBACK_MODES:
        return f"{value!r} is not one of {', '.join(PLAYBACK_MODES)}"
    return None


def _group(value: str) -> str | None:
    """Empty (no group), or a group that exists here (a name or a number)."""
    if not value:
        return None
    import grp

    try:
        grp.getgrgid(int(value)) if value.isdigit() else grp.getgrnam(value)
    except (KeyError, OverflowError):
        return f"no such group {value!r}"
    return None


def _owner(value: str) -> str | None:
    """Empty (the default name), or what FreeSWITCH global variable names can carry."""
    if value and not OWNER_RE.fullmatch(value):
        return f"{value!r}: 1 to 64 of A-Z a-z 0-9 . _ : - (it names FreeSWITCH variables)"
    return None


#: The accountSid a Twilio-mode stream reports when none is configured: Twilio's shape (AC and
#: 32 hex digits), all zeros, so that no one takes it for a real account.
TWILIO_ACCOUNT_SID = "AC" + "0" * 32


def _account_sid(value: str) -> str | None:
    """Any short printable ASCII text (endpoints may check it against their own)."""
    if not value or len(value) > 64 or not value.isascii() or not value.isprintable():
        return f"1 to 64 printable ASCII characters, got {value!r}"
    return None


def _subprotocol(value: str) -> str | None:
    """An HTTP token: what a Sec-WebSocket-Protocol value may be."""
    if not value or not value.isascii() or not value.isprintable() or any(
            c in value for c in ' ,;"()<>@:/[]?={}\\'):
        return f"a WebSocket subprotocol name (an HTTP token), got {value!r}"
    return None


#: The most worker processes `streams.workers` may ask for.
MAX_WORKERS = 256


def _workers(value: str) -> str | None:
    """`auto` (one per core) or a number of worker processes."""
    text = value.strip().lower()
    if text == "auto" or (text.isdigit() and 1 <= int(text) <= MAX_WORKERS):
        return None
    return f"`auto` or a number from 1 to {MAX_WORKERS}, got {value!r}"


def worker_count(value: str) -> int:
    """A checked `streams.workers` value as a number (`auto`: the cores of this machine)."""
    text = value.strip().lower()
    return max(1, os.cpu_count() or 1) if text == "auto" else int(text)


def _control_address(value: str) -> tuple[str, int]:
    return parse_hostport(value, CONTROL_PORT)


def _temp_files_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "esl-audio-stream")


# -- the table -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: how the file, the environment and the flags give it, and which
    DaemonConfig field(s) it becomes."""

    #: "section.key" in the file (the environment's ESL_AUDIO_STREAM_SECTION_KEY); None: a
    #: DaemonConfig field the file does not set (the code and the tests do).
    key: str | None
    #: The DaemonConfig field it sets, or the fields `convert` returns a tuple for; None: it
    #: sets no field of its own (see `variable`).
    field: str | tuple[str, ...] | None
    #: str | int | float | bool for a file key: how a TOML, environment or flag value is read.
    type: type
    #: The value when nothing sets it; a callable is called each time one is needed.
    default: Any
    #: A value of `type` -> a problem (the error's text), or None.
    check: Check | None = None
    _: KW_ONLY
    #: Never shown: masked by `config --check`, left out of error messages.
    secret: bool = False
    #: A running daemon cannot change it: SIGHUP logs it as "needs a restart" and keeps it.
    restart: bool = False
    #: An empty string means None (no token, no stop text, no group).
    optional: bool = False
    #: The value -> the field's value (or the fields' values, as a tuple).
    convert: Callable[[Any], Any] | None = None
    #: The `run` flag that gives it (argparse dest: the flag without "--", "-" as "_").
    flag: str | None = None
    #: The STREAM_* channel variable it is the daemon-wide default of (given also in
    #: [stream_defaults], where it is refused when the key is set too).
    variable: str | None = None
    #: `config --example`: the value shown, when not the default (None: the default) ...
    example: Any = None
    #: ... the comment after it ...
    comment: str = ""
    #: ... and the comment lines above it ("\n" between lines).
    note: str = ""

    @property
    def section(self) -> str:
        return (self.key or "").partition(".")[0]

    @property
    def name(self) -> str:
        """The key within its section."""
        return (self.key or "").partition(".")[2]

    @property
    def fields(self) -> tuple[str, ...]:
        if self.field is None:
            return ()
        return (self.field,) if isinstance(self.field, str) else self.field

    @property
    def env(self) -> str:
        """The environment variable that overrides the file."""
        return f"{ENV_PREFIX}{self.section.upper()}_{self.name.upper()}"

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def field_values(self, value: Any) -> tuple[Any, ...]:
        """A resolved value as the values of `fields`, in their order."""
        if not self.fields:
            return ()
        if self.optional and value == "":
            value = None
        if self.convert is not None and value is not None:
            value = self.convert(value)
        return value if len(self.fields) > 1 else (value,)


SETTINGS: tuple[Setting, ...] = (
    # [esl] and [control]: the ESL connection and the control endpoint are made once.
    Setting("esl.host", "esl_host", str, "127.0.0.1", _nonempty, restart=True,
            convert=str.strip),
    Setting("esl.port", "esl_port", int, 8021, _between(1, 65535), restart=True),
    Setting("esl.password", "esl_password", str, "ClueCon", secret=True, restart=True,
            flag="--esl-password", example="change-me",
            note="The event_socket.conf.xml password. Not FreeSWITCH's well-known ClueCon: ESL "
                 "runs any API\ncommand on the switch. Never logged; `config --check` masks it."),
    Setting("esl.timeout", "esl_timeout", float, 5.0, _above(0, 3600), restart=True,
            comment="seconds for each ESL command's answer"),
    Setting("control.listen", ("control_host", "control_port"), str, f"127.0.0.1:{CONTROL_PORT}",
            _listen, restart=True, convert=_control_address, flag="--control",
            comment="HOST:PORT of the HTTP control endpoint"),
    # Everything but /metrics requires it; it is required when control.listen is not loopback.
    Setting("control.token", "control_token", str, "", secret=True, restart=True, optional=True,
            comment="bearer token; empty = none. Required unless listen is loopback"),
    Setting("control.metrics_public", "metrics_public", bool, True, restart=True,
            comment="/metrics answers without the token"),
    # The daemon's side of each call's unicast (`remote-ip`) and FreeSWITCH's (`local-ip`).
    Setting("media.listen_host", "media_host", str, "127.0.0.1", _ipv4,
            comment="where the daemon receives the audio (unicast remote-ip), IPv4"),
    Setting("media.freeswitch_host", "fs_media_host", str, "127.0.0.1", _ipv4,
            comment="FreeSWITCH's own address (unicast local-ip), IPv4"),
    # FreeSWITCH-side unicast ports (`local-port`), one per call: below FreeSWITCH's RTP range
    # (16384-32768) and the kernel's ephemeral range, which the daemon's own sockets use. The
    # port pool is made once.
    Setting("media.port_min", "fs_port_min", int, 12000, _between(1, 65535), restart=True,
            comment="FreeSWITCH-side unicast ports, one per call: keep them out of"),
    Setting("media.port_max", "fs_port_max", int, 15999, _between(1, 65535), restart=True,
            comment="FreeSWITCH's RTP range and the kernel's ephemeral range"),
    Setting("media.native", "native", bool, True,
            comment="steady mono ws:// streams framed and sent in C (false: Python only)"),
    # It goes into stream_defaults, with the [stream_defaults] section.
    Setting("playback.mode", None, str, StreamSettings().playback_mode, _mode,
            variable="STREAM_PLAYBACK_MODE",
            comment=f"default STREAM_PLAYBACK_MODE: {' | '.join(PLAYBACK_MODES)}"),
    # One private directory per call (0700), cleaned at start-up.
    Setting("playback.files_dir", "files_dir", str, _temp_files_dir, _path,
            example="/var/lib/esl-audio-stream/files",
            note="The endpoint's audio files, one private directory per call, removed when the "
                 "call's stream\nends. FreeSWITCH must be able to read it (displace, broadcast). "
                 "Default: <temp>/esl-audio-stream"),
    Setting("playback.max_audio_bytes", "max_audio_bytes", int, 8 << 20, _between(1, 1 << 30),
            comment="largest streamAudio chunk accepted"),
    Setting("playback.files_group", "files_group", str, "", _group, optional=True,
            note="FreeSWITCH's group, when it runs as another user: the daemon (a member of it) "
                 "makes each\ncall's directory 0750 and its files 0640 in that group. Empty: "
                 "0700/0600, daemon only."),
    # Beyond it, the oldest audio goes (counted and reported in an error event).
    Setting("streams.reconnect_buffer_seconds", "reconnect_buffer_seconds", float, 10.0,
            _above(0, MAX_RECONNECT_BUFFER_SECONDS),
            comment="audio kept per stream while the endpoint is away "
                    f"(max {MAX_RECONNECT_BUFFER_SECONDS:g})"),
    Setting("streams.first_audio_timeout", "first_audio_timeout", float, 3.0, _above(0, 3600),
            comment="error event when no audio comes this long after start"),
    Setting("streams.drain_timeout", "drain_timeout", float, 10.0, _between(0, 3600),
            comment="drain: how long running streams get to end cleanly"),
    Setting("streams.stop_text", "stop_text", str, "", optional=True,
            comment="drain: last text message of each stream; empty = none"),
    # Crash-only: what a daemon leaves in FreeSWITCH so the next process carries its streams on.
    Setting("streams.owner", "owner", str, "", _owner, restart=True, optional=True,
            note="This daemon's name in FreeSWITCH (its streams carry it; another daemon on the "
                 "same\nFreeSWITCH never takes them). Empty: <hostname>:<control port>."),
    # `run --workers N`: one supervisor and N daemons sharing the calls (ops/workers.py).
    # Read once, by the supervisor (a SIGHUP re-reads the file in each worker, which has no use
    # for it); `run --workers` gives it too (cli.py).
    Setting("streams.workers", "workers", str, "auto", _workers, convert=worker_count,
            comment="worker processes sharing the calls: a number, or \"auto\" (one a core)"),
    Setting("streams.orphan_timeout", "orphan_timeout", float, 30.0, _above(0, 86400),
            comment="a stream left without a daemon this long is ended, not carried on"),
    # STREAM_PROTOCOL=twilio: the accountSid of every start and stop message.
    Setting("streams.twilio_account_sid", "twilio_account_sid", str, TWILIO_ACCOUNT_SID,
            _account_sid, comment="accountSid of twilio-protocol streams"),
    # uuid_audio_fork streams (protocols/audio_fork.py): jambonz's MOD_AUDIO_FORK_SUBPROTOCOL_NAME
    # (a channel variable of that name wins), and whether playAudio is also played by the daemon.
    Setting("streams.audio_fork_subprotocol", "audio_fork_subprotocol", str,
            "audio.drachtio.org", _subprotocol,
            comment="WebSocket subprotocol uuid_audio_fork streams offer"),
    Setting("streams.audio_fork_play_audio", "audio_fork_play_audio", bool, False,
            comment="default AUDIO_FORK_PLAY_AUDIO: the daemon plays playAudio too"),
    # Not in the file: the code and the tests set them.
    # The WebSocket handshake's and close's bounds.
    Setting(None, "ws_connect_timeout", float, 5.0),
    Setting(None, "ws_close_timeout", float, 2.0),
    # How long a hung-up call's events wait for CHANNEL_DESTROY before going out unrouted.
    Setting(None, "destroy_wait", float, 2.0),
    # From [stream_defaults] and the keys with a `variable`; a channel's own value wins.
    Setting(None, "stream_defaults", StreamSettings, StreamSettings),
)

# -- read from the table -------------------------------------------------------------------------

#: "section.key" -> its Setting.
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS if s.key is not None}
#: Each section's keys, in the table's order.
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    section: tuple(s.name for s in BY_KEY.values() if s.section == section)
    for section in dict.fromkeys(s.section for s in BY_KEY.values())}
SECTIONS = (*SECTION_KEYS, STREAM_DEFAULTS)
#: DaemonConfig fields a running daemon keeps (Daemon.reload).
RESTART_FIELDS = tuple(f for s in SETTINGS if s.restart for f in s.fields)
#: The name of each DaemonConfig field in the reload log: its file key (the field's own name
#: when the file does not set it).
FIELD_KEYS: dict[str, str] = {
    f: s.key if s.key is not None else f for s in SETTINGS for f in s.fields}
FIELD_KEYS["stream_defaults"] = f"{STREAM_DEFAULTS} (or " + ", ".join(
    s.key for s in BY_KEY.values() if s.variable) + ")"
#: `run` flag -> the key it sets (flags setting more than one key, --esl HOST:PORT and
#: --stream-default, are cli.py's).
FLAGS: dict[str, str] = {s.flag: s.key for s in BY_KEY.values() if s.flag is not None}


def lookup(section: str, name: str) -> Setting | None:
    return BY_KEY.get(f"{section}.{name}")
