"""Two-party (bridged) calls for the end-to-end tests of the sources that stream them (taps,
record): the call, starting a stream on it, and reading the endpoint's audio: each side of a
stereo stream, a tone's level, whether a played tone is there once."""

from __future__ import annotations

from array import array

import pytest
from conftest import wait_until

from esl_audio_stream.dev.analysis import tone_amplitude


def bridged_call(esl, rate: int = 8000, extra: str = "") -> str:
    """`loopback/1000 &bridge(loopback/1001)`: the caller says 440 Hz, the other party 1000 Hz
    (what the caller hears); `extra` adds channel variables (`,NAME=value`)."""
    answer = esl.api(f"originate {{channel_rate={rate}{extra}}}loopback/1000/default "
                     "&bridge(loopback/1001/default)")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "bridge")
    return uuid


def channels(esl) -> int:
    return int(esl.api("show channels count").split()[0])


def start(daemon, peer, uuid, mix, rate="8k"):
    n = len(peer.connections)
    answer = daemon.execute(f"{uuid} start {peer.url('/t')} {mix} {rate}")
    assert answer == "+OK Success\n", answer
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.binary) > 30, 5)
    return conn


def split(stereo: bytes) -> tuple[bytes, bytes]:
    a = array("h", stereo)
    return a[0::2].tobytes(), a[1::2].tobytes()


def amp(pcm: bytes, freq: float, rate: int = 8000) -> float:
    return tone_amplitude(pcm, freq, rate)


def blocks(pcm: bytes, freq: float, rate: int = 8000, ms: int = 100) -> list[float]:
    """The amplitude of `freq` in each `ms` block: where a played tone is, and how loud."""
    size = rate * ms // 1000 * 2
    return [amp(pcm[i:i + size], freq, rate) for i in range(0, len(pcm) - size + 1, size)]


def played_once(pcm: bytes, freq: float, seconds: float) -> None:
    """A tone played at 8000 is in `pcm` for `seconds`, at 8000: once, not twice (16000)."""
    levels = blocks(pcm, freq)
    loud = [x for x in levels if x > 4000]
    assert abs(len(loud) - seconds * 10) <= 2, levels
    assert max(levels) == pytest.approx(8000, rel=0.15), levels


def recent(conn, n: int = 40) -> bytes:
    return b"".join(conn.binary[-n:])
