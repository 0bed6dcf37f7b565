"""FreeSWITCH's switch_separate_string (src/switch_utils.c), as an api command splits its
arguments: on a blank, single quotes group words, a backslash escapes, and every part is then
cleaned (quotes and escapes removed, \\n \\r \\t \\s unescaped, blanks trimmed).

Why the daemon has its own: `uuid_audio_fork` takes its words exactly as mod_audio_fork gets
them from FreeSWITCH (a metadata holding a blank is several words unless quoted), so the same
argument string must split the same way here. The simulator (dev/simulator/separate.py) keeps
its own copy on purpose: it stands for FreeSWITCH, and a shared mistake would hide itself.
"""

from __future__ import annotations

_ESCAPE = "\\"
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(s: str, delim: str) -> str:
    """cleanup_separated_string."""
    i = 0
    while i < len(s) and s[i] == " ":
        i += 1
    out: list[str] = []
    end = None
    inside = False
    while i < len(s):
        c = s[i]
        escaped = False
        if c == _ESCAPE and i + 1 < len(s):
            e = s[i + 1]
            u = _UNESCAPE.get(e, e)
            if e in ("'", '"') or (delim and e == delim) or e == _ESCAPE or u != e:
                i += 1
                out.append(u)
                end = len(out)
                escaped = True
        if not escaped:
            if c == "'" and (inside or "'" in s[i + 1:]):
                inside = not inside
                if inside:
                    end = len(out)
            else:
                out.append(c)
                if c != " " or inside:
                    end = len(out)
        i += 1
    return "".join(out[:end]) if end is not None else "".join(out)


def separate(buf: str, delim: str, maxparts: int) -> list[str]:
    """switch_separate_string(buf, delim, array, maxparts), step for step: at most `maxparts`
    parts, the last holding the rest of the string."""
    if not buf or maxparts <= 0:
        return []
    if buf.startswith("^^") and len(buf) > 3:  # "^^<d>..." picks another delimiter
        delim, buf = buf[2], buf[3:]
    n = len(buf)
    starts: list[int] = []
    ends: dict[int, int] = {}  # where the NUL went in, per part
    ptr, state, inside = 0, "start", False
    while ptr < n and len(starts) < maxparts:
        c = buf[ptr]
        if state == "start":
            starts.append(ptr)
            state = "skip_initial" if delim == " " else "find"
        elif state == "skip_initial":
            if c == " ":
                ptr += 1
            else:
                state = "find"
        elif state == "find":
            if c == _ESCAPE:
                ptr += 1
            elif c == "'" and (delim == " " or inside or "'" in buf[ptr + 1:]):
                inside = not inside
            elif c == delim and not inside:
                ends[starts[-1]] = ptr
                state = "skip_ending" if delim == " " else "start"
            ptr += 1
        elif c == " ":  # skip_ending
            ptr += 1
        else:
            state = "start"
    clean_delim = "" if delim == " " else delim
    return [_cleanup(buf[a:ends.get(a, n)], clean_delim) for a in starts]
