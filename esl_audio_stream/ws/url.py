"""ws:// and wss:// URLs: what the connection needs from one, checked before anything connects."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def parse_ws_url(url: str) -> tuple[bool, str, int, str, str]:
    """Split a ws:// or wss:// URL into (secure, host, port, target, Host header value).

    Raises ValueError for anything else, so commands can validate URLs before connecting.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in URL: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"credentials in a WebSocket URL are not supported: {url!r}")
    port = parts.port  # raises ValueError when out of range or not a number
    secure = scheme == "wss"
    default = 443 if secure else 80
    if port is None:
        port = default
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    host_header = f"[{host}]" if is_v6 else host
    if port != default:
        host_header += f":{port}"
    return secure, host, port, target, host_header
