"""Daemons and ports for tests that need more than the conftest fixtures: a daemon with the
control token, free TCP ports, waiting for a process to listen."""

from __future__ import annotations

import os
import socket
import time

from esl_audio_stream.app.config import DaemonConfig
from esl_audio_stream.app.daemon import Daemon
from esl_audio_stream.service import build_daemon

TOKEN = "s3cret token/with;odd=chars"


def make_daemon(fs, tmp_path, **kw) -> Daemon:
    base = 12000 + (os.getpid() % 35) * 100
    d = build_daemon(DaemonConfig(esl_host=fs[0], esl_port=fs[1], esl_password=fs[2],
                                  control_port=0, fs_port_min=base, fs_port_max=base + 99,
                                  files_dir=str(tmp_path / "files"), **kw))
    d.start()
    assert d.esl.wait_connected(5)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")
