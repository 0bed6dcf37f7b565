"""What each channel's own thread does per 20 ms tick (the ticker runs every active channel):
the park loop (switch_ivr_park), the applications (playback, echo), a bridge, a transfer.

The park loop, per tick: read a frame -> send it if unicast is active -> parse queued messages
(sendmsg, broadcast) -> fire ONE queued sendevent. Timing rules that the daemon depends on (a
sendmsg acts on a later tick, events queued to a busy channel are never fired, a broadcast kills
unicast for good) come from that loop, so they are modelled, not faked.
"""

from __future__ import annotations

import logging
import time

from . import bugs, calls, channel_unicast, playback, recording
from .channel import APP, BRIDGE, PARK, PARK_PLAYBACK, ROUTING, SimChannel
from .events import Event
from .packets import Packet
from .switch import Switch

log = logging.getLogger(__name__)

EVENT_QUEUE_LEN = 1000  # a session's event queue; when full, sendevent fires at once


def run_active(sw: Switch) -> None:
    """One tick of every channel whose thread runs (the Ticker's `on_tick`)."""
    for ch in list(sw.active.values()):
        run_channel(sw, ch)


def run_channel(sw: Switch, ch: SimChannel) -> None:
    if ch.transfer_to is not None:
        _do_transfer(sw, ch)
        return
    mode = ch.mode
    if mode == PARK:
        park_tick(sw, ch)
    elif mode == ROUTING:
        _start_app(sw, ch)
        if ch.recordings:
            recording.drain_all(ch)
    elif mode == PARK_PLAYBACK:
        frame = ch.source.next_frame()  # playback reads frames too: the far end keeps talking
        if ch.recordings:  # what the caller hears (the file) is not modelled
            _record(ch, frame, None)
        if playback.due(sw, ch):
            playback.end(sw, ch, ch.play_status)
            # switch_core_session_reset tears the unicast down; the park loop's conninfo
            # still points at it, so a later unicast sendmsg is shut down again at once.
            channel_unicast.deactivate(ch)
            ch.mode = PARK
            _parse_private(sw, ch)
            if ch.mode == PARK:
                dequeue_event(sw, ch)
    elif mode == BRIDGE:
        _bridge_tick(sw, ch)
    elif mode == APP:
        frame = ch.source.next_frame()
        if ch.tick_displace:
            ch.tick_displace.clear()
        if ch.displace:
            frame = bugs.displace_tick(ch, frame)
        if ch.recordings:  # `echo` gives the caller what it says; a playback is not modelled
            _record(ch, frame, frame if ch.app == "echo" else None)
        _parse_private(sw, ch)
        if ch.mode == APP and playback.due(sw, ch):
            playback.end(sw, ch, ch.play_status)
            calls.hangup(sw, ch, "NORMAL_CLEARING")


def park_tick(sw: Switch, ch: SimChannel) -> None:
    frame = ch.source.next_frame()
    if ch.tick_displace:
        ch.tick_displace.clear()
    if ch.displace:
        frame = bugs.displace_tick(ch, frame)
    ch.last_read = frame
    if ch.taps or ch.recordings:  # what the caller hears this tick: the write-back audio
        ch.last_write = bugs.take_heard(ch, len(frame))
    if ch.recordings:
        bugs.record_tick(ch)
    ch.frames_read += 1
    if ch.cng_every and ch.frames_read % ch.cng_every == 0:
        frame = sw.lib.cng(ch.rate)
    if ch.unicast is not None:
        pc = ch.park_conninfo
        if pc is None:
            pc = ch.park_conninfo = ch.unicast
            limit = sw.written_limit
            pc.launch(lambda data, ch=ch: channel_unicast.write_back(ch, data, limit))
        if pc.send(frame):
            ch.frames_sent += 1
            if ch.send_times is not None:
                ch.send_times.append(time.monotonic())
            if ch.sent_audio is not None:
                ch.sent_audio += frame
        else:
            channel_unicast.deactivate(ch)
    _parse_private(sw, ch)
    if ch.mode == PARK:
        dequeue_event(sw, ch)


def _bridge_tick(sw: Switch, ch: SimChannel) -> None:
    """switch_ivr_multi_threaded_bridge, one frame each way: what one party reads is what
    the other hears. Write-side displaces mix into what each hears."""
    peer = ch.bridge_peer
    r1 = ch.source.next_frame()
    ch.frames_read += 1
    r2 = peer.source.next_frame() if peer is not None else sw.lib.silence(ch.rate)
    for c, read, heard in ((ch, r1, r2), (peer, r2, r1)):
        if c is None:
            continue
        c.tick_displace.clear()
        c.last_read = read
        c.last_write = heard
        c.source.write(bytes(heard))
        if c.displace:
            bugs.displace_tick(c, read)
        if c.recordings:
            bugs.record_tick(c)
    _parse_private(sw, ch)


