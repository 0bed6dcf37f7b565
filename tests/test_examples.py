"""The bots in examples/, each run as its own process against a Twilio-mode stream through the
simulator: they hear the caller (440 Hz) and echo it into the call, and answer the keys the
caller presses. The Pipecat one is skipped when Pipecat is not installed (`pip install -e
'.[pipecat]'`: ~140 MB, so not a test dependency)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest
from conftest import wait_until

from esl_audio_stream.app import events
from esl_audio_stream.dev.analysis import dominant_frequency, tone_amplitude

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
missing = [m for m in ("pipecat", "fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
needs_pipecat = pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} "
                                   "(pip install -e '.[pipecat]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def run_bot(tmp_path):
    """Start an example bot on a free port: (its ws:// URL, its log file)."""
    procs = []

    def run(script: str, path: str = "/") -> tuple[str, Path]:
        port = free_port()
        log_path = tmp_path / f"{script}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, str(EXAMPLES / script), "--port", str(port)],
                                    stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 60  # Pipecat's imports take a while
        while not listening(port):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the bot never listened"
            gevent.sleep(0.1)
        return f"ws://127.0.0.1:{port}{path}", log_path

    yield run
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def streamed_call(esl, daemon, url: str) -> str:
    answer = esl.api("originate {channel_rate=8000,STREAM_PROTOCOL=twilio}"
                     "loopback/1000/default &park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    assert daemon.execute(f"{uuid} start {url} mono 8k") == "+OK Success\n"
    return uuid


def echoed(sim, uuid: str, log: Path) -> None:
    """What the bot sent back was played into the call: the caller's own 440 Hz."""
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 16000, 15), log.read_text()
    played = bytes(sim.channel(uuid).written[-16000:])
    assert abs(dominant_frequency(played, 8000) - 440) <= 5
    assert tone_amplitude(played, 440, 8000) > 3000


def test_the_plain_websockets_echo_bot(esl, daemon, sim, run_bot):
    url, log = run_bot("twilio_echo_bot.py")
    esl.subscribe("CUSTOM", events.JSON)
    uuid = streamed_call(esl, daemon, url)
    echoed(sim, uuid, log)
    assert esl.api(f"uuid_recv_dtmf {uuid} 7").startswith("+OK")

    def marks() -> list[dict]:  # the bot's mark, relayed; then echoed back to it once played
        return [json.loads(e.body) for e in esl.seen if e.subclass == events.JSON
                and e.get(events.STREAM_UUID_HEADER) == uuid and b'"mark"' in e.body]

    assert wait_until(lambda: len(marks()) == 1, 10), log.read_text()
    assert marks()[0]["mark"] == {"name": "key-7"}
    assert wait_until(lambda: "played up to key-7" in log.read_text(), 10), log.read_text()
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(lambda: "stopped" in log.read_text(), 5), log.read_text()
    esl.api(f"uuid_kill {uuid}")


@needs_pipecat
def test_the_pipecat_twilio_bot_answers_a_freeswitch_call(esl, daemon, sim, run_bot):
    url, log = run_bot("pipecat_twilio_bot.py", "/ws")
    esl.subscribe("CUSTOM", events.JSON, events.DISCONNECT)
    uuid = streamed_call(esl, daemon, url)
    echoed(sim, uuid, log)  # the bot hears the caller and echoes it
    # a key: Twilio's dtmf message to the bot, the bot's own message back as an event

    def keypresses() -> list[dict]:
        bodies = [json.loads(e.body) for e in esl.seen if e.subclass == events.JSON
                  and e.get(events.STREAM_UUID_HEADER) == uuid]
        return [b for b in bodies if b.get("event") == "keypress"]

    assert esl.api(f"uuid_recv_dtmf {uuid} 5#").startswith("+OK")
    assert wait_until(lambda: len(keypresses()) == 2, 10), log.read_text()
    assert keypresses() == [{"event": "keypress", "digit": "5"},
                            {"event": "keypress", "digit": "#"}]
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(lambda: any(e.subclass == events.DISCONNECT for e in esl.seen), 5)
    esl.api(f"uuid_kill {uuid}")
