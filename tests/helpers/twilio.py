"""Twilio Media Streams as Twilio sends them: every message checked field by field, with its
type (the numbers in sequenceNumber, chunk and timestamp are strings), against the shapes in
Twilio's documentation. Shared by the sans-IO and the end-to-end tests."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from esl_audio_stream.media.pcm import audioop

SID = re.compile(r"MZ[0-9a-f]{32}")
NUMBER = re.compile(r"0|[1-9][0-9]*")
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def _number(value: object) -> int:
    assert isinstance(value, str) and NUMBER.fullmatch(value), value
    return int(value)


@dataclass
class Media:
    seq: int
    track: str
    chunk: int
    timestamp: int
    law: bytes  # the µ-law payload

    @property
    def pcm(self) -> bytes:
        return audioop.ulaw2lin(self.law, 2)


def parse(message: str | bytes) -> dict:
    assert isinstance(message, str), "Twilio Media Streams are text frames only"
    msg = json.loads(message)
    assert isinstance(msg, dict) and isinstance(msg.get("event"), str), msg
    return msg


def check_connected(message: str | bytes) -> None:
    assert parse(message) == CONNECTED


def check_start(message: str | bytes, *, call_sid: str, tracks: list[str],
                custom: dict[str, str], account_sid: str) -> str:
    """The start message; returns its streamSid."""
    msg = parse(message)
    assert set(msg) == {"event", "sequenceNumber", "start", "streamSid"}, msg
    assert msg["event"] == "start" and msg["sequenceNumber"] == "1"
    sid = msg["streamSid"]
    assert isinstance(sid, str) and SID.fullmatch(sid), sid
    start = msg["start"]
    assert set(start) == {"accountSid", "streamSid", "callSid", "tracks", "mediaFormat",
                          "customParameters"}, start
    assert start["streamSid"] == sid and start["callSid"] == call_sid
    assert start["accountSid"] == account_sid and start["tracks"] == tracks
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                    "channels": 1}
    assert type(start["mediaFormat"]["sampleRate"]) is int
    assert type(start["mediaFormat"]["channels"]) is int
    assert start["customParameters"] == custom
    return sid


def check_media(message: str | bytes, sid: str, ms: int = 20) -> Media:
    msg = parse(message)
    assert set(msg) == {"event", "sequenceNumber", "media", "streamSid"}, msg
    assert msg["event"] == "media" and msg["streamSid"] == sid
    media = msg["media"]
    assert set(media) == {"track", "chunk", "timestamp", "payload"}, media
    assert media["track"] in ("inbound", "outbound")
    assert isinstance(media["payload"], str)
    law = base64.b64decode(media["payload"], validate=True)
    assert len(law) == 8 * ms  # µ-law 8 kHz: a byte a sample
    return Media(_number(msg["sequenceNumber"]), media["track"], _number(media["chunk"]),
                 _number(media["timestamp"]), law)


def check_mark(message: str | bytes, sid: str) -> tuple[int, str]:
    """(sequenceNumber, name)."""
    msg = parse(message)
    assert set(msg) == {"event", "sequenceNumber", "streamSid", "mark"}, msg
    assert msg["event"] == "mark" and msg["streamSid"] == sid
    assert set(msg["mark"]) == {"name"} and isinstance(msg["mark"]["name"], str)
    return _number(msg["sequenceNumber"]), msg["mark"]["name"]


def check_dtmf(message: str | bytes, sid: str) -> tuple[int, str]:
    """(sequenceNumber, digit)."""
    msg = parse(message)
    assert set(msg) == {"event", "streamSid", "sequenceNumber", "dtmf"}, msg
    assert msg["event"] == "dtmf" and msg["streamSid"] == sid
    assert set(msg["dtmf"]) == {"track", "digit"} and msg["dtmf"]["track"] == "inbound_track"
    digit = msg["dtmf"]["digit"]
    assert isinstance(digit, str) and len(digit) == 1 and digit in "0123456789*#ABCD"
    return _number(msg["sequenceNumber"]), digit


def check_stop(message: str | bytes, sid: str, call_sid: str, account_sid: str) -> int:
    msg = parse(message)
    assert set(msg) == {"event", "sequenceNumber", "streamSid", "stop"}, msg
    assert msg["event"] == "stop" and msg["streamSid"] == sid
    assert msg["stop"] == {"accountSid": account_sid, "callSid": call_sid}
    return _number(msg["sequenceNumber"])


def event_of(message: str | bytes) -> str:
    return parse(message)["event"]


def media_of(messages: list, sid: str, ms: int = 20) -> list[Media]:
    return [check_media(m, sid, ms) for m in messages if event_of(m) == "media"]


def check_numbering(medias: list[Media], tracks: list[str], ms: int = 20,
                    first_chunk: int | None = 1) -> None:
    """Per track: chunk from 1 (or `first_chunk`; None: wherever it is) up by one, timestamp up
    by `ms` each chunk from the first (no drift); both tracks of one chunk carry the same
    numbers."""
    for track in tracks:
        own = [m for m in medias if m.track == track]
        start = own[0].chunk if first_chunk is None else first_chunk
        assert [m.chunk for m in own] == list(range(start, start + len(own)))
        first = own[0].timestamp
        assert [m.timestamp for m in own] == [first + ms * i for i in range(len(own))]


def check_sequence(messages: list) -> list[int]:
    """sequenceNumbers of one connection strictly increasing (gaps allowed: lost audio)."""
    seqs = [int(parse(m)["sequenceNumber"]) for m in messages if "sequenceNumber" in parse(m)]
    assert seqs == sorted(set(seqs)), seqs
    return seqs


def media_message(sid: str, pcm: bytes) -> str:
    """What a bot sends: L16 at 8 kHz as a media message."""
    payload = base64.b64encode(audioop.lin2ulaw(pcm, 2)).decode()
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})


def mark_message(sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})


def clear_message(sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": sid})
