"""Per-stream settings from mod_audio_stream's STREAM_* channel variables.

Why this module: a dialplan written for mod_audio_stream must behave the same here, so the names,
meanings and defaults are mod_audio_stream's (audio_streamer_glue.cpp, `stream_session_init`).
Where mod_audio_stream silently does something surprising with a bad value (garbage heartbeat,
unparseable extra headers), we refuse the start with a message naming the variable instead: the
operator learns at once, not from a missing header on the far side. Booleans keep FreeSWITCH's own
`switch_true` meaning, because that is what every dialplan was tested against.

Everything is parsed once, when a stream starts, into one frozen `StreamSettings`; nothing here
runs on the per-frame path. Pure: no sockets, no files (the TLS files are read by ws/tls.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..media.frames import PTIME_MS

log = logging.getLogger(__name__)

#: Chunk durations are whole FreeSWITCH frames.
FRAME_MS = PTIME_MS
#: Longest chunk we accept. mod_audio_stream has no limit; one typo (20000 for 200) would make
#: every call hold seconds of audio before sending anything, so larger values fall back to 20.
MAX_BUFFER_MS = 10_000
#: Longest heartbeat interval: far beyond any idle timeout, and keeps timers in range.
MAX_HEARTBEAT = 86_400.0


class SettingsError(ValueError):
    """A STREAM_* value that cannot be used; str() is the text after "-ERR " in the answer."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What one stream's channel variables (over the daemon's defaults) ask for."""

    deflate: bool = True
    heartbeat: float | None = None
    suppress_log: bool = False
    buffer_ms: int = 20
    extra_headers: tuple[tuple[str, str], ...] = ()
    reconnect: bool = True
    tls_ca: str = "SYSTEM"  # "SYSTEM" | "NONE" | path
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_check_hostname: bool = True
    playback_mode: str = "inject"
    source: str = "auto"
    protocol: str = "mod_audio_stream"
    send_dtmf: bool = False
    audio_encoding: str = "l16"
    start_message: bool = False  # the call's facts first on every connection (start_message.py)
    start_variables: tuple[str, ...] = ()  # the channel variables it carries


#: The STREAM_* names, in the order of mod_audio_stream's README table.
VARIABLES: tuple[str, ...] = (
    "STREAM_MESSAGE_DEFLATE",
    "STREAM_HEART_BEAT",
    "STREAM_SUPPRESS_LOG",
    "STREAM_BUFFER_SIZE",
    "STREAM_EXTRA_HEADERS",
    "STREAM_NO_RECONNECT",
    "STREAM_TLS_CA_FILE",
    "STREAM_TLS_KEY_FILE",
    "STREAM_TLS_CERT_FILE",
    "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION",
    "STREAM_PLAYBACK_MODE",  # ours: how the endpoint's audio is played into the call
    "STREAM_SOURCE",  # ours: where the audio comes from (the call itself, a recording, taps)
)
#: Ours, about what is said on the wire (protocols/): which protocol, the caller's keys in
#: mod_audio_stream mode, L16 or G.711, the call's facts first (app/start_message.py).
WIRE_VARIABLES: tuple[str, ...] = (
    "STREAM_PROTOCOL",
    "STREAM_SEND_DTMF",
    "STREAM_AUDIO_ENCODING",
    "STREAM_START_MESSAGE",
    "STREAM_START_VARIABLES",
)
#: Every STREAM_* name a channel (or [stream_defaults]) may set.
STREAM_VARIABLES = VARIABLES + WIRE_VARIABLES
_KNOWN = frozenset(STREAM_VARIABLES)

#: inject: frames written to unicast's write-back port (default); displace: uuid_displace per
#: chunk; broadcast: uuid_broadcast per chunk, which stops FreeSWITCH's stream while it plays.
PLAYBACK_MODES = ("inject", "displace", "broadcast")

#: auto: `direct` on a parked call, `record` otherwise; direct: unicast on the call itself (it
#: must be parked); record: FreeSWITCH records the call into a FIFO the daemon reads (any call);
#: taps: loopback channels eavesdropping on the call's read/write sides (any call, the costliest).
SOURCES = ("auto", "direct", "record", "taps")

#: mod_audio_stream: its own wire protocol (binary L16, JSON answers); twilio: Twilio Media
#: Streams (JSON text frames, µ-law 8 kHz), which most voice-bot software speaks.
PROTOCOLS = ("mod_audio_stream", "twilio")

