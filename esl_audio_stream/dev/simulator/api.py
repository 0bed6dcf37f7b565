"""The api commands the simulator knows, answering with mod_commands' exact texts.

An unknown command answers `-ERR <cmd> Command not found!\\n` -- including uuid_audio_stream,
since a stock FreeSWITCH has no mod_audio_stream. A new command is one function here, taking
the Switch it acts on and its argument string, registered by `@command`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol

from . import bugs, calls, dtmf, park, playback, recording
from .dialstring import DialError, inline_app, parse_originate
from .events import url_encode
from .media import SUPPORTED_RATES
from .separate import separate
from .switch import Switch

VERSION = "1.11.3-dev (simulator)"
_CHANNEL_COLUMNS = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,application,"
    "application_data,dialplan,context,read_codec,read_rate,read_bit_rate,write_codec,write_rate,"
    "write_bit_rate,secure,hostname,presence_id,presence_data,accountcode,callstate,callee_name,"
    "callee_num,callee_direction,call_uuid,sent_callee_name,sent_callee_num,initial_cid_name,"
    "initial_cid_num,initial_ip_addr,initial_dest,initial_dialplan,initial_context"
)


def _separate(arg: str | None, maxparts: int) -> list[str]:
    """switch_separate_string on ' ' with a maximum: the last part keeps the rest (quotes and
    escapes handled as FreeSWITCH handles them: separate.py)."""
    return separate(arg or "", " ", maxparts)


Command = Callable[[Switch, str | None], str]
_COMMANDS: dict[str, Command] = {}


def command(fn: Command) -> Command:
    """Register an api command under its function's name."""
    _COMMANDS[fn.__name__] = fn
    return fn


class Host(Protocol):
    """What api commands run on: the Simulator, which passes itself in (this module never
    imports it: core imports this)."""

    switch: Switch


def execute(sim: Host, name: str, arg: str | None) -> str:
    """The command's text; an empty text is the command's own (uuid_break prints nothing)."""
    fn = _COMMANDS.get(name.lower())
    if fn is None:
        return f"-ERR {name} Command not found!\n"
    return fn(sim.switch, arg)


@command
def originate(sw: Switch, arg: str | None) -> str:
    if not arg:
        return ("-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] "
                "[<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n")
    try:
        dial = parse_originate(arg)
    except DialError as exc:
        return f"-ERR {exc}\n"
    except ValueError:
        return originate(sw, None)
    rate_s = dial.variables.get("channel_rate", "8000")
    if dial.dialplan == "inline":
        app, app_arg = inline_app(dial.extension)
        if app != "native_eavesdrop":
            return f"-ERR SIMULATOR_UNSUPPORTED_INLINE_APPLICATION_{app}\n"
        # the B leg eavesdrops on the target; it runs at the target's rate
        target = sw.all.get(app_arg.split(" ")[0])
        rate_s = str(target.rate) if target is not None else rate_s
        spec = f"tap:{app_arg}"
    else:
        spec = sw.extensions.get(dial.extension)
        if spec is None:
            return "-ERR NO_ROUTE_DESTINATION\n"
    if not rate_s.isdigit() or int(rate_s) not in SUPPORTED_RATES:
        return "-ERR INCOMPATIBLE_DESTINATION\n"
    if dial.app not in ("park", "playback", "echo", "bridge"):
        return f"-ERR SIMULATOR_UNSUPPORTED_APPLICATION_{dial.app}\n"
    ouuid = dial.variables.get("origination_uuid")
    if ouuid and ouuid in sw.all:
        return "-ERR DESTINATION_OUT_OF_ORDER\n"
    uuid = calls.new_call(sw, dial.extension, spec, int(rate_s), dial.variables, dial.context,
                          dial.app, dial.app_arg)
    return f"+OK {uuid}\n"


@command
def uuid_kill(sw: Switch, arg: str | None) -> str:
    if not arg:
        return "-USAGE: <uuid> [cause]\n"
    uuid, _, cause = arg.partition(" ")
    ch = sw.live(uuid)
    if ch is None:
        return "-ERR No such channel!\n"
    calls.hangup(sw, ch, cause.strip().upper() or "NORMAL_CLEARING")
    return "+OK\n"


@command
def uuid_exists(sw: Switch, arg: str | None) -> str:
    return "true" if arg and sw.live(arg) is not None else "false"


@command
def uuid_getvar(sw: Switch, arg: str | None) -> str:
    argv = _separate(arg, 4)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var>\n"
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR No such channel!\n"
    value = ch.variables.get(argv[1])
    return value if value is not None else "_undef_"


