"""The start message (STREAM_START_MESSAGE=true): the call's facts as the first text frame,
before the metadata -- sans-IO, then end to end on a call with two named streams."""

from __future__ import annotations

import json

from conftest import wait_until

from esl_audio_stream.app.settings import StreamSettings, settings_from_variables
from esl_audio_stream.app.start_message import encoding, start_message

OK = "+OK Success\n"


def test_the_message_carries_the_call_the_stream_and_the_variables_asked_for():
    channel = {"Caller-Caller-ID-Number": "+15551230000", "Caller-Caller-ID-Name": "O'Brien",
               "Caller-Destination-Number": "2000", "Call-Direction": "inbound",
               "variable_account": "acme", "variable_Lang": "fr"}
    text = start_message(channel, uuid="u-1", name="asr", mix="stereo", rate=16000,
                         encoding="l16", variables=("account", "lang", "missing"))
    assert json.loads(text) == {"type": "start", "data": {
        "uuid": "u-1", "streamName": "asr",
        "caller": {"number": "+15551230000", "name": "O'Brien"},
        "callee": {"number": "2000", "name": ""}, "direction": "inbound",
        "mix": "stereo", "rate": 16000, "encoding": "l16", "channels": 2,
        "variables": {"account": "acme", "lang": "fr", "missing": None}}}
    assert " " not in text.replace("O'Brien", "")  # compact, as every message the daemon writes
    bridged = {**channel, "Caller-Callee-ID-Number": "3000", "Caller-Callee-ID-Name": "Bob"}
    data = json.loads(start_message(bridged, uuid="u", name="", mix="mono", rate=8000,
                                    encoding="pcmu"))["data"]
    assert data["callee"] == {"number": "3000", "name": "Bob"} and data["channels"] == 1
    assert data["variables"] == {} and data["streamName"] == ""
    assert (encoding("twilio", "l16"), encoding("audio_fork", "pcma"),
            encoding("mod_audio_stream", "pcma")) == ("pcmu", "l16", "pcma")


def test_the_variables_are_opt_in():
    assert StreamSettings().start_message is False
    s = settings_from_variables({"STREAM_START_MESSAGE": "true",
                                 "STREAM_START_VARIABLES": " a, b ,,c "})
    assert s.start_message is True and s.start_variables == ("a", "b", "c")


def test_each_stream_of_the_call_opens_with_its_own_start_message(esl, daemon, peer):
    answer = esl.api("originate {channel_rate=8000,origination_caller_id_number=1234,"
                     "origination_caller_id_name=Alice,STREAM_START_MESSAGE=true,"
                     "STREAM_START_VARIABLES=crm_id,crm_id=42}loopback/1000/default &park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    assert daemon.execute(f"{uuid}@asr start {peer.url('/a')} mono 16k META") == OK
    esl.api(f"uuid_setvar {uuid} STREAM_PROTOCOL twilio")
    assert daemon.execute(f"{uuid}@rec start {peer.url('/r')} stereo 8k") == OK
    a, r = peer.wait_connection(1), peer.wait_connection(2)
    assert wait_until(lambda: len(a.binary) > 3 and len(r.messages) > 4, 5)
    first = json.loads(a.messages[0])
    assert first["type"] == "start" and a.messages[1] == "META"  # then the metadata
    data = first["data"]
    assert (data["uuid"], data["streamName"], data["mix"], data["rate"], data["encoding"],
            data["channels"]) == (uuid, "asr", "mono", 16000, "l16", 1)
    assert data["caller"] == {"number": "1234", "name": "Alice"}
    assert data["callee"]["number"] == "1000" and data["variables"] == {"crm_id": "42"}
    rec = json.loads(r.messages[0])["data"]
    assert (rec["streamName"], rec["mix"], rec["encoding"], rec["channels"]) == (
        "rec", "stereo", "pcmu", 2)
    assert json.loads(r.messages[1]) == {"event": "connected", "protocol": "Call",
                                         "version": "1.0.0"}  # then Twilio's own greeting
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 3)
