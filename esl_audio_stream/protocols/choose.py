"""Which wire protocol a stream speaks, and whether it can speak it at the rate asked.

STREAM_PROTOCOL (a channel variable, or the daemon's default) picks it when a stream starts;
`uuid_audio_fork` always speaks mod_audio_fork's (protocols/audio_fork.py), whose start options
come with the command; a stream carried on by a new daemon process keeps the one its record
names, whatever the variable says now, so its endpoint goes on hearing what it heard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ..app import resume
from ..app.settings import SettingsError, StreamSettings
from ..media.g711 import G711, G711_RATE
from . import audio_fork
from .actions import WireProtocol
from .audio_fork import AudioFork
from .mod_audio_stream import ModAudioStream
from .twilio import TwilioMediaStreams


def check(settings: StreamSettings, rate: int, protocol: str | None = None) -> None:
    """SettingsError (the -ERR of the start) when the protocol cannot stream at `rate`."""
    protocol = protocol or settings.protocol
    if protocol == audio_fork.NAME:
        return  # L16 at any of the rates its command takes
    if protocol == "twilio":
        if rate != G711_RATE:
            raise SettingsError(f"STREAM_PROTOCOL=twilio streams µ-law at 8000 Hz only: start "
                                f"it with the rate 8k, not {rate}")
        if settings.audio_encoding == "pcma":
            raise SettingsError("STREAM_AUDIO_ENCODING=pcma: Twilio Media Streams are µ-law "
                                "(pcmu) only")
    elif settings.audio_encoding in G711 and rate != G711_RATE:
        raise SettingsError(f"STREAM_AUDIO_ENCODING={settings.audio_encoding} is G.711, 8000 Hz "
                            f"only: start it with the rate 8k, not {rate}")


def make(protocol: str, *, uuid: str, metadata: str | None, rate: int, mix: str,
         settings: StreamSettings, account_sid: str, max_audio_bytes: int, started: float,
         resumed: Mapping | None = None, clock: Callable[[], float] = time.monotonic,
         epoch: Callable[[], float] = time.time) -> WireProtocol:
    """The stream's protocol; `resumed`: the record's `extra` of a stream carried on (or, for
    mod_audio_fork's, the start's options in the same shape)."""
    if protocol == audio_fork.NAME:
        return AudioFork.carried_on(resumed, metadata=metadata, rate=rate,
                                    channels=2 if mix == "stereo" else 1,
                                    max_audio_bytes=max_audio_bytes)
    if protocol == "twilio":
        return TwilioMediaStreams(
            call_sid=uuid, account_sid=account_sid, metadata=metadata, mix=mix,
            buffer_ms=settings.buffer_ms, clock=clock, epoch=epoch, started=started,
            resumed=resumed, max_audio_bytes=max_audio_bytes)
    return ModAudioStream(metadata=metadata, stream_rate=rate, max_audio_bytes=max_audio_bytes,
                          encoding=settings.audio_encoding, send_dtmf=settings.send_dtmf,
                          channels=2 if mix == "stereo" else 1)


def fit(protocol: str, settings: StreamSettings, channel: Mapping[str, str],
        fork_subprotocol: str) -> StreamSettings:
    """The settings as the protocol connects (mod_audio_fork's handshake; the others' as the
    STREAM_* variables say); SettingsError when its channel variables cannot be used."""
    if protocol == audio_fork.NAME:
        return audio_fork.fit(settings, channel, fork_subprotocol)
    return settings


def default_name(protocol: WireProtocol) -> str:
    """The name a stream of this protocol has when its command gives none (mod_audio_fork's
    bugname; "" for uuid_audio_stream's): its events then carry no name."""
    return resume.default_name(protocol.name)


Teller = Callable[[str, str, str], "tuple[str, str] | None"]


def teller(protocol: WireProtocol) -> Teller | None:
    """How the stream's own events are told when not as app/events.py names them (mod_audio_
    fork's `told`); None: as they are."""
    return protocol.told if isinstance(protocol, AudioFork) else None
