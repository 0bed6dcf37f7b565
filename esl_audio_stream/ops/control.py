"""The control endpoint: commands, the stream list, metrics and the live status page, over HTTP.

HTTP (gevent's WSGI server, with gevent-websocket's handler for the page's feed) rather than a
private line protocol, so curl and Prometheus work, and timeouts and framing come for free.

    POST /api/uuid_audio_stream  body: the argument string -> text/plain answer (+OK/-ERR/-USAGE)
    POST /api/uuid_audio_fork    body: the argument string -> mod_audio_fork's answer
    GET  /streams                                            -> JSON list of live streams
    GET  /metrics                                            -> Prometheus text format
    GET  /status                                             -> the live status page (HTML)
    GET  /status/feed            WebSocket                   -> the page's rows, 4 times a second
    POST /intake                 JSON (a worker's private endpoint only) -> a command FreeSWITCH
                                 sent, handed over by the intake worker (ops/fleet.py)

With `control_token` set, every request needs `Authorization: Bearer <token>`, except /metrics
when `metrics_public` is true. A browser cannot put headers on a page load or a WebSocket, so the
page and its feed also take `?token=<token>` once: the answer is a redirect to the bare /status
that stores the token in an HttpOnly, SameSite=Strict cookie limited to /status (so the token
leaves the address bar); the cookie is accepted for the page and its feed only, never for
commands, so no other site can make the browser send a command. Comparisons are constant-time.
A request whose Origin header is not this endpoint's own is refused (another site's page cannot
read the feed or post a command); without a token, so is a Host header that is not loopback (a
DNS-rebinding page cannot either).

It serves a `Served`: one daemon's (`OneDaemon`, over a `Controlled`, handed over by whoever
builds both: service.py), or, in the supervisor of `run --workers N`, the workers' together
(ops/fleet.py). It never imports the daemon itself. A worker's own endpoint listens on a unix
socket in the supervisor's private directory instead of host:port.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Protocol
from urllib.parse import parse_qs, quote, unquote

from gevent import socket as gsocket
from gevent.pywsgi import WSGIServer
from gevent.socket import wait_read
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler

from . import metrics, status

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
API_PREFIX = "/api/"
#: The commands the daemon answers: mod_audio_stream's, and jambonz's mod_audio_fork's.
APIS = ("uuid_audio_stream", "uuid_audio_fork")
DRAIN_PATH = "/drain"
INTAKE_PATH = "/intake"
PAGE_PATH = "/status"
FEED_PATH = "/status/feed"
COOKIE = "eas_token"
#: Seconds between two feed messages (the page's refresh rate and the level meter's).
FEED_INTERVAL = 0.25
#: A feed client that takes no data for this long is dropped.
FEED_SEND_TIMEOUT = 5.0

_PAGE_TYPE = "text/html; charset=utf-8"


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (a name other than localhost is not taken on trust)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(WebSocketHandler):
    """gevent-websocket's handler, without its access log (the WSGI server's is off too)."""

    def log_request(self) -> None:
        pass


class Controlled(metrics.Observed, Protocol):
    """What the endpoint serves: commands, and what the metrics and the status rows read (the
    live streams, the counters, the ESL link)."""

    greenlets: int  # alive at the last count, which each scrape makes (metrics.count_greenlets)

    def execute(self, args: str | bytes, api: str = APIS[0]) -> str:
        """Carry out one argument string of `api` (one of APIS); that module's answer."""
        ...

    def drain(self, timeout: float | None = None, hurry: object = None,
              then_stop: bool = True) -> bool:
        """End every stream cleanly and refuse new ones; whether all ended in time."""
        ...


class Served(Protocol):
    """What the endpoint answers from: commands, the rows, the metrics' text."""

    @property
    def esl_connected(self) -> bool: ...
    def execute(self, args: str | bytes, api: str = APIS[0]) -> str: ...
    def drain(self) -> tuple[bool, int]:
        """End every stream cleanly, refuse new ones: (all ended in time, how many there were
        or are left)."""
        ...
    def rows(self, level: bool = False, seen: dict[str, int] | None = None) -> list[dict]: ...
    def metrics(self) -> bytes: ...


class OneDaemon:
    """One daemon, served (the daemon without workers, and each worker's own endpoint)."""

    def __init__(self, daemon: Controlled) -> None:
        self.daemon = daemon
        self._registry = metrics.registry_for(daemon)

    @property
    def esl_connected(self) -> bool:
        return self.daemon.esl_connected

    def execute(self, args: str | bytes, api: str = APIS[0]) -> str:
        return self.daemon.execute(args, api)

    def drain(self) -> tuple[bool, int]:
        n = self.daemon.streams.count
        if self.daemon.drain(then_stop=False):
            return True, n
        return False, self.daemon.streams.count

    def rows(self, level: bool = False, seen: dict[str, int] | None = None) -> list[dict]:
        return status.rows(self.daemon.streams.all(), time.monotonic(), level=level, seen=seen)

    def metrics(self) -> bytes:
        self.daemon.greenlets = metrics.count_greenlets()  # yields: the frames go on meanwhile
        return metrics.render(self._registry)


