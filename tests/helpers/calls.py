"""Calls for the end-to-end tests: originate one on FreeSWITCH (or the simulator), start a stream
on it and wait for its first audio at the peer."""

from __future__ import annotations

from conftest import wait_until


def originate(esl, ext: str = "1000", rate: int = 8000, app: str = "&park()") -> str:
    answer = esl.api(f"originate {{channel_rate={rate}}}loopback/{ext}/default {app}")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    if app == "&park()":  # originate answers before the park application has started
        assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def call_with_mode(esl, mode: str, ext: str = "3000", rate: int = 16000,
                   source: str = "auto") -> str:
    answer = esl.api(f"originate {{channel_rate={rate},STREAM_PLAYBACK_MODE={mode},"
                     f"STREAM_SOURCE={source}}}loopback/{ext}/default &park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def start(daemon, peer, uuid, mix="mono", rate="16k", path="/"):
    n = len(peer.connections)
    assert daemon.execute(f"{uuid} start {peer.url(path)} {mix} {rate}") == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.binary) > 3)
    return conn
