"""Raw-socket helpers for talking to the simulator exactly as bytes go over the wire.

Deliberately independent of esl_audio_stream.esl: the simulator's tests check the bytes the
daemon's parser will be fed, so they must not share that parser's assumptions.
"""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass, field
from urllib.parse import unquote

import gevent
import pytest
from gevent import socket


@dataclass
class Msg:
    headers: dict[str, str]
    body: bytes
    raw: bytes

    @property
    def ctype(self) -> str:
        return self.headers.get("Content-Type", "")


@dataclass
class Ev:
    """A text/event-plain body: headers in order (duplicates kept), url-decoded, and body."""

    items: list[tuple[str, str]]
    body: bytes
    raw: bytes
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {}
        for k, v in self.items:
            self.headers.setdefault(k, v)

    def get(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def name(self) -> str | None:
        return self.headers.get("Event-Name")


def parse_event(data: bytes) -> Ev:
    head, sep, body = data.partition(b"\n\n")
    items: list[tuple[str, str]] = []
    for line in head.decode().split("\n"):
        if line:
            k, _, v = line.partition(": ")
            items.append((k, unquote(v)))
    if sep and body:
        clen = [int(v) for k, v in items if k == "Content-Length"][-1]
        assert len(body) == clen, (len(body), clen)
    return Ev(items, body, data)


class RawEsl:
    """An ESL client on a plain socket. Every read has a timeout."""

    def __init__(self, address: tuple[str, int], password: str | None = "ClueCon") -> None:
        self.sock = socket.create_connection(address, timeout=2)
        self.buf = b""
        self.closed = False
        self.pending: list[Msg] = []  # messages read while looking for another kind
        first = self.read(2.0)
        assert first.raw == b"Content-Type: auth/request\n\n", first.raw
        if password is not None:
            r = self.cmd(f"auth {password}")
            assert r.raw == b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n", r.raw

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        left = deadline - gevent.get_hub().loop.now()
        if left <= 0:
            raise TimeoutError("no ESL message in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError as exc:
            raise TimeoutError("no ESL message in time") from exc
        if not data:
            self.closed = True
            raise EOFError("ESL connection closed")
        self.buf += data

    def read(self, timeout: float = 2.0) -> Msg:
        """The next framed message from the wire (bypasses `pending`)."""
        gevent.get_hub().loop.update_now()
        deadline = gevent.get_hub().loop.now() + timeout
        while b"\n\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = self.buf.partition(b"\n\n")
        headers = {}
        for line in head.decode().split("\n"):
            k, _, v = line.partition(": ")
            headers[k] = v
        n = int(headers.get("Content-Length", "0"))
        self.buf = rest
        while len(self.buf) < n:
            self._fill(deadline)
        body, self.buf = self.buf[:n], self.buf[n:]
        return Msg(headers, body, head + b"\n\n" + body)

    def expect(self, ctype: str, timeout: float = 2.0) -> Msg:
        """Next message of that Content-Type; others are kept in `pending`."""
        for i, m in enumerate(self.pending):
            if m.ctype == ctype:
                return self.pending.pop(i)
        while True:
            m = self.read(timeout)
            if m.ctype == ctype:
                return m
            self.pending.append(m)

    def cmd(self, line: str, headers: list[tuple[str, str]] = (), body: bytes | None = None
            ) -> Msg:
        data = line.encode() + b"\n"
        for k, v in headers:
            data += f"{k}: {v}\n".encode()
        if body is not None:
            data += b"Content-Length: %d\n" % len(body)
        data += b"\n" + (body or b"")
        self.send(data)
        return self.expect("command/reply")

    def api(self, line: str) -> Msg:
        self.send(f"api {line}\n\n".encode())
        return self.expect("api/response")

    def api_body(self, line: str) -> str:
        return self.api(line).body.decode()

    def event(self, timeout: float = 2.0, match=None) -> Ev:
        """Next event (optionally the next one for which `match(ev)` is true)."""
        gevent.get_hub().loop.update_now()
        deadline = gevent.get_hub().loop.now() + timeout
        while True:
            left = max(0.001, deadline - gevent.get_hub().loop.now())
            m = self.expect("text/event-plain", left)
            ev = parse_event(m.body)
            if match is None or match(ev):
                return ev

    def events_for(self, seconds: float) -> list[Ev]:
        """Every event that arrives within `seconds`."""
        out: list[Ev] = []
        gevent.get_hub().loop.update_now()
        deadline = gevent.get_hub().loop.now() + seconds
        while True:
            left = deadline - gevent.get_hub().loop.now()
            if left <= 0:
                return out
            try:
                out.append(self.event(left))
            except TimeoutError:
                return out


class UdpSink:
    """Receives the simulator's unicast datagrams; records (arrival, payload, source)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[float, bytes, tuple[str, int]]] = []
        self._g = gevent.spawn(self._run)

    def _run(self) -> None:
        loop = gevent.get_hub().loop
        while True:
            data, addr = self.sock.recvfrom(65536)
            loop.update_now()
            self.got.append((loop.now(), data, addr))

    def wait_for(self, n: int, timeout: float = 2.0) -> bool:
        with gevent.Timeout(timeout, False):
            while len(self.got) < n:
                gevent.sleep(0.005)
            return True
        return False

    def close(self) -> None:
        self._g.kill()
        self.sock.close()


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_wav(path: str, rate: int, samples: list[int]) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(int(s).to_bytes(2, "little", signed=True) for s in samples))


def unicast_headers(local_port: int, remote_port: int) -> list[tuple[str, str]]:
    return [("call-command", "unicast"), ("local-ip", "127.0.0.1"),
            ("local-port", str(local_port)), ("remote-ip", "127.0.0.1"),
            ("remote-port", str(remote_port)), ("transport", "udp")]


def simulator_fixtures(extensions: dict[str, str]):
    """The `sim` (a started Simulator with these extensions) and `esl` (a RawEsl logged in to
    it) fixtures of a test module: `sim, esl = simulator_fixtures({...})`."""
    from esl_audio_stream.dev.simulator import Simulator

    @pytest.fixture
    def sim():
        s = Simulator(extensions=extensions)
        s.start()
        yield s
        s.stop()

    @pytest.fixture
    def esl(sim):
        c = RawEsl(sim.address)
        yield c
        c.close()

    return sim, esl


def reply_raw(text: str) -> bytes:
    """A command/reply exactly as mod_event_socket frames it."""
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def originate(esl: RawEsl, ext: str = "1000", app: str = "&park()", vars_: str = "") -> str:
    body = esl.api_body(f"originate {vars_}loopback/{ext}/default {app}")
    m = re.fullmatch(rf"\+OK ({UUID_RE})\n", body)
    assert m, body
    return m.group(1)


def start_unicast(esl: RawEsl, uuid: str, sink: UdpSink, local_port: int | None = None) -> int:
    port = local_port or free_udp_port()
    r = esl.cmd(f"sendmsg {uuid}", unicast_headers(port, sink.port))
    assert r.raw == reply_raw("+OK")
    return port
