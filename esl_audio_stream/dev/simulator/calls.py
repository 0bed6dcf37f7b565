"""Calls and their lifecycle: a loopback pair made by `originate` (or by `bridge`, or as a tap),
answered at once, and the hang-up sequence FreeSWITCH fires: CHANNEL_HANGUP for every channel
of the call at once, HANGUP_COMPLETE on the next tick, DESTROY DESTROY_AFTER_TICKS later. A
bridge ends with either party; a tap ends one tick after its target.
"""

from __future__ import annotations

import logging
import time
import uuid as _uuid
from array import array

from ...app.settings import atoi
from . import bugs, channel_unicast, playback, recording
from .bugs import TapSource
from .channel import APP, BRIDGE, BRIDGED, DOWN, PARK_PLAYBACK, ROUTING, SimChannel
from .dialstring import DialError, parse_originate
from .media import make_source
from .switch import Switch

log = logging.getLogger(__name__)

DESTROY_AFTER_TICKS = 2  # CHANNEL_DESTROY this many ticks after HANGUP_COMPLETE


def new_call(sw: Switch, extension: str, spec: str, rate: int, variables: dict[str, str],
             context: str, app: str, app_arg: str) -> str:
    """A loopback pair: the A leg (returned) runs `app`, the B leg plays the extension's `spec`
    (or, for `tap:<uuid> <read|write>`, eavesdrops on that channel). Both answer now; the A
    leg's thread starts its application on the next tick."""
    a_uuid = variables.get("origination_uuid") or str(_uuid.uuid4())
    b_uuid = str(_uuid.uuid4())
    cid_name = variables.get("origination_caller_id_name", "FreeSWITCH")
    cid_num = variables.get("origination_caller_id_number", "0000000000")
    a_vars = {
        "direction": "outbound", "uuid": a_uuid, "session_id": str(sw.next_session()),
        "channel_name": f"loopback/{extension}-a", **variables, "loopback_leg": "A",
        "is_loopback": "1", "other_loopback_leg_uuid": b_uuid, "read_codec": "L16",
        "read_rate": str(rate), "write_codec": "L16", "write_rate": str(rate),
    }
    b_vars = {
        "direction": "inbound", "uuid": b_uuid, "session_id": str(sw.next_session()),
        "channel_name": f"loopback/{extension}-b", "loopback_leg": "B", "is_loopback": "1",
        "other_loopback_leg_uuid": a_uuid, "read_codec": "L16", "read_rate": str(rate),
        "write_codec": "L16", "write_rate": str(rate),
    }
    tap_target: SimChannel | None = None
    if spec.startswith("tap:"):  # inline native_eavesdrop: the B leg eavesdrops on a target
        target_uuid, _, side = spec[4:].partition(" ")
        tap_target = sw.live(target_uuid)
        if tap_target is not None:
            source = bugs.attach_tap(sw.lib, rate, tap_target, side.strip() != "write")
        else:
            source = make_source(sw.lib, "silence", rate)
    else:
        source = make_source(sw.lib, spec, rate)
    a = SimChannel(a_uuid, f"loopback/{extension}-a", "a", extension, rate, a_vars,
                   source, "outbound", cid_name, cid_num, context)
    if isinstance(source, TapSource):
        source.owner = a_uuid
    b = SimChannel(b_uuid, f"loopback/{extension}-b", "b", extension, rate, b_vars,
                   make_source(sw.lib, "silence", rate), "inbound", cid_name, cid_num,
                   context)
    a.other, b.other = b, a
    a.cng_every = max(0, atoi(variables.get("sim_cng_every", "0")))
    if variables.get("sim_record_times") == "true" or (
            tap_target is not None and tap_target.send_times is not None):
        a.send_times = array("d")  # the bench's latency reference (a tap's, too)
    if variables.get("sim_record_audio") == "true":  # what was sent, for byte-exact tests
        a.sent_audio = bytearray()
    a.app, a.app_arg = app, app_arg
    if spec.startswith("tap:"):
        b.app, b.app_arg = "native_eavesdrop", spec[4:]
        a.tap_target = b.tap_target = spec[4:].partition(" ")[0]
    else:
        b.app = "echo" if spec == "echo" else "playback"
        b.app_arg = spec
    sw.add(a, b)
    sw.chan_event(a, "CHANNEL_CREATE")
    sw.chan_event(b, "CHANNEL_CREATE")
    now = time.time()
    for ch in (b, a):
        ch.answered = True
        ch.answered_at = now
        ch.call_state = "ACTIVE"
        ch.state = ch.running_state = "CS_EXECUTE" if ch is b else "CS_CONSUME_MEDIA"
        sw.chan_event(ch, "CHANNEL_ANSWER")
    sw.chan_event(b, "CHANNEL_EXECUTE", (("Application", b.app),
                                         ("Application-Data", b.app_arg)))
    a.mode = ROUTING
    sw.active[a_uuid] = a
    if spec.startswith("tap:") and tap_target is None:  # nothing to eavesdrop on: it ends
        sw.ticker.after(1, lambda: hangup(sw, a, "NORMAL_CLEARING"))
    return a_uuid