#: What mod_audio_stream-mode audio is on the wire: L16, or G.711 (8 kHz only, a byte a sample).
AUDIO_ENCODINGS = ("l16", "pcmu", "pcma")

_TRUE_WORDS = frozenset({"yes", "on", "true", "t", "enabled", "active", "allow"})
# Spellings of "false" we accept without a warning; anything else is false too (switch_true),
# but probably a typo, so it is reported.
_FALSE_WORDS = frozenset({"no", "off", "false", "f", "disabled", "inactive", "deny"})
_SWITCH_NUMBER = re.compile(r"[+-]?[0-9.]*")  # switch_is_number: optional sign, digits and dots
_LEADING_INT = re.compile(r"[+-]?([0-9]*)")  # what atoi() reads of such a string
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_INTEGER = re.compile(r"[+-]?[0-9]+")

# RFC 9110 token: what an HTTP field name may contain.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value as wsproto/h11 will send it: visible ASCII, spaces and tabs inside.
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")
# Headers the WebSocket handshake writes itself: a second copy breaks the upgrade.
_HANDSHAKE_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
    }
)
_VARIABLE_PREFIX = "variable_"


def _show(text: str, limit: int = 60) -> str:
    """A value as it goes into a one-line error: quoted, escaped, bounded."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def _is_switch_number(text: str) -> bool:
    return _SWITCH_NUMBER.fullmatch(text) is not None


def atoi(text: str) -> int:
    """C's atoi, as FreeSWITCH reads numbers: leading blanks, a sign, the digits that follow
    (none: 0). The simulator reads numbers with it too."""
    text = text.lstrip(" \t\n\r\v\f")
    m = _LEADING_INT.match(text)
    digits = m.group(1) if m else ""
    value = int(digits) if digits else 0
    return -value if text.startswith("-") else value


def parse_bool(text: str) -> bool:
    """FreeSWITCH's `switch_true`: yes/on/true/t/enabled/active/allow (any case) or a non-zero
    number (as atoi reads it: "1", "2", "-1", "1.5"); everything else is false."""
    return text.lower() in _TRUE_WORDS or (_is_switch_number(text) and atoi(text) != 0)


def _bool_var(name: str, text: str, warn: Callable[[str], None]) -> bool:
    if parse_bool(text):
        return True
    if text.lower() not in _FALSE_WORDS and not _is_switch_number(text):
        warn(f"{name}: {_show(text)} is not a boolean; taken as false, as FreeSWITCH does")
    return False


def _heartbeat(text: str) -> float | None:
    name = "STREAM_HEART_BEAT"
    stripped = text.strip()
    if not _DECIMAL.fullmatch(stripped):
        raise SettingsError(f"{name}: expected a number of seconds, got {_show(text)}")
    value = float(stripped)
    if value < 0:
        raise SettingsError(f"{name}: must not be negative, got {_show(text)}")
    if value > MAX_HEARTBEAT:
        raise SettingsError(f"{name}: at most {MAX_HEARTBEAT:g} seconds, got {_show(text)}")
    return value or None  # 0 = no heartbeat, as in mod_audio_stream


def _buffer_ms(text: str) -> int | None:
    """The chunk duration, or None when it is not a whole number of frames in range."""
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        return None
    value = int(stripped)
    if value < FRAME_MS or value % FRAME_MS or value > MAX_BUFFER_MS:
        return None
    return value


def _buffer_problem(text: str) -> str:
    return (
        f"STREAM_BUFFER_SIZE: {_show(text)} is not a multiple of {FRAME_MS} ms "
        f"between {FRAME_MS} and {MAX_BUFFER_MS}"
    )


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (name, value) pairs, so order and duplicates survive parsing."""


def _json_type(value: object) -> str:
    if isinstance(value, _Pairs):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return "a string"


