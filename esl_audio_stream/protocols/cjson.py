"""JSON as cJSON 1.7.12 (FreeSWITCH's src/cJSON.c) reads and prints it, for mod_audio_fork.

Why not the json module alone: jambonz's mod_audio_fork parses each message from its endpoint
with cJSON and fires events whose bodies are cJSON_PrintUnformatted of parts of it, and
subscribers compare those bodies. cJSON keeps an object's keys in order with their duplicates,
holds every number as a C double and prints it with `%1.15g` (`%1.17g` when that does not read
back the same double: 1.0 prints `1`, 1e20 `1e+20`), finds an object's member by its name in
any ASCII case (cJSON_GetObjectItem), and ignores whatever follows the first value of a message.
Strings are escaped as the json module escapes them with ensure_ascii=False (`"` `\\` \\b \\f
\\n \\r \\t, other control characters as \\u00xx, the rest as it is).

Pure: text in, values out. An object is an `Obj` (a list of (name, value) pairs), an array a
list, a number a float, then str, bool and None. Runs once per message, never per frame.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MISSING", "Obj", "ParseError", "detach", "dumps", "get", "get_str", "parse", "string",
           "valueint"]

_INT_MAX = 2**31 - 1
_INT_MIN = -(2**31)
_SURROGATE = re.compile("[\ud800-\udfff]")
_string = json.JSONEncoder(ensure_ascii=False).encode


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: What `get` and `detach` answer for a member that is not there (cJSON's NULL pointer; a JSON
#: null member is None).
MISSING: Any = _Missing()


class ParseError(ValueError):
    """A message cJSON_Parse would not parse."""


class Obj(list):
    """A JSON object as cJSON holds it: (name, value) pairs in order, duplicates kept."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(object_pairs_hook=Obj, parse_float=float, parse_int=float,
                            parse_constant=_no_constant, strict=False)


def parse(text: str) -> Any:
    """The first JSON value of `text` (leading blanks skipped, anything after it ignored, as
    cJSON_Parse does); ParseError when there is none."""
    start = 0
    n = len(text)
    while start < n and text[start] <= " ":  # cJSON skips every byte up to 32
        start += 1
    try:
        value, _end = _decoder.raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise ParseError(str(exc)) from None
    if "\\u" in text and _has_surrogate(value):
        raise ParseError("a lone UTF-16 surrogate")  # cJSON refuses what UTF-8 cannot hold
    return value


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, Obj):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value)
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _number(d: float) -> str:
    if math.isnan(d) or math.isinf(d):
        return "null"
    text = f"{d:1.15g}"
    if float(text) != d:
        text = f"{d:1.17g}"
    return text


def dumps(value: Any) -> str:
    """cJSON_PrintUnformatted."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Obj):
        return "{" + ",".join(_string(k) + ":" + dumps(v) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, int | float):
        return _number(float(value))
    raise TypeError(f"not a cJSON value: {type(value).__name__}")


def string(text: str) -> str:
    """A string as cJSON prints it (quoted, escaped)."""
    return _string(text)


def _lower(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass").lower()  # ASCII letters only, as tolower()


def get(obj: Any, name: str) -> Any:
    """cJSON_GetObjectItem: the first member named `name` in any ASCII case; MISSING when there
    is none or `obj` is not an object."""
    if not isinstance(obj, Obj):
        return MISSING
    want = _lower(name)
    for key, value in obj:
        if _lower(key) == want:
            return value
    return MISSING


def get_str(obj: Any, name: str) -> str | None:
    """FreeSWITCH's cJSON_GetObjectCstr: the member's text when it is a string, else None."""
    value = get(obj, name)
    return value if isinstance(value, str) else None


def detach(obj: Any, name: str) -> Any:
    """cJSON_DetachItemFromObject: the first member named `name` (any ASCII case) taken out of
    `obj`; MISSING when there is none."""
    if not isinstance(obj, Obj):
        return MISSING
    want = _lower(name)
    for i, (key, value) in enumerate(obj):
        if _lower(key) == want:
            del obj[i]
            return value
    return MISSING


def valueint(value: Any) -> int:
    """A cJSON item's valueint: a number's value as a C int (saturated); 0 for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if math.isnan(value):
        return 0
    if value >= _INT_MAX:
        return _INT_MAX
    if value <= _INT_MIN:
        return _INT_MIN
    return int(value)
