"""protocols/audio_fork.py with no sockets: what each message from the endpoint becomes, what goes
on the wire, how the stream's own events are told, and the handshake it asks for."""

from __future__ import annotations

import base64
import io
import json
from array import array

import pytest
import soundfile

from esl_audio_stream.app import events
from esl_audio_stream.app.settings import SettingsError, StreamSettings
from esl_audio_stream.protocols import audio_fork as af
from esl_audio_stream.protocols import choose
from esl_audio_stream.protocols.actions import Clear, Mark, Notify, Play, Refuse


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, chunk: bytes) -> bool:
        self.sent.append(chunk)
        return True

    def send_text(self, text: str) -> bool:
        raise AssertionError("the protocol itself sends no text")


def fork(**options) -> af.AudioFork:
    return af.AudioFork(af.ForkOptions(**options), metadata='{"callid":"x"}', rate=16000,
                        channels=1)


def as_list(actions) -> list:
    return list(actions) if isinstance(actions, tuple) else [actions]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_out_metadata_first_binary_l16_stop_text_last():
    p = fork()
    link = FakeLink()
    assert p.greeting() == ['{"callid":"x"}']
    assert p.audio_out(link) is link  # the per-frame path is the link's own send
    assert p.audio_as_text is False and p.wire_bytes_per_second == 32000
    assert p.goodbye("bye") == ["bye"] and p.goodbye(None) == []
    assert p.dtmf("5", 100) is None
    assert af.AudioFork(af.ForkOptions(), metadata=None, rate=8000, channels=2).greeting() == []
    assert af.AudioFork(af.ForkOptions(), metadata=None, rate=8000,
                        channels=2).wire_bytes_per_second == 32000


def test_graceful_shutdown_one_empty_binary_message_then_nothing():
    p = fork()
    link = FakeLink()
    p.audio_out(link)
    p.shut_down_gracefully()
    p.shut_down_gracefully()
    assert link.sent == [b""]
    assert p.goodbye("bye") == [] and p.greeting() == []
    assert p.record_extra()["graceful"] is True
    again = af.AudioFork.carried_on(p.record_extra(), metadata="m", rate=16000, channels=1)
    later = FakeLink()
    again.audio_out(later)
    assert again.graceful and later.sent == [b""]


@pytest.mark.parametrize(("message", "subclass", "body"), [
    ('{"type":"transcription","data":{"text":"hello","confidence":1.0,"alt":[0.5]}}',
     af.TRANSCRIPTION, '{"text":"hello","confidence":1,"alt":[0.5]}'),
    ('{"type":"transfer","data":{"to":"+15551234"}}', af.TRANSFER, '{"to":"+15551234"}'),
    ('{"type":"disconnect"}', af.DISCONNECT, ""),
    ('{"type":"error","data":"bad thing"}', af.ERROR, '"bad thing"'),
    ('{"type":"error","data":null}', af.ERROR, "null"),
    ('{"type":"json","data":{"a":1}}', af.JSON, '{"type":"json","data":{"a":1}}'),
    ('{"hello": "world",  "n": 2.50}', af.JSON, '{"hello":"world","n":2.5}'),  # no type
    ("[1, 2]", af.JSON, "[1,2]"),
    ('{"TYPE":"transcription","Data":{"k":"v"}}', af.TRANSCRIPTION, '{"k":"v"}'),
    ('{"type":5,"data":1}', af.JSON, '{"type":5,"data":1}'),  # a type that is no string
])
def test_messages_that_become_events(message, subclass, body):
    assert as_list(fork().on_text(message)) == [Notify(subclass, body)]


@pytest.mark.parametrize("message", ["not json", '{"type":"whatever"}', '{"type":"clear"}',
                                     '{"type":"streamAudio","data":{}}'])
def test_other_messages_are_only_logged(message):
    assert as_list(fork().on_text(message)) == []


def test_kill_audio_is_an_event_then_a_barge_in_that_breaks_freeswitch_s_playback():
    assert as_list(fork().on_text('{"type":"killAudio"}')) == [Notify(af.KILL_AUDIO, ""),
                                                               Clear(interrupt=True)]


