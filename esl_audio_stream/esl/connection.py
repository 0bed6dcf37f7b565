"""gevent shell around the sans-IO ESL protocol: one inbound connection to FreeSWITCH.

One owner greenlet connects, authenticates, (re)subscribes, then reads: it dispatches events in
order and hands each reply to the oldest waiting command (waiters.py: replies in wire order,
bgapi jobs by Job-UUID). When a session ends, every waiter fails at once and the owner reconnects
with backoff; the names subscribed (subscriptions.py) are sent again.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket as _socket
import time
import uuid as _uuid
from collections.abc import Callable, Sequence

import gevent
from gevent import socket
from gevent.event import Event as _Flag
from gevent.lock import Semaphore
from gevent.pool import Group

from .protocol import (
    ESLParser,
    ESLProtocolError,
    Event,
    Message,
    cmd_api,
    cmd_auth,
    cmd_bgapi,
    cmd_event_plain,
    cmd_exit,
    cmd_filter,
    cmd_sendevent,
    cmd_sendmsg,
)
from .subscriptions import BACKGROUND_JOB, Subscriptions
from .waiters import Waiters

__all__ = ["ESLAuthError", "ESLConnection", "ESLDisconnected", "ESLError", "ESLTimeout"]

log = logging.getLogger(__name__)

_RECV_SIZE = 65536
_STOP_EXIT_TIMEOUT = 1.0


class ESLError(Exception):
    """FreeSWITCH refused a command (``-ERR ...``) or the connection failed."""


class ESLTimeout(ESLError):
    """No answer within the timeout."""


class ESLDisconnected(ESLError):
    """Not connected, or the connection dropped while the command was waiting."""


class ESLAuthError(ESLError):
    """The event socket password was refused."""


def _tune(sock: socket.socket) -> None:
    """Small commands must leave at once; keepalive finds a dead peer the idle read never sees."""
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(_socket, opt):
            sock.setsockopt(_socket.IPPROTO_TCP, getattr(_socket, opt), value)


def _reply_text(msg: Message) -> str:
    text = msg.reply_text
    if text.startswith("-ERR"):
        raise ESLError(text)
    return text


class ESLConnection:
    """Inbound ESL client with command timeouts, resubscription and reconnect with backoff.

    ``on_event`` runs in the read greenlet, in wire order: it must not wait for ESL replies
    (that would deadlock the reader; commands issued from it raise RuntimeError). Spawn a
    greenlet for such work. BACKGROUND_JOB events that answer our own ``bgapi`` are consumed here.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8021,
        password: str = "ClueCon",
        *,
        on_event: Callable[[Event], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        reconnect: bool = True,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        filters: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.host = host
        self.port = port
        self._password = password
        self._on_event = on_event
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._reconnect = reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max

        self._sock: socket.socket | None = None
        self._connected = False
        self._connected_flag = _Flag()
        self._session_ok = False
        self._waiters = Waiters()
        self._write_lock = Semaphore()
        self._subs = Subscriptions()
        #: ``filter`` pairs sent on every connection before the subscription (app/shard.py)
        self._filters = tuple(filters)
        self._runner: gevent.Greenlet | None = None
        self._callbacks = Group()
        self._stopping = False

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<ESLConnection {self.host}:{self.port} {state}>"

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def local_port(self) -> int:
        """This connection's own TCP port (0 while not connected)."""
        sock = self._sock
        try:
            return sock.getsockname()[1] if sock is not None else 0
        except OSError:
            return 0

    def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("ESLConnection already started")
        self._stopping = False
        self._runner = gevent.spawn(self._run)

    def stop(self) -> None:
        """Say ``exit`` if connected, close the socket, end every greenlet, fail what waits."""
        self._stopping = True
        current = gevent.getcurrent()
        runner = self._runner
        if self._connected and runner is not current:
            with contextlib.suppress(ESLError):
                self._command(cmd_exit(), _STOP_EXIT_TIMEOUT)
        if runner is not None and runner is not current:
            runner.kill(block=True, timeout=5)
        sock = self._sock
        if sock is not None:
            self._teardown(sock)
        for greenlet in list(self._callbacks):
            if greenlet is not current:
                greenlet.kill(block=False)
        self._runner = None

    def wait_connected(self, timeout: float) -> bool:
        return self._connected_flag.wait(timeout)

    # --- commands -----------------------------------------------------------------------------

    def subscribe(self, *names: str) -> None:
        """Subscribe now if connected; remembered and re-sent after every reconnect.

        A disconnect during the call is not an error: the reconnect sends the names again.
        ESLTimeout / ESLError (``-ERR``) still propagate. From the read greenlet (on_event) the
        command is sent without waiting for its reply.
        """
        tokens = self._subs.add(names)
        if not tokens or not self._connected:
            return
        try:
            if gevent.getcurrent() is self._runner:
                self._command(cmd_event_plain(*tokens), None, wait=False)
                return
            reply = self._command(cmd_event_plain(*tokens), None)
        except ESLDisconnected:
            return
        _reply_text(reply)

    def api(self, command: str, timeout: float | None = None) -> str:
        """``api``: the body as text. ``-ERR`` bodies are data (e.g. uuid_kill of a dead call)."""
        msg = self._command(cmd_api(command), timeout)
        if msg.content_type != "api/response":
            _reply_text(msg)
        return msg.body.decode("utf-8", "replace")

    def bgapi(self, command: str, timeout: float | None = None) -> str:
        """``bgapi``: waits for the BACKGROUND_JOB whose Job-UUID we chose; returns its body."""
        total = self._command_timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        job_id = str(_uuid.uuid4())
        job = self._waiters.expect_job(job_id)  # before sending: the event may overtake the reply
        try:
            reply = self._command(cmd_bgapi(command, job_id), total)
            _reply_text(reply)
            echoed = reply.headers.get("Job-UUID")
            if echoed and echoed != job_id:  # a server that ignored our Job-UUID header
                self._waiters.rekey_job(job_id, echoed)
                job_id = echoed
            try:
                event = job.get(timeout=max(0.0, deadline - time.monotonic()))
            except gevent.Timeout:
                raise ESLTimeout(f"bgapi: no BACKGROUND_JOB within {total}s") from None
            return event.body.decode("utf-8", "replace")
        finally:
            self._waiters.forget_job(job_id)

    def sendmsg(self, uuid: str, headers: dict[str, str], timeout: float | None = None) -> str:
        """``sendmsg``: Reply-Text. ``+OK`` only means queued to the channel (see facts file)."""
        return _reply_text(self._command(cmd_sendmsg(uuid, headers), timeout))

    def sendevent(
        self,
        name: str,
        headers: dict[str, str],
        body: bytes | str | None = None,
        timeout: float | None = None,
    ) -> str:
        """``sendevent``: Reply-Text (``+OK <event-uuid>``)."""
        return _reply_text(self._command(cmd_sendevent(name, headers, body), timeout))

    def _command(self, data: bytes, timeout: float | None, *, wait: bool = True) -> Message:
        """Send one command and wait for its reply (the FIFO slot is taken under the lock)."""
        if wait and gevent.getcurrent() is self._runner:
            raise RuntimeError("ESL commands cannot wait in the read greenlet; spawn a greenlet")
        if not self._connected:
            raise ESLDisconnected(f"not connected to FreeSWITCH at {self.host}:{self.port}")
        total = self._command_timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        if not self._write_lock.acquire(timeout=total):
            raise ESLTimeout(f"could not send an ESL command within {total}s")
        try:
            sock = self._sock
            if not self._connected or sock is None:
                raise ESLDisconnected(f"not connected to FreeSWITCH at {self.host}:{self.port}")
            result = self._waiters.expect_reply()
            try:
                with gevent.Timeout(max(0.0, deadline - time.monotonic()), ESLTimeout):
                    sock.sendall(data)
            except ESLTimeout:
                # A partial write leaves the server mid-command: this connection is unusable.
                self._abort(sock)
                raise ESLTimeout(f"could not send an ESL command within {total}s") from None
            except OSError as exc:
                self._abort(sock)
                raise ESLDisconnected(f"ESL send failed: {exc}") from exc
        finally:
            self._write_lock.release()
        if not wait:
            return Message({})
        try:
            return result.get(timeout=max(0.0, deadline - time.monotonic()))
        except gevent.Timeout:
            raise ESLTimeout(f"no ESL reply within {total}s") from None

    # --- owner greenlet -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._backoff_initial
        while not self._stopping:
            self._session_ok = False
            try:
                self._session()
            except ESLAuthError as exc:
                log.error(
                    "ESL authentication to %s:%d refused (%s): check the event_socket password;"
                    " retrying",
                    self.host,
                    self.port,
                    exc,
                )
            except (OSError, ESLError, ESLProtocolError) as exc:
                if not self._stopping:
                    log.warning("ESL connection to %s:%d: %s", self.host, self.port, exc)
            if self._session_ok:
                backoff = self._backoff_initial
            if self._stopping or not self._reconnect:
                break
            gevent.sleep(backoff * random.uniform(0.5, 1.0))  # jitter: fleets do not stampede
            backoff = min(backoff * 2, self._backoff_max)

    def _session(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout)
        self._sock = sock
        try:
            sock.settimeout(None)  # waits are bounded by gevent.Timeout; the idle read is not
            _tune(sock)
            parser = ESLParser()
            with gevent.Timeout(self._command_timeout, ESLTimeout("ESL handshake timed out")):
                self._handshake(sock, parser)
            self._connected = True
            self._session_ok = True
            self._connected_flag.set()
            log.info("ESL connected to %s:%d", self.host, self.port)
            if self._on_connect is not None:
                self._callbacks.spawn(self._safe_call, self._on_connect, "on_connect")
            self._read_loop(sock, parser)
        finally:
            self._teardown(sock)

    def _handshake(self, sock: socket.socket, parser: ESLParser) -> None:
        msg = self._read_reply(sock, parser)
        if msg.content_type != "auth/request":
            raise ESLProtocolError(f"expected auth/request, got {msg.content_type!r}")
        sock.sendall(cmd_auth(self._password))
        reply = self._read_reply(sock, parser)
        if not reply.reply_text.startswith("+OK"):
            raise ESLAuthError(reply.reply_text or reply.content_type)
        for header, value in self._filters:  # before any event is asked for
            sock.sendall(cmd_filter(header, value))
            reply = self._read_reply(sock, parser)
            if not reply.reply_text.startswith("+OK"):
                raise ESLProtocolError(f"filter {header} refused: {reply.reply_text}")
        version = -1
        while version != self._subs.version:  # subscribe() may add names while we wait
            version = self._subs.version
            sock.sendall(cmd_event_plain(*self._subs.all()))
            reply = self._read_reply(sock, parser)
            if not reply.reply_text.startswith("+OK"):
                log.error("ESL subscription refused: %s", reply.reply_text)

    def _read_reply(self, sock: socket.socket, parser: ESLParser) -> Message:
        """Handshake read: the next non-event message (events are dispatched meanwhile)."""
        while True:
            msg = parser.next_message()
            if msg is None:
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise ESLDisconnected("connection closed by FreeSWITCH")
                parser.receive_data(data)
            elif type(msg) is Event:
                self._handle_event(msg)
            elif msg.content_type != "text/disconnect-notice":
                return msg

    def _read_loop(self, sock: socket.socket, parser: ESLParser) -> None:
        recv = sock.recv
        next_message = parser.next_message
        while not self._stopping:
            while (msg := next_message()) is not None:
                if type(msg) is Event:
                    self._handle_event(msg)
                else:
                    self._handle_message(msg)
            data = recv(_RECV_SIZE)
            if not data:
                raise ESLDisconnected("connection closed by FreeSWITCH")
            parser.receive_data(data)

    def _handle_message(self, msg: Message) -> None:
        ctype = msg.content_type
        if ctype == "command/reply" or ctype == "api/response":
            if not self._waiters.reply(msg):
                log.warning("ESL %s with no command waiting for it: dropped", ctype)
        elif ctype == "text/disconnect-notice":
            log.info("ESL disconnect notice from %s:%d", self.host, self.port)
        else:
            log.debug("ESL %s message ignored", ctype)

    def _handle_event(self, event: Event) -> None:
        if event.headers.get("Event-Name") == BACKGROUND_JOB and self._waiters.job_done(event):
            return
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("ESL on_event handler failed on %s", event.name)

    def _safe_call(self, func: Callable[[], None], what: str) -> None:
        try:
            func()
        except Exception:
            log.exception("ESL %s callback failed", what)

    def _abort(self, sock: socket.socket) -> None:
        """Close a broken socket; its reader notices and tears the session down."""
        with contextlib.suppress(OSError):
            sock.close()

    def _teardown(self, sock: socket.socket) -> None:
        """End a session: fail every waiter at once, then tell the owner (idempotent per sock)."""
        if self._sock is not sock:
            return
        was_connected = self._connected
        self._connected = False
        self._connected_flag.clear()
        self._sock = None
        self._abort(sock)
        self._waiters.fail_all(lambda: ESLDisconnected("ESL connection lost"))
        if was_connected:
            log.info("ESL disconnected from %s:%d", self.host, self.port)
            if self._on_disconnect is not None:
                self._safe_call(self._on_disconnect, "on_disconnect")