def unix_listener(path: str) -> gsocket.socket:
    """A listening unix socket at `path` (one left by a process that died is replaced)."""
    if os.path.exists(path):
        os.unlink(path)
    sock = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    return sock


class ControlServer:
    def __init__(self, daemon: Controlled | None, host: str, port: int, *,
                 token: str | None = None, metrics_public: bool = True,
                 served: Served | None = None, unix: str | None = None,
                 intake: Callable[[bytes], str] | None = None) -> None:
        """`token` and `metrics_public` need a restart to change (config.RESTART_FIELDS), so
        they are taken once here. `served`: what to serve instead of `daemon` (the workers');
        `unix`: listen on that unix socket, not host:port (a worker's own endpoint); `intake`:
        answers POST /intake there."""
        if unix is None and not is_loopback(host) and not token:
            raise ValueError(f"the control endpoint on {host} (not loopback) needs a token "
                             "([control] token)")
        if served is None:
            assert daemon is not None
            served = OneDaemon(daemon)
        self.daemon = daemon
        self.served = served
        self._intake = intake
        self._token = token or ""
        self._metrics_public = metrics_public
        self._closing = False
        self.feeds = 0  # status pages connected now
        self._page = resources.files(__package__).joinpath("static/status.html").read_bytes()
        listener = unix_listener(unix) if unix is not None else (host, port)
        self._server = WSGIServer(listener, self._app, log=None, error_log=log,
                                  handler_class=_Handler)
        self._server.logger = logging.getLogger(__name__ + ".ws")  # gevent-websocket's logger
        self._server.pre_start_hook = self._plain_http

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address[:2]

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._closing = True  # feeds end within FEED_INTERVAL
        self._server.stop(timeout=2)

    # -- who may ask ------------------------------------------------------------------------

    def _bearer_ok(self, environ: dict) -> bool:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = auth.partition(" ")
        return scheme.lower() == "bearer" and _same(given.strip(), self._token)

    def _page_ok(self, environ: dict) -> bool:
        """The page and its feed: the header, or the cookie, or `?token=`."""
        if self._bearer_ok(environ):
            return True
        try:
            cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        except CookieError:
            cookie = SimpleCookie()
        if COOKIE in cookie and _same(unquote(cookie[COOKIE].value), self._token):
            return True
        return _same(_query_token(environ), self._token)

    def _foreign(self, environ: dict) -> str:
        """Why this request may come from another site's page ('' when it does not)."""
        host = environ.get("HTTP_HOST", "")
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and origin.rstrip("/") not in (f"http://{host}",
                                                             f"https://{host}"):
            return f"origin {origin} is not this endpoint"
        if not self._token and host and not is_loopback(_host_part(host)):
            return f"host {host} is not loopback"
        return ""

    def _plain_http(self, handler: WebSocketHandler) -> bool:
        """gevent-websocket's pre-start hook: True = answer as plain HTTP (no upgrade). Only an
        allowed request for the feed is upgraded; the others get their answer from _app."""
        env = handler.environ
        return not (env.get("PATH_INFO") == FEED_PATH and not self._foreign(env)
                    and (not self._token or self._page_ok(env)))

    # -- the application --------------------------------------------------------------------

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        ws = environ.get("wsgi.websocket")
        if ws is not None:  # upgraded by the handler after _plain_http allowed it
            self._feed(ws)
            return []
        why = self._foreign(environ)
        if why:
            return _reply(start_response, "403 Forbidden", f"-ERR forbidden: {why}\n")
        token = self._token
        if path in (PAGE_PATH, FEED_PATH) and method == "GET":
            if token and not self._page_ok(environ):
                return _unauthorized(start_response)
            if path == FEED_PATH:
                return _reply(start_response, "426 Upgrade Required",
                              "-ERR this is a WebSocket feed\n", extra=[("Upgrade", "websocket")])
            if token and _query_token(environ):  # keep it in a cookie, not in the address bar
                cookie = (f"{COOKIE}={quote(token, safe='')}; Path={PAGE_PATH}; HttpOnly; "
                          "SameSite=Strict")
                return _reply(start_response, "303 See Other", "", extra=[
                    ("Location", PAGE_PATH), ("Set-Cookie", cookie)])
            return _reply_bytes(start_response, "200 OK", self._page, _PAGE_TYPE,
                                [("Cache-Control", "no-store")])
        if path == "/metrics" and method == "GET":
            if token and not self._metrics_public and not self._bearer_ok(environ):
                return _unauthorized(start_response)
            return _reply_bytes(start_response, "200 OK", self.served.metrics(),
                                metrics.CONTENT_TYPE)
        if token and not self._bearer_ok(environ):
            return _unauthorized(start_response)
        api = path[len(API_PREFIX):] if path.startswith(API_PREFIX) else ""
        if api in APIS and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                return _reply(start_response, "413 Payload Too Large", "-ERR command too long\n")
            args = environ["wsgi.input"].read(length)
            return _reply(start_response, "200 OK", self.served.execute(args, api))
        if path == INTAKE_PATH and method == "POST" and self._intake is not None:
            body = environ["wsgi.input"].read(min(int(environ.get("CONTENT_LENGTH") or 0),
                                                  MAX_BODY))
            return _reply(start_response, "200 OK", self._intake(body))
        if path == DRAIN_PATH and method == "POST":
            drained, n = self.served.drain()
            if drained:
                return _reply(start_response, "200 OK", f"+OK drained {n} streams\n")
            return _reply(start_response, "200 OK", f"-ERR {n} streams "
                          "did not end within drain_timeout\n")
        if path == "/streams" and method == "GET":
            if "feed=1" in environ.get("QUERY_STRING", ""):  # what the page's feed sends
                body = {"esl": self.served.esl_connected, "streams": self.served.rows(True)}
                return _reply(start_response, "200 OK", json.dumps(body), "application/json")
            rows = self.served.rows()
            return _reply(start_response, "200 OK", json.dumps(rows), "application/json")
        if path == "/" and method == "GET":
            return _reply(start_response, "303 See Other", "", extra=[("Location", PAGE_PATH)])
        return _reply(start_response, "404 Not Found", "-ERR not found\n")

    # -- the status page's feed -------------------------------------------------------------

    def _feed(self, ws) -> None:
        """Send the rows (with levels) every FEED_INTERVAL until the page goes, the daemon
        stops, or the page stops taking data for FEED_SEND_TIMEOUT. Runs in the request's own
        greenlet, which the WSGI server owns and ends on stop."""
        sock = ws.handler.socket
        sock.settimeout(FEED_SEND_TIMEOUT)  # bounds every send, and the close frame after
        seen: dict[str, int] = {}
        served = self.served
        self.feeds += 1
        try:
            while not self._closing:
                rows = served.rows(level=True, seen=seen)
                ws.send(json.dumps({"esl": served.esl_connected, "streams": rows,
                                    "columns": status.COLUMNS}))
                try:
                    wait_read(sock.fileno(), timeout=FEED_INTERVAL)
                except TimeoutError:
                    continue
                if ws.receive() is None:  # bounded by the socket's timeout
                    return  # closed (or garbage): the handler closes the socket
            _close(ws, 1001, "the daemon is stopping")
        except (WebSocketError, OSError) as exc:
            log.debug("status feed ended: %s", exc)
        finally:
            self.feeds -= 1