def parse_extra_headers(text: str) -> tuple[tuple[str, str], ...]:
    """STREAM_EXTRA_HEADERS: a JSON object of header name -> string value, in the given order.

    Checked here rather than at connect time so a bad header is an -ERR naming the variable, not
    an upgrade that fails later. Leading/trailing blanks of a value are dropped (HTTP ignores
    them; h11 refuses them)."""
    name = "STREAM_EXTRA_HEADERS"

    try:
        parsed = json.loads(text, object_pairs_hook=_Pairs)
    except ValueError as exc:
        raise SettingsError(f"{name}: not valid JSON ({exc})") from None
    except RecursionError:
        raise SettingsError(f"{name}: not valid JSON (nested too deeply)") from None
    if not isinstance(parsed, _Pairs):
        raise SettingsError(
            f"{name}: expected a JSON object of header names to string values, "
            f"got {_json_type(parsed)}"
        )
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in parsed:
        if "\r" in key or "\n" in key:
            raise SettingsError(f"{name}: header name {_show(key)} contains CR or LF")
        if not _TOKEN.fullmatch(key):
            raise SettingsError(f"{name}: {_show(key)} is not a valid HTTP header name")
        lower = key.lower()
        if lower in _HANDSHAKE_HEADERS:
            raise SettingsError(
                f"{name}: {key} is set by the WebSocket handshake and cannot be overridden"
            )
        if lower in seen:
            raise SettingsError(f"{name}: header {key} is given more than once")
        seen.add(lower)
        if not isinstance(value, str):
            raise SettingsError(
                f"{name}: the value of {key} must be a JSON string, got {_json_type(value)}"
            )
        if "\r" in value or "\n" in value:
            raise SettingsError(f"{name}: the value of {key} contains CR or LF")
        value = value.strip(" \t")
        if value and not _FIELD_VALUE.fullmatch(value):
            raise SettingsError(
                f"{name}: the value of {key} must be printable ASCII, got {_show(value)}"
            )
        headers.append((key, value))
    return tuple(headers)


def _tls_path(name: str, text: str) -> str:
    if "\x00" in text:
        raise SettingsError(f"{name}: the path contains a NUL byte")
    return text


def _normalise(variables: Mapping[str, str]) -> dict[str, str]:
    """Upper-case names (FreeSWITCH looks variables up case-insensitively), drop unset ones."""
    out: dict[str, str] = {}
    for key, value in variables.items():
        upper = key.upper()
        if upper in _KNOWN and value != "":
            out[upper] = value
    return out


def settings_from_variables(
    variables: Mapping[str, str],
    defaults: StreamSettings = StreamSettings(),
    warn: Callable[[str], None] = log.warning,
) -> StreamSettings:
    """The settings for one stream: each STREAM_* value given (non-empty) wins over `defaults`.

    `variables` maps STREAM_* names (no "variable_" prefix; any case) to raw strings; other names
    are ignored. Raises SettingsError naming the variable for a value that cannot be used, except
    STREAM_BUFFER_SIZE, which warns and uses 20 ms as mod_audio_stream does. STREAM_TLS_CERT_FILE
    and STREAM_TLS_KEY_FILE go together: a channel that sets either replaces both defaults.
    """
    return _merge(variables, defaults, warn, strict=False)


