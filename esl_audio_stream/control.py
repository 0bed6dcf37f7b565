"""The control endpoint: `uuid_audio_stream` over HTTP on loopback, for `esl-audio-stream ctl`.

HTTP (gevent's WSGI server) rather than a private line protocol, so curl works, timeouts and
framing come for free, and metrics and status pages can live on the same port.

    POST /api/uuid_audio_stream   body: the argument string   -> text/plain answer (+OK/-ERR/-USAGE)
    GET  /streams                                              -> JSON list of live streams
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gevent.pywsgi import WSGIServer

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
API_PATH = "/api/uuid_audio_stream"


class ControlServer:
    def __init__(self, daemon: Daemon, host: str, port: int) -> None:
        self.daemon = daemon
        self._server = WSGIServer((host, port), self._app, log=None, error_log=log)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address[:2]

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(timeout=2)

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        if path == API_PATH and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                return _reply(start_response, "413 Payload Too Large", "-ERR command too long\n")
            args = environ["wsgi.input"].read(length)
            return _reply(start_response, "200 OK", self.daemon.execute(args))
        if path == "/streams" and method == "GET":
            rows = [
                {
                    "uuid": s.uuid,
                    "url": s.url,
                    "mix": s.mix,
                    "rate": s.rate,
                    "paused": s.paused,
                    "frames_in": s.frames_in,
                    "frames_out": s.frames_out,
                    "dropped": s.dropped,
                }
                for s in self.daemon.streams.values()
            ]
            return _reply(start_response, "200 OK", json.dumps(rows), "application/json")
        return _reply(start_response, "404 Not Found", "-ERR not found\n")


def _reply(start_response: Callable, status: str, text: str,
           ctype: str = "text/plain; charset=utf-8") -> list[bytes]:
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
