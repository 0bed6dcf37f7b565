"""Which wire protocol a stream speaks, and whether it can speak it at the rate asked.

STREAM_PROTOCOL (a channel variable, or the daemon's default) picks it when a stream starts; a
stream carried on by a new daemon process keeps the one its record names, whatever the
variable says now, so its endpoint goes on hearing what it heard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ..app.settings import SettingsError, StreamSettings
from ..media.g711 import G711, G711_RATE
from .actions import WireProtocol
from .mod_audio_stream import ModAudioStream
from .twilio import TwilioMediaStreams


def check(settings: StreamSettings, rate: int, protocol: str | None = None) -> None:
    """SettingsError (the -ERR of the start) when the protocol cannot stream at `rate`."""
    protocol = protocol or settings.protocol
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
    """The stream's protocol; `resumed`: the record's `extra` of a stream carried on."""
    if protocol == "twilio":
        return TwilioMediaStreams(
            call_sid=uuid, account_sid=account_sid, metadata=metadata, mix=mix,
            buffer_ms=settings.buffer_ms, clock=clock, epoch=epoch, started=started,
            resumed=resumed, max_audio_bytes=max_audio_bytes)
    return ModAudioStream(metadata=metadata, stream_rate=rate, max_audio_bytes=max_audio_bytes,
                          encoding=settings.audio_encoding, send_dtmf=settings.send_dtmf,
                          channels=2 if mix == "stereo" else 1)
