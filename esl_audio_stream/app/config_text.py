"""The configuration as TOML text: `config --check` (the effective values, where each came from,
secrets masked) and `config --example` (every key with its default and comment).

Both are written from config_table.SETTINGS, so a new key shows up in both with no other change.
README.md's Configuration section is a copy of the example (a test compares them).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from .config_layers import Resolved
from .config_table import BY_KEY, SECTION_KEYS, SECTIONS, Setting, lookup

#: What secrets are shown as (config --check, logs).
MASK = "********"
#: `config --example`'s inline comments start in this column (or two spaces after the value).
_COMMENT_COLUMN = 30
_WIDTH = 96


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
            setting = lookup(section, key)
            secret = setting is not None and setting.secret
            shown = json.dumps(MASK) if secret and value else _toml_value(value)
            lines.append(f"{_toml_key(key)} = {shown}  # {source}")
        lines.append("")
    return "\n".join(lines)


def _restart_keys() -> str:
    """E.g. "[esl], [control], media.port_min and media.port_max": whole sections when every key of
    theirs needs a restart."""
    names: list[str] = []
    for section, keys in SECTION_KEYS.items():
        restart = [k for k in keys if BY_KEY[f"{section}.{k}"].restart]
        names += [f"[{section}]"] if restart == list(keys) else [f"{section}.{k}" for k in restart]
    return _and(names)


def _and(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _header() -> str:
    text = (
        "esl-audio-stream configuration (esl-audio-stream run --config FILE).\n"
        "Every key is optional; the values shown are the defaults, except "
        + _and([s.key for s in BY_KEY.values() if s.example is not None]) + ". "
        "Environment variables ESL_AUDIO_STREAM_<SECTION>_<KEY> override this file "
        "(e.g. ESL_AUDIO_STREAM_ESL_PASSWORD); command-line flags override both.\n"
        "SIGHUP re-reads the file: new streams use the new values; "
        f"{_restart_keys()} need a restart.")
    return "".join(
        textwrap.fill(paragraph, _WIDTH, initial_indent="# ", subsequent_indent="# ",
                      break_long_words=False, break_on_hyphens=False) + "\n"
        for paragraph in text.split("\n"))


def _example_line(setting: Setting) -> str:
    lines = [f"# {line}" for line in setting.note.split("\n") if setting.note]
    value = setting.default_value() if setting.example is None else setting.example
    line = f"{setting.name} = {_toml_value(value)}"
    if setting.comment:
        line = (line.ljust(_COMMENT_COLUMN) if len(line) < _COMMENT_COLUMN else line + "  ") \
            + f"# {setting.comment}"
    return "\n".join([*lines, line])


_STREAM_DEFAULTS_EXAMPLE = """\
[stream_defaults]
# Daemon-wide defaults for any STREAM_* channel variable; a channel's own value wins.
# STREAM_BUFFER_SIZE = 20
# STREAM_HEART_BEAT = 15
# STREAM_EXTRA_HEADERS = { Authorization = "Bearer abc" }
"""


def example() -> str:
    """`config --example`: every key of the file with its default (or example) and comment."""
    parts = [_header()]
    for section, keys in SECTION_KEYS.items():
        parts.append(f"[{section}]\n" + "".join(
            _example_line(BY_KEY[f"{section}.{key}"]) + "\n" for key in keys))
    parts.append(_STREAM_DEFAULTS_EXAMPLE)
    return "\n".join(parts)


EXAMPLE = example()
