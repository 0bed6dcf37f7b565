"""The inbound event socket (mod_event_socket listener_run/parse_command) on gevent.

Each connection has a reader (the StreamServer handler) that runs commands in order, and a
writer greenlet that drains a bounded queue of outgoing bytes, so firing an event never blocks
the simulator: a client that cannot keep up is disconnected instead of stalling calls.
Events produced while a command runs are written after that command's reply, as FreeSWITCH
sends queued events only between commands.
"""

from __future__ import annotations

import contextlib
import logging
import uuid as _uuid
from typing import TYPE_CHECKING

import gevent
from gevent.queue import Full, Queue

from .events import Event, Subscription, name_event
from .packets import Packet, PacketError, PacketReader

if TYPE_CHECKING:
    from .core import Simulator

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 25.0  # read_packet(listener, &event, 25) before auth
SEND_TIMEOUT = 10.0
GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
_CLOSE = object()


def _reply(text: str) -> bytes:
    if text.startswith("~"):
        return ("Content-Type: command/reply\n" + text[1:]).encode()
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def _disconnect_notice(message: str = GOODBYE) -> bytes:
    body = message.encode()
    return b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s" % (len(body), body)


def api_response(body: str) -> bytes:
    data = body.encode("utf-8", "surrogateescape")
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(data), data)


class EslConnection:
    """One inbound ESL client."""

    def __init__(self, sim: Simulator, sock, address) -> None:
        self.sim = sim
        self.sock = sock
        self.address = address
        self.sub = Subscription()
        self.authed = False
        self.running = True
        self._queue: Queue = Queue(maxsize=sim.esl_queue_len)
        self._held: list[bytes] | None = None  # events fired while a command runs
        self._writer: gevent.Greenlet | None = None
        self.lost = 0

    # -- outgoing -------------------------------------------------------------------------
    def _put(self, data: object) -> None:
        try:
            self._queue.put_nowait(data)
        except Full:
            self.lost += 1
            log.warning("simulator: ESL client %s too slow, disconnecting", self.address)
            self.kill()

    def deliver(self, ev: Event) -> None:
        """Called by Simulator.fire for each subscribed event; never blocks."""
        if not self.running:
            return
        data = ev.framed(self.sub.fmt)
        if self._held is not None:
            self._held.append(data)
        else:
            self._put(data)

    def _write_loop(self) -> None:
        sock = self.sock
        try:
            while True:
                item = self._queue.get()
                if item is _CLOSE:
                    break
                with gevent.Timeout(SEND_TIMEOUT):
                    sock.sendall(item)
        except (OSError, gevent.Timeout):
            pass
        finally:
            self.running = False
            self._close_socket()

    def _close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def kill(self) -> None:
        """Drop the client now (slow client, simulator stop)."""
        self.running = False
        w = self._writer
        if w is not None and w is not gevent.getcurrent():
            w.kill(block=False)
        self._close_socket()

    # -- incoming -------------------------------------------------------------------------
    def serve(self) -> None:
        """The StreamServer handler: runs until the client leaves or is dropped."""
        self._writer = gevent.spawn(self._write_loop)
        self._put(b"Content-Type: auth/request\n\n")
        reader = PacketReader()
        try:
            while self.running:
                pkt = reader.next_packet()
                if pkt is None:
                    timeout = None if self.authed else AUTH_TIMEOUT
                    with gevent.Timeout(timeout, False):
                        data = self.sock.recv(65536)
                        if not data:
                            break
                        reader.feed(data)
                        continue
                    break  # auth timeout
                self._run(pkt)
        except (OSError, PacketError):
            pass
        finally:
            if self.running:
                self._put(_disconnect_notice())
                self._put(_CLOSE)
                self.running = False
            w = self._writer
            if w is not None:
                w.join(SEND_TIMEOUT)
                w.kill(block=False)
            self._close_socket()
            self.sim._drop_connection(self)

    def _run(self, pkt: Packet) -> None:
        self._held = []
        try:
            reply = self._command(pkt)
            if reply is not None:
                self._put(reply)
        finally:
            held, self._held = self._held, None
            for data in held:
                self._put(data)

    def _command(self, pkt: Packet) -> bytes | None:
        cmd = pkt.command
        low = cmd.lower()
        if low.startswith(("exit", "...")):
            self.running = False
            self._put(_reply("+OK bye"))
            self._put(_disconnect_notice())
            self._put(_CLOSE)
            return None
        if not self.authed:
            if low.startswith("auth "):
                if cmd[5:] == self.sim.password:
                    self.authed = True
                    return _reply("+OK accepted")
                self.running = False
                self._put(_reply("-ERR invalid"))
                self._put(_disconnect_notice())
                self._put(_CLOSE)
                return None
            return _reply("-ERR command not found")
        if low.startswith("filter "):
            return _reply(self.sub.filter(cmd[7:]))
        if low.startswith("sendmsg"):
            return _reply(self._sendmsg(pkt))
        if low.startswith("sendevent"):
            return _reply(self._sendevent(pkt))
        if low.startswith("api "):
            name, _, arg = cmd[4:].partition(" ")
            return api_response(self.sim.api(name, arg if " " in cmd[4:] else None))
        if low.startswith("bgapi "):
            name, _, arg = cmd[6:].partition(" ")
            job = pkt.get("job-uuid") or str(_uuid.uuid4())
            self.sim.bgapi(name, arg if " " in cmd[6:] else None, job)
            return _reply(f"~Reply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n")
        if low.startswith("event"):
            rest = cmd[5:]
            if " " not in rest:
                return _reply("-ERR no keywords supplied")
            words = rest[rest.index(" ") + 1 :].split(" ")
            if words[0].lower() == "xml":
                return _reply("-ERR simulator: xml event format not simulated")
            return _reply(self.sub.event(words))
        if low.startswith("nixevent"):
            rest = cmd[8:]
            words = rest[rest.index(" ") + 1 :].split(" ") if " " in rest else []
            return _reply(self.sub.nixevent(words))
        if low.startswith("noevents"):
            self._held = []  # flush_listener drops what was queued
            return _reply(self.sub.noevents())
        return _reply("-ERR command not found")

    def _sendmsg(self, pkt: Packet) -> str:
        uuid = pkt.command[7:].lstrip(" ")
        if not uuid:
            uuid = pkt.get("session-id") or ""
        ch = self.sim._live(uuid) if uuid else None
        if ch is None:
            return f"-ERR invalid session id [{uuid}]"
        ch.private.append(("sendmsg", pkt))
        return "+OK"

    def _sendevent(self, pkt: Packet) -> str:
        event_uuid = str(_uuid.uuid4())
        ename = pkt.command[9:].lstrip(" \t")
        name = (name_event(ename) if ename else None) or "CLONE"
        ev = Event(name)
        ev.add("Command", pkt.command)
        for k, v in pkt.headers:
            ev.add(k, v)
        ev.add("Event-UUID", event_uuid)
        if name == "CUSTOM":
            sub = ev.get("Event-Subclass")
            if sub:
                ev.set_subclass(sub)
        if pkt.body:
            ev.body = pkt.body
        self.sim._route_sendevent(ev)
        return f"+OK {event_uuid}"