def _merge(
    variables: Mapping[str, str],
    defaults: StreamSettings,
    warn: Callable[[str], None],
    *,
    strict: bool,
) -> StreamSettings:
    v = _normalise(variables)
    if not v:
        return defaults
    changes: dict[str, Any] = {}
    if "STREAM_MESSAGE_DEFLATE" in v:  # inverted, as in mod_audio_stream: true DISABLES deflate
        changes["deflate"] = not _bool_var(
            "STREAM_MESSAGE_DEFLATE", v["STREAM_MESSAGE_DEFLATE"], warn
        )
    if "STREAM_HEART_BEAT" in v:
        changes["heartbeat"] = _heartbeat(v["STREAM_HEART_BEAT"])
    if "STREAM_SUPPRESS_LOG" in v:
        changes["suppress_log"] = _bool_var("STREAM_SUPPRESS_LOG", v["STREAM_SUPPRESS_LOG"], warn)
    if "STREAM_BUFFER_SIZE" in v:
        text = v["STREAM_BUFFER_SIZE"]
        buffer_ms = _buffer_ms(text)
        if buffer_ms is None:
            if strict:
                raise SettingsError(_buffer_problem(text))
            warn(f"{_buffer_problem(text)}; using {FRAME_MS} ms")
            buffer_ms = FRAME_MS
        changes["buffer_ms"] = buffer_ms
    if "STREAM_EXTRA_HEADERS" in v:
        changes["extra_headers"] = parse_extra_headers(v["STREAM_EXTRA_HEADERS"])
    if "STREAM_NO_RECONNECT" in v:
        changes["reconnect"] = not _bool_var("STREAM_NO_RECONNECT", v["STREAM_NO_RECONNECT"], warn)
    if "STREAM_TLS_CA_FILE" in v:
        changes["tls_ca"] = _tls_path("STREAM_TLS_CA_FILE", v["STREAM_TLS_CA_FILE"])
    if "STREAM_TLS_CERT_FILE" in v or "STREAM_TLS_KEY_FILE" in v:
        cert = v.get("STREAM_TLS_CERT_FILE")
        key = v.get("STREAM_TLS_KEY_FILE")
        changes["tls_cert"] = _tls_path("STREAM_TLS_CERT_FILE", cert) if cert else None
        changes["tls_key"] = _tls_path("STREAM_TLS_KEY_FILE", key) if key else None
    if "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION" in v:
        changes["tls_check_hostname"] = not _bool_var(
            "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION",
            v["STREAM_TLS_DISABLE_HOSTNAME_VALIDATION"],
            warn,
        )
    if "STREAM_PLAYBACK_MODE" in v:
        changes["playback_mode"] = _choice(v, "STREAM_PLAYBACK_MODE", PLAYBACK_MODES)
    if "STREAM_SOURCE" in v:
        changes["source"] = _choice(v, "STREAM_SOURCE", SOURCES)
    if "STREAM_PROTOCOL" in v:
        changes["protocol"] = _choice(v, "STREAM_PROTOCOL", PROTOCOLS)
    if "STREAM_SEND_DTMF" in v:
        changes["send_dtmf"] = _bool_var("STREAM_SEND_DTMF", v["STREAM_SEND_DTMF"], warn)
    if "STREAM_AUDIO_ENCODING" in v:
        changes["audio_encoding"] = _choice(v, "STREAM_AUDIO_ENCODING", AUDIO_ENCODINGS)
    if "STREAM_START_MESSAGE" in v:
        changes["start_message"] = _bool_var("STREAM_START_MESSAGE", v["STREAM_START_MESSAGE"],
                                             warn)
    if "STREAM_START_VARIABLES" in v:  # a comma list of names; blanks around them dropped
        changes["start_variables"] = tuple(
            name for name in (n.strip() for n in v["STREAM_START_VARIABLES"].split(",")) if name)
    settings = replace(defaults, **changes)
    check_client_cert(settings)
    return settings


def _choice(v: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of a few words, any case and spacing; SettingsError naming the variable otherwise."""
    word = v[name].strip().lower()
    if word not in choices:
        raise SettingsError(f"{name}: {_show(v[name])} is not one of {', '.join(choices)}")
    return word


def check_client_cert(settings: StreamSettings) -> None:
    """A client certificate needs its key and a key its certificate."""
    if settings.tls_cert and not settings.tls_key:
        raise SettingsError(
            "STREAM_TLS_CERT_FILE is set but STREAM_TLS_KEY_FILE is not: give both or neither"
        )
    if settings.tls_key and not settings.tls_cert:
        raise SettingsError(
            "STREAM_TLS_KEY_FILE is set but STREAM_TLS_CERT_FILE is not: give both or neither"
        )


def variables_from_dump(dump: Mapping[str, str]) -> dict[str, str]:
    """The STREAM_* channel variables in a `uuid_dump <uuid> json` answer or a CHANNEL_* event's
    headers ("variable_STREAM_..." keys), prefix stripped and names upper-cased."""
    out: dict[str, str] = {}
    plen = len(_VARIABLE_PREFIX)
    for key, value in dump.items():
        if key[:plen].lower() == _VARIABLE_PREFIX:
            name = key[plen:].upper()
            if name in _KNOWN:
                out[name] = value
    return out


def defaults_from_mapping(
    values: Mapping[str, str], warn: Callable[[str], None] = log.warning
) -> StreamSettings:
    """Daemon-wide defaults given with the same STREAM_* names (config file or environment).

    Stricter than a channel: an unknown name or a bad STREAM_BUFFER_SIZE raises SettingsError,
    since a mistake in the daemon's configuration should stop it at start-up, not warn per call.
    """
    for key in values:
        if key.upper() not in _KNOWN:
            raise SettingsError(f"{key}: unknown setting (known: {', '.join(STREAM_VARIABLES)})")
    return _merge(values, StreamSettings(), warn, strict=True)
