"""FreeSWITCH's unicast to the daemon: a port taken with its socket (`UnicastLease`), and the
asking that finds a port FreeSWITCH can bind (`UnicastFeed`).

`UnicastLease` is the only way a port is taken: the FreeSWITCH-side port and the daemon's UDP
socket that receives from it are taken together and given back together.

FreeSWITCH answers a unicast sendmsg `+OK` at once and binds its port later, when the channel's
park loop reads the message; when that bind fails (someone else holds the port) it logs
"Failure creating unicast connection" and streams nothing, and a later unicast sendmsg with
another port works (switch_ivr_activate_unicast sets nothing on failure). So silence is the only
sign of a taken port. `UnicastFeed` asks with one lease; when no datagram comes within `probe`
seconds it asks again with the next free port, at most `tries` times, keeping every lease asked so
far open and watched (a slow FreeSWITCH may yet stream to an earlier one; a second sendmsg on a
channel that already streams binds a second socket in FreeSWITCH but changes nothing): the first
lease that delivers wins, the others are given back to the pool as held (FreeSWITCH may have them
bound until the channel ends).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
import gevent.event

from ..esl.connection import ESLError
from ..media.unicast import UnicastEndpoint

if TYPE_CHECKING:
    from ..esl.connection import ESLConnection
    from ..media.unicast import PortPool

log = logging.getLogger(__name__)

#: How many ports are tried for one channel before its silence is reported.
TRIES = 3


class LeaseError(Exception):
    """No port or socket could be had, or FreeSWITCH could not be asked; says why."""


class UnicastLease:
    """One FreeSWITCH-side port and the daemon's socket for it, from take to give-back."""

    __slots__ = ("_ports", "endpoint", "port")

    def __init__(self, ports: PortPool, media_host: str, fs_host: str) -> None:
        try:
            self.port = ports.take()
        except RuntimeError as exc:
            raise LeaseError(f"cannot open a media port: {exc}") from None
        try:
            self.endpoint: UnicastEndpoint | None = UnicastEndpoint(media_host, fs_host,
                                                                    self.port)
        except OSError as exc:
            ports.give(self.port)
            raise LeaseError(f"cannot open a media port: {exc}") from None
        self._ports = ports

    @classmethod
    def adopt(cls, ports: PortPool, media_host: str, fs_host: str, fs_port: int,
              udp_port: int) -> UnicastLease:
        """The lease a previous daemon process held: FreeSWITCH still streams from `fs_port` to
        `udp_port` (it keeps sending while nobody listens: facts file), so binding that port
        again brings the audio back with nothing asked. Raises LeaseError when either port
        cannot be had."""
        lease = cls.__new__(cls)
        if not ports.claim(fs_port):
            raise LeaseError(f"FreeSWITCH port {fs_port} is not free in this daemon's pool")
        lease.port = fs_port
        lease._ports = ports
        try:
            lease.endpoint = UnicastEndpoint(media_host, fs_host, fs_port, udp_port)
        except OSError as exc:
            ports.give(fs_port)
            raise LeaseError(f"cannot bind port {udp_port} again: {exc}") from None
        return lease

    def ask(self, esl: ESLConnection, uuid: str) -> None:
        """Ask FreeSWITCH to stream channel `uuid` to this lease (`sendmsg` unicast)."""
        assert self.endpoint is not None
        try:
            esl.sendmsg(uuid, self.endpoint.headers())
        except ESLError as exc:
            raise LeaseError(f"unicast refused by FreeSWITCH: {exc}") from None

    def release(self, held: bool = False) -> None:
        """Close the socket and give the port back; `held`: FreeSWITCH may still have it bound
        (it was asked for and given up on), so it stays out of the line until known unused.
        Idempotent."""
        if self.endpoint is None:
            return
        self.endpoint.close()
        self.endpoint = None
        if held:
            self._ports.hold(self.port)
        else:
            self._ports.give(self.port)


