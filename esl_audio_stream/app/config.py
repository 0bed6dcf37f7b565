"""Daemon settings: where FreeSWITCH is, where commands come in, which ports media uses.

One frozen object, made once at start-up (and again on SIGHUP) and handed down, so nothing on the
per-frame path looks anything up. `load_config` builds it from three layers -- a TOML file, then
`ESL_AUDIO_STREAM_<SECTION>_<KEY>` environment variables, then command-line flags -- and is pure:
the caller reads the file and hands in the environment, so every bad input can be tested directly.
A mistake raises ConfigError naming the key where the operator wrote it (file key, environment
variable or flag), because the daemon's configuration is checked once, at start-up, and a daemon
that starts half-configured fails later, on a call, where nobody is looking.

The keys are declared once, in config_table.SETTINGS: DaemonConfig's fields and defaults, the
reload rule and the file key each field is logged as all come from there. The layers are
config_layers', the text renderings config_text's; this module adds what only makes sense
together (the port range, the token a non-loopback control endpoint needs, the STREAM_* defaults)
and the reload.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from .config_layers import Resolved, label, resolve
from .config_table import (
    ENV_PREFIX,
    FIELD_KEYS,
    FLAGS,
    MAX_RECONNECT_BUFFER_SECONDS,
    RESTART_FIELDS,
    SECTIONS,
    SETTINGS,
    STREAM_DEFAULTS,
    ConfigError,
    Setting,
    is_loopback,
    parse_hostport,
)
from .config_text import EXAMPLE, MASK, render
from .settings import SettingsError, defaults_from_mapping

__all__ = [
    "ENV_PREFIX", "EXAMPLE", "FIELD_KEYS", "FLAGS", "MASK", "MAX_RECONNECT_BUFFER_SECONDS",
    "RESTART_FIELDS", "SECTIONS", "SETTINGS", "STREAM_DEFAULTS", "ConfigError", "DaemonConfig",
    "Resolved", "changed_keys", "config_from_resolved", "is_loopback", "load_config",
    "parse_hostport", "reloadable", "render", "resolve",
]


def _dataclass_fields(setting: Setting) -> list[tuple[str, Any, Any]]:
    """The DaemonConfig fields one setting declares: (name, type, dataclasses.field)."""
    out = []
    for i, name in enumerate(setting.fields):
        kind: Any = setting.type
        if callable(setting.default):  # made with each DaemonConfig (files_dir: the temp dir)
            spec = dataclasses.field(
                default_factory=lambda s=setting, i=i: s.field_values(s.default_value())[i])
        else:
            default = setting.field_values(setting.default)[i]
            spec = dataclasses.field(default=default)
            if len(setting.fields) > 1:  # control.listen: control_host str, control_port int
                kind = type(default)
        if setting.optional:
            kind = kind | None
        out.append((name, kind, spec))
    return out


DaemonConfig = dataclasses.make_dataclass(
    "DaemonConfig", [f for s in SETTINGS for f in _dataclass_fields(s)], frozen=True, slots=True,
    namespace={"__doc__": "The daemon's settings, one field per config_table.SETTINGS entry "
                          "(control.listen: control_host and control_port). Made by "
                          "load_config, or directly with keywords (the tests, the demo).",
               "__module__": __name__})


def config_from_resolved(resolved: Resolved) -> DaemonConfig:
    """The DaemonConfig of resolved settings; checks what only makes sense together."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.key is not None:
            value = resolved[setting.section][setting.name][0]
            values.update(zip(setting.fields, setting.field_values(value), strict=True))
    if values["fs_port_min"] > values["fs_port_max"]:
        raise ConfigError(label(resolved, "media", "port_min"),
                          f"{values['fs_port_min']} is above media.port_max "
                          f"({values['fs_port_max']})")
    if not values["control_token"] and not is_loopback(values["control_host"]):
        raise ConfigError(label(resolved, "control", "token"),
                          f"required when control.listen ({resolved['control']['listen'][0]}) is "
                          "not a loopback address: anyone who reaches the port could start "
                          "streams")
    values["stream_defaults"] = _stream_defaults(resolved)
    return DaemonConfig(**values)


def _stream_defaults(resolved: Resolved) -> Any:
    """[stream_defaults], with the keys that are a STREAM_* default (playback.mode)."""
    given = {name: value for name, (value, _src) in resolved[STREAM_DEFAULTS].items()}
    for setting in SETTINGS:
        if setting.variable is not None:
            given[setting.variable] = resolved[setting.section][setting.name][0]
    try:
        return defaults_from_mapping(given)
    except SettingsError as exc:
        text = str(exc)
        name, sep, problem = text.partition(": ")
        if sep and name in resolved[STREAM_DEFAULTS]:
            raise ConfigError(label(resolved, STREAM_DEFAULTS, name), problem) from None
        raise ConfigError(STREAM_DEFAULTS, text) from None


def load_config(source: str | Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """The daemon's configuration from a TOML file's text (or parsed mapping), the environment
    (`ESL_AUDIO_STREAM_<SECTION>_<KEY>`) and command-line overrides ("section.key" -> value), in
    that order of precedence. Raises ConfigError(key, problem) for the first mistake."""
    return config_from_resolved(resolve(source, env, overrides))


# -- reload --------------------------------------------------------------------------------------


def reloadable(old: DaemonConfig, new: DaemonConfig) -> tuple[DaemonConfig, list[str]]:
    """What a running daemon can take from `new`: the config to use from now on (restart-only
    fields kept from `old`) and the keys of the restart-only fields that changed."""
    kept = replace(new, **{name: getattr(old, name) for name in RESTART_FIELDS})
    return kept, changed_keys(old, new, RESTART_FIELDS)


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
