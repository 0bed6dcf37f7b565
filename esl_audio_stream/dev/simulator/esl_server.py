"""The inbound event socket (mod_event_socket listener_run/parse_command) on gevent.

The listener owns its connections; what a command does to calls is asked of a `CommandHost`
(the Simulator, which passes itself in), so this module never imports the simulator's core.
Each connection has a reader (the StreamServer handler) that runs commands in order, and a
writer greenlet that drains a bounded queue of outgoing bytes, so firing an event never blocks
the simulator: a client that cannot keep up is disconnected instead of stalling calls.
Events produced while a command runs are written after that command's reply, as FreeSWITCH
sends queued events only between commands.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid as _uuid
from typing import Protocol

import gevent
from gevent.pool import Pool
from gevent.queue import Full, Queue
from gevent.server import StreamServer

from .events import Event, Subscription, name_event
from .packets import Packet, PacketError, PacketReader

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


class CommandHost(Protocol):
    """What ESL commands act on (implemented by the Simulator)."""

    def api(self, name: str, arg: str | None) -> str:
        """The api/response body of `api <name> [arg]`."""

    def bgapi(self, name: str, arg: str | None, job_uuid: str) -> None:
        """Run the api command in the background; its BACKGROUND_JOB carries `job_uuid`."""

    def sendmsg(self, uuid: str, pkt: Packet) -> bool:
        """Queue a sendmsg to a live channel; False when there is none."""

    def sendevent(self, ev: Event) -> None:
        """Queue the event to the session it names, or fire it."""


class EslServer:
    """The listener: accepts clients, owns every connection, delivers fired events.

    A fault to inject on the ESL side (a connection cut on demand, the listener going away
    with FreeSWITCH) acts here, on `connections` and the StreamServer.
    """

    def __init__(self, host: CommandHost, address: tuple[str, int], password: str,
                 queue_len: int) -> None:
        self.host = host
        self.bind = address
        self.password = password
        self.queue_len = queue_len
        self.connections: set[EslConnection] = set()
        self._server: StreamServer | None = None
        self._handlers = Pool(None)

    def start(self) -> None:
        self._server = StreamServer(self.bind, self._handle, spawn=self._handlers)
        self._server.start()
        self.bind = self._server.address[:2]  # a port of 0 is chosen once: it stays ours

    def go_away(self, spare: tuple[int, ...] = ()) -> None:
        """The listener closes and every client is dropped at once (FreeSWITCH gone, or its
        event socket reloaded): clients trying meanwhile are refused. `start()` brings it back
        on the same address. `spare`: the client ports of connections that stay (a partition
        between FreeSWITCH and one client leaves the others alone)."""
        if self._server is not None:
            self._server.close()  # the listening socket only: stop() would kill every handler
        for conn in list(self.connections):
            if conn.address[1] not in spare:
                conn.kill()
        self._server = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        addr = self._server.address
        return addr[0], addr[1]

    def fire(self, ev: Event) -> None:
        """Deliver an event to every subscribed connection (never blocks)."""
        for conn in list(self.connections):
            if conn.sub.wants(ev):
                conn.deliver(ev)

    def close(self) -> None:
        """Stop accepting and drop every client now."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.kill()

    def stop(self) -> None:
        """After close(): wait (bounded) for every connection's handler to end."""
        self._handlers.kill(block=True, timeout=2)
        if self._server is not None:
            self._server.stop(timeout=1)

    def _handle(self, sock, address) -> None:
        conn = EslConnection(self, sock, address)
        self.connections.add(conn)
        conn.serve()

    def _drop(self, conn: EslConnection) -> None:
        self.connections.discard(conn)


class EslConnection:
    """One inbound ESL client."""

    def __init__(self, server: EslServer, sock, address) -> None:
        self.server = server
        self.host = server.host
        self.sock = sock
        # listener_run sets TCP_NODELAY: without it an event written after a reply waits for
        # the client's delayed ACK (~40 ms on loopback), which FreeSWITCH never makes it do
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.address = address
        self.sub = Subscription()
        self.authed = False
        self.running = True
        self._queue: Queue = Queue(maxsize=server.queue_len)
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
        """Called by EslServer.fire for each subscribed event; never blocks."""
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
            self.server._drop(self)

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
                if cmd[5:] == self.server.password:
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
            return api_response(self.host.api(name, arg if " " in cmd[4:] else None))
        if low.startswith("bgapi "):
            name, _, arg = cmd[6:].partition(" ")
            job = pkt.get("job-uuid") or str(_uuid.uuid4())
            self.host.bgapi(name, arg if " " in cmd[6:] else None, job)
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
        if not self.host.sendmsg(uuid, pkt):
            return f"-ERR invalid session id [{uuid}]"
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
        self.host.sendevent(ev)
        return f"+OK {event_uuid}"
