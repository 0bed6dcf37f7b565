"""Opening a WebSocket: TCP, TLS for wss, then the HTTP upgrade through wsproto.

Each step raises WSError with libwsc's code for what failed (ws/errors.py), so the connection
reports a refused port, an untrusted certificate and an HTTP 403 apart. The caller bounds the
whole opening with one timeout and owns the socket (it closes it on any failure).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence

import gevent.ssl
from gevent import socket as gsocket
from wsproto import WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .errors import WSError, WSErrorCode

#: Kernel send buffer per connection (Linux doubles it): ~2 s of 16 kHz mono. A fixed size: the
#: kernel's autotuning would queue seconds of audio (up to tcp_wmem's 4 MB) for a stalled
#: endpoint before the owner's bounded backlog ever saw it.
SEND_BUFFER = 64 * 1024
_RECV_SIZE = 65536


def open_tcp(host: str, port: int) -> gsocket.socket:
    try:
        sock = gsocket.create_connection((host, port))
    except gsocket.gaierror as exc:
        raise WSError(WSErrorCode.CONNECT_FAILED, f"cannot resolve {host}: {exc}") from exc
    except OSError as exc:
        raise WSError(WSErrorCode.CONNECT_FAILED, f"cannot connect to {host}:{port}: {exc}") \
            from exc
    with contextlib.suppress(OSError):  # audio latency: do not wait to coalesce small frames
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, SEND_BUFFER)
    return sock


def wrap_tls(raw: gsocket.socket, host: str, ctx: ssl.SSLContext | None) -> gsocket.socket:
    """The TLS socket over `raw`, handshake not yet done (`handshake_tls`)."""
    try:
        ctx = ctx or gevent.ssl.create_default_context()
        # gevent's SSLSocket accepts a stdlib context too, and waits cooperatively.
        return gevent.ssl.SSLSocket(sock=raw, server_hostname=host, _context=ctx,
                                    do_handshake_on_connect=False)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise WSError(WSErrorCode.TLS_INIT_FAILED, f"TLS setup failed: {exc}") from exc


def handshake_tls(tls: gsocket.socket) -> None:
    try:
        tls.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        raise WSError(WSErrorCode.SSL_ERROR, f"certificate verification failed: {exc}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise WSError(WSErrorCode.SSL_HANDSHAKE_FAILED, f"TLS handshake failed: {exc}") from exc


def upgrade_request(host_header: str, target: str, headers: Sequence[tuple[str, str]],
                    deflate: bool) -> Request:
    """wsproto's upgrade request. A Sec-WebSocket-Protocol header becomes its `subprotocols`
    (else wsproto would refuse the server's choice as unrequested)."""
    subprotocols = [p.strip() for k, v in headers if k.lower() == "sec-websocket-protocol"
                    for p in v.split(",") if p.strip()]
    extra = [(k, v) for k, v in headers if k.lower() != "sec-websocket-protocol"]
    return Request(host=host_header, target=target, extra_headers=extra,
                   subprotocols=subprotocols,
                   extensions=[PerMessageDeflate()] if deflate else [])


def upgrade(sock: gsocket.socket, ws: WSConnection, request: Request) -> PerMessageDeflate | None:
    """The HTTP upgrade; the deflate parameters the server accepted, if it did. Frames that
    came with the 101 response stay in `ws` for the reader."""
    try:
        wire = ws.send(request)
    except LocalProtocolError as exc:
        raise WSError(WSErrorCode.INVALID_HEADER, f"invalid request header: {exc}") from exc
    sock.sendall(wire)
    while True:
        data = sock.recv(_RECV_SIZE)
        if not data:
            raise WSError(WSErrorCode.IO, "connection closed during the WebSocket upgrade")
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return next((e for e in event.extensions
                                 if isinstance(e, PerMessageDeflate)), None)
                if isinstance(event, RejectConnection):
                    raise WSError(WSErrorCode.INVALID_HEADER,
                                  f"server refused the upgrade: HTTP {event.status_code}",
                                  http_status=event.status_code)
        except RemoteProtocolError as exc:
            raise WSError(WSErrorCode.INVALID_HEADER, f"bad upgrade response: {exc}") from exc
