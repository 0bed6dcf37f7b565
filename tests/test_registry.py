"""Several streams on one call, sans-IO: the registry by call and name, the `<uuid>@<name>`
extension of uuid_audio_stream's grammar, a record's name (and an old record's)."""

from __future__ import annotations

import pytest

from esl_audio_stream.app.commands import (
    CommandError,
    Pause,
    Resume,
    SendText,
    Start,
    Stop,
    parse_command,
)
from esl_audio_stream.app.registry import Streams
from esl_audio_stream.app.resume import StreamRecord, decode

UUID = "0b4c6d3e-1111-2222-3333-444455556666"


class FakeStream:
    def __init__(self, uuid: str, name: str) -> None:
        self.uuid, self.name = uuid, name


def test_streams_by_call_and_name_and_as_a_mapping_each_calls_first():
    reg = Streams()
    a, b, c = FakeStream("u1", ""), FakeStream("u1", "rec"), FakeStream("u2", "asr")
    for s in (a, b, c):
        reg.add(s)  # type: ignore[arg-type]
    assert reg.count == 3 and len(reg) == 2 and list(reg) == ["u1", "u2"]
    assert reg["u1"] is a and reg.get("u2") is c and "u3" not in reg
    assert reg.of("u1") == [a, b] and reg.named("u1", "rec") is b and reg.named("u1", "x") is None
    assert reg.all() == [a, b, c]
    assert not reg.remove(FakeStream("u1", "rec"))  # another stream of that name: not it
    assert reg.remove(a) and reg["u1"] is b and reg.count == 2
    assert reg.remove(b) and "u1" not in reg and reg == {"u2": c}


def test_a_name_is_taken_while_its_stream_is_admitted_and_while_it_runs():
    reg = Streams()
    reg.reserve("u1", "asr")
    assert reg.taken("u1", "asr") and not reg.taken("u1", "") and reg.busy("u1")
    assert reg.starting_calls() == {"u1"} and not reg  # not registered yet
    reg.add(FakeStream("u1", "asr"))  # type: ignore[arg-type]
    reg.release("u1", "asr")
    assert reg.taken("u1", "asr") and reg.busy("u1") and not reg.busy("u2")


def test_uuid_at_name_names_the_stream_of_every_verb():
    start = parse_command(f"{UUID}@asr start ws://h/x mono 16k meta data")
    assert start == Start(UUID, "ws://h/x", "mono", 16000, "meta data", name="asr")
    assert parse_command(f"{UUID}@rec.1 stop bye") == Stop(UUID, "bye", "rec.1")
    assert parse_command(f"{UUID}@a-b send_text hi") == SendText(UUID, "hi", "a-b")
    assert parse_command(f"{UUID}@x pause") == Pause(UUID, "x")
    assert parse_command(f"{UUID}@x resume") == Resume(UUID, "x")
    # without a name: the unnamed stream, exactly as mod_audio_stream's grammar has it
    assert parse_command(f"{UUID} stop") == Stop(UUID, None)
    assert parse_command(f"{UUID} start ws://h/x mono").name == ""


@pytest.mark.parametrize("bad", [f"{UUID}@ stop", f"{UUID}@a@b stop", f"{UUID}@a/b stop",
                                 f"{UUID}@{'n' * 65} stop"])
def test_a_bad_name_is_refused(bad):
    with pytest.raises(CommandError) as info:
        parse_command(bad)
    assert info.value.answer.startswith(("-ERR invalid stream name", "-ERR invalid uuid"))


def test_a_record_keeps_its_name_and_an_old_one_gets_the_name_it_had():
    named = StreamRecord("o", "ws://x/", "mono", 8000, None, "direct", name="asr")
    assert decode(named.encode()).name == "asr"
    # a record written before names (a daemon upgraded mid-call): the unnamed stream, or
    # mod_audio_fork's bug by its bugname
    import base64
    import json

    def old(**fields):
        data = {"v": 1, "owner": "o", "url": "ws://x/", "mix": "mono", "rate": 8000,
                "metadata": None, "source": "direct", **fields}
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    assert decode(old()).name == ""
    assert decode(old(protocol="audio_fork", extra={"bugname": "b2"})).name == "b2"
    assert decode(old(protocol="audio_fork")).name == "audio_fork"