def _record(ch: SimChannel, read: bytes | memoryview, heard: bytes | memoryview | None) -> None:
    """A tick of a channel outside park and bridge: what its recordings see."""
    ch.last_read = read
    ch.last_write = heard
    bugs.record_tick(ch)


def _start_app(sw: Switch, ch: SimChannel) -> None:
    app, arg = ch.app, ch.app_arg
    ch.state = ch.running_state = "CS_EXECUTE"
    if app == "park":
        sw.chan_event(ch, "CHANNEL_EXECUTE", (("Application", "park"),))
        ch.parked = True
        ch.mode = PARK
        ch.park_conninfo = None
        sw.chan_event(ch, "CHANNEL_PARK")
    elif app == "playback":
        playback.start(sw, ch, arg, APP)
    elif app == "bridge":
        sw.chan_event(ch, "CHANNEL_EXECUTE", (("Application", "bridge"),
                                              ("Application-Data", arg)))
        calls.bridge(sw, ch, arg)
    else:  # echo: runs until hang-up or transfer
        sw.chan_event(ch, "CHANNEL_EXECUTE", (("Application", app),
                                              ("Application-Data", arg)))
        ch.mode = APP
        ch.play_end = -1
        ch.play_path = ""


# -- messages queued to the channel (sendmsg, broadcast) --------------------------------------
def queue_message(sw: Switch, uuid: str, pkt: Packet) -> bool:
    """mod_event_socket's sendmsg: queued to a live channel, acted on by its thread later;
    False when there is no such channel."""
    ch = sw.live(uuid) if uuid else None
    if ch is None:
        return False
    ch.private.append(("sendmsg", pkt))
    return True


def _parse_private(sw: Switch, ch: SimChannel) -> None:
    """switch_ivr_parse_all_events: act on queued sendmsg / broadcast messages."""
    while ch.private and ch.mode in (PARK, APP):
        kind, msg = ch.private.popleft()
        if kind == "broadcast":
            assert isinstance(msg, str)
            if ch.mode == PARK:
                playback.start(sw, ch, msg, PARK_PLAYBACK)
                return
            log.info("simulator: broadcast to %s ignored (it runs %s)", ch.name, ch.app)
            continue
        assert isinstance(msg, Packet)
        cmd = msg.get("call-command") or ""
        if cmd == "unicast":
            channel_unicast.activate(ch, msg)
        elif cmd == "hangup":
            calls.hangup(sw, ch, msg.get("hangup-cause") or "NORMAL_CLEARING")
            return
        elif cmd == "execute" and (msg.get("execute-app-name") or "") == "playback":
            if ch.mode == PARK:
                playback.start(sw, ch, msg.get("execute-app-arg") or "", PARK_PLAYBACK)
                return
        else:
            log.info("simulator: sendmsg %r on %s not simulated", cmd, ch.name)


# -- events queued to the session (sendevent) -------------------------------------------------
def queue_event(sw: Switch, ev: Event) -> None:
    """mod_event_socket's sendevent: queue to a live session named by Unique-ID, else fire.

    Between hang-up and destroy the event is dropped (see README: FreeSWITCH's own code
    would fire it at once; the facts file asks for the harsher behaviour)."""
    uid = ev.get("unique-id")
    if uid:
        ch = sw.all.get(uid)
        if ch is not None and not ch.up:
            return
        if ch is not None and len(ch.events) < EVENT_QUEUE_LEN:
            ch.events.append(ev)
            return
    sw.core.prep(ev, func="parse_command")
    sw.fire(ev)


def dequeue_event(sw: Switch, ch: SimChannel) -> None:
    """The park loop fires one queued event per tick, with the channel's data headers."""
    if ch.events:
        ev = ch.events.popleft()
        ev.headers += ch.data_headers(ev.name)
        sw.fire(ev)


# -- transfer ---------------------------------------------------------------------------------
def transfer(sw: Switch, ch: SimChannel, app: str, arg: str) -> None:
    """uuid_transfer to an inline application: the thread leaves what it runs on its next
    tick and starts `app` on the one after."""
    ch.transfer_to = (app, arg)
    sw.active[ch.uuid] = ch


def _do_transfer(sw: Switch, ch: SimChannel) -> None:
    """Leave whatever runs (the park loop tears unicast down), then route the new app on
    the next tick."""
    app, arg = ch.transfer_to or ("park", "")
    ch.transfer_to = None
    if ch.mode in (PARK_PLAYBACK, APP) and ch.play_path:
        playback.end(sw, ch, "break")
    if ch.parked:
        ch.parked = False
        sw.chan_event(ch, "CHANNEL_UNPARK")
    channel_unicast.close_all(ch)
    ch.app, ch.app_arg = app, arg
    ch.mode = ROUTING
    ch.state = ch.running_state = "CS_ROUTING"