@command
def uuid_setvar(sw: Switch, arg: str | None) -> str:
    argv = _separate(arg, 3)
    if len(argv) not in (2, 3):
        return "-USAGE: <uuid> <var> [value]\n"
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR No such channel!\n"
    if len(argv) == 3 and argv[2] != "":
        ch.variables[argv[1]] = argv[2]
    else:
        ch.variables.pop(argv[1], None)
    return "+OK\n"


@command
def global_setvar(sw: Switch, arg: str | None) -> str:
    """`global_setvar name=value` (an empty value removes it); answers +OK with no newline."""
    argv = separate(arg or "", "=", 3)
    if not argv or not argv[0]:
        return "-USAGE: <var>=<value>\n"
    value = argv[1] if len(argv) > 1 and argv[1] else None
    if len(argv) > 2 and argv[2]:  # name=value=expected: set only if it holds that now
        if sw.globals.get(argv[0]) == argv[2]:
            _set_global(sw, argv[0], value)
    else:
        _set_global(sw, argv[0], value)
    return "+OK"


def _set_global(sw: Switch, name: str, value: str | None) -> None:
    if value is None:
        sw.globals.pop(name, None)
    else:
        sw.globals[name] = value


@command
def global_getvar(sw: Switch, arg: str | None) -> str:
    """`global_getvar name` -> its value ("" when unset); with no name, every global variable as
    `name=value` lines (switch_core_dump_variables)."""
    if not arg:
        return "".join(f"{k}={v}\n" for k, v in sw.globals.items())
    return sw.globals.get(arg, "")


@command
def uuid_dump(sw: Switch, arg: str | None) -> str:
    argv = _separate(arg, 2)
    if not argv:
        return "-USAGE: <uuid> [format]\n"
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR No such channel!\n"
    fmt = argv[1].lower() if len(argv) > 1 else "txt"
    ev = sw.core.create("CHANNEL_DATA", func="uuid_dump_function")
    ev.headers += ch.data_headers("CHANNEL_DATA")
    if fmt == "json":
        return json.dumps(dict(ev.headers))
    if fmt == "plain":
        return "".join(f"{k}: [{v}]\n" for k, v in ev.headers) + "\n"
    return "".join(f"{k}: {url_encode(v)}\n" for k, v in ev.headers) + "\n"


@command
def uuid_broadcast(sw: Switch, arg: str | None) -> str:
    argv = _separate(arg, 4)
    if len(argv) < 2:
        return "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR invalid uuid\n"
    legs = argv[2].lower() if len(argv) > 2 else "aleg"
    if "aleg" in legs or "both" in legs:
        playback.broadcast(sw, ch, argv[1])
    return "+OK Message sent\n"


@command
def uuid_break(sw: Switch, arg: str | None) -> str:
    """mod_commands' break_function: answers nothing when it worked (the flag is acted on by the
    channel's own loop); `all` also flushes the messages queued to the channel."""
    argv = _separate(arg, 2)
    if not argv:
        return "-USAGE: <uuid> [all]\n"
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR No Such Channel!\n"
    playback.break_playback(sw, ch, flush=len(argv) > 1 and "all" in argv[1].lower())
    return ""


@command
def uuid_transfer(sw: Switch, arg: str | None) -> str:
    argv = _separate(arg, 5)
    usage = "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
    if len(argv) < 2:
        return usage
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR No such channel!\n"
    dest, dialplan = argv[1], (argv[2] if len(argv) > 2 else "XML")
    if dest.startswith("-"):
        return "-ERR simulator: -bleg/-both not simulated\n"
    if dialplan != "inline":
        return "-ERR simulator: only inline dialplan transfers are simulated\n"
    app, _, app_arg = dest.partition(":")
    if app not in ("park", "playback", "echo"):
        return f"-ERR simulator: inline application {app} not simulated\n"
    park.transfer(sw, ch, app, app_arg)
    return "+OK\n"


@command
def uuid_displace(sw: Switch, arg: str | None) -> str:
    argv = _separate(arg, 5)
    if len(argv) < 3:
        return "-USAGE: <uuid> [start|stop] <path> [<limit>] [mux]\n"
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR Cannot locate session!\n"
    action, path = argv[1].lower(), argv[2]
    if action == "start":
        flags = argv[4] if len(argv) > 4 else ""
        if not bugs.start_displace(ch, path, flags):
            return "-ERR Cannot displace session!\n"
        return "+OK Success\n"
    if action == "stop":
        if not bugs.stop_displace(ch, path):
            return "-ERR Cannot displace session!\n"
        return "+OK Success\n"
    return "-USAGE: <uuid> [start|stop] <path> [<limit>] [mux]\n"


