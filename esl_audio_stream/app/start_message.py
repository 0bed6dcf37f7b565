"""The start message (opt-in, STREAM_START_MESSAGE=true): the call's facts, as the first text
frame of every connection, before the metadata (or the protocol's own greeting).

What an endpoint would otherwise ask FreeSWITCH for over ESL, as jambonz's listen (its metadata)
and Asterisk's chan_websocket (MEDIA_START) hand it over: the call (uuid, caller and callee
numbers and names, direction), this stream (its name on the call, mix, rate, encoding and
channels on the wire) and the channel variables STREAM_START_VARIABLES names (null where the
channel has none). Read from the `uuid_dump` a stream's admission makes anyway, so it costs no
command more; made again when a new daemon process carries the stream on. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..jsonfmt import compact

#: What the wire carries, by protocol (mod_audio_stream's: STREAM_AUDIO_ENCODING's).
_ENCODINGS = {"twilio": "pcmu", "audio_fork": "l16"}


def encoding(protocol: str, audio_encoding: str) -> str:
    """The audio encoding on the wire of a stream of `protocol`."""
    return _ENCODINGS.get(protocol, audio_encoding)


def _variable(channel: Mapping[str, str], name: str) -> str | None:
    """A channel variable as `uuid_dump` gives it (FreeSWITCH's names are case-insensitive)."""
    value = channel.get(f"variable_{name}")
    if value is not None:
        return value
    want = f"variable_{name}".lower()
    return next((v for k, v in channel.items() if k.lower() == want), None)


def start_message(channel: Mapping[str, str], *, uuid: str, name: str, mix: str, rate: int,
                  encoding: str, variables: Sequence[str] = ()) -> str:
    """The message's text: `{"type":"start","data":{...}}` (compact JSON, keys in this order)."""
    get = channel.get
    data = {
        "uuid": uuid,
        "streamName": name,
        "caller": {"number": get("Caller-Caller-ID-Number", ""),
                   "name": get("Caller-Caller-ID-Name", "")},
        "callee": {"number": get("Caller-Callee-ID-Number") or get(
                       "Caller-Destination-Number", ""),
                   "name": get("Caller-Callee-ID-Name", "")},
        "direction": get("Call-Direction") or get("Caller-Direction", ""),
        "mix": mix,
        "rate": rate,
        "encoding": encoding,
        "channels": 2 if mix == "stereo" else 1,
        "variables": {n: _variable(channel, n) for n in variables},
    }
    return compact({"type": "start", "data": data})
