"""media/decode: the endpoint's messages and audio, from real WAV/OGG/MP3 made by libsndfile."""

from __future__ import annotations

import base64
import io
import json
import math
import warnings
from array import array

import pytest

from esl_audio_stream.dev.analysis import dominant_frequency
from esl_audio_stream.media.decode import (
    Chunk,
    DecodeError,
    _mp3_frame_length,
    decode_binary,
    decode_stream_audio,
    mark_name,
    parse_message,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

np = pytest.importorskip("numpy")
sf = pytest.importorskip("soundfile")

RATES = (8000, 16000, 24000, 44100)
FORMATS = {"wav": ("WAV", "PCM_16"), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


def tone(freq: float, rate: int, seconds: float = 0.5, amp: int = 12000):
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def encode(kind: str, samples, rate: int) -> bytes:
    fmt, subtype = FORMATS[kind]
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def msg(kind: str, payload: bytes, **extra) -> dict:
    return {"audioDataType": kind, "audioData": base64.b64encode(payload).decode(), **extra}


def l16(samples) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def rms(pcm: bytes) -> float:
    a = array("h", pcm)
    return math.sqrt(sum(x * x for x in a) / len(a))


def test_mp3_support_is_bundled():
    assert "MP3" in sf.available_formats()
    assert "OGG" in sf.available_formats()


@pytest.mark.parametrize("kind", sorted(FORMATS))
@pytest.mark.parametrize("rate", RATES)
def test_containers_decode_to_the_tone(kind, rate):
    freq = 700.0 if rate == 8000 else 1234.0
    payload = encode(kind, tone(freq, rate), rate)
    chunk = decode_stream_audio(msg(kind, payload, sampleRate=rate, extra="x"))
    assert chunk.kind == kind and chunk.rate == rate
    assert chunk.original == payload
    assert chunk.meta == {"audioDataType": kind, "sampleRate": rate, "extra": "x"}
    assert len(chunk.pcm) % 2 == 0
    assert abs(chunk.duration - 0.5) < 0.06  # mp3/ogg encoders add a little padding
    assert abs(dominant_frequency(chunk.pcm, rate) - freq) < 2.0


def test_container_rate_is_its_own_not_the_messages():
    payload = encode("wav", tone(500, 16000), 16000)
    chunk = decode_stream_audio(msg("wav", payload, sampleRate=8000))
    assert chunk.rate == 16000
    assert chunk.meta["sampleRate"] == 8000  # passed through to the event as received
    assert decode_stream_audio(msg("wav", payload)).rate == 16000  # no sampleRate needed


def test_stereo_and_multichannel_are_mixed_down_to_mono():
    left = tone(440, 16000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    chunk = decode_stream_audio(msg("wav", encode("wav", stereo, 16000)))
    assert len(chunk.pcm) == 2 * len(left)
    assert abs(dominant_frequency(chunk.pcm, 16000) - 440) < 2.0
    assert abs(rms(chunk.pcm) - rms(l16(left)) / 2) < 50  # the mean of the two channels
    quad = np.stack([left, left, left, left], axis=1)
    chunk = decode_stream_audio(msg("ogg", encode("ogg", quad, 16000)))
    assert abs(dominant_frequency(chunk.pcm, 16000) - 440) < 2.0


def test_raw_is_taken_as_is():
    pcm = l16(tone(900, 24000))
    chunk = decode_stream_audio(msg("raw", pcm, sampleRate=24000))
    assert chunk == Chunk(pcm, 24000, "raw", pcm, {"audioDataType": "raw", "sampleRate": 24000})
    for rate in (8000, 11025, 22050, 44100, 48000, 16000.0):
        assert decode_stream_audio(msg("raw", pcm, sampleRate=rate)).rate == int(rate)


@pytest.mark.parametrize("kind", ["pcmu", "pcma"])
def test_g711(kind):
    lin = l16(tone(1000, 8000))
    enc = audioop.lin2ulaw(lin, 2) if kind == "pcmu" else audioop.lin2alaw(lin, 2)
    chunk = decode_stream_audio(msg(kind, enc))
    assert chunk.rate == 8000 and chunk.original == enc and len(chunk.pcm) == 2 * len(enc)
    assert abs(dominant_frequency(chunk.pcm, 8000) - 1000) < 2.0
    assert abs(rms(chunk.pcm) - rms(lin)) < rms(lin) * 0.05
    assert decode_stream_audio(msg(kind, enc, sampleRate=16000)).rate == 16000


def test_base64_with_line_breaks_is_accepted():
    pcm = l16(tone(300, 8000, 0.1))
    text = base64.encodebytes(pcm).decode()  # MIME: a newline every 76 characters
    assert "\n" in text
    data = {"audioDataType": "raw", "sampleRate": 8000, "audioData": text}
    assert decode_stream_audio(data).pcm == pcm


def test_binary():
    pcm = l16(tone(440, 16000, 0.1))
    chunk = decode_binary(bytearray(pcm), 16000)
    assert chunk.pcm == pcm and type(chunk.pcm) is bytes
    assert (chunk.rate, chunk.kind, chunk.meta) == (16000, "binary", {})
    with pytest.raises(DecodeError, match="odd"):
        decode_binary(pcm[:-1], 16000)
    with pytest.raises(DecodeError, match="empty"):
        decode_binary(b"", 16000)
    with pytest.raises(DecodeError, match="larger"):
        decode_binary(pcm, 16000, max_bytes=100)


def _errs():
    pcm = l16(tone(440, 8000, 0.2))
    good = base64.b64encode(pcm).decode()
    wav = encode("wav", tone(440, 8000), 8000)
    ogg = encode("ogg", tone(440, 8000), 8000)
    mp3 = encode("mp3", tone(440, 16000), 16000)
    return [
        ({"audioDataType": "raw", "sampleRate": 8000, "audioData": good[:-3] + "!!="}, "base64"),
        ({"audioDataType": "raw", "sampleRate": 8000, "audioData": good[:-1]}, "base64"),
        ({"audioDataType": "raw", "sampleRate": 8000, "audioData": "é" + good}, "base64"),
        ({"audioDataType": "raw", "sampleRate": 8000, "audioData": ""}, "empty"),
        ({"audioDataType": "raw", "sampleRate": 8000}, "audioData"),
        ({"audioDataType": "raw", "sampleRate": 8000, "audioData": 12}, "audioData"),
        ({"audioDataType": "flac", "sampleRate": 8000, "audioData": good}, "audio type"),
        ({"sampleRate": 8000, "audioData": good}, "audio type"),
        ({"audioDataType": "raw", "audioData": good}, "sampleRate"),
        ({"audioDataType": "raw", "sampleRate": 7999, "audioData": good}, "sample rate"),
        ({"audioDataType": "raw", "sampleRate": 96000, "audioData": good}, "sample rate"),
        ({"audioDataType": "raw", "sampleRate": "8000", "audioData": good}, "sample rate"),
        ({"audioDataType": "raw", "sampleRate": 8000.5, "audioData": good}, "sample rate"),
        ({"audioDataType": "raw", "sampleRate": True, "audioData": good}, "sample rate"),
        ({"audioDataType": "pcmu", "sampleRate": 100, "audioData": good}, "sample rate"),
        (msg("raw", pcm[:-1], sampleRate=8000), "odd"),
        (msg("wav", wav[:len(wav) * 3 // 4]), "truncated wav"),
        (msg("wav", wav[:30]), "wav"),
        (msg("ogg", ogg[:len(ogg) * 3 // 4]), "ogg"),
        (msg("mp3", mp3[:len(mp3) * 3 // 4]), "truncated mp3"),
        (msg("mp3", mp3[:2]), "mp3"),
        (msg("mp3", b"\x00" * 400), "mp3"),
        (msg("wav", ogg), "wav"),  # says wav, is ogg
        (msg("ogg", wav), "ogg"),
        (msg("wav", b"RIFF\x00\x00\x00\x00WAVEjunk"), "wav"),
    ]


@pytest.mark.parametrize(("data", "words"), _errs())
def test_bad_input_is_a_clear_error(data, words):
    with pytest.raises(DecodeError, match=words) as info:
        decode_stream_audio(data)
    assert str(info.value).startswith("streamAudio - ")


def test_size_bounds():
    pcm = l16(tone(440, 8000, 1.0))  # 16000 bytes
    with pytest.raises(DecodeError, match="larger than 1000 bytes"):
        decode_stream_audio(msg("raw", pcm, sampleRate=8000), max_bytes=1000)
    assert decode_stream_audio(msg("raw", pcm, sampleRate=8000), max_bytes=16000).pcm == pcm
    # A small compressed payload that decodes to more than the PCM bound.
    ogg = encode("ogg", np.zeros(48000 * 5, dtype=np.int16), 48000)
    assert len(ogg) < 20000
    with pytest.raises(DecodeError, match="decoded audio larger"):
        decode_stream_audio(msg("ogg", ogg), max_pcm_bytes=100000)
    ulaw = b"\xff" * 1000
    with pytest.raises(DecodeError, match="decoded audio larger"):
        decode_stream_audio(msg("pcmu", ulaw), max_pcm_bytes=1000)


def _strip_xing(mp3: bytes) -> bytes:
    """The same MP3 without its first (Xing/Info) frame: no frame count left to compare."""
    assert mp3[13:17] in (b"Xing", b"Info") or b"Xing" in mp3[:64] or b"Info" in mp3[:64]
    return mp3[_mp3_frame_length(mp3[:4]):]


def test_mp3_without_a_frame_count():
    mp3 = _strip_xing(encode("mp3", tone(800, 16000, 1.0), 16000))
    chunk = decode_stream_audio(msg("mp3", mp3))
    assert abs(dominant_frequency(chunk.pcm, 16000) - 800) < 2.0
    # Cut through a frame: only the frame walk can tell.
    with pytest.raises(DecodeError, match="truncated mp3"):
        decode_stream_audio(msg("mp3", mp3[:len(mp3) // 2 + 7]))
    # An ID3v2 tag in front and an ID3v1 tag behind are fine.
    id3 = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10
    chunk2 = decode_stream_audio(msg("mp3", id3 + mp3 + b"TAG" + b"\x00" * 125))
    assert abs(dominant_frequency(chunk2.pcm, 16000) - 800) < 2.0


def test_parse_message():
    assert parse_message('{"type":"killAudio"}') == ("killAudio", {})
    assert parse_message('{"type":"clear","data":5}') == ("clear", {})
    assert parse_message('{"type":"mark","data":{"name":"x"}}') == ("mark", {"name": "x"})
    data = {"audioDataType": "raw", "sampleRate": 8000, "audioData": "AAA="}
    assert parse_message(json.dumps({"type": "streamAudio", "data": data})) == (
        "streamAudio", data)
    assert parse_message('{"\\u0074ype":"clear"}') == ("clear", {})
    for junk in ["", "hello", "[1,2]", '{"type":"transcript","text":"clear"}', '{"type":5}',
                 '{"type":"clear"', "[" * 100000 + "]" * 100000, '"mark"', "null",
                 '{"type":["mark"]}', "\udcff mark"]:
        assert parse_message(junk) is None


def test_mark_name():
    assert mark_name({"name": "greeting-1"}) == "greeting-1"
    for bad in [{}, {"name": ""}, {"name": 3}, {"name": None}, {"name": "x" * 257}]:
        with pytest.raises(DecodeError, match="mark"):
            mark_name(bad)
