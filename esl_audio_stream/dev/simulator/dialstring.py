"""`originate` arguments -> what the simulator needs to place a loopback call (pure).

Handles what FreeSWITCH's originate accepts for our purposes: `{a=b,c='x,y {z}'}` variable
blocks (also `[...]` and `<...>`), `loopback/<ext>[/<context>]`, and `&app(args)` destinations.
Single-quoted values keep commas and braces and lose their quotes, as FreeSWITCH does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_OPEN = {"{": "}", "[": "]", "<": ">"}


class DialError(ValueError):
    """The originate cannot proceed; `str(exc)` is FreeSWITCH's cause name."""


@dataclass(slots=True)
class Dial:
    endpoint: str
    extension: str
    context: str
    app: str
    app_arg: str
    variables: dict[str, str] = field(default_factory=dict)
    dialplan: str = "XML"  # `inline`: the extension is `app:arg`, `\\s` standing for a space


def split_args(text: str) -> list[str]:
    """Split on spaces outside quotes, variable blocks and an app's parentheses."""
    out: list[str] = []
    cur: list[str] = []
    stack: list[str] = []
    quote = False
    paren = 0
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == "'":
                quote = False
            continue
        if ch == "'" and (stack or paren):
            quote = True
        elif ch in _OPEN and not paren:
            stack.append(_OPEN[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
        elif ch == "(" and not stack:
            paren += 1
        elif ch == ")" and paren:
            paren -= 1
        elif ch == " " and not stack and not paren and not quote:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def parse_vars(block: str) -> dict[str, str]:
    """`a=b,c='x,y'` -> {"a": "b", "c": "x,y"} (commas inside single quotes do not split)."""
    result: dict[str, str] = {}
    parts: list[str] = []
    cur: list[str] = []
    quote = False
    for ch in block:
        if ch == "'":
            quote = not quote
            cur.append(ch)
        elif ch == "," and not quote:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    for part in parts:
        if "=" not in part:
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if len(value) >= 2 and value[0] == "'" and value[-1] == "'":
            value = value[1:-1]
        if name:
            result[name] = value
    return result


def take_var_blocks(url: str) -> tuple[dict[str, str], str]:
    """Strip leading `{...}`/`[...]`/`<...>` blocks off a call URL."""
    variables: dict[str, str] = {}
    while url and url[0] in _OPEN:
        close = _OPEN[url[0]]
        depth = 0
        quote = False
        end = -1
        for i, ch in enumerate(url):
            if ch == "'":
                quote = not quote
            elif quote:
                continue
            elif ch == url[0]:
                depth += 1
            elif ch == close:
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end < 0:
            raise DialError("INVALID_URL")
        variables.update(parse_vars(url[1:end]))
        url = url[end + 1 :]
    return variables, url


def parse_originate(arg: str) -> Dial:
    """Parse `api originate` arguments. Raises DialError(cause) or ValueError(usage)."""
    args = split_args(arg.strip())
    if len(args) < 2:
        raise ValueError("usage")
    variables, url = take_var_blocks(args[0])
    dest = args[1]
    endpoint, _, rest = url.partition("/")
    if endpoint.lower() != "loopback":
        raise DialError("CHAN_NOT_IMPLEMENTED")
    ext, _, tail = rest.partition("/")
    context, _, dialplan = tail.partition("/")
    context = context or "default"
    dialplan = dialplan.split("/")[0] or "XML"
    if not dest.startswith("&"):
        raise DialError("SIMULATOR_ONLY_APP_DESTINATIONS")
    app = dest[1:]
    app_arg = ""
    if "(" in app:
        app, _, app_arg = app.partition("(")
        if app_arg.endswith(")"):
            app_arg = app_arg[:-1]
    return Dial("loopback", ext, context, app.strip(), app_arg, variables, dialplan)


def inline_app(extension: str) -> tuple[str, str]:
    """The inline dialplan's `app:arg` (`\\s` is its escape for a space) -> (app, arg)."""
    app, _, arg = extension.partition(":")
    return app, arg.replace("\\s", " ")
