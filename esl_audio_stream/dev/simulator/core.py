"""The simulated FreeSWITCH: calls, their park loops, unicast media, events and the ESL server.

One ticker greenlet drives every channel on an absolute 20 ms schedule, doing per tick what each
channel's own thread does in FreeSWITCH (switch_ivr_park): read a frame, send it if unicast is
active, parse queued messages (sendmsg, broadcast), fire one queued sendevent. Timing rules that
the daemon depends on (a sendmsg acts on a later tick, events queued to a busy channel are never
fired, a broadcast kills unicast for good) come from that loop, so they are modelled, not faked.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
import uuid as _uuid
import warnings
from array import array
from collections.abc import Callable

import gevent
from gevent.pool import Group, Pool

with warnings.catch_warnings():  # stdlib audioop warns on 3.11/3.12; audioop-lts on >= 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop
from gevent.server import StreamServer

from . import api as _api
from .channel import APP, BRIDGE, BRIDGED, DOWN, PARK, PARK_PLAYBACK, ROUTING, SimChannel
from .dialstring import DialError, parse_originate
from .esl_server import EslConnection
from .events import CoreInfo, Event
from .media import Library, TapSource, make_source, parse_spec, wav_duration
from .packets import Packet
from .unicast import SimUnicast

log = logging.getLogger(__name__)

TICK = 0.020
EVENT_QUEUE_LEN = 1000  # a session's event queue; when full, sendevent fires at once
DESTROY_AFTER_TICKS = 2  # CHANNEL_DESTROY this many ticks after HANGUP_COMPLETE
MAX_LATE_TICKS = 10  # further behind than this, the schedule is reset instead of bursting
ENDED_KEEP = 4096  # ended channels kept for inspection by sim.channel(uuid)


def _atoi(s: str) -> int:
    """C atoi: leading digits, else 0."""
    s = s.strip()
    n = 0
    sign = 1
    if s[:1] in "+-" and s[:1]:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    for ch in s:
        if not ch.isdigit():
            break
        n = n * 10 + int(ch)
    return sign * n


def playback_seconds(path: str) -> float | None:
    """How long a simulated playback lasts; None = until stopped."""
    if path.startswith("silence_stream://"):
        ms = _atoi(path[len("silence_stream://"):].split(",")[0])
        return None if ms <= 0 else ms / 1000.0
    if path.startswith("tone_stream://"):
        return None
    d = wav_duration(path)
    return d if d is not None else 1.0


class Simulator:
    """A FreeSWITCH stand-in on 127.0.0.1. See the package README for where it differs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon",
                 extensions: dict[str, str] | None = None, written_limit: int = 4 << 20,
                 esl_queue_len: int = 10000) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.extensions = dict(extensions or {"1000": "tone:440"})
        for spec in self.extensions.values():
            parse_spec(spec)
        self.written_limit = written_limit
        self.esl_queue_len = esl_queue_len
        self.core = CoreInfo()
        self.lib = Library()
        self.started_at = time.time()
        self.sessions_since_startup = 0
        self.sessions_peak = 0
        self._server: StreamServer | None = None
        self._handlers = Pool(None)
        self._jobs = Group()
        self._ticker: gevent.Greenlet | None = None
        self._conns: set[EslConnection] = set()
        self._all: dict[str, SimChannel] = {}  # created, not yet destroyed (show channels)
        self._ended: dict[str, SimChannel] = {}  # destroyed, kept for inspection
        self._active: dict[str, SimChannel] = {}  # A legs whose thread the ticker runs
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.tick_no = 0
        self.late_resets = 0
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the ESL port and start the ticker; returns at once."""
        if self._running:
            return
        self._server = StreamServer((self.host, self.port), self._handle, spawn=self._handlers)
        self._server.start()
        self._running = True
        self._ticker = gevent.spawn(self._tick_loop)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        addr = self._server.address
        return addr[0], addr[1]

    def serve_forever(self) -> None:
        self.start()
        assert self._ticker is not None
        self._ticker.join()

    def stop(self) -> None:
        """Hang up every call, close every socket, end every greenlet."""
        if not self._running:
            return
        self._running = False
        for ch in list(self._all.values()):
            if ch.up:
                self._hangup_one(ch, "SYSTEM_SHUTDOWN")
        for ch in list(self._all.values()):
            self._teardown_media(ch)
        self._active.clear()
        self._timers.clear()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.kill()
        self._jobs.kill(block=True, timeout=2)
        self._handlers.kill(block=True, timeout=2)
        if self._ticker is not None:
            self._ticker.kill(block=True, timeout=2)
        if self._server is not None:
            self._server.stop(timeout=1)
        for ch in list(self._all.values()):
            self._ended[ch.uuid] = ch
        self._all.clear()

    # -- inspection -----------------------------------------------------------------------
    def channel(self, uuid: str) -> SimChannel | None:
        return self._all.get(uuid) or self._ended.get(uuid)

    @property
    def channels(self) -> dict[str, SimChannel]:
        """Live (not hung up) channels, both legs of every call."""
        return {u: c for u, c in self._all.items() if c.up}

    def _live(self, uuid: str) -> SimChannel | None:
        """switch_core_session_locate: only channels that are up."""
        ch = self._all.get(uuid)
        return ch if ch is not None and ch.up else None

    # -- ESL plumbing ---------------------------------------------------------------------
    def _handle(self, sock, address) -> None:
        conn = EslConnection(self, sock, address)
        self._conns.add(conn)
        conn.serve()

    def _drop_connection(self, conn: EslConnection) -> None:
        self._conns.discard(conn)

    def fire(self, ev: Event) -> None:
        """Deliver an event to every subscribed ESL connection (never blocks)."""
        for conn in list(self._conns):
            if conn.sub.wants(ev):
                conn.deliver(ev)

    def api(self, name: str, arg: str | None) -> str:
        """Run an api command; the text is the api/response body."""
        out = _api.execute(self, name, arg)
        return out if out else "-ERR no reply\n"

    def bgapi(self, name: str, arg: str | None, job_uuid: str) -> None:
        def job() -> None:
            out = _api.execute(self, name, arg)
            if out is None:
                out = "Command returned no output!"
            ev = self.core.create("BACKGROUND_JOB", func="api_exec")
            ev.add("Job-UUID", job_uuid)
            ev.add("Job-Command", name)
            if arg is not None:
                ev.add("Job-Command-Arg", arg)
            ev.body = out
            self.fire(ev)

        self._jobs.spawn(job)

    def originate(self, dialstring: str) -> str:
        """Same text as `api originate <dialstring>`."""
        return self.api("originate", dialstring)

    def kill(self, uuid: str) -> str:
        """Same text as `api uuid_kill <uuid>`."""
        return self.api("uuid_kill", uuid)

    # -- channel events -------------------------------------------------------------------
    def chan_event(self, ch: SimChannel, name: str,
                   extra: tuple[tuple[str, str], ...] = ()) -> None:
        if name == "CHANNEL_EXECUTE":
            # switch_core_session_execute_application sets it before firing CHANNEL_EXECUTE
            ch.variables["current_application"] = dict(extra).get("Application", "")
        ev = self.core.create(name, func="switch_channel")
        ev.headers += ch.data_headers(name)
        for k, v in extra:
            ev.add(k, v)
        self.fire(ev)

    def _route_sendevent(self, ev: Event) -> None:
        """mod_event_socket's sendevent: queue to a live session named by Unique-ID, else fire.

        Between hang-up and destroy the event is dropped (see README: FreeSWITCH's own code
        would fire it at once; the facts file asks for the harsher behaviour)."""
        uid = ev.get("unique-id")
        if uid:
            ch = self._all.get(uid)
            if ch is not None and not ch.up:
                return
            if ch is not None and len(ch.events) < EVENT_QUEUE_LEN:
                ch.events.append(ev)
                return
        self.core.prep(ev, func="parse_command")
        self.fire(ev)

    # -- calls ----------------------------------------------------------------------------
    def new_call(self, extension: str, spec: str, rate: int, variables: dict[str, str],
                 context: str, app: str, app_arg: str) -> str:
        a_uuid = variables.get("origination_uuid") or str(_uuid.uuid4())
        b_uuid = str(_uuid.uuid4())
        cid_name = variables.get("origination_caller_id_name", "FreeSWITCH")
        cid_num = variables.get("origination_caller_id_number", "0000000000")
        a_vars = {
            "direction": "outbound", "uuid": a_uuid, "session_id": str(self._next_session()),
            "channel_name": f"loopback/{extension}-a", **variables, "loopback_leg": "A",
            "is_loopback": "1", "other_loopback_leg_uuid": b_uuid, "read_codec": "L16",
            "read_rate": str(rate), "write_codec": "L16", "write_rate": str(rate),
        }
        b_vars = {
            "direction": "inbound", "uuid": b_uuid, "session_id": str(self._next_session()),
            "channel_name": f"loopback/{extension}-b", "loopback_leg": "B", "is_loopback": "1",
            "other_loopback_leg_uuid": a_uuid, "read_codec": "L16", "read_rate": str(rate),
            "write_codec": "L16", "write_rate": str(rate),
        }
        tap_target: SimChannel | None = None
        if spec.startswith("tap:"):  # inline native_eavesdrop: the B leg eavesdrops on a target
            target_uuid, _, side = spec[4:].partition(" ")
            tap_target = self._live(target_uuid)
            if tap_target is not None:
                tap_target.bug_seq += 1
                source = TapSource(self.lib, rate, tap_target, side.strip() != "write",
                                   tap_target.bug_seq)
                tap_target.taps.append(source)
            else:
                source = make_source(self.lib, "silence", rate)
        else:
            source = make_source(self.lib, spec, rate)
        a = SimChannel(a_uuid, f"loopback/{extension}-a", "a", extension, rate, a_vars,
                       source, "outbound", cid_name, cid_num, context)
        if isinstance(source, TapSource):
            source.owner = a_uuid
        b = SimChannel(b_uuid, f"loopback/{extension}-b", "b", extension, rate, b_vars,
                       make_source(self.lib, "silence", rate), "inbound", cid_name, cid_num,
                       context)
        a.other, b.other = b, a
        a.cng_every = max(0, _atoi(variables.get("sim_cng_every", "0")))
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
        self._all[a_uuid] = a
        self._all[b_uuid] = b
        self.sessions_peak = max(self.sessions_peak, len(self._all))
        self.chan_event(a, "CHANNEL_CREATE")
        self.chan_event(b, "CHANNEL_CREATE")
        now = time.time()
        for ch in (b, a):
            ch.answered = True
            ch.answered_at = now
            ch.call_state = "ACTIVE"
            ch.state = ch.running_state = "CS_EXECUTE" if ch is b else "CS_CONSUME_MEDIA"
            self.chan_event(ch, "CHANNEL_ANSWER")
        self.chan_event(b, "CHANNEL_EXECUTE", (("Application", b.app),
                                               ("Application-Data", b.app_arg)))
        a.mode = ROUTING
        self._active[a_uuid] = a
        if spec.startswith("tap:") and tap_target is None:  # nothing to eavesdrop on: it ends
            self._after(1, lambda: self.hangup(a, "NORMAL_CLEARING"))
        return a_uuid

    def _next_session(self) -> int:
        self.sessions_since_startup += 1
        return self.sessions_since_startup

    def hangup(self, ch: SimChannel, cause: str = "NORMAL_CLEARING") -> None:
        """Hang up a channel and its loopback partner; the rest of the sequence follows on
        later ticks (HANGUP_COMPLETE next tick, DESTROY a few ticks after)."""
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
            self._hangup_one(c, cause)
        for c in pair:
            if c.tap_target:  # a tap that goes stops eavesdropping on its target
                target = self._all.get(c.tap_target)
                if target is not None and isinstance(c.source, TapSource):
                    target.taps = [t for t in target.taps if t is not c.source]
            for tap in c.taps:  # the eavesdrop ends with its target: so does the tap
                owner = self._all.get(tap.owner)
                if owner is not None:
                    self._after(1, lambda o=owner: self.hangup(o, "NORMAL_CLEARING"))

        def complete() -> None:
            for c in pair:
                c.state = c.running_state = "CS_REPORTING"
                self.chan_event(c, "CHANNEL_HANGUP_COMPLETE")
            self._after(DESTROY_AFTER_TICKS, destroy)

        def destroy() -> None:
            if any(c.wedged for c in pair):
                log.error("simulator: %s stuck in switch_ivr_deactivate_unicast (displace and "
                          "write-back on one call): never destroyed", ch.name)
                return
            for c in pair:
                c.state = c.running_state = "CS_DESTROY"
                self.chan_event(c, "CHANNEL_DESTROY")
                self._all.pop(c.uuid, None)
                self._ended[c.uuid] = c
            while len(self._ended) > ENDED_KEEP:
                self._ended.pop(next(iter(self._ended)))

        self._after(1, complete)

    def _hangup_one(self, ch: SimChannel, cause: str) -> None:
        ch.up = False
        ch.hangup_cause = cause
        ch.hangup_at = time.time()
        ch.state = "CS_HANGUP"
        was_parked = ch.parked
        self._teardown_media(ch)
        ch.private.clear()
        ch.events.clear()
        self._active.pop(ch.uuid, None)
        self.chan_event(ch, "CHANNEL_HANGUP")
        ch.call_state = "HANGUP"
        if ch.mode == BRIDGE:
            self.chan_event(ch, "CHANNEL_UNBRIDGE")
        if ch.mode in (APP, PARK_PLAYBACK) and ch.play_path:
            self._end_playback(ch, "break")
        if was_parked:
            ch.parked = False
            self.chan_event(ch, "CHANNEL_UNPARK")
        ch.mode = DOWN

    def _teardown_media(self, ch: SimChannel) -> None:
        for u in (ch.unicast, ch.park_conninfo, *ch.leaked):
            if u is not None:
                u.close()
        ch.unicast = None
        ch.park_conninfo = None
        ch.leaked.clear()

    # -- the ticker -----------------------------------------------------------------------
    def _after(self, ticks: int, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self.tick_no + ticks, next(self._seq), fn))

    def _tick_loop(self) -> None:
        """Absolute 20 ms schedule: deadline n is start + n*20 ms, so no drift accumulates."""
        start = time.monotonic()
        n = 0
        while self._running:
            n += 1
            delay = start + n * TICK - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            elif delay < -MAX_LATE_TICKS * TICK:
                self.late_resets += 1
                start = time.monotonic()
                n = 0
            try:
                self._tick()
            except Exception:  # one broken channel must not stop every call
                log.exception("simulator: tick failed")

    def _tick(self) -> None:
        self.tick_no += 1
        timers = self._timers
        while timers and timers[0][0] <= self.tick_no:
            _, _, fn = heapq.heappop(timers)
            fn()
        for ch in list(self._active.values()):
            self._run_channel(ch)

    def _run_channel(self, ch: SimChannel) -> None:
        if ch.transfer_to is not None:
            self._do_transfer(ch)
            return
        mode = ch.mode
        if mode == PARK:
            self._park_tick(ch)
        elif mode == ROUTING:
            self._start_app(ch)
        elif mode == PARK_PLAYBACK:
            ch.source.next_frame()  # playback reads frames too: the far end keeps talking
            if ch.play_end >= 0 and self.tick_no >= ch.play_end:
                self._end_playback(ch, ch.play_status)
                # switch_core_session_reset tears the unicast down; the park loop's conninfo
                # still points at it, so a later unicast sendmsg is shut down again at once.
                self._deactivate_unicast(ch)
                ch.mode = PARK
                self._parse_private(ch)
                if ch.mode == PARK:
                    self._dequeue_event(ch)
        elif mode == BRIDGE:
            self._bridge_tick(ch)
        elif mode == APP:
            frame = ch.source.next_frame()
            if ch.displace:
                self._displace_tick(ch, frame)
            self._parse_private(ch)
            if ch.mode == APP and ch.play_end >= 0 and self.tick_no >= ch.play_end:
                self._end_playback(ch, ch.play_status)
                self.hangup(ch, "NORMAL_CLEARING")

    def _bridge_tick(self, ch: SimChannel) -> None:
        """switch_ivr_multi_threaded_bridge, one frame each way: what one party reads is what
        the other hears. Write-side displaces mix into what each hears."""
        peer = ch.bridge_peer
        r1 = ch.source.next_frame()
        ch.frames_read += 1
        r2 = peer.source.next_frame() if peer is not None else self.lib.silence(ch.rate)
        for c, read, heard in ((ch, r1, r2), (peer, r2, r1)):
            if c is None:
                continue
            c.tick_displace.clear()
            c.last_read = read
            c.last_write = heard
            c.source.write(bytes(heard))
            if c.displace:
                self._displace_tick(c, read)
        self._parse_private(ch)

    def _displace_tick(self, ch: SimChannel, frame: bytes | memoryview) -> bytes | memoryview:
        """switch_ivr_displace_session's media bug: one frame of each displaced file per tick,
        into what the caller hears (write side; `echo` plays it back) or, with `r`, into the
        read side. Ends by itself at the end of the file, firing nothing."""
        fb = len(frame)
        for path, d in list(ch.displace.items()):
            pcm, off, mux, read_side, seq = d
            part = pcm[off:off + fb]
            if len(part) < fb:
                part += bytes(fb - len(part))
            d[1] = off + fb
            if d[1] >= len(pcm):
                del ch.displace[path]
            if read_side:
                frame = audioop.add(frame, part, 2) if mux else part
            else:
                ch.displaced += part
                ch.source.write(part)
                ch.tick_displace.append((seq, part))
        return frame

    def _park_tick(self, ch: SimChannel) -> None:
        frame = ch.source.next_frame()
        if ch.tick_displace:
            ch.tick_displace.clear()
        if ch.displace:
            frame = self._displace_tick(ch, frame)
        ch.last_read = frame
        if ch.taps:  # what the caller hears this tick: the write-back audio that came in
            acc = ch.write_acc
            fb = len(frame)
            if acc:
                heard = bytes(acc[:fb])
                del acc[:fb]
                ch.last_write = heard + bytes(fb - len(heard)) if len(heard) < fb else heard
            else:
                ch.last_write = None
        ch.frames_read += 1
        if ch.cng_every and ch.frames_read % ch.cng_every == 0:
            frame = self.lib.cng(ch.rate)
        if ch.unicast is not None:
            pc = ch.park_conninfo
            if pc is None:
                pc = ch.park_conninfo = ch.unicast
                pc.launch(lambda data, ch=ch: self._write_back(ch, data))
            if pc.send(frame):
                ch.frames_sent += 1
                if ch.send_times is not None:
                    ch.send_times.append(time.monotonic())
                if ch.sent_audio is not None:
                    ch.sent_audio += frame
            else:
                self._deactivate_unicast(ch)
        self._parse_private(ch)
        if ch.mode == PARK:
            self._dequeue_event(ch)

    def _dequeue_event(self, ch: SimChannel) -> None:
        if ch.events:
            ev = ch.events.popleft()
            ev.headers += ch.data_headers(ev.name)
            self.fire(ev)

    def _write_back(self, ch: SimChannel, data: bytes) -> None:
        """unicast_thread_run: written into the channel at once, no pacing."""
        if not ch.up:
            return
        if any(not d[3] for d in ch.displace.values()):
            ch.wedged = True  # both injection paths on one call: FreeSWITCH wedges (facts)
        w = ch.written
        w += data
        ch.written_total += len(data)
        if ch.taps:
            acc = ch.write_acc
            acc += data
            if len(acc) > 25 * len(data):  # a writer far ahead of real time: keep the newest
                del acc[: len(acc) - 25 * len(data)]
        if len(w) > 2 * self.written_limit:
            del w[: len(w) - self.written_limit]
        ch.source.write(data)

    def _deactivate_unicast(self, ch: SimChannel) -> None:
        u = ch.unicast
        if u is not None:
            log.debug("simulator: %s Shutting down unicast connection", ch.name)
            u.close()
            ch.unicast = None

    def _parse_private(self, ch: SimChannel) -> None:
        """switch_ivr_parse_all_events: act on queued sendmsg / broadcast messages."""
        while ch.private and ch.mode in (PARK, APP):
            kind, msg = ch.private.popleft()
            if kind == "broadcast":
                assert isinstance(msg, str)
                if ch.mode == PARK:
                    self._start_playback(ch, msg, PARK_PLAYBACK)
                    return
                log.info("simulator: broadcast to %s ignored (it runs %s)", ch.name, ch.app)
                continue
            assert isinstance(msg, Packet)
            cmd = msg.get("call-command") or ""
            if cmd == "unicast":
                self._activate_unicast(ch, msg)
            elif cmd == "hangup":
                self.hangup(ch, msg.get("hangup-cause") or "NORMAL_CLEARING")
                return
            elif cmd == "execute" and (msg.get("execute-app-name") or "") == "playback":
                if ch.mode == PARK:
                    self._start_playback(ch, msg.get("execute-app-arg") or "", PARK_PLAYBACK)
                    return
            else:
                log.info("simulator: sendmsg %r on %s not simulated", cmd, ch.name)

    def _activate_unicast(self, ch: SimChannel, msg: Packet) -> None:
        local_ip = msg.get("local-ip") or "127.0.0.1"
        local_port = _atoi(msg.get("local-port") or "8025") & 0xFFFF
        remote_ip = msg.get("remote-ip") or "127.0.0.1"
        remote_port = _atoi(msg.get("remote-port") or "8026") & 0xFFFF
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

    def _start_app(self, ch: SimChannel) -> None:
        app, arg = ch.app, ch.app_arg
        ch.state = ch.running_state = "CS_EXECUTE"
        if app == "park":
            self.chan_event(ch, "CHANNEL_EXECUTE", (("Application", "park"),))
            ch.parked = True
            ch.mode = PARK
            ch.park_conninfo = None
            self.chan_event(ch, "CHANNEL_PARK")
        elif app == "playback":
            self._start_playback(ch, arg, APP)
        elif app == "bridge":
            self.chan_event(ch, "CHANNEL_EXECUTE", (("Application", "bridge"),
                                                    ("Application-Data", arg)))
            self._bridge(ch, arg)
        else:  # echo: runs until hang-up or transfer
            self.chan_event(ch, "CHANNEL_EXECUTE", (("Application", app),
                                                    ("Application-Data", arg)))
            ch.mode = APP
            ch.play_end = -1
            ch.play_path = ""

    def _bridge(self, ch: SimChannel, dialstring: str) -> None:
        """`bridge(loopback/<ext>[/<context>])`: originate the other party (a loopback call
        whose A leg hears `ch` and whose B leg runs the extension), then move audio both ways.
        A destination that does not route ends the call, as a failed bridge does."""
        try:
            dial = parse_originate(f"{dialstring} &park()")
        except (DialError, ValueError):
            dial = None
        spec = self.extensions.get(dial.extension) if dial is not None else None
        if dial is None or spec is None or spec.startswith("tap:"):
            self.hangup(ch, "NO_ROUTE_DESTINATION")
            return
        other = self._all[self.new_call(dial.extension, spec, ch.rate, dial.variables,
                                        dial.context, "", "")]
        self._active.pop(other.uuid, None)  # its thread is the bridge's other half
        other.mode = BRIDGED
        other.state = other.running_state = "CS_EXCHANGE_MEDIA"
        ch.mode = BRIDGE
        ch.state = ch.running_state = "CS_EXECUTE"
        ch.bridge_peer, other.bridge_peer = other, ch
        ch.variables["bridge_uuid"] = other.uuid
        self.chan_event(ch, "CHANNEL_BRIDGE", (("Bridge-A-Unique-ID", ch.uuid),
                                               ("Bridge-B-Unique-ID", other.uuid),
                                               ("Other-Leg-Unique-ID", other.uuid)))

    def _start_playback(self, ch: SimChannel, path: str, mode: str) -> None:
        ch.mode = mode
        ch.play_path = path
        ch.play_status = "done"
        secs = playback_seconds(path)
        ch.play_end = -1 if secs is None else self.tick_no + max(1, round(secs / TICK))
        self.chan_event(ch, "CHANNEL_EXECUTE", (("Application", "playback"),
                                                ("Application-Data", path)))
        self.chan_event(ch, "PLAYBACK_START", (("Playback-File-Path", path),))

    def _end_playback(self, ch: SimChannel, status: str) -> None:
        path = ch.play_path
        ch.play_path = ""
        self.chan_event(ch, "PLAYBACK_STOP", (("Playback-File-Path", path),
                                              ("Playback-Status", status)))
        self.chan_event(ch, "CHANNEL_EXECUTE_COMPLETE", (("Application", "playback"),
                                                         ("Application-Data", path),
                                                         ("Application-Response", "FILE PLAYED")))

    def _do_transfer(self, ch: SimChannel) -> None:
        """Leave whatever runs (the park loop tears unicast down), then route the new app on
        the next tick."""
        app, arg = ch.transfer_to or ("park", "")
        ch.transfer_to = None
        if ch.mode in (PARK_PLAYBACK, APP) and ch.play_path:
            self._end_playback(ch, "break")
        if ch.parked:
            ch.parked = False
            self.chan_event(ch, "CHANNEL_UNPARK")
        self._teardown_media(ch)
        ch.app, ch.app_arg = app, arg
        ch.mode = ROUTING
        ch.state = ch.running_state = "CS_ROUTING"

    def transfer(self, ch: SimChannel, app: str, arg: str) -> None:
        ch.transfer_to = (app, arg)
        self._active[ch.uuid] = ch

    def break_playback(self, ch: SimChannel, flush: bool) -> None:
        """CF_BREAK: the playback running (a broadcast in park, or an application's) stops at
        the channel's next frame, as if it had reached its end, with status `break`."""
        if flush:
            ch.private.clear()
        if ch.play_path and ch.mode in (PARK_PLAYBACK, APP):
            ch.play_end = self.tick_no + 1
            ch.play_status = "break"
            self._active[ch.uuid] = ch

    def broadcast(self, ch: SimChannel, path: str) -> None:
        ch.private.append(("broadcast", path))
        if ch.uuid not in self._active and ch.leg == "a":
            self._active[ch.uuid] = ch
