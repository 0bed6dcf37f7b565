"""The configuration's layers: defaults < TOML file < environment < command line.

Every key is resolved to (value, where it was set), so `config --check` can say where each value
came from and an error can name the key as the operator wrote it (file key, environment variable
or flag). Which keys exist, their types and checks are config_table.SETTINGS'; this module only
reads values and checks them one at a time (what only makes sense together is config.py's).
Pure: the caller reads the file and hands in the environment.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from typing import Any

from .config_table import (
    BY_KEY,
    ENV_PREFIX,
    SECTION_KEYS,
    SECTIONS,
    STREAM_DEFAULTS,
    ConfigError,
    Setting,
    lookup,
)
from .settings import STREAM_VARIABLES

#: One resolved value: (value, where it was set: "default" | "file" | an env name |
#: "command line").
Resolved = dict[str, dict[str, tuple[Any, str]]]

_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
#: Keys that are also a STREAM_* default (playback.mode: STREAM_PLAYBACK_MODE).
_VARIABLE_KEYS = tuple(s for s in BY_KEY.values() if s.variable is not None)


def type_name(value: Any) -> str:
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


def coerce(label: str, setting: Setting, value: Any, text: bool) -> Any:
    """A typed, checked value for `setting` from a TOML value (typed) or, when `text`, an
    environment or command-line string."""
    kind = setting.type
    shown = "" if setting.secret else f" ({value!r})"  # a secret's value is never shown
    if text:
        raw = str(value).strip()
        try:
            if kind is int:
                value = int(raw)
            elif kind is float:
                value = float(raw)
            elif kind is bool:
                if raw.lower() not in _TRUE | _FALSE:
                    raise ValueError
                value = raw.lower() in _TRUE
            else:
                value = str(value)
        except ValueError:
            raise ConfigError(label, f"expected {_KIND_NAMES[kind]}, got {value!r}") from None
    else:
        ok = {
            str: isinstance(value, str),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, int | float) and not isinstance(value, bool),
            bool: isinstance(value, bool),
        }[kind]
        if not ok:
            raise ConfigError(label, f"expected {_KIND_NAMES[kind]}, got "
                                     f"{type_name(value)}{shown}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(label, f"must be a finite number, got {value!r}")
    if setting.check is not None:
        problem = setting.check(value)
        if problem is not None:
            raise ConfigError(label, "invalid value" if setting.secret else problem)
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
    raise ConfigError(label, f"expected a string, number or boolean, got {type_name(value)}")


def _stream_default_name(label: str, name: str) -> str:
    upper = name.upper()
    if upper not in STREAM_VARIABLES:
        raise ConfigError(label, f"unknown channel variable (known: {', '.join(STREAM_VARIABLES)})")
    return upper


def _defaults() -> Resolved:
    out: Resolved = {section: {} for section in SECTIONS}
    for setting in BY_KEY.values():
        out[setting.section][setting.name] = (setting.default_value(), "default")
    return out


def _set(resolved: Resolved, section: str, key: str, value: Any, label: str, text: bool,
         source: str) -> None:
    if section == STREAM_DEFAULTS:
        name = _stream_default_name(label, key)
        resolved[section][name] = (_stream_default_text(label, value), source)
        return
    setting = lookup(section, key)
    if setting is None:
        raise ConfigError(label, f"unknown key (known in [{section}]: "
                                 f"{', '.join(SECTION_KEYS[section])})")
    resolved[section][key] = (coerce(label, setting, value, text), source)


def _apply_file(resolved: Resolved, data: Mapping[str, Any]) -> None:
    given_defaults = data.get(STREAM_DEFAULTS)
    given_variables = {str(k).upper() for k in given_defaults} \
        if isinstance(given_defaults, Mapping) else set()
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"[{section}]", f"unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(table, Mapping):
            raise ConfigError(section, f"expected a [{section}] table, got {type_name(table)}")
        for s in _VARIABLE_KEYS:
            if s.section == section and s.name in table and s.variable in given_variables:
                raise ConfigError(f"{STREAM_DEFAULTS}.{s.variable}",
                                  f"the {s.section} {s.name} is set by [{s.section}] {s.name}: "
                                  "give it once")
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


def _rank(source: str) -> int:
    if source == "command line":
        return 3
    if source.startswith(ENV_PREFIX):
        return 2
    return 1 if source == "file" else 0


def _take_variables(resolved: Resolved) -> None:
    """A key's STREAM_* variable given as a stream default (--stream-default
    STREAM_PLAYBACK_MODE=..., or its environment form) sets the key, when given later."""
    for s in _VARIABLE_KEYS:
        own = resolved[s.section][s.name]
        given = resolved[STREAM_DEFAULTS].pop(s.variable, None)
        if given is None or given[1] == "default" or (
                own[1] != "default" and _rank(given[1]) <= _rank(own[1])):
            continue
        where = given[1]
        label = where if where.startswith(ENV_PREFIX) else f"{STREAM_DEFAULTS}.{s.variable}" + (
            " (command line)" if where == "command line" else "")
        resolved[s.section][s.name] = (coerce(label, s, given[0], True), where)


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
    _take_variables(resolved)
    return resolved


def label(resolved: Resolved, section: str, key: str) -> str:
    """The key as the operator wrote it: the file key, its environment variable, or the file
    key marked "(command line)"."""
    source = resolved[section][key][1]
    if source.startswith(ENV_PREFIX):
        return source
    return f"{section}.{key}" + (" (command line)" if source == "command line" else "")