_RECORD_USAGE = "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>] [<recording_vars>]\n"


@command
def uuid_record(sw: Switch, arg: str | None) -> str:
    """mod_commands' session_record_function: `start <path> [limit] [{vars}]` (the variables for
    this recording only), `stop <path>|all`. Opening a FIFO waits for its reader, as FreeSWITCH's
    open does (this ESL connection waits; see recording.py)."""
    argv = _separate(arg, 5)
    if len(argv) < 3 or not all(argv[:3]):
        return _RECORD_USAGE
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR Cannot locate session!\n"
    action, path = argv[1].lower(), argv[2]
    if action == "start":
        if not recording.start(sw, ch, path, argv[4] if len(argv) > 4 else ""):
            return "-ERR Cannot record session!\n"
        return "+OK Success\n"
    if action == "stop":
        if not recording.stop(sw, ch, path):
            return "-ERR Cannot stop record session!\n"
        return "+OK Success\n"
    if action in ("mask", "unmask", "pause", "resume"):
        return f"-ERR simulator: uuid_record {action} not simulated\n"
    return _RECORD_USAGE


@command
def uuid_recv_dtmf(sw: Switch, arg: str | None) -> str:
    return _dtmf(sw, arg, dtmf.receive, "received")


@command
def uuid_send_dtmf(sw: Switch, arg: str | None) -> str:
    return _dtmf(sw, arg, dtmf.send, "sent")


def _dtmf(sw: Switch, arg: str | None, act, verb: str) -> str:
    argv = _separate(arg, 2)
    if len(argv) < 2 or not argv[1]:
        return "-USAGE: <uuid> <dtmf_data>\n"
    ch = sw.live(argv[0])
    if ch is None:
        return "-ERR Cannot locate session!\n"
    act(sw, ch, argv[1])
    return f"+OK {argv[0]} {verb} DTMF {argv[1]}.\n"


@command
def show(sw: Switch, arg: str | None) -> str:
    argv = _separate(arg, 6)
    if not argv or argv[0].lower() not in ("channels", "calls"):
        return "-USAGE: simulator knows: show channels [count], show calls [count]\n"
    chans = list(sw.all.values())
    if argv[0].lower() == "calls":
        chans = [c for c in chans if c.leg == "a"]
    if len(argv) > 1 and argv[1].lower() == "count":
        return f"\n{len(chans)} total.\n"
    if not chans:
        return "\n0 total.\n"
    rows = [_CHANNEL_COLUMNS]
    for c in chans:
        rows.append(",".join((
            c.uuid, c.direction, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created)),
            str(int(c.created)), c.name, c.state, c.cid_name, c.cid_number, "127.0.0.1",
            c.extension, c.app, c.app_arg, "XML", c.context, "L16", str(c.rate),
            str(c.rate * 16), "L16", str(c.rate), str(c.rate * 16), "", sw.core.hostname, "", "",
            "", c.call_state, "", "", "", c.uuid, "", "", c.cid_name, c.cid_number, "127.0.0.1",
            c.extension, "XML", c.context,
        )))
    return "\n".join(rows) + f"\n\n{len(chans)} total.\n"


@command
def status(sw: Switch, arg: str | None) -> str:
    up = time.time() - sw.started_at
    secs = int(up)
    ms = int((up - secs) * 1000)
    us = int((up - secs) * 1_000_000) % 1000
    d, rem = divmod(secs, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)

    def pl(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    live = len(sw.all)
    return (
        f"UP {pl(0, 'year')}, {pl(d, 'day')}, {pl(h, 'hour')}, {pl(m, 'minute')}, "
        f"{pl(s, 'second')}, {pl(ms, 'millisecond')}, {pl(us, 'microsecond')}\n"
        f"FreeSWITCH (Version {VERSION}) is ready\n"
        f"{sw.sessions_since_startup} session(s) since startup\n"
        f"{live} session(s) - peak {sw.sessions_peak}, last 5min {sw.sessions_peak} \n"
        f"0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
        f"1000 session(s) max\n"
        f"min idle cpu 0.00/100.00\n"
        f"Current Stack Size/Max 240K/8192K\n"
    )


__all__ = ["command", "execute"]
