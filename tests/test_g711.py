"""G.711 on the wire in mod_audio_stream mode (STREAM_AUDIO_ENCODING=pcmu|pcma): 8 kHz only,
one byte a sample, the same chunking; mono, mixed and stereo (interleaved byte by byte). Sans-IO
through the real frame pipeline, then end to end with a real `websockets` peer."""

from __future__ import annotations

import gevent
import pytest
from conftest import wait_until
from helpers.audio import tone

from esl_audio_stream.app.settings import SettingsError, StreamSettings, settings_from_variables
from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.dev.analysis import dominant_frequency, tone_amplitude
from esl_audio_stream.media.pcm import audioop
from esl_audio_stream.protocols import choose
from esl_audio_stream.protocols.actions import Play, Refuse
from esl_audio_stream.protocols.mod_audio_stream import ModAudioStream

LIN = {"pcmu": audioop.lin2ulaw, "pcma": audioop.lin2alaw}
UNLAW = {"pcmu": audioop.ulaw2lin, "pcma": audioop.alaw2lin}


class Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.sent.append(bytes(data))
        return True

    def send_text(self, text: str) -> bool:
        return True


def pipeline(proto: ModAudioStream, mix: str, buffer_ms: int = 20) -> tuple[FramePipeline, Wire]:
    wire = Wire()
    p = FramePipeline(mix=mix, stream_rate=8000, buffer_ms=buffer_ms,
                      pairing="none" if mix == "mono" else "taps", channel_rate=8000)
    p.out = proto.audio_out(wire)
    return p, wire


@pytest.mark.parametrize("encoding", ["pcmu", "pcma"])
@pytest.mark.parametrize("mix", ["mono", "mixed", "stereo"])
def test_each_chunk_is_g711_one_byte_a_sample(encoding, mix) -> None:
    proto = ModAudioStream(metadata=None, stream_rate=8000, encoding=encoding,
                           channels=2 if mix == "stereo" else 1)
    assert proto.wire_bytes_per_second == 8000 * (2 if mix == "stereo" else 1)
    p, wire = pipeline(proto, mix)
    caller, heard = tone(440, 0.5, 8000), tone(1000, 0.5, 8000)
    for i in range(0, len(caller), 320):
        p.feed(caller[i:i + 320])
        if mix != "mono":
            p.feed_write(heard[i:i + 320])
    assert len(wire.sent) == 25
    assert {len(m) for m in wire.sent} == {320 if mix == "stereo" else 160}
    law = b"".join(wire.sent)
    if mix == "mono":
        assert law == LIN[encoding](caller, 2)  # exactly the codec's bytes
    elif mix == "stereo":
        left, right = law[0::2], law[1::2]  # interleaved byte by byte: L R L R
        assert left == LIN[encoding](caller, 2) and right == LIN[encoding](heard, 2)
    else:
        pcm = UNLAW[encoding](law, 2)
        assert tone_amplitude(pcm, 440, 8000) > 3000 and tone_amplitude(pcm, 1000, 8000) > 3000


def test_a_longer_buffer_is_more_bytes_per_message() -> None:
    p, wire = pipeline(ModAudioStream(metadata=None, stream_rate=8000, encoding="pcmu"), "mono",
                       buffer_ms=100)
    for _ in range(20):
        p.feed(bytes(320))
    assert [len(m) for m in wire.sent] == [800, 800, 800, 800]


@pytest.mark.parametrize("encoding", ["pcmu", "pcma"])
def test_the_endpoint_s_binary_audio_is_g711_too(encoding) -> None:
    proto = ModAudioStream(metadata=None, stream_rate=8000, encoding=encoding)
    law = LIN[encoding](tone(440, 0.3, 8000), 2)
    action = proto.on_binary(law)
    assert isinstance(action, Play) and action.chunk.rate == 8000
    assert action.chunk.pcm == UNLAW[encoding](law, 2)
    assert isinstance(proto.on_binary(b""), Refuse)
    small = ModAudioStream(metadata=None, stream_rate=8000, encoding=encoding,
                           max_audio_bytes=100)
    assert isinstance(small.on_binary(bytes(101)), Refuse)


def test_g711_is_8k_only_and_the_variable_is_checked() -> None:
    with pytest.raises(ValueError):
        ModAudioStream(metadata=None, stream_rate=16000, encoding="pcmu")
    for encoding in ("pcmu", "pcma"):
        settings = settings_from_variables({"STREAM_AUDIO_ENCODING": encoding.upper()},
                                           StreamSettings())
        assert settings.audio_encoding == encoding
        choose.check(settings, 8000)
        with pytest.raises(SettingsError, match=f"{encoding} is G.711, 8000 Hz only"):
            choose.check(settings, 16000)
    choose.check(StreamSettings(), 16000)  # l16: any rate
    with pytest.raises(SettingsError, match="STREAM_AUDIO_ENCODING"):
        settings_from_variables({"STREAM_AUDIO_ENCODING": "opus"}, StreamSettings())


