"""The demo: a simulated FreeSWITCH call of a 440 Hz tone streamed through the daemon to a local
WebSocket endpoint, checked and summarised, with a WAV of what the endpoint heard.

Everything talks over real loopback sockets: ESL to the simulator, the `start`/`stop` commands
over the daemon's HTTP control endpoint (as `esl-audio-stream ctl` sends them), unicast UDP from
the simulator, and a WebSocket to the endpoint. A second ESL client subscribes to the daemon's
events, as an operator's application would.
"""

from __future__ import annotations

import json
from pathlib import Path

import gevent

from ..app import events
from ..app.config import DaemonConfig
from ..esl.connection import ESLConnection
from ..esl.protocol import Event
from ..ops.client import control_request
from ..service import build_daemon
from .analysis import dominant_frequency
from .simulator import Simulator
from .sink import AudioSink

TONE_HZ = 440
STREAM_RATE = 16000


def run_demo(seconds: float = 5.0, out_dir: str = "demo-out") -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulator(port=0, extensions={"1000": f"tone:{TONE_HZ}"})
    sim.start()
    sink = AudioSink()
    sink.start()
    esl_host, esl_port = sim.address
    daemon = build_daemon(DaemonConfig(esl_host=esl_host, esl_port=esl_port, control_port=0))
    seen: list[Event] = []
    listener = ESLConnection(esl_host, esl_port, on_event=seen.append)
    listener.subscribe("CUSTOM", events.CONNECT, events.DISCONNECT, events.JSON, events.ERROR)
    try:
        daemon.start()
        listener.start()
        if not (daemon.esl.wait_connected(5) and listener.wait_connected(5)):
            print("FAIL: could not connect to the simulator over ESL")
            return 1
        answer = listener.api("originate {channel_rate=8000}loopback/1000/default &park()")
        if not answer.startswith("+OK "):
            print(f"FAIL: originate answered {answer.strip()}")
            return 1
        uuid = answer.split()[1]
        control = "{}:{}".format(*daemon.control.address)
        metadata = json.dumps({"call": uuid, "demo": True}, separators=(",", ":"))
        url = sink.url(f"/demo/{uuid}?rate={STREAM_RATE}")
        pool = gevent.get_hub().threadpool  # http.client blocks: keep it off the hub
        started = pool.apply(control_request, (control, f"{uuid} start {url} mono 16k {metadata}"))
        print(f"ctl {uuid} start {url} mono 16k {metadata}\n  -> {started.strip()}")
        if not started.startswith("+OK"):
            return 1
        gevent.sleep(seconds)
        stopped = pool.apply(control_request, (control, f"{uuid} stop"))
        print(f"ctl {uuid} stop\n  -> {stopped.strip()}")
        listener.api(f"uuid_kill {uuid}")
        session = sink.sessions[0] if sink.sessions else None
        if session is None or not session.closed.wait(5):
            print("FAIL: the endpoint never saw a complete connection")
            return 1
        gevent.sleep(0.3)  # let the last events arrive
        return _summarise(session, seen, uuid, seconds, metadata, out)
    finally:
        listener.stop()
        daemon.stop()
        sink.stop()
        sim.stop()


def _summarise(session, seen: list[Event], uuid: str, seconds: float, metadata: str,
               out: Path) -> int:
    wav = session.write_wav(out / f"demo-{uuid}.wav")
    freq = dominant_frequency(bytes(session.audio), session.rate) if session.audio else 0.0
    subclasses = [e.subclass for e in seen if e.get(events.STREAM_UUID_HEADER) == uuid]
    per_second = session.messages / seconds
    checks = {
        f"~50 messages per second ({per_second:.1f})": abs(per_second - 50) <= 3,
        f"every message 640 bytes (20 ms at 16 kHz) {sorted(session.sizes)}":
            session.sizes == {640},
        f"dominant frequency {freq:.1f} Hz within 5 Hz of {TONE_HZ}": abs(freq - TONE_HZ) <= 5,
        "metadata arrived first": bool(session.texts) and session.texts[0] == metadata
        and session.first_text_before_audio is True,
        f"closed with 1000 ({session.close_code})": session.close_code == 1000,
        f"connect and disconnect events seen by a subscriber {subclasses}":
            events.CONNECT in subclasses and events.DISCONNECT in subclasses,
    }
    print()
    print("esl-audio-stream demo summary")
    print(f"  call            {uuid} (simulated, 8 kHz, {TONE_HZ} Hz tone)")
    print(f"  stream          mono, {session.rate} Hz, 20 ms binary messages")
    print(f"  frames          {session.messages}")
    print(f"  bytes           {len(session.audio)}")
    print(f"  seconds         {session.seconds:.2f}")
    print(f"  dominant freq   {freq:.1f} Hz")
    print(f"  WAV             {wav.resolve()}")
    ok = True
    for what, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {what}")
        ok = ok and passed
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1
