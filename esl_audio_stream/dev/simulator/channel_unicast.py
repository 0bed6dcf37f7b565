"""A channel's unicast, as switch_ivr.c handles it: activated by a `call-command: unicast`
sendmsg (the socket is bound when the channel parses it), the write-back written into the
channel, shut down when a send fails, closed with every replaced one when the channel leaves
park or hangs up. The park loop's own use of it (`conninfo`) is in park.py.
"""

from __future__ import annotations

import logging

from ...app.settings import atoi
from . import bugs
from .channel import SimChannel
from .packets import Packet
from .unicast import SimUnicast

log = logging.getLogger(__name__)


def activate(ch: SimChannel, msg: Packet) -> None:
    """switch_ivr_activate_unicast: bind the socket now; a failure is logged, nothing else."""
    local_ip = msg.get("local-ip") or "127.0.0.1"
    local_port = atoi(msg.get("local-port") or "8025") & 0xFFFF
    remote_ip = msg.get("remote-ip") or "127.0.0.1"
    remote_port = atoi(msg.get("remote-port") or "8026") & 0xFFFF
    transport = (msg.get("transport") or "udp").lower()
    if transport not in ("udp", "tcp"):
        log.error("simulator: %s Invalid transport %s", ch.name, transport)
        return
    try:
        u = SimUnicast.open(local_ip, local_port, remote_ip, remote_port)
    except OSError as exc:
        log.error("simulator: %s Failure creating unicast connection %s:%d->%s:%d (%s)",
                  ch.name, local_ip, local_port, remote_ip, remote_port, exc)
        return
    if ch.unicast is not None:  # FreeSWITCH overwrites the private and never closes it
        ch.leaked.append(ch.unicast)
    ch.unicast = u


def deactivate(ch: SimChannel) -> None:
    """switch_ivr_deactivate_unicast: the active connection is shut down (the park loop's
    `conninfo` may still point at it)."""
    u = ch.unicast
    if u is not None:
        log.debug("simulator: %s Shutting down unicast connection", ch.name)
        u.close()
        ch.unicast = None


def close_all(ch: SimChannel) -> None:
    """Leaving park or hanging up: every unicast socket of the channel closes, replaced ones
    too (FreeSWITCH never closes those; the simulator does not leak them)."""
    for u in (ch.unicast, ch.park_conninfo, *ch.leaked):
        if u is not None:
            u.close()
    ch.unicast = None
    ch.park_conninfo = None
    ch.leaked.clear()


def write_back(ch: SimChannel, data: bytes, written_limit: int) -> None:
    """unicast_thread_run: each datagram is written into the channel at once, no pacing.
    `SimChannel.written` keeps the newest `written_limit` bytes (up to twice that between
    trims); `written_total` counts all."""
    if not ch.up:
        return
    bugs.on_write_back(ch, data)
    w = ch.written
    w += data
    ch.written_total += len(data)
    if len(w) > 2 * written_limit:
        del w[: len(w) - written_limit]
    ch.source.write(data)
