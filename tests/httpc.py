"""HTTP and WebSocket requests to the daemon's control endpoint from a test, run in gevent's
thread pool: the daemon under test answers from the same process, so the hub must keep running."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult
from websockets.sync.client import connect


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); redirects are not followed."""
    parts = urlsplit(url)

    def run() -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    return gevent.get_hub().threadpool.apply(run)


def feed_messages(url: str, n: int = 1, headers: dict[str, str] | None = None,
                  origin: str | None = None, timeout: float = 10.0) -> list[str]:
    """Open a WebSocket feed, read `n` messages, close it. Raises the client's error (e.g.
    websockets.exceptions.InvalidStatus) when the upgrade is refused."""

    def run() -> list[str]:
        with connect(url, additional_headers=headers, origin=origin, open_timeout=timeout,
                     close_timeout=timeout) as ws:
            return [ws.recv(timeout) for _ in range(n)]

    return gevent.get_hub().threadpool.apply(run)


def feed_until_closed(url: str, headers: dict[str, str] | None = None,
                      timeout: float = 10.0) -> AsyncResult:
    """Read a feed in the background until the server closes it; the result's get() is
    (messages read, close code)."""
    from websockets.exceptions import ConnectionClosed

    def run() -> tuple[int, int]:
        n = 0
        with connect(url, additional_headers=headers, open_timeout=timeout,
                     close_timeout=timeout) as ws:
            try:
                while True:
                    ws.recv(timeout)
                    n += 1
            except ConnectionClosed as exc:
                return n, exc.rcvd.code if exc.rcvd else 1006

    return gevent.get_hub().threadpool.spawn(run)
