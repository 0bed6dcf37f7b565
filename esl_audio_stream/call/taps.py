"""Loopback taps: how a call that is not parked (bridged, running an application) is streamed.

unicast only streams a parked channel, and only what it reads. A tap is a loopback channel pair
whose B leg runs `native_eavesdrop <target> read|write` and whose A leg is parked (facts file,
observed on a real FreeSWITCH): unicast on the A leg then carries what the target reads (`read`:
what its caller says) or writes (`write`: what its caller hears), in real time, with stock
modules. A tap ends by itself when its target hangs up; the stream kills it when it stops.

Tap channels are marked with channel variables naming what they are, so an operator can tell
them apart in `show channels`, and so the daemon never auto-starts a stream on one.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from ..esl.connection import ESLError
from ..media.unicast import UnicastEndpoint

if TYPE_CHECKING:
    from ..esl.connection import ESLConnection
    from ..media.unicast import PortPool

log = logging.getLogger(__name__)

READ, WRITE = "read", "write"
#: On both channels of a tap: which side of the target it carries, and the target's uuid.
TAP_VAR = "esl_audio_stream_tap"
TAP_OF_VAR = "esl_audio_stream_tap_of"
TAP_CALLER_NAME = "audio-stream-tap"

_SAFE_UUID = re.compile(r"[0-9A-Za-z-]{1,64}")


class TapError(Exception):
    """A tap could not be made; the message says why, for the command's -ERR answer."""


def tap_originate(target: str, side: str) -> str:
    """The `originate` arguments for one tap (pure). `\\s` is the inline dialplan's space."""
    if side not in (READ, WRITE):
        raise ValueError(f"side must be read or write, not {side!r}")
    if not _SAFE_UUID.fullmatch(target):  # it goes inside a dial string: nothing but a uuid
        raise ValueError(f"not a uuid: {target!r}")
    variables = (f"{TAP_VAR}={side},{TAP_OF_VAR}={target},"
                 f"origination_caller_id_name={TAP_CALLER_NAME},"
                 f"origination_caller_id_number={side}")
    return (f"{{{variables}}}loopback/native_eavesdrop:{target}\\s{side}/default/inline"
            " &park()")


def is_tap(headers: dict[str, str]) -> bool:
    """Whether an event (or uuid_dump) is about one of our tap channels."""
    return bool(headers.get(f"variable_{TAP_VAR}"))


class Tap:
    """One tap: its FreeSWITCH port, its UDP endpoint and, once made, its A leg's uuid."""

    __slots__ = ("endpoint", "port", "side", "target", "uuid")

    def __init__(self, target: str, side: str) -> None:
        self.target = target
        self.side = side
        self.uuid = ""
        self.port = 0
        self.endpoint: UnicastEndpoint | None = None

    def open(self, esl: ESLConnection, ports: PortPool, media_host: str,
             fs_media_host: str) -> None:
        """Make the tap channel and ask for its audio. Raises TapError, having released what
        it took (the caller still calls close(), which is then a no-op)."""
        try:
            self.port = ports.take()
            self.endpoint = UnicastEndpoint(media_host, fs_media_host, self.port)
        except (RuntimeError, OSError) as exc:
            self.close(esl, ports)
            raise TapError(f"cannot open a media port: {exc}") from None
        try:
            answer = esl.api(f"originate {tap_originate(self.target, self.side)}")
            if not answer.startswith("+OK "):
                raise TapError(f"{self.side} tap refused by FreeSWITCH: {answer.strip()}")
            self.uuid = answer.split()[1]
            esl.sendmsg(self.uuid, self.endpoint.headers())
        except ESLError as exc:
            self.close(esl, ports)
            raise TapError(f"{self.side} tap: {exc}") from None
        except TapError:
            self.close(esl, ports)
            raise

    def close(self, esl: ESLConnection, ports: PortPool) -> None:
        """Kill the tap channel (both legs go) and release the port and socket. Idempotent."""
        if self.uuid:
            uuid, self.uuid = self.uuid, ""
            try:
                esl.api(f"uuid_kill {uuid}")  # -ERR when it already went with its target
            except ESLError as exc:
                log.warning("%s: could not kill %s tap %s: %s", self.target, self.side, uuid,
                            exc)
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self.port:
            ports.give(self.port)
            self.port = 0