def test_play_audio_raw_writes_a_file_and_names_it_in_the_event():
    pcm = array("h", range(-400, 400)).tobytes()
    msg = json.dumps({"type": "playAudio", "data": {
        "audioContentType": "raw", "sampleRate": 8000, "audioContent": b64(pcm),
        "textContent": "Hi there!", "extra": 1.0}})
    [play] = as_list(fork().on_text(msg))
    assert isinstance(play, Play) and play.announce and not play.queue  # the app plays the file
    assert play.chunk.pcm == pcm and play.chunk.rate == 8000 and play.chunk.kind == "raw"
    # the player fires events.PLAY with play_event_body; told makes it jambonz's body
    from esl_audio_stream.media.files import play_event_body

    said = fork().told(events.PLAY, play_event_body(play.chunk, "/f/u_0.r8"), "")
    assert said == (af.PLAY_AUDIO, '{"audioContentType":"raw","sampleRate":8000,'
                                   '"textContent":"Hi there!","extra":1,"file":"/f/u_0.r8"}')


@pytest.mark.parametrize(("rate", "want"), [(24000, 24000), (44100, 16000), (None, 16000),
                                            ("8000", 16000)])
def test_play_audio_raw_rates_as_jambonz_names_its_file(rate, want):
    data = {"audioContentType": "raw", "audioContent": b64(b"\x01\x00" * 100)}
    if rate is not None:
        data["sampleRate"] = rate
    [play] = as_list(fork().on_text(json.dumps({"type": "playAudio", "data": data})))
    assert play.chunk.rate == want


def test_play_audio_wave_and_the_daemon_playing_it_when_asked():
    buf = io.BytesIO()
    soundfile.write(buf, array("h", [1000, -1000] * 800), 16000, format="WAV", subtype="PCM_16")
    msg = json.dumps({"type": "playAudio", "data": {"audioContentType": "wave",
                                                    "audioContent": b64(buf.getvalue())}})
    [play] = as_list(fork(play_audio=True).on_text(msg))
    assert play.queue and play.announce and play.chunk.kind == "wav" and play.chunk.rate == 16000


@pytest.mark.parametrize("data", [
    {"audioContentType": "mp3", "audioContent": "AAAA", "x": 1},
    {"audioContentType": "raw", "sampleRate": 8000},
    {"sampleRate": 8000, "audioContent": "AAAA"},
])
def test_play_audio_without_usable_audio_is_announced_without_a_file(data):
    msg = json.dumps({"type": "playAudio", "data": data})
    body = json.dumps({k: v for k, v in data.items() if k != "audioContent"},
                      separators=(",", ":"))
    assert as_list(fork().on_text(msg)) == [Notify(af.PLAY_AUDIO, body)]


def test_play_audio_is_carried_out_only_when_bidirectional_audio_is_on_and_not_streaming():
    msg = json.dumps({"type": "playAudio", "data": {"audioContentType": "raw",
                                                    "sampleRate": 8000, "audioContent": "AAAA"}})
    assert as_list(fork(bidi_enabled=False).on_text(msg)) == []
    assert as_list(fork(bidi_stream=True, bidi_rate=8000).on_text(msg)) == []
    assert as_list(fork().on_text('{"type":"playAudio"}')) == []  # no data: logged


def test_binary_audio_plays_only_when_streaming_and_an_odd_byte_waits():
    assert as_list(fork().on_binary(b"\x01\x02")) == []
    p = fork(bidi_stream=True, bidi_rate=24000)
    [a] = as_list(p.on_binary(b"\x01\x02\x03"))
    assert a.chunk.pcm == b"\x01\x02" and a.chunk.rate == 24000 and not a.announce
    [b] = as_list(p.on_binary(b"\x04\x05\x06"))
    assert b.chunk.pcm == b"\x03\x04\x05\x06"
    assert as_list(p.on_binary(b"")) == []
    small = af.AudioFork(af.ForkOptions(bidi_stream=True, bidi_rate=8000), metadata=None,
                         rate=8000, channels=1, max_audio_bytes=4)
    assert isinstance(small.on_binary(b"\x00" * 6), Refuse)


def test_marks_answered_as_jambonz_writes_them_and_clear_marks_silences_them():
    p = fork()
    assert as_list(p.on_text('{"type":"mark","data":{"name":"m1"}}')) == [Mark("m1")]
    assert as_list(p.on_text('{"type":"mark","data":{"name":"m2"}}')) == [Mark("m2")]
    assert p.mark_reply("m1", "playout") == (
        '{"type": "mark", "data": {"name":"m1", "event": "playout"}}')
    assert as_list(p.on_text('{"type":"clearMarks"}')) == []
    assert p.mark_reply("m2", "cleared") is None  # taken back: never answered
    assert as_list(p.on_text('{"type":"mark","data":{}}')) == []
    for i in range(af.MAX_MARKS):
        assert as_list(p.on_text(f'{{"type":"mark","data":{{"name":"n{i}"}}}}')) == [Mark(f"n{i}")]
    assert as_list(p.on_text('{"type":"mark","data":{"name":"one too many"}}')) == []