def _close(ws, code: int, reason: str) -> None:
    """Close with a status code: gevent-websocket's close() leaves the code out of the close
    frame (RFC 6455 5.5.1 wants it first), so the frame is built here."""
    try:
        ws.send_frame(struct.pack("!H", code) + reason.encode(), ws.OPCODE_CLOSE)
    finally:
        ws.closed = True  # the handler must not send a second close frame


def _same(given: str, token: str) -> bool:
    """Constant-time equality; never true for an empty token."""
    return bool(token) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                               token.encode("utf-8", "surrogateescape"))


def _query_token(environ: dict) -> str:
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else ""


def _host_part(host_header: str) -> str:
    """The host of a Host header: `[::1]:8089` -> `::1`, `127.0.0.1:8089` -> `127.0.0.1`."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def _unauthorized(start_response: Callable) -> list[bytes]:
    return _reply(start_response, "401 Unauthorized",
                  "-ERR unauthorized: send Authorization: Bearer <token> (the status page: "
                  "/status?token=<token>)\n", extra=[("WWW-Authenticate", "Bearer")])


def _reply(start_response: Callable, status_line: str, text: str,
           ctype: str = "text/plain; charset=utf-8",
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    return _reply_bytes(start_response, status_line, text.encode("utf-8"), ctype, extra)


def _reply_bytes(start_response: Callable, status_line: str, body: bytes, ctype: str,
                 extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status_line, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                 *(extra or ())])
    return [body]
