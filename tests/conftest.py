"""Shared fixtures: the FreeSWITCH simulator, the daemon, an independent WebSocket peer.

Set EAS_REAL_FREESWITCH=host:port:password to run the end-to-end tests against a real FreeSWITCH
whose dialplan defines the extensions the tests use (1000 = 440 Hz tone, 2000 = echo, 3000 =
silence); the simulator-only tests are skipped then.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gevent
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers.listener import listening
from wspeer import WSPeer

from esl_audio_stream.app.config import DaemonConfig
from esl_audio_stream.service import build_daemon

REAL_FS = os.environ.get("EAS_REAL_FREESWITCH", "")
EXTENSIONS = {"1000": "tone:440", "2000": "echo", "3000": "silence", "1001": "tone:1000"}


def wait_until(predicate, timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll (yielding to gevent) until predicate() is true or the timeout passes."""
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(step)
        return True
    return bool(predicate())


@pytest.fixture
def fs():
    """(host, port, password) of a FreeSWITCH: the simulator, or a real one."""
    if REAL_FS:
        host, port, password = REAL_FS.split(":", 2)
        yield host, int(port), password, None
        return
    from esl_audio_stream.dev.simulator import Simulator

    sim = Simulator(port=0, extensions=EXTENSIONS)
    sim.start()
    try:
        yield sim.address[0], sim.address[1], "ClueCon", sim
    finally:
        sim.stop()


@pytest.fixture
def sim(fs):
    if fs[3] is None:
        pytest.skip("needs the simulator")
    return fs[3]


@pytest.fixture
def esl(fs):
    """An operator's ESL client: originates calls and listens to events."""
    with listening((fs[0], fs[1]), password=fs[2]) as conn:
        yield conn


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "both_paths: the daemon fixture's tests run with [media] native on and off")


def pytest_generate_tests(metafunc):
    """A test marked `both_paths` that uses the daemon runs on the native pump and on the
    Python path (the reference); every other runs on the default (native where built)."""
    if metafunc.definition.get_closest_marker("both_paths") and "native" in metafunc.fixturenames:
        metafunc.parametrize("native", [True, False], ids=["native", "python"])


@pytest.fixture
def native() -> bool:
    """The daemon fixture's [media] native."""
    return True


@pytest.fixture
def daemon(fs, tmp_path, native):
    # FreeSWITCH-side ports per test process, so that two suites on one machine do not collide
    base = 12000 + (os.getpid() % 35) * 100
    d = build_daemon(DaemonConfig(esl_host=fs[0], esl_port=fs[1], esl_password=fs[2],
                                  control_port=0, first_audio_timeout=2.0, destroy_wait=1.0,
                                  fs_port_min=base, fs_port_max=base + 99,
                                  files_dir=str(tmp_path / "files"), native=native))
    d.start()
    assert d.esl.wait_connected(5)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def peer():
    p = WSPeer().start()
    try:
        yield p
    finally:
        p.stop()
