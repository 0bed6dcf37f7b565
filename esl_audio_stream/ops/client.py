"""A client of the daemon's control endpoint: what `ctl`, `status`, the demo and the bench use."""

from __future__ import annotations

import http.client

from ..app.config import parse_hostport


def control_http(control: str, method: str, path: str, body: bytes | None = None,
                  token: str | None = None, timeout: float = 30.0) -> tuple[int, str]:
    """One request to a daemon's control endpoint: (HTTP status, body text)."""
    host, port = parse_hostport(control, 8089)
    headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def control_request(control: str, args: str, timeout: float = 30.0,
                    token: str | None = None, api: str = "uuid_audio_stream") -> str:
    """POST one argument string of `api` (uuid_audio_stream or uuid_audio_fork) to a daemon's
    control endpoint; return its answer."""
    return control_http(control, "POST", f"/api/{api}",
                         args.encode("utf-8", "surrogateescape"), token, timeout)[1]
