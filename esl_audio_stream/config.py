"""Daemon settings: where FreeSWITCH is, where commands come in, which ports media uses.

One frozen object, made once at start-up and handed down, so nothing on the per-frame path looks
anything up.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from .settings import StreamSettings


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port and not port.isdigit():
        raise ValueError(f"bad port in {text!r}")
    return host, int(port) if port else default_port


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    esl_password: str = "ClueCon"
    esl_timeout: float = 5.0
    control_host: str = "127.0.0.1"
    control_port: int = 8089
    #: Bearer token the control endpoint requires (everything but /metrics). Required when the
    #: control endpoint binds anything but loopback.
    control_token: str | None = None
    #: Whether /metrics answers without the token when a token is set.
    metrics_public: bool = True
    #: SIGTERM: how long running streams get to end cleanly before the process exits anyway.
    drain_timeout: float = 10.0
    #: Address the daemon receives audio on (FreeSWITCH's unicast `remote-ip`).
    media_host: str = "127.0.0.1"
    #: Address FreeSWITCH binds for each call's unicast (`local-ip`): it must be FreeSWITCH's.
    fs_media_host: str = "127.0.0.1"
    #: FreeSWITCH-side unicast ports (`local-port`), one per call. Kept below FreeSWITCH's RTP
    #: range (16384-32768) and the kernel's ephemeral range, which the daemon's own sockets use.
    fs_port_min: int = 12000
    fs_port_max: int = 15999
    ws_connect_timeout: float = 5.0
    ws_close_timeout: float = 2.0
    #: An error event is fired when no audio arrives this long after start.
    first_audio_timeout: float = 3.0
    #: Audio kept per stream while the endpoint is unreachable or slow; beyond it, the oldest
    #: goes (counted and reported in an error event).
    reconnect_buffer_seconds: float = 10.0
    #: Where the endpoint's audio chunks are written, one private directory per call (0700),
    #: cleaned at start-up. FreeSWITCH must be able to read it for the displace and broadcast
    #: playback modes.
    files_dir: str = field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "esl-audio-stream"))
    #: Largest decoded streamAudio chunk accepted.
    max_audio_bytes: int = 8 << 20
    #: How long a hung-up call's events wait for CHANNEL_DESTROY before going out unrouted.
    destroy_wait: float = 2.0
    #: Daemon-wide defaults for the STREAM_* channel variables; a channel's own value wins.
    stream_defaults: StreamSettings = field(default_factory=StreamSettings)