# -- end to end ---------------------------------------------------------------------------------


def call(esl, encoding: str, app: str = "&park()", extra: str = "") -> str:
    answer = esl.api(f"originate {{channel_rate=8000,STREAM_AUDIO_ENCODING={encoding}{extra}}}"
                     f"loopback/1000/default {app}")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    want = "park" if app == "&park()" else "bridge"
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == want)
    return uuid


def start(daemon, peer, uuid: str, mix: str):
    n = len(peer.connections)
    assert daemon.execute(f"{uuid} start {peer.url('/g')} {mix} 8k") == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.binary) >= 40, 5)
    return conn


@pytest.mark.parametrize("encoding", ["pcmu", "pcma"])
def test_mono_g711_end_to_end_both_ways(esl, daemon, peer, sim, encoding):
    uuid = call(esl, encoding)  # the caller: 440 Hz
    conn = start(daemon, peer, uuid, "mono")
    assert {len(m) for m in conn.binary} == {160} and not conn.texts  # 20 ms, a byte a sample
    assert abs(dominant_frequency(UNLAW[encoding](b"".join(conn.binary), 2), 8000) - 440) <= 5
    peer.send_binary(conn, LIN[encoding](tone(1000, 0.5, 8000), 2))  # the bot answers in G.711
    assert wait_until(lambda: len(sim.channel(uuid).written) >= 8000, 3)
    played = bytes(sim.channel(uuid).written)
    assert abs(dominant_frequency(played, 8000) - 1000) <= 5
    assert tone_amplitude(played, 1000, 8000) > 6000
    esl.api(f"uuid_kill {uuid}")


def test_stereo_g711_is_interleaved_byte_by_byte(esl, daemon, peer, sim):
    """A bridged call through taps: left what its caller says (440 Hz), right what its caller
    hears (the other party, 1000 Hz)."""
    uuid = call(esl, "pcmu", app="&bridge(loopback/1001/default)")
    conn = start(daemon, peer, uuid, "stereo")
    assert {len(m) for m in conn.binary} == {320}
    law = b"".join(conn.binary[-25:])
    left, right = audioop.ulaw2lin(law[0::2], 2), audioop.ulaw2lin(law[1::2], 2)
    assert abs(dominant_frequency(left, 8000) - 440) <= 5
    assert abs(dominant_frequency(right, 8000) - 1000) <= 5
    esl.api(f"uuid_kill {uuid}")


def test_mixed_g711_carries_both_sides_in_one_byte(esl, daemon, peer, sim):
    uuid = call(esl, "pcma", app="&bridge(loopback/1001/default)")
    conn = start(daemon, peer, uuid, "mixed")
    assert {len(m) for m in conn.binary} == {160}
    pcm = audioop.alaw2lin(b"".join(conn.binary[-25:]), 2)
    assert tone_amplitude(pcm, 440, 8000) > 3000 and tone_amplitude(pcm, 1000, 8000) > 3000
    esl.api(f"uuid_kill {uuid}")


def test_g711_with_a_longer_buffer(esl, daemon, peer):
    uuid = call(esl, "pcmu", extra=",STREAM_BUFFER_SIZE=100")
    n = len(peer.connections)
    assert daemon.execute(f"{uuid} start {peer.url('/g')} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection(n + 1)
    assert wait_until(lambda: len(conn.binary) >= 5, 5)
    assert {len(m) for m in conn.binary} == {800}  # 100 ms at a byte a sample
    esl.api(f"uuid_kill {uuid}")


@pytest.mark.parametrize("encoding", ["pcmu", "pcma"])
def test_g711_start_at_another_rate_is_a_clear_err(esl, daemon, peer, encoding):
    uuid = call(esl, encoding)
    answer = daemon.execute(f"{uuid} start {peer.url()} mono 16k")
    assert answer == (f"-ERR STREAM_AUDIO_ENCODING={encoding} is G.711, 8000 Hz only: start it "
                      "with the rate 8k, not 16000\n")
    gevent.sleep(0.1)
    assert not peer.connections and not daemon.streams
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"  # then 8k
    assert peer.wait_connection(1)
    esl.api(f"uuid_kill {uuid}")
