"""The uuid_audio_stream grammar and answers (pure)."""

import pytest

from esl_audio_stream.app import commands
from esl_audio_stream.app.commands import CommandError, Start, parse_command

UUID = "0b4c6d3e-1111-2222-3333-444455556666"


def answer(args):
    with pytest.raises(CommandError) as info:
        parse_command(args)
    return info.value.answer


def test_start_full():
    cmd = parse_command(f'{UUID} start ws://127.0.0.1:9000/x mono 16k {{"a": "b c"}}')
    assert cmd == Start(UUID, "ws://127.0.0.1:9000/x", "mono", 16000, '{"a": "b c"}')


def test_start_rate_defaults_to_8k_and_accepts_hz():
    assert parse_command(f"{UUID} start wss://h/x mono").rate == 8000
    assert parse_command(f"{UUID} start wss://h/x mono 8000").rate == 8000
    assert parse_command(f"{UUID} start wss://h/x mono 16000").rate == 16000


def test_any_rate_from_8k_to_48k():
    for rate in (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000):
        assert parse_command(f"{UUID} start ws://h/x mono {rate}").rate == rate


def test_usage_answers():
    assert answer("") == commands.USAGE
    assert answer(UUID) == commands.USAGE
    assert answer(f"{UUID} start ws://h/x") == commands.USAGE
    assert commands.USAGE.startswith("-USAGE: <uuid> [start | stop")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (f"{UUID} start http://h/x mono 16k", "invalid websocket uri"),
        (f"{UUID} start ws:///x mono 16k", "invalid websocket uri"),
        (f"{UUID} start ws://h:99999/x mono 16k", "invalid websocket uri"),
        (f"{UUID} start ws://h/x quad 16k", "invalid mix type"),
        (f"{UUID} start ws://h/x mono fast", "invalid sample rate"),
        (f"{UUID} start ws://h/x mono 7999", "invalid sample rate"),
        (f"{UUID} start ws://h/x mono 48001", "invalid sample rate"),
        (f"{UUID} start ws://h/x mono -16000", "invalid sample rate"),
        (f"{UUID} frobnicate", "unsupported mod_audio_stream cmd"),
        (f"{UUID} send_text", "requires an argument"),
        (f"bad/uuid{'x' * 3} stop", "invalid uuid"),
    ],
)
def test_errors(args, needle):
    text = answer(args)
    assert text.startswith("-ERR ") and needle in text and text.endswith("\n")


def test_metadata_must_be_utf8():
    bad = f"{UUID} start ws://h/x mono 16k ".encode() + b"\xff\xfe"
    assert "invalid utf8" in answer(bad)
    assert "invalid utf8" in answer(f"{UUID} stop ".encode() + b"\xc3")


def test_stop_and_others():
    assert parse_command(f"{UUID} stop") == commands.Stop(UUID, None)
    assert parse_command(f"{UUID} stop bye now") == commands.Stop(UUID, "bye now")
    assert parse_command(f"{UUID} STOP") == commands.Stop(UUID, None)
    assert parse_command(f"{UUID} pause") == commands.Pause(UUID)
    assert parse_command(f"{UUID} resume") == commands.Resume(UUID)
    assert parse_command(f"{UUID} send_text hi there") == commands.SendText(UUID, "hi there")