def test_the_stream_s_events_as_mod_audio_fork_fires_them():
    p = fork()
    refused = events.error_body(events.WS_CONNECT_FAILED, "cannot connect to x:1: refused")
    assert p.told(events.ERROR, refused, "") == (af.CONNECT_FAILED,
                                                  '{"reason":"cannot connect to x:1: refused"}')
    assert p.told(events.ERROR, refused, "") is None and p.connect_failed("again") is None
    p = fork()
    assert p.told(events.CONNECT, events.connect_body(), "") == (af.CONNECT, "")
    assert p.connect_failed("late") is None
    assert p.told(events.ERROR, events.error_body(events.WS_PROTOCOL, "refused audio"), "") is None
    drop = events.error_body(events.WS_IO, "3 audio messages dropped", dropped=3)
    assert p.told(events.ERROR, drop, "") == (af.BUFFER_OVERRUN, "")
    assert p.told(events.ERROR, drop, "") is None  # once
    bye = events.disconnect_body(1000)
    assert p.told(events.DISCONNECT, bye, "endpoint-closed") == (af.DISCONNECT, "")
    for cause in ("command", "hangup", "shutdown", "error"):
        assert p.told(events.DISCONNECT, bye, cause) is None
    assert p.told(af.TRANSFER, "{}", "") == (af.TRANSFER, "{}")
    assert p.told(events.JSON, "{}", "") is None


def test_the_handshake_it_asks_for():
    given = StreamSettings(extra_headers=(("X-A", "1"), ("authorization", "Bearer z")))
    channel = {"variable_MOD_AUDIO_BASIC_AUTH_USERNAME": "user",
               "variable_mod_audio_basic_auth_password": "pa:ss"}
    s = choose.fit("audio_fork", given, channel, "audio.drachtio.org")
    assert s.protocol == "audio_fork" and not s.reconnect and not s.deflate
    assert s.extra_headers == (("X-A", "1"), ("Sec-WebSocket-Protocol", "audio.drachtio.org"),
                               ("Authorization", "Basic " + b64(b"user:pa:ss")))
    alone = choose.fit("audio_fork", StreamSettings(), {"variable_MOD_AUDIO_BASIC_AUTH_USERNAME":
                                                        "user"}, "x.y")
    assert alone.extra_headers == (("Sec-WebSocket-Protocol", "x.y"),)  # a password is needed
    own = choose.fit("audio_fork", StreamSettings(), {
        "variable_MOD_AUDIO_FORK_SUBPROTOCOL_NAME": "mine.example",
        "variable_MOD_AUDIO_FORK_ALLOW_SELFSIGNED": "true",
        "variable_MOD_AUDIO_FORK_SKIP_SERVER_CERT_HOSTNAME_CHECK": "1"}, "x.y")
    assert own.extra_headers == (("Sec-WebSocket-Protocol", "mine.example"),)
    assert own.tls_ca == "NONE" and own.tls_check_hostname is False
    with pytest.raises(SettingsError):
        choose.fit("audio_fork", StreamSettings(),
                   {"variable_MOD_AUDIO_FORK_SUBPROTOCOL_NAME": "two words"}, "x.y")
    assert choose.fit("twilio", given, channel, "x.y") is given


def test_made_and_carried_on_from_the_options_its_record_keeps():
    options = af.ForkOptions("mybug", True, True, 24000, True)
    p = choose.make("audio_fork", uuid="u", metadata="m", rate=16000, mix="stereo",
                    settings=StreamSettings(), account_sid="AC", max_audio_bytes=1000,
                    started=0.0, resumed=options.as_extra())
    assert isinstance(p, af.AudioFork) and p.options == options and p.channels == 2
    assert af.ForkOptions.from_extra(p.record_extra()) == options
    assert af.ForkOptions.from_extra({"bidi_rate": "bad"}) == af.ForkOptions()
    assert choose.teller(p) == p.told
    choose.check(StreamSettings(audio_encoding="pcmu"), 16000, "audio_fork")  # L16 always
