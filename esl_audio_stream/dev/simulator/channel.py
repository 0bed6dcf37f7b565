"""One simulated channel: its state, variables and the data headers FreeSWITCH puts on its
events (switch_channel_event_set_data). No I/O here; the Simulator drives it.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from typing import TYPE_CHECKING

from .media import Source

if TYPE_CHECKING:
    from .packets import Packet
    from .unicast import SimUnicast

STATE_NUMBERS = {
    "CS_NEW": 0, "CS_INIT": 1, "CS_ROUTING": 2, "CS_SOFT_EXECUTE": 3, "CS_EXECUTE": 4,
    "CS_EXCHANGE_MEDIA": 5, "CS_PARK": 6, "CS_CONSUME_MEDIA": 7, "CS_HIBERNATE": 8,
    "CS_RESET": 9, "CS_HANGUP": 10, "CS_REPORTING": 11, "CS_DESTROY": 12,
}

# Events that carry variable_* headers (switch_channel_event_set_extended_data)
VERBOSE_EVENTS = frozenset({
    "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_ANSWER", "CHANNEL_PARK",
    "CHANNEL_UNPARK", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "REQUEST_PARAMS",
    "CHANNEL_DATA", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_DESTROY",
    "SESSION_HEARTBEAT", "API", "RECORD_START", "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP",
    "CALL_UPDATE", "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "TEXT",
    "CUSTOM",
})

# Modes of the channel's own thread (what would be running on it in FreeSWITCH)
ROUTING = "routing"  # answered, about to start its application
PARK = "park"  # inside switch_ivr_park
PARK_PLAYBACK = "park_playback"  # a broadcast playing inside the park loop
APP = "app"  # running another application (playback, echo)
BRIDGE = "bridge"  # running `bridge`: its ticks move audio both ways with the bridged peer
BRIDGED = "bridged"  # the far side of a bridge (the leg `bridge` originated); not ticked itself
DOWN = "down"  # hung up


class SimChannel:
    """Inspection handle for tests, and the simulator's per-channel state."""

    def __init__(self, uuid: str, name: str, leg: str, extension: str, rate: int,
                 variables: dict[str, str], source: Source | None, direction: str,
                 cid_name: str, cid_number: str, context: str) -> None:
        self.uuid = uuid
        self.name = name
        self.leg = leg
        self.extension = extension
        self.rate = rate
        self.variables = variables
        self.source = source
        self.direction = direction
        self.cid_name = cid_name
        self.cid_number = cid_number
        self.context = context
        self.created = time.time()
        self.answered_at = 0.0
        self.hangup_at = 0.0
        self.state = "CS_INIT"
        self.running_state = "CS_INIT"
        self.call_state = "DOWN"
        self.answered = False
        self.up = True
        self.parked = False
        self.mode = ROUTING
        self.app = ""
        self.app_arg = ""
        self.hangup_cause = ""
        self.other: SimChannel | None = None
        self.written = bytearray()
        self.written_total = 0
        self.frames_sent = 0
        self.send_times: array | None = None  # monotonic send time of each datagram, if asked
        self.sent_audio: bytearray | None = None  # every datagram's payload, if asked
        # uuid_displace: path -> [pcm at the channel rate, offset, mux, read-side]
        self.displace: dict[str, list] = {}
        self.displaced = bytearray()  # what the caller heard from write-side displaces
        # a write-side displace while frames came to the write-back port: FreeSWITCH then
        # cannot end the call (facts file); the simulator keeps it, stuck, like FreeSWITCH
        self.wedged = False
        self.frames_read = 0
        self.cng_every = 0
        # what FreeSWITCH keeps on the session
        self.unicast: SimUnicast | None = None  # CF_UNICAST + the "unicast" private
        self.park_conninfo: SimUnicast | None = None  # switch_ivr_park's local `conninfo`
        self.leaked: list[SimUnicast] = []  # replaced while active: FreeSWITCH never closes them
        # what media bugs (taps) see: the frame read and the frame written to the caller in the
        # latest tick, and the write-side displace parts of that tick with their bug order
        self.last_read: bytes | memoryview | None = None
        self.last_write: bytes | memoryview | None = None
        self.tick_displace: list[tuple[int, bytes]] = []
        self.write_acc = bytearray()  # write-back audio not yet heard (kept only when tapped)
        self.bug_seq = 0  # media bugs attached so far (displaces, taps, recordings), in order
        self.taps: list = []  # TapSources eavesdropping on this channel
        self.recordings: dict = {}  # uuid_record: path -> SimRecording (recording.py)
        self.tap_target = ""  # on a tap's two legs: the uuid it eavesdrops on
        self.bridge_peer: SimChannel | None = None
        self.private: deque[tuple[str, Packet | str]] = deque()  # sendmsg / broadcast queue
        self.events: deque = deque()  # sendevent queued to the session
        self.transfer_to: tuple[str, str] | None = None
        self.play_end = 0  # tick at which the current playback ends; -1 = never
        self.play_path = ""
        self.play_status = "done"  # how the current playback ends: done, or break (uuid_break)

    @property
    def unicast_active(self) -> bool:
        """True while the park loop is sending this channel's read audio."""
        pc = self.park_conninfo
        return (self.mode == PARK and self.unicast is not None and pc is not None
                and not pc.closed)

    @property
    def answer_state(self) -> str:
        if not self.up:
            return "hangup"
        return "answered" if self.answered else "ringing"

    def data_headers(self, event_name: str) -> list[tuple[str, str]]:
        """switch_channel_event_set_data: basic data, caller profile, then variables."""
        h: list[tuple[str, str]] = [
            ("Channel-State", self.running_state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(STATE_NUMBERS.get(self.state, 0))),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", self.direction),
            ("Presence-Call-Direction", self.direction),
            ("Channel-HIT-Dialplan", "true" if self.direction == "inbound" else "false"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
        ]
        if self.hangup_cause:
            h.append(("Hangup-Cause", self.hangup_cause))
        rate = str(self.rate)
        bits = str(self.rate * 16)
        ts = lambda t: str(int(t * 1_000_000)) if t else "0"  # noqa: E731
        h += [
            ("Channel-Read-Codec-Name", "L16"),
            ("Channel-Read-Codec-Rate", rate),
            ("Channel-Read-Codec-Bit-Rate", bits),
            ("Channel-Write-Codec-Name", "L16"),
            ("Channel-Write-Codec-Rate", rate),
            ("Channel-Write-Codec-Bit-Rate", bits),
            ("Caller-Direction", self.direction),
            ("Caller-Logical-Direction", self.direction),
            ("Caller-Dialplan", "inline" if self.leg == "a" else "XML"),
            ("Caller-Caller-ID-Name", self.cid_name),
            ("Caller-Caller-ID-Number", self.cid_number),
            ("Caller-Orig-Caller-ID-Name", self.cid_name),
            ("Caller-Orig-Caller-ID-Number", self.cid_number),
            ("Caller-Network-Addr", "127.0.0.1"),
            ("Caller-ANI", self.cid_number),
            ("Caller-Destination-Number", self.extension),
            ("Caller-Unique-ID", self.uuid),
            ("Caller-Source", "mod_loopback"),
            ("Caller-Context", self.context),
            ("Caller-Channel-Name", self.name),
            ("Caller-Profile-Index", "1"),
            ("Caller-Profile-Created-Time", ts(self.created)),
            ("Caller-Channel-Created-Time", ts(self.created)),
            ("Caller-Channel-Answered-Time", ts(self.answered_at)),
            ("Caller-Channel-Progress-Time", "0"),
            ("Caller-Channel-Progress-Media-Time", ts(self.answered_at)),
            ("Caller-Channel-Hangup-Time", ts(self.hangup_at)),
            ("Caller-Channel-Transfer-Time", "0"),
            ("Caller-Channel-Resurrect-Time", "0"),
            ("Caller-Channel-Bridged-Time", "0"),
            ("Caller-Channel-Last-Hold", "0"),
            ("Caller-Channel-Hold-Accum", "0"),
            ("Caller-Screen-Bit", "true"),
            ("Caller-Privacy-Hide-Name", "false"),
            ("Caller-Privacy-Hide-Number", "false"),
        ]
        if event_name in VERBOSE_EVENTS:
            h += [(f"variable_{k}", v) for k, v in self.variables.items() if v != ""]
        return h
