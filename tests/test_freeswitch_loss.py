"""Losing FreeSWITCH: its event socket cut for a while (the calls go on), and FreeSWITCH itself
restarted (its calls are gone). Against the simulator, which drops and refuses ESL clients as a
vanished listener does, and restarts with a new core UUID."""

from __future__ import annotations

import json
import time

import gevent
from conftest import wait_until
from helpers.calls import originate

from esl_audio_stream.app import events
from esl_audio_stream.esl.connection import ESLConnection


def listener(sim) -> ESLConnection:
    """An operator's ESL client that comes back quickly, to see what is fired after a cut."""
    seen: list = []
    conn = ESLConnection(*sim.address, "ClueCon", on_event=seen.append, backoff_max=0.5)
    conn.seen = seen
    conn.subscribe("CUSTOM", events.CONNECT, events.DISCONNECT, events.JSON, events.ERROR)
    conn.start()
    assert conn.wait_connected(5)
    return conn


def test_an_esl_cut_loses_no_audio_answers_commands_at_once_and_keeps_events(sim, esl, daemon,
                                                                            peer):
    ops = listener(sim)
    try:
        uuid = esl.api("originate {channel_rate=8000,sim_record_audio=true}loopback/1000/"
                       "default &park()").split()[1]
        assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
        assert daemon.execute(f"{uuid} start {peer.url('/cut')} mono 8k") == "+OK Success\n"
        conn = peer.wait_connection(1)
        assert wait_until(lambda: len(conn.binary) > 5)
        other = originate(esl)
        back = sim.cut_esl(5.0, spare=(ops.local_port,))  # the operator's client stays
        assert wait_until(lambda: not daemon.esl.connected, 2)
        before = len(conn.binary)
        asked = time.monotonic()
        answer = daemon.execute(f"{other} start {peer.url('/other')} mono 8k")
        took = time.monotonic() - asked
        assert answer.startswith("-ERR FreeSWITCH did not answer: not connected"), answer
        assert took < 1.0  # at once, not after a timeout
        for n in range(3):  # the endpoint talks meanwhile: events kept, in order
            peer.send_text(conn, json.dumps({"n": n}))
        gevent.sleep(1.0)
        assert len(conn.binary) > before + 40  # audio flows: UDP needs no ESL
        back.join(6)
        returned = time.monotonic()
        assert wait_until(lambda: daemon.esl.connected, 3)
        print(f"\nESL back {time.monotonic() - returned:.2f} s after FreeSWITCH's listener")
        assert time.monotonic() - returned < 2.0
        assert wait_until(lambda: len([e for e in ops.seen if e.subclass == events.JSON
                                       and e.get(events.STREAM_UUID_HEADER) == uuid]) == 3, 5)
        bodies = [json.loads(e.body)["n"] for e in ops.seen if e.subclass == events.JSON]
        assert bodies == [0, 1, 2]
        assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
        sent = bytes(sim.channel(uuid).sent_audio)
        got = conn.audio
        assert sent[:len(got)] == got and len(sent) - len(got) <= 320 * 3  # nothing lost
    finally:
        ops.stop()


def test_a_freeswitch_restart_ends_every_stream_and_leaves_nothing(sim, esl, daemon, peer,
                                                                  tmp_path):
    uuids = [originate(esl) for _ in range(3)]
    bridged = esl.api("originate {channel_rate=8000,STREAM_SOURCE=taps}loopback/1000/default "
                      "&bridge(loopback/1001/default)").split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {bridged} current_application") == "bridge")
    for n, uuid in enumerate([*uuids, bridged]):
        assert daemon.execute(f"{uuid} start {peer.url(f'/r{n}')} mono 8k") == "+OK Success\n"
    assert wait_until(lambda: len(peer.connections) == 4
                      and all(len(c.binary) > 3 for c in peer.connections), 5)
    assert daemon.calls.tap_owners
    sim.restart(0.3)
    assert wait_until(lambda: not daemon.streams, 5)
    assert daemon.ports.in_use == 0 and not daemon.calls.tap_owners
    assert wait_until(lambda: all(c.closed.is_set() for c in peer.connections), 3)
    assert daemon.counters.disconnects[1000] == 4  # each ended with its disconnect event
    assert not any((tmp_path / "files").glob("*/*"))  # no file of theirs left
    ops = listener(sim)  # the operator's own client, back after the restart
    try:
        assert int(ops.api("show channels count").split()[0]) == 0
    finally:
        ops.stop()