def bridge(sw: Switch, ch: SimChannel, dialstring: str) -> None:
    """`bridge(loopback/<ext>[/<context>])`: originate the other party (a loopback call
    whose A leg hears `ch` and whose B leg runs the extension), then move audio both ways.
    A destination that does not route ends the call, as a failed bridge does."""
    try:
        dial = parse_originate(f"{dialstring} &park()")
    except (DialError, ValueError):
        dial = None
    spec = sw.extensions.get(dial.extension) if dial is not None else None
    if dial is None or spec is None or spec.startswith("tap:"):
        hangup(sw, ch, "NO_ROUTE_DESTINATION")
        return
    other = sw.all[new_call(sw, dial.extension, spec, ch.rate, dial.variables, dial.context,
                            "", "")]
    sw.active.pop(other.uuid, None)  # its thread is the bridge's other half
    other.mode = BRIDGED
    other.state = other.running_state = "CS_EXCHANGE_MEDIA"
    ch.mode = BRIDGE
    ch.state = ch.running_state = "CS_EXECUTE"
    ch.bridge_peer, other.bridge_peer = other, ch
    ch.variables["bridge_uuid"] = other.uuid
    sw.chan_event(ch, "CHANNEL_BRIDGE", (("Bridge-A-Unique-ID", ch.uuid),
                                         ("Bridge-B-Unique-ID", other.uuid),
                                         ("Other-Leg-Unique-ID", other.uuid)))


def hangup(sw: Switch, ch: SimChannel, cause: str = "NORMAL_CLEARING") -> None:
    """Hang up a channel and its loopback partner (and a bridged call); the rest of the sequence
    follows on later ticks (HANGUP_COMPLETE next tick, DESTROY a few ticks after)."""
    if not ch.up:
        return
    pair = [ch] + ([ch.other] if ch.other is not None and ch.other.up else [])
    for c in list(pair):  # a bridge ends with either party: the other call goes too
        peer = c.bridge_peer
        if peer is not None and peer.up and peer not in pair:
            pair.append(peer)
            if peer.other is not None and peer.other.up:
                pair.append(peer.other)
    for c in pair:
        hangup_one(sw, c, cause)
    for c in pair:
        if c.tap_target:  # a tap that goes stops eavesdropping on its target
            target = sw.all.get(c.tap_target)
            if target is not None and isinstance(c.source, TapSource):
                bugs.detach_tap(target, c.source)
        for tap in c.taps:  # the eavesdrop ends with its target: so does the tap
            owner = sw.all.get(tap.owner)
            if owner is not None:
                sw.ticker.after(1, lambda o=owner: hangup(sw, o, "NORMAL_CLEARING"))

    def complete() -> None:
        for c in pair:
            c.state = c.running_state = "CS_REPORTING"
            sw.chan_event(c, "CHANNEL_HANGUP_COMPLETE")
        sw.ticker.after(DESTROY_AFTER_TICKS, destroy)

    def destroy() -> None:
        if any(c.wedged for c in pair):
            log.error("simulator: %s stuck in switch_ivr_deactivate_unicast (displace and "
                      "write-back on one call): never destroyed", ch.name)
            return
        for c in pair:
            c.state = c.running_state = "CS_DESTROY"
            sw.chan_event(c, "CHANNEL_DESTROY")
            sw.destroyed(c)

    sw.ticker.after(1, complete)


def hangup_one(sw: Switch, ch: SimChannel, cause: str) -> None:
    """One channel goes down now: media closed, queues dropped, its thread stopped, then
    CHANNEL_HANGUP (and UNBRIDGE / PLAYBACK_STOP / UNPARK for what it was running)."""
    ch.up = False
    ch.hangup_cause = cause
    ch.hangup_at = time.time()
    ch.state = "CS_HANGUP"
    was_parked = ch.parked
    channel_unicast.close_all(ch)
    if ch.recordings:  # the media bugs close with the channel: a FIFO's reader sees EOF
        recording.close_all(sw, ch)
    ch.private.clear()
    ch.events.clear()
    sw.active.pop(ch.uuid, None)
    sw.chan_event(ch, "CHANNEL_HANGUP")
    ch.call_state = "HANGUP"
    if ch.mode == BRIDGE:
        sw.chan_event(ch, "CHANNEL_UNBRIDGE")
    if ch.mode in (APP, PARK_PLAYBACK) and ch.play_path:
        playback.end(sw, ch, "break")
    if was_parked:
        ch.parked = False
        sw.chan_event(ch, "CHANNEL_UNPARK")
    ch.mode = DOWN
