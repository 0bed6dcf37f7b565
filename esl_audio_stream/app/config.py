"""Daemon settings: where FreeSWITCH is, where commands come in, which ports media uses.

One frozen object, made once at start-up (and again on SIGHUP) and handed down, so nothing on the
per-frame path looks anything up. `load_config` builds it from three layers -- a TOML file, then
`ESL_AUDIO_STREAM_<SECTION>_<KEY>` environment variables, then command-line flags -- and is pure:
the caller reads the file and hands in the environment, so every bad input can be tested directly.
A mistake raises ConfigError naming the key where the operator wrote it (file key, environment
variable or flag), because the daemon's configuration is checked once, at start-up, and a daemon
that starts half-configured fails later, on a call, where nobody is looking.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .settings import (
    PLAYBACK_MODES,
    VARIABLES,
    SettingsError,
    StreamSettings,
    defaults_from_mapping,
)

ENV_PREFIX = "ESL_AUDIO_STREAM_"
#: What secrets are shown as (config --check, logs).
MASK = "********"


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


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    esl_password: str = "ClueCon"
    esl_timeout: float = 5.0
    control_host: str = "127.0.0.1"
    control_port: int = 8089
    #: Bearer token the control endpoint requires (everything but /metrics). Required when the
    #: control endpoint binds anything but loopback.
    control_token: str | None = None
    #: Whether /metrics answers without the token when a token is set.
    metrics_public: bool = True
    #: SIGTERM: how long running streams get to end cleanly before the process exits anyway.
    drain_timeout: float = 10.0
    #: SIGTERM: the last text message each stream sends before its close (None: none).
    stop_text: str | None = None
    #: Address the daemon receives audio on (FreeSWITCH's unicast `remote-ip`).
    media_host: str = "127.0.0.1"
    #: Address FreeSWITCH binds for each call's unicast (`local-ip`): it must be FreeSWITCH's.
    fs_media_host: str = "127.0.0.1"
    #: FreeSWITCH-side unicast ports (`local-port`), one per call. Kept below FreeSWITCH's RTP
    #: range (16384-32768) and the kernel's ephemeral range, which the daemon's own sockets use.
    fs_port_min: int = 12000
    fs_port_max: int = 15999
    ws_connect_timeout: float = 5.0
    ws_close_timeout: float = 2.0
    #: An error event is fired when no audio arrives this long after start.
    first_audio_timeout: float = 3.0
    #: Audio kept per stream while the endpoint is unreachable or slow; beyond it, the oldest
    #: goes (counted and reported in an error event).
    reconnect_buffer_seconds: float = 10.0
    #: Where the endpoint's audio chunks are written, one private directory per call (0700),
    #: cleaned at start-up. FreeSWITCH must be able to read it for the displace and broadcast
    #: playback modes.
    files_dir: str = field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "esl-audio-stream"))
    #: Largest decoded streamAudio chunk accepted.
    max_audio_bytes: int = 8 << 20
    #: A group FreeSWITCH runs in: per-call directories become 0750 and files 0640 owned by it,
    #: so FreeSWITCH can read them (displace, broadcast); None: 0700/0600, the daemon alone.
    files_group: str | None = None
    #: How long a hung-up call's events wait for CHANNEL_DESTROY before going out unrouted.
    destroy_wait: float = 2.0
    #: Daemon-wide defaults for the STREAM_* channel variables; a channel's own value wins.
    stream_defaults: StreamSettings = field(default_factory=StreamSettings)


class ConfigError(ValueError):
    """One bad key (or combination): `key` is named as the operator wrote it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


# -- the file's keys ---------------------------------------------------------------------------

#: Per-stream memory is this times the stream's byte rate (up to 192 kB/s for 48 kHz stereo).
MAX_RECONNECT_BUFFER_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class _Key:
    kind: str  # "str" | "int" | "float" | "bool"
    check: Callable[[Any], str | None] | None = None  # -> a problem, or None
    secret: bool = False


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not low <= value <= high:
            return f"must be between {low:g} and {high:g}, got {value!r}"
        return None
    return check


