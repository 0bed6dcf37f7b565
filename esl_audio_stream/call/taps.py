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
from collections.abc import Callable
from typing import TYPE_CHECKING

from gevent.socket import wait_read

from ..app.resume import TapRecord
from ..esl.connection import ESLError
from .lease import LeaseError, UnicastFeed, UnicastLease

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
    """One tap: its channel (both loopback legs go with its A leg) and the unicast of its A leg,
    asked for on a port that works (call/lease.py)."""

    __slots__ = ("feed", "lease", "side", "target", "uuid")

    def __init__(self, target: str, side: str) -> None:
        self.target = target
        self.side = side
        self.uuid = ""
        self.feed: UnicastFeed | None = None
        self.lease: UnicastLease | None = None  # the port that delivered, once it has

    def open(self, esl: ESLConnection, ports: PortPool, media_host: str, fs_media_host: str,
             *, probe: float, timeout: float,
             on_retry: Callable[[], None] | None = None) -> None:
        """Make the tap channel and ask for its audio (without waiting for it). Raises
        TapError, having released what it took (the caller still calls close(), which is then a
        no-op)."""
        try:
            first = UnicastLease(ports, media_host, fs_media_host)  # a full pool: before a channel
        except LeaseError as exc:
            raise TapError(str(exc)) from None
        try:
            answer = esl.api(f"originate {tap_originate(self.target, self.side)}")
        except ESLError as exc:
            first.release()
            raise TapError(f"{self.side} tap: {exc}") from None
        if not answer.startswith("+OK "):
            first.release()
            raise TapError(f"{self.side} tap refused by FreeSWITCH: {answer.strip()}")
        self.uuid = answer.split()[1]
        self.feed = UnicastFeed(esl, ports, media_host, fs_media_host, self.uuid, probe=probe,
                                silent_after=timeout, on_first=_nothing, on_retry=on_retry,
                                first=first)
        try:
            self.feed.start()
        except LeaseError as exc:
            self.close(esl)
            raise TapError(f"{self.side} tap: {exc}") from None

    @classmethod
    def adopt(cls, target: str, record: TapRecord, ports: PortPool, media_host: str,
              fs_media_host: str) -> Tap:
        """The tap a previous daemon process made: its channel still streams to the daemon's
        old port, bound again here. Raises LeaseError when that port cannot be had."""
        tap = cls(target, record.side)
        tap.uuid = record.uuid
        tap.lease = UnicastLease.adopt(ports, media_host, fs_media_host, record.fs_port,
                                       record.udp_port)
        return tap

    def wait_audio(self, timeout: float) -> bool:
        """Whether the tap's first datagram came within `timeout`; it then holds its lease."""
        feed = self.feed
        if feed is None:  # adopted: its lease is the port FreeSWITCH streams to
            return self.lease is not None and _readable(self.lease, timeout)
        if not feed.delivered.wait(timeout):
            return False
        if feed.winner is not None:
            self.lease = feed.take_winner()
        return self.lease is not None

    @property
    def ports(self) -> list[int]:
        if self.lease is not None:
            return [self.lease.port]
        return self.feed.ports if self.feed is not None else []

    def close(self, esl: ESLConnection) -> None:
        """Kill the tap channel (both legs go) and give back its ports and sockets. Idempotent."""
        if self.uuid:
            uuid, self.uuid = self.uuid, ""
            try:
                esl.api(f"uuid_kill {uuid}")  # -ERR when it already went with its target
            except ESLError as exc:
                log.warning("%s: could not kill %s tap %s: %s", self.target, self.side, uuid,
                            exc)
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        if self.lease is not None:
            self.lease.release()
            self.lease = None


def _readable(lease: UnicastLease, timeout: float) -> bool:
    try:
        wait_read(lease.endpoint.sock.fileno(), timeout)  # type: ignore[union-attr]
    except TimeoutError:
        return False
    return True


def _nothing(lease: UnicastLease) -> None:
    """A tap's first datagram waits to be read by the stream, which waits for `delivered`."""
