"""`esl-audio-stream status` and `ctl --token` as an operator runs them, against a live daemon.

The commands run as real processes (gevent.subprocess, so the daemon in this process keeps
answering while the test waits for them)."""

from __future__ import annotations

import json
import os
import sys

from conftest import wait_until
from gevent import subprocess
from helpers.calls import originate
from helpers.daemons import TOKEN, make_daemon

from esl_audio_stream.ops.status import COLUMNS

CLI = [sys.executable, "-m", "esl_audio_stream.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "ESL_AUDIO_STREAM_CONTROL_TOKEN"}
    environ.update(env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=environ)


def control(d) -> str:
    host, port = d.control.address
    return f"{host}:{port}"


def test_status_prints_the_live_streams(esl, daemon, peer):
    empty = run("status", "--control", control(daemon))
    assert (empty.returncode, empty.stdout) == (0, "no live streams\n")

    calls = [originate(esl), originate(esl, rate=16000)]
    assert daemon.execute(f"{calls[0]} start {peer.url('/a')} mono 16k") == "+OK Success\n"
    assert daemon.execute(f"{calls[1]} start {peer.url('/b')} stereo 8k") == "+OK Success\n"
    assert daemon.execute(f"{calls[1]} pause") == "+OK Success\n"
    assert wait_until(lambda: daemon.streams[calls[0]].frames_in >= 25, 5)

    done = run("status", "--control", control(daemon))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [c.upper() for c in COLUMNS]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(calls)
    uuid, url, mix, rate, state, seconds, frames, dropped, reconnects = rows[calls[0]]
    assert (url, mix, rate, state) == (peer.url("/a"), "mono", "16000", "streaming")
    assert float(seconds) > 0.4 and int(frames) >= 25 and (dropped, reconnects) == ("0", "0")
    assert rows[calls[1]][1:5] == [peer.url("/b"), "stereo", "8000", "paused"]

    as_json = run("status", "--json", "--control", control(daemon))
    assert {r["uuid"] for r in json.loads(as_json.stdout)} == set(calls)
    for uuid in calls:
        esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 5)
    assert run("status", "--control", control(daemon)).stdout == "no live streams\n"


def test_status_and_ctl_take_the_token(fs, tmp_path, esl):
    d = make_daemon(fs, tmp_path, control_token=TOKEN)
    try:
        where = control(d)
        refused = run("status", "--control", where)
        assert refused.returncode == 1 and refused.stderr.startswith("-ERR unauthorized")
        assert run("status", "--control", where, "--token", "nope").returncode == 1
        ok = run("status", "--control", where, "--token", TOKEN)
        assert (ok.returncode, ok.stdout) == (0, "no live streams\n")
        by_env = run("status", "--control", where,
                     env={"ESL_AUDIO_STREAM_CONTROL_TOKEN": TOKEN})
        assert (by_env.returncode, by_env.stdout) == (0, "no live streams\n")

        uuid = originate(esl)
        no = run("ctl", "--control", where, uuid, "stop")
        assert no.returncode == 1 and no.stdout.startswith("-ERR unauthorized")
        yes = run("ctl", "--control", where, uuid, "stop",
                  env={"ESL_AUDIO_STREAM_CONTROL_TOKEN": TOKEN})
        assert (yes.returncode, yes.stdout) == (1, f"-ERR no audio stream on {uuid}\n")
        also = run("ctl", "--control", where, "--token", TOKEN, uuid, "pause")
        assert also.stdout == f"-ERR no audio stream on {uuid}\n"
        esl.api(f"uuid_kill {uuid}")

        gone = run("status", "--control", "127.0.0.1:1")
        assert gone.returncode == 2 and "cannot reach the daemon" in gone.stderr
    finally:
        d.stop()
