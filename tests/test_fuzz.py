"""Property-based tests (hypothesis) of everything that parses what others send: the ESL parser
(any bytes, any split points), the command grammar, STREAM_* variables, the endpoint's messages
and the audio decoders. The property is always the same: a clear answer or a clear refusal,
never an unexpected exception (which, on the daemon, would end a call's stream or another's)."""

from __future__ import annotations

import base64
import io
import json
import math
from array import array

import pytest
import soundfile
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from esl_audio_stream.app.commands import CommandError, parse_command
from esl_audio_stream.app.settings import SettingsError, settings_from_variables
from esl_audio_stream.esl.protocol import (
    MAX_HEADER_BYTES,
    ESLParser,
    ESLProtocolError,
    Event,
    Message,
)
from esl_audio_stream.media.decode import (
    DecodeError,
    decode_binary,
    decode_stream_audio,
)
from esl_audio_stream.protocols.actions import Clear, Mark, Play, Refuse, Relay
from esl_audio_stream.protocols.mod_audio_stream import ModAudioStream

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- ESL: any bytes, any split points ------------------------------------------------------------

_PLAIN = (b"Event-Name: CUSTOM\nEvent-Subclass: mod_audio_stream%3A%3Ajson\n"
          b"Unique-ID: abc\nContent-Length: 5\n\nhello")
EVENT = b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(_PLAIN), _PLAIN)
REPLY = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
API = b"Content-Type: api/response\nContent-Length: 3\n\n+OK"


def feed_all(data: bytes, cuts: list[int]) -> list[Message | Event]:
    parser = ESLParser()
    out: list[Message | Event] = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts} | {len(data)}):
        parser.receive_data(data[last:cut])
        last = cut
        while (m := parser.next_message()) is not None:
            out.append(m)
    return out


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_esl_messages_are_the_same_whatever_the_split_points(cuts):
    stream = REPLY + EVENT + API + EVENT
    got = feed_all(stream, cuts)
    assert [type(m).__name__ for m in got] == ["Message", "Event", "Message", "Event"]
    assert got[1].body == b"hello" and got[1].subclass == "mod_audio_stream::json"
    assert got[2].body == b"+OK"


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0, max_value=5000), max_size=8))
@example(b"Content-Length: -1\n\n", [])
@example(b"Content-Length: 99999999999\n\n", [])
@example(b"Content-Type: text/event-plain\nContent-Length: 4\n\n%zz\n", [])
def test_esl_parser_takes_any_bytes_or_refuses_them_cleanly(data, cuts):
    try:
        for m in feed_all(data, cuts):
            assert isinstance(m, Message | Event)
    except ESLProtocolError:
        pass


def test_esl_parser_bounds_a_header_block_that_never_ends():
    parser = ESLParser()
    with pytest.raises(ESLProtocolError):
        for _ in range(MAX_HEADER_BYTES // 1000 + 2):
            parser.receive_data(b"X-Filler: " + b"a" * 990 + b"\n")
            parser.next_message()


# -- the command grammar and STREAM_* variables -------------------------------------------------

WORDS = st.sampled_from(["start", "stop", "pause", "resume", "send_text", "STOP", "strt", ""])
TEXT = st.text(max_size=200)


@FUZZ
@given(st.one_of(TEXT, st.binary(max_size=300),
                 st.tuples(st.text(min_size=1, max_size=40), WORDS, TEXT).map(
                     lambda t: f"{t[0]} {t[1]} {t[2]}")))
@example("abc start ws://h/ stereo 99999999999999999999")
@example(b"abc start ws://h/ mono 8k \xff\xfe")
@example("abc start ws://[::1/ mono")
def test_any_command_line_is_carried_out_or_answered_with_a_reason(line):
    try:
        cmd = parse_command(line)
    except CommandError as exc:
        assert exc.answer.startswith(("-ERR ", "-USAGE: ")) and exc.answer.endswith("\n")
        return
    assert cmd.uuid


VARIABLE = st.sampled_from([
    "STREAM_MESSAGE_DEFLATE", "STREAM_HEART_BEAT", "STREAM_SUPPRESS_LOG", "STREAM_BUFFER_SIZE",
    "STREAM_EXTRA_HEADERS", "STREAM_NO_RECONNECT", "STREAM_TLS_CA_FILE", "STREAM_TLS_KEY_FILE",
    "STREAM_TLS_CERT_FILE", "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION", "STREAM_PLAYBACK_MODE",
    "STREAM_SOURCE", "stream_buffer_size", "OTHER"])
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


@FUZZ
@given(st.dictionaries(VARIABLE, st.one_of(TEXT, JSONISH.map(json.dumps)), max_size=6))
@example({"STREAM_EXTRA_HEADERS": "[" * 10000})
@example({"STREAM_HEART_BEAT": "1e400"})
@example({"STREAM_TLS_CERT_FILE": "/x\x00y", "STREAM_TLS_KEY_FILE": "k"})
def test_any_stream_variables_give_settings_or_one_named_refusal(variables):
    try:
        s = settings_from_variables(variables, warn=lambda text: None)
    except SettingsError as exc:
        assert str(exc).split(":")[0].startswith("STREAM_")
        return
    assert s.buffer_ms % 20 == 0 and (s.heartbeat is None or 0 < s.heartbeat <= 86400)


# -- what the endpoint sends ----------------------------------------------------------------------

def tone(seconds: float = 0.05, rate: int = 8000) -> bytes:
    return array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / rate))
                       for i in range(int(seconds * rate)))).tobytes()


