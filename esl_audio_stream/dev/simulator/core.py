"""The simulated FreeSWITCH as tests and the CLI use it: `Simulator` builds the pieces and owns
their lifetimes (the ESL listener, the ticker, background api jobs).

The pieces: the Switch (switch.py: session table, clock, event firing) that every behaviour
acts on -- each channel's thread per tick (park.py), calls (calls.py), playback (playback.py),
media bugs (bugs.py), unicast (channel_unicast.py) -- and the two ways in, the api commands
(api.py) and the ESL listener (esl_server.py), which receive this object and never import it.
"""

from __future__ import annotations

import gevent
from gevent.pool import Group

from . import api as _api
from . import calls, channel_unicast, park
from .channel import SimChannel
from .esl_server import EslServer
from .events import Event
from .media import parse_spec
from .packets import Packet
from .switch import Switch
from .ticker import Ticker


class Simulator:
    """A FreeSWITCH stand-in on 127.0.0.1. See the package README for where it differs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon",
                 extensions: dict[str, str] | None = None, written_limit: int = 4 << 20,
                 esl_queue_len: int = 10000) -> None:
        extensions = dict(extensions or {"1000": "tone:440"})
        for spec in extensions.values():
            parse_spec(spec)
        self.esl = EslServer(self, (host, port), password, esl_queue_len)
        self.ticker = Ticker(lambda: park.run_active(self.switch))
        self.switch = Switch(extensions, written_limit, self.ticker, self.esl.fire)
        self._jobs = Group()  # bgapi jobs
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the ESL port and start the ticker; returns at once."""
        if self._running:
            return
        self.esl.start()
        self._running = True
        self.ticker.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.esl.address

    def serve_forever(self) -> None:
        self.start()
        self.ticker.join()

    def stop(self) -> None:
        """Hang up every call, close every socket, end every greenlet."""
        if not self._running:
            return
        self._running = False
        sw = self.switch
        self.ticker.stop()
        for ch in list(sw.all.values()):
            if ch.up:
                calls.hangup_one(sw, ch, "SYSTEM_SHUTDOWN")
        for ch in list(sw.all.values()):
            channel_unicast.close_all(ch)
        sw.active.clear()
        self.esl.close()
        self._jobs.kill(block=True, timeout=2)
        self.esl.stop()
        self.ticker.join(2)
        for ch in list(sw.all.values()):
            sw.ended[ch.uuid] = ch
        sw.all.clear()

    # -- faults (for tests) -------------------------------------------------------------------
    def cut_esl(self, seconds: float, spare: tuple[int, ...] = ()) -> gevent.Greenlet:
        """Drop every ESL connection (but those from the client ports in `spare`) and refuse
        new ones for `seconds` (connection refused); calls and their media go on meanwhile.
        Returns the greenlet that brings it back."""
        self.esl.go_away(spare)
        return gevent.spawn_later(seconds, self._esl_back)

    def _esl_back(self) -> None:
        if self._running:
            self.esl.start()

    def restart(self, down: float = 0.5) -> gevent.Greenlet:
        """FreeSWITCH restarted: its ESL clients dropped first (they hear of nothing that
        follows), every call gone with its unicast and taps, the global variables back to
        their defaults and a new core UUID; ESL listens again after `down` seconds."""
        sw = self.switch
        self.esl.go_away()
        for ch in list(sw.all.values()):
            if ch.up:
                calls.hangup_one(sw, ch, "SYSTEM_SHUTDOWN")
        for ch in list(sw.all.values()):
            channel_unicast.close_all(ch)
            sw.destroyed(ch)
        sw.active.clear()
        sw.reset_core()
        return gevent.spawn_later(down, self._esl_back)

    # -- inspection -----------------------------------------------------------------------
    def channel(self, uuid: str) -> SimChannel | None:
        """A channel by uuid: live, hung up, or destroyed (the last ENDED_KEEP)."""
        sw = self.switch
        return sw.all.get(uuid) or sw.ended.get(uuid)

    @property
    def channels(self) -> dict[str, SimChannel]:
        """Live (not hung up) channels, both legs of every call."""
        return {u: c for u, c in self.switch.all.items() if c.up}

    @property
    def _all(self) -> dict[str, SimChannel]:  # read by dev/bench.py
        return self.switch.all

    @property
    def _ended(self) -> dict[str, SimChannel]:  # read by dev/bench.py
        return self.switch.ended

    # -- what ESL commands do (esl_server.CommandHost) -------------------------------------
    def api(self, name: str, arg: str | None) -> str:
        """Run an api command; the text is the api/response body."""
        out = _api.execute(self, name, arg)
        return out if out else "-ERR no reply\n"

    def bgapi(self, name: str, arg: str | None, job_uuid: str) -> None:
        def job() -> None:
            out = _api.execute(self, name, arg)
            if out is None:
                out = "Command returned no output!"
            ev = self.switch.core.create("BACKGROUND_JOB", func="api_exec")
            ev.add("Job-UUID", job_uuid)
            ev.add("Job-Command", name)
            if arg is not None:
                ev.add("Job-Command-Arg", arg)
            ev.body = out
            self.switch.fire(ev)

        self._jobs.spawn(job)

    def sendmsg(self, uuid: str, pkt: Packet) -> bool:
        return park.queue_message(self.switch, uuid, pkt)

    def sendevent(self, ev: Event) -> None:
        park.queue_event(self.switch, ev)

    # -- conveniences for tests -----------------------------------------------------------
    def originate(self, dialstring: str) -> str:
        """Same text as `api originate <dialstring>`."""
        return self.api("originate", dialstring)

    def kill(self, uuid: str) -> str:
        """Same text as `api uuid_kill <uuid>`."""
        return self.api("uuid_kill", uuid)