class UnicastFeed:
    """One channel's unicast, until a lease delivers (see the module docstring).

    `on_first(lease)` runs in the event loop when the winning lease's first datagram is waiting
    (not yet read): the owner starts reading it. `on_silent(ports)` runs once, in a greenlet, when
    `silent_after` seconds pass with no datagram on any lease (the leases stay open and watched).
    The feed owns its leases until one wins; then the winner is the owner's (`take_winner`).
    """

    def __init__(self, esl: ESLConnection, ports: PortPool, media_host: str, fs_host: str,
                 uuid: str, *, probe: float, silent_after: float,
                 on_first: Callable[[UnicastLease], None],
                 on_silent: Callable[[list[int]], None] | None = None,
                 on_retry: Callable[[], None] | None = None,
                 first: UnicastLease | None = None, tries: int = TRIES,
                 on_stale: Callable[[], None] | None = None) -> None:
        self._esl = esl
        self._ports = ports
        self._hosts = (media_host, fs_host)
        self.uuid = uuid
        self._probe = probe
        self._silent_after = silent_after
        self._on_first = on_first
        self._on_silent = on_silent
        self._on_retry = on_retry
        self._tries = tries
        #: The first lease was asked for by a previous daemon process (adopted): it is only
        #: watched; silent for `probe` seconds, `on_stale` is called instead of asking again
        #: (a channel that still holds a unicast ignores another: only a re-park ends it).
        self._on_stale = on_stale
        self.leases: list[UnicastLease] = [first] if first is not None else []
        self._watchers: list = []
        self.winner: UnicastLease | None = None
        self.retries = 0  # ports asked for after the first, for this channel
        self.delivered = gevent.event.Event()  # set when a lease delivered
        self._job: gevent.Greenlet | None = None
        self._closed = False

    @property
    def ports(self) -> list[int]:
        return [lease.port for lease in self.leases]

    def start(self) -> None:
        """Ask FreeSWITCH with the first lease (taken now if need be), watch it, and keep trying
        other ports in the background. Raises LeaseError when the first ask fails (everything
        is released then)."""
        if not self.leases:
            self.leases.append(UnicastLease(self._ports, *self._hosts))
        if self._on_stale is None:
            try:
                self.leases[0].ask(self._esl, self.uuid)
            except LeaseError:
                self.close()
                raise
        self._watch(self.leases[0])
        self._job = gevent.spawn(self._keep_asking)

    def _watch(self, lease: UnicastLease) -> None:
        assert lease.endpoint is not None
        watcher = gevent.get_hub().loop.io(lease.endpoint.sock.fileno(), 1)
        watcher.start(self._readable, lease)
        self._watchers.append(watcher)

    def _readable(self, lease: UnicastLease) -> None:
        """A datagram waits on `lease` (event loop callback: never blocks, never raises)."""
        if self.winner is not None or self._closed:
            return
        self.winner = lease
        self._stop_watchers()
        for other in self.leases:
            if other is not lease:
                other.release(held=True)
        self.leases = [lease]
        if self.retries:
            log.info("%s: FreeSWITCH streams on local-port %d, after %d other ports gave "
                     "nothing (held back until free)", self.uuid, lease.port, self.retries)
        self.delivered.set()
        try:
            self._on_first(lease)
        except Exception:
            log.exception("%s: could not start reading the unicast", self.uuid)

    def _keep_asking(self) -> None:
        """Ask again on the next free port while nothing arrives; report the silence once."""
        loop = gevent.get_hub().loop
        deadline = loop.now() + self._silent_after
        while True:
            left = deadline - loop.now()
            retry = len(self.leases) < self._tries
            if self.delivered.wait(max(min(self._probe, left) if retry else left, 0.0)):
                return
            if self._closed:
                return
            if self._on_stale is not None:
                self._on_stale()
                return
            if retry and loop.now() < deadline:
                self._ask_another()
                continue
            if self._on_silent is not None:
                self._on_silent(self.ports)
            return

    def _ask_another(self) -> None:
        try:
            lease = UnicastLease(self._ports, *self._hosts)
        except LeaseError as exc:
            log.warning("%s: no other port to try: %s", self.uuid, exc)
            self._tries = len(self.leases)
            return
        self.leases.append(lease)
        self.retries += 1
        if self._on_retry is not None:
            self._on_retry()
        log.warning("%s: no audio from FreeSWITCH on local-port %s after %g s (taken by "
                    "someone else?): asking on %d", self.uuid,
                    ", ".join(str(p) for p in self.ports[:-1]), self._probe, lease.port)
        try:
            lease.ask(self._esl, self.uuid)
        except LeaseError as exc:
            log.warning("%s: %s", self.uuid, exc)
            self.leases.remove(lease)
            lease.release()
            return
        if self._closed:
            return
        self._watch(lease)

    def take_leases(self) -> list[UnicastLease]:
        """Every lease held here, handed to the caller unreleased (this feed gives up)."""
        leases, self.leases = self.leases, []
        self._closed = True
        self._stop_watchers()
        return leases

    def take_winner(self) -> UnicastLease:
        """The lease that delivered; from now on its owner releases it."""
        assert self.winner is not None
        lease, self.winner = self.winner, None
        self.leases = []
        return lease

    def _stop_watchers(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
            watcher.close()
        self._watchers.clear()

    def close(self) -> None:
        """Stop asking and watching; release every lease still held here (as held: FreeSWITCH
        may have been asked for them). Idempotent."""
        self._closed = True
        self._stop_watchers()
        job = self._job
        if job is not None and job is not gevent.getcurrent():
            job.kill(block=False)
        self._job = None
        for lease in self.leases:
            lease.release(held=True)
        self.leases = []