def container(kind: str) -> bytes:
    buf = io.BytesIO()
    fmt, sub = {"wav": ("WAV", "PCM_16"), "ogg": ("OGG", "VORBIS"),
                "mp3": ("MP3", "MPEG_LAYER_III")}[kind]
    soundfile.write(buf, array("h", tone(0.3)), 8000, format=fmt, subtype=sub)
    return buf.getvalue()


CONTAINERS = {kind: container(kind) for kind in ("wav", "ogg", "mp3")}
PROTOCOL = ModAudioStream(metadata=None, stream_rate=8000, max_audio_bytes=1 << 20)


def stream_audio(kind: str, payload: bytes, **data) -> str:
    return json.dumps({"type": "streamAudio", "data": {
        "audioDataType": kind, "audioData": base64.b64encode(payload).decode(), **data}})


def mutate(text: str, edits: list[tuple[int, str]]) -> str:
    for pos, chars in edits:
        pos %= len(text) + 1
        text = text[:pos] + chars + text[pos + 1:]
    return text


MESSAGES = [
    stream_audio("raw", tone(), sampleRate=8000),
    stream_audio("wav", CONTAINERS["wav"]),
    json.dumps({"type": "mark", "data": {"name": "m1"}}),
    json.dumps({"type": "clear"}),
    json.dumps({"type": "killAudio"}),
    json.dumps({"type": "transcript", "text": "hello"}),
]


@FUZZ
@given(st.sampled_from(MESSAGES),
       st.lists(st.tuples(st.integers(min_value=0, max_value=4000), st.text(max_size=3)),
                max_size=6))
@example(MESSAGES[0], [(0, "")])
@example('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":1e999}}', [])
@example('{"type":"mark","data":{"name":' + '"x"' * 10 + "}}", [])
def test_any_text_from_the_endpoint_becomes_one_action(message, edits):
    action = PROTOCOL.on_text(mutate(message, edits))
    assert isinstance(action, Play | Mark | Clear | Relay | Refuse)
    if isinstance(action, Play):
        assert len(action.chunk.pcm) % 2 == 0 and 8000 <= action.chunk.rate <= 192000


@FUZZ
@given(st.binary(max_size=3000))
def test_any_binary_from_the_endpoint_is_played_or_refused(data):
    action = PROTOCOL.on_binary(data)
    if isinstance(action, Play):
        assert action.chunk.pcm == data and len(data) % 2 == 0 and data
    else:
        assert isinstance(action, Refuse)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["wav", "ogg", "mp3"]), st.integers(min_value=0, max_value=6000),
       st.binary(max_size=64), st.booleans())
def test_truncated_or_corrupted_files_decode_or_are_refused(kind, cut, junk, truncate):
    original = CONTAINERS[kind]
    if truncate:
        payload = original[:cut % len(original)]
    else:
        at = cut % len(original)
        payload = original[:at] + junk + original[at + len(junk):]
    try:
        chunk = decode_stream_audio({"audioDataType": kind,
                                     "audioData": base64.b64encode(payload).decode()})
    except DecodeError:
        return
    assert len(chunk.pcm) % 2 == 0 and chunk.rate >= 8000


def test_binary_audio_is_bounded():
    with pytest.raises(DecodeError):
        decode_binary(bytes(1 << 21), 8000, max_bytes=1 << 20)