def _above(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not low < value <= high:
            return f"must be above {low:g} and at most {high:g}, got {value!r}"
        return None
    return check


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _ipv4(value: str) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return f"must be an IPv4 address (FreeSWITCH's unicast is IPv4 only), got {value!r}"
    return None


def _listen(value: str) -> str | None:
    try:
        _host, port = parse_hostport(value, 8089)
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


def _no_nul(value: str) -> str | None:
    return "contains a NUL byte" if "\x00" in value else None


SCHEMA: dict[str, dict[str, _Key]] = {
    "esl": {
        "host": _Key("str", _nonempty),
        "port": _Key("int", _between(1, 65535)),
        "password": _Key("str", secret=True),
        "timeout": _Key("float", _above(0, 3600)),
    },
    "control": {
        "listen": _Key("str", _listen),
        "token": _Key("str", secret=True),
        "metrics_public": _Key("bool"),
    },
    "media": {
        "listen_host": _Key("str", _ipv4),
        "freeswitch_host": _Key("str", _ipv4),
        "port_min": _Key("int", _between(1, 65535)),
        "port_max": _Key("int", _between(1, 65535)),
    },
    "playback": {
        "mode": _Key("str", _mode),
        "files_dir": _Key("str", lambda v: _nonempty(v) or _no_nul(v)),
        "max_audio_bytes": _Key("int", _between(1, 1 << 30)),
        "files_group": _Key("str", _group),
    },
    "streams": {
        "reconnect_buffer_seconds": _Key("float", _above(0, MAX_RECONNECT_BUFFER_SECONDS)),
        "first_audio_timeout": _Key("float", _above(0, 3600)),
        "drain_timeout": _Key("float", _between(0, 3600)),
        "stop_text": _Key("str"),
    },
}
#: Its keys are the STREAM_* channel variable names, checked by settings.defaults_from_mapping.
STREAM_DEFAULTS = "stream_defaults"
SECTIONS = (*SCHEMA, STREAM_DEFAULTS)
#: `[playback] mode` is the daemon-wide default of this channel variable.
_MODE_VARIABLE = "STREAM_PLAYBACK_MODE"

#: Keys a running daemon cannot change (SIGHUP logs them as "needs a restart" and keeps them):
#: the ESL connection and the control endpoint are made once, and so is the port pool.
RESTART_FIELDS = ("esl_host", "esl_port", "esl_password", "esl_timeout", "control_host",
                  "control_port", "control_token", "metrics_public", "fs_port_min", "fs_port_max")

_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__  # TOML dates and times


def _coerce(label: str, spec: _Key, value: Any, text: bool) -> Any:
    """A typed value for `spec` from a TOML value (typed) or, when `text`, an environment or
    command-line string."""
    shown = "" if spec.secret else f" ({value!r})"  # a secret's value is never shown
    if text:
        raw = str(value).strip()
        try:
            if spec.kind == "int":
                value = int(raw)
            elif spec.kind == "float":
                value = float(raw)
            elif spec.kind == "bool":
                if raw.lower() not in _TRUE | _FALSE:
                    raise ValueError
                value = raw.lower() in _TRUE
            else:
                value = str(value)
        except ValueError:
            raise ConfigError(label, f"expected {_KIND_NAMES[spec.kind]}, got {value!r}"
                              ) from None
    else:
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }[spec.kind]
        if not ok:
            raise ConfigError(label, f"expected {_KIND_NAMES[spec.kind]}, got "
                                     f"{_type_name(value)}{shown}")
    if spec.kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(label, f"must be a finite number, got {value!r}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem is not None:
            raise ConfigError(label, "invalid value" if spec.secret else problem)
    return value


def _stream_default_text(label: str, value: Any) -> str:
    """A [stream_defaults] value as the string a channel variable would hold. A table is taken
    as JSON (STREAM_EXTRA_HEADERS = { Authorization = "Bearer abc" })."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value)
    raise ConfigError(label, f"expected a string, number or boolean, got {_type_name(value)}")


# -- the layers ----------------------------------------------------------------------------------

#: One resolved value: (value, where it was set: "default" | "file" | an env name |
#: "command line").
Resolved = dict[str, dict[str, tuple[Any, str]]]


def _defaults() -> Resolved:
    d = DaemonConfig()
    out: Resolved = {
        "esl": {"host": d.esl_host, "port": d.esl_port, "password": d.esl_password,
                "timeout": d.esl_timeout},
        "control": {"listen": _join_hostport(d.control_host, d.control_port),
                    "token": d.control_token or "", "metrics_public": d.metrics_public},
        "media": {"listen_host": d.media_host, "freeswitch_host": d.fs_media_host,
                  "port_min": d.fs_port_min, "port_max": d.fs_port_max},
        "playback": {"mode": d.stream_defaults.playback_mode, "files_dir": d.files_dir,
                     "max_audio_bytes": d.max_audio_bytes,
                     "files_group": d.files_group or ""},
        "streams": {"reconnect_buffer_seconds": d.reconnect_buffer_seconds,
                    "first_audio_timeout": d.first_audio_timeout,
                    "drain_timeout": d.drain_timeout, "stop_text": d.stop_text or ""},
        STREAM_DEFAULTS: {},
    }
    return {s: {k: (v, "default") for k, v in keys.items()} for s, keys in out.items()}


def _join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _stream_default_name(label: str, name: str) -> str:
    upper = name.upper()
    if upper not in VARIABLES:
        raise ConfigError(label, f"unknown channel variable (known: {', '.join(VARIABLES)})")
    return upper


def _set(resolved: Resolved, section: str, key: str, value: Any, label: str, text: bool,
         source: str) -> None:
    if section == STREAM_DEFAULTS:
        name = _stream_default_name(label, key)
        resolved[section][name] = (_stream_default_text(label, value), source)
        return
    spec = SCHEMA[section].get(key)
    if spec is None:
        raise ConfigError(label, f"unknown key (known in [{section}]: "
                                 f"{', '.join(SCHEMA[section])})")
    resolved[section][key] = (_coerce(label, spec, value, text), source)


def _apply_file(resolved: Resolved, data: Mapping[str, Any]) -> None:
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"[{section}]", f"unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(table, Mapping):
            raise ConfigError(section, f"expected a [{section}] table, got {_type_name(table)}")
        if section == "playback" and "mode" in table and STREAM_DEFAULTS in data and any(
                k.upper() == _MODE_VARIABLE for k in data[STREAM_DEFAULTS]):
            raise ConfigError(f"{STREAM_DEFAULTS}.{_MODE_VARIABLE}",
                              "the playback mode is set by [playback] mode: give it once")
        for key, value in table.items():
            _set(resolved, section, str(key), value, f"{section}.{key}", False, "file")


def _split_env(name: str) -> tuple[str, str] | None:
    """ESL_AUDIO_STREAM_<SECTION>_<KEY> -> (section, key); None for names of no section (other
    ESL_AUDIO_STREAM_* variables, e.g. ESL_AUDIO_STREAM_PROFILE)."""
    rest = name[len(ENV_PREFIX):]
    for section in sorted(SECTIONS, key=len, reverse=True):
        prefix = section.upper() + "_"
        if rest.upper().startswith(prefix) and len(rest) > len(prefix):
            key = rest[len(prefix):]
            return section, key.upper() if section == STREAM_DEFAULTS else key.lower()
    return None


def _apply_env(resolved: Resolved, env: Mapping[str, str]) -> None:
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        found = _split_env(name)
        if found is None:
            continue
        section, key = found
        _set(resolved, section, key, env[name], name, True, name)


def _apply_overrides(resolved: Resolved, overrides: Mapping[str, Any]) -> None:
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(dotted, "unknown setting")
        _set(resolved, section, key, value, f"{dotted} (command line)", isinstance(value, str),
             "command line")


def resolve(source: str | Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
            overrides: Mapping[str, Any] | None = None) -> Resolved:
    """Every setting with where it came from: defaults < file < environment < command line.

    `source` is the TOML text or an already parsed mapping; `overrides` maps "section.key" (e.g.
    "esl.host", "stream_defaults.STREAM_BUFFER_SIZE") to values, strings being parsed as the
    environment's are."""
    resolved = _defaults()
    if isinstance(source, str):
        try:
            source = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("file", f"not valid TOML: {exc}") from None
    if source:
        _apply_file(resolved, source)
    _apply_env(resolved, env or {})
    _apply_overrides(resolved, overrides or {})
    playback_mode = resolved["playback"]["mode"]
    channel_mode = resolved[STREAM_DEFAULTS].pop(_MODE_VARIABLE, None)
    if channel_mode is not None and channel_mode[1] != "default" and (
            playback_mode[1] == "default" or _rank(channel_mode[1]) > _rank(playback_mode[1])):
        # --stream-default STREAM_PLAYBACK_MODE=... (or its env form) is playback.mode too
        label = channel_mode[1] if channel_mode[1].startswith(ENV_PREFIX) else \
            f"{STREAM_DEFAULTS}.{_MODE_VARIABLE}" + (
                " (command line)" if channel_mode[1] == "command line" else "")
        resolved["playback"]["mode"] = (_coerce(label, SCHEMA["playback"]["mode"],
                                                channel_mode[0], True), channel_mode[1])
    return resolved


def _rank(source: str) -> int:
    if source == "command line":
        return 3
    if source.startswith(ENV_PREFIX):
        return 2
    return 1 if source == "file" else 0


def _label(resolved: Resolved, section: str, key: str) -> str:
    source = resolved[section][key][1]
    if source.startswith(ENV_PREFIX):
        return source
    return f"{section}.{key}" + (" (command line)" if source == "command line" else "")


def config_from_resolved(resolved: Resolved) -> DaemonConfig:
    """The DaemonConfig of resolved settings; checks what only makes sense together."""
    v = {s: {k: value for k, (value, _src) in keys.items()} for s, keys in resolved.items()}
    esl, control, media = v["esl"], v["control"], v["media"]
    playback, streams = v["playback"], v["streams"]
    if media["port_min"] > media["port_max"]:
        raise ConfigError(_label(resolved, "media", "port_min"),
                          f"{media['port_min']} is above media.port_max ({media['port_max']})")
    control_host, control_port = parse_hostport(control["listen"], 8089)
    if not control["token"] and not is_loopback(control_host):
        raise ConfigError(_label(resolved, "control", "token"),
                          f"required when control.listen ({control['listen']}) is not a "
                          "loopback address: anyone who reaches the port could start streams")
    defaults_given = {name: value for name, (value, _src) in resolved[STREAM_DEFAULTS].items()}
    defaults_given[_MODE_VARIABLE] = playback["mode"]
    try:
        stream_defaults = defaults_from_mapping(defaults_given)
    except SettingsError as exc:
        text = str(exc)
        name, sep, problem = text.partition(": ")
        if sep and name in resolved[STREAM_DEFAULTS]:
            raise ConfigError(_label(resolved, STREAM_DEFAULTS, name), problem) from None
        raise ConfigError(STREAM_DEFAULTS, text) from None
    return DaemonConfig(
        esl_host=esl["host"].strip(),
        esl_port=esl["port"],
        esl_password=esl["password"],
        esl_timeout=esl["timeout"],
        control_host=control_host,
        control_port=control_port,
        control_token=control["token"] or None,
        metrics_public=control["metrics_public"],
        drain_timeout=streams["drain_timeout"],
        stop_text=streams["stop_text"] or None,
        media_host=media["listen_host"],
        fs_media_host=media["freeswitch_host"],
        fs_port_min=media["port_min"],
        fs_port_max=media["port_max"],
        first_audio_timeout=streams["first_audio_timeout"],
        reconnect_buffer_seconds=streams["reconnect_buffer_seconds"],
        files_dir=playback["files_dir"],
        max_audio_bytes=playback["max_audio_bytes"],
        files_group=playback["files_group"] or None,
        stream_defaults=stream_defaults,
    )


def load_config(source: str | Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """The daemon's configuration from a TOML file's text (or parsed mapping), the environment
    (`ESL_AUDIO_STREAM_<SECTION>_<KEY>`) and command-line overrides ("section.key" -> value), in
    that order of precedence. Raises ConfigError(key, problem) for the first mistake."""
    return config_from_resolved(resolve(source, env, overrides))


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") can only be reached from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- reload --------------------------------------------------------------------------------------


def reloadable(old: DaemonConfig, new: DaemonConfig) -> tuple[DaemonConfig, list[str]]:
    """What a running daemon can take from `new`: the config to use from now on (restart-only
    fields kept from `old`) and the keys of the restart-only fields that changed."""
    kept = replace(new, **{name: getattr(old, name) for name in RESTART_FIELDS})
    return kept, changed_keys(old, new, RESTART_FIELDS)


#: The file's key for each DaemonConfig field (fields not in the file are named as they are).
FIELD_KEYS = {
    "esl_host": "esl.host", "esl_port": "esl.port", "esl_password": "esl.password",
    "esl_timeout": "esl.timeout", "control_host": "control.listen",
    "control_port": "control.listen", "control_token": "control.token",
    "metrics_public": "control.metrics_public", "media_host": "media.listen_host",
    "fs_media_host": "media.freeswitch_host", "fs_port_min": "media.port_min",
    "fs_port_max": "media.port_max", "files_dir": "playback.files_dir",
    "max_audio_bytes": "playback.max_audio_bytes", "files_group": "playback.files_group",
    "drain_timeout": "streams.drain_timeout",
    "stop_text": "streams.stop_text", "first_audio_timeout": "streams.first_audio_timeout",
    "reconnect_buffer_seconds": "streams.reconnect_buffer_seconds",
    "stream_defaults": "stream_defaults (or playback.mode)",
}


def changed_keys(old: DaemonConfig, new: DaemonConfig, names: tuple[str, ...] | None = None,
                 ) -> list[str]:
    """The file keys whose values differ (for the reload log line; values are not logged)."""
    out: list[str] = []
    for f in fields(DaemonConfig):
        if (names is None or f.name in names) and getattr(old, f.name) != getattr(new, f.name):
            key = FIELD_KEYS.get(f.name, f.name)
            if key not in out:
                out.append(key)
    return out


# -- showing it ----------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() \
        else json.dumps(key)


def render(resolved: Resolved) -> str:
    """The effective configuration as TOML, secrets masked, each value's origin in a comment."""
    lines: list[str] = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for key, (value, source) in resolved[section].items():
            secret = section in SCHEMA and SCHEMA[section][key].secret
            shown = json.dumps(MASK) if secret and value else _toml_value(value)
            lines.append(f"{_toml_key(key)} = {shown}  # {source}")
        lines.append("")
    return "\n".join(lines)


EXAMPLE = """\
# esl-audio-stream configuration (esl-audio-stream run --config FILE).
# Every key is optional; the values shown are the defaults, except esl.password and
# playback.files_dir. Environment variables ESL_AUDIO_STREAM_<SECTION>_<KEY> override this file
# (e.g. ESL_AUDIO_STREAM_ESL_PASSWORD); command-line flags override both.
# SIGHUP re-reads the file: new streams use the new values; [esl] and [control] need a restart.

[esl]
host = "127.0.0.1"
port = 8021
# The event_socket.conf.xml password. Not FreeSWITCH's well-known ClueCon: ESL runs any API
# command on the switch. Never logged; `config --check` masks it.
password = "change-me"
timeout = 5.0                 # seconds for each ESL command's answer

[control]
listen = "127.0.0.1:8089"     # HOST:PORT of the HTTP control endpoint
token = ""                    # bearer token; empty = none. Required unless listen is loopback
metrics_public = true         # /metrics answers without the token

[media]
listen_host = "127.0.0.1"     # where the daemon receives the audio (unicast remote-ip), IPv4
freeswitch_host = "127.0.0.1" # FreeSWITCH's own address (unicast local-ip), IPv4
port_min = 12000              # FreeSWITCH-side unicast ports, one per call: keep them out of
port_max = 15999              # FreeSWITCH's RTP range and the kernel's ephemeral range

[playback]
mode = "inject"               # default STREAM_PLAYBACK_MODE: inject | displace | broadcast
# The endpoint's audio files, one private directory per call, removed when the call's stream
# ends. FreeSWITCH must be able to read it (displace, broadcast). Default: <temp>/esl-audio-stream
files_dir = "/var/lib/esl-audio-stream/files"
max_audio_bytes = 8388608     # largest streamAudio chunk accepted
# FreeSWITCH's group, when it runs as another user: the daemon (a member of it) makes each
# call's directory 0750 and its files 0640 in that group. Empty: 0700/0600, daemon only.
files_group = ""

[streams]
reconnect_buffer_seconds = 10.0  # audio kept per stream while the endpoint is away (max 600)
first_audio_timeout = 3.0     # error event when no audio comes this long after start
drain_timeout = 10.0          # SIGTERM: how long running streams get to end cleanly
stop_text = ""                # SIGTERM: last text message of each stream; empty = none

[stream_defaults]
# Daemon-wide defaults for any STREAM_* channel variable; a channel's own value wins.
# STREAM_BUFFER_SIZE = 20
# STREAM_HEART_BEAT = 15
# STREAM_EXTRA_HEADERS = { Authorization = "Bearer abc" }
"""
