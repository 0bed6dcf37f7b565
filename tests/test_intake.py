"""Commands from FreeSWITCH itself: CUSTOM command events and auto-start on park."""

from __future__ import annotations

import gevent
from conftest import wait_until
from helpers.calls import originate

from esl_audio_stream.app import intake
from esl_audio_stream.esl.protocol import Event


def ev(headers: dict[str, str], body: bytes = b"") -> Event:
    return Event(headers, body)


def test_command_event_parsing():
    found = intake.from_event(ev({"Event-Name": "CUSTOM", "Event-Subclass": intake.COMMAND_SUBCLASS,
                                  "Command": "abc start ws://h/x mono 16k", "Event-UUID": "e1"}))
    assert found == intake.Intake("abc start ws://h/x mono 16k", "abc", "event", "e1")
    # routed through a channel, mod_event_socket's own "Command: sendevent CUSTOM" is not ours;
    # the argument string may then come in the body
    found = intake.from_event(ev({"Event-Name": "CUSTOM", "Event-Subclass": intake.COMMAND_SUBCLASS,
                                  "Command": "sendevent CUSTOM", "Unique-ID": "u1"},
                                 b"u1 stop bye"))
    assert found is not None and (found.args, found.uuid) == ("u1 stop bye", "u1")
    assert intake.from_event(ev({"Event-Name": "CUSTOM", "Event-Subclass": "other::x"})) is None
    assert intake.from_event(ev({"Event-Name": "CHANNEL_PARK"})) is None


def test_auto_start_parsing():
    park = {"Event-Name": "CHANNEL_PARK", "Unique-ID": "u2",
            "variable_AUDIO_STREAM_URL": "ws://h/x"}
    assert intake.auto_start(ev(park)).args == "u2 start ws://h/x mono 8k"
    full = dict(park, variable_AUDIO_STREAM_MIX="mono", variable_AUDIO_STREAM_RATE="16k",
                variable_AUDIO_STREAM_METADATA='{"a": 1}')
    assert intake.auto_start(ev(full)).args == 'u2 start ws://h/x mono 16k {"a": 1}'
    assert intake.auto_start(ev({"Event-Name": "CHANNEL_PARK", "Unique-ID": "u3"})) is None
    assert intake.auto_start(ev(dict(park, **{"Event-Name": "CHANNEL_ANSWER"}))) is None


def replies(esl, uuid):
    return [e for e in esl.seen if e.subclass == intake.REPLY_SUBCLASS
            and e.get("Audio-Stream-UUID") == uuid]


def test_command_event_starts_and_stops_a_stream(esl, daemon, peer):
    esl.subscribe("CUSTOM", intake.REPLY_SUBCLASS)
    gevent.sleep(0.1)
    uuid = originate(esl)
    # an ESL application's sendevent, not naming the channel in Unique-ID: fired at once
    esl.sendevent("CUSTOM", {"Event-Subclass": intake.COMMAND_SUBCLASS,
                             "Command": f"{uuid} start {peer.url('/ev')} mono 16k"})
    conn = peer.wait_connection()
    assert wait_until(lambda: replies(esl, uuid), 3)
    reply = replies(esl, uuid)[0]
    assert reply.body == b"+OK Success\n" and reply.get("Command-Source") == "event"
    assert reply.get("Command-Event-UUID")
    assert wait_until(lambda: len(conn.binary) > 3)
    # the same through the parked channel (Unique-ID): the reply comes back with Unique-ID
    esl.sendevent("CUSTOM", {"Event-Subclass": intake.COMMAND_SUBCLASS, "Unique-ID": uuid,
                             "Command": f"{uuid} stop"})
    assert wait_until(lambda: len(replies(esl, uuid)) == 2, 3)
    second = replies(esl, uuid)[1]
    assert second.body == b"+OK Success\n" and second.uuid == uuid
    assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
    # a bad command gets its -ERR back the same way
    esl.sendevent("CUSTOM", {"Event-Subclass": intake.COMMAND_SUBCLASS,
                             "Command": f"{uuid} start http://nope mono 16k"})
    assert wait_until(lambda: len(replies(esl, uuid)) == 3, 3)
    assert replies(esl, uuid)[2].body.startswith(b"-ERR invalid websocket uri")
    esl.api(f"uuid_kill {uuid}")


def test_auto_start_on_park_once_per_call(esl, daemon, peer):
    answer = esl.api(f"originate {{AUDIO_STREAM_URL={peer.url('/auto')},AUDIO_STREAM_RATE=16k,"
                     "AUDIO_STREAM_METADATA='{\"auto\":true}'}loopback/1000/default &park()")
    uuid = answer.split()[1]
    conn = peer.wait_connection()
    assert conn.path == "/auto"
    assert wait_until(lambda: len(conn.binary) > 3)
    assert conn.messages[0] == '{"auto":true}'
    assert {len(m) for m in conn.binary} == {640}
    # stop re-parks the call (CHANNEL_PARK again): that must not start it again
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    gevent.sleep(0.5)
    assert len(peer.connections) == 1 and uuid not in daemon.streams
    esl.api(f"uuid_kill {uuid}")
