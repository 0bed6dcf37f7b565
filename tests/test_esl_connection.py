"""ESLConnection against a small scripted ESL server on 127.0.0.1 (real sockets, real gevent)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

import gevent
import pytest
from gevent.event import Event as Flag
from gevent.server import StreamServer

from esl_audio_stream.esl.connection import (
    ESLConnection,
    ESLDisconnected,
    ESLError,
    ESLTimeout,
)
from esl_audio_stream.esl.protocol import CommandInjectionError, Event

PASSWORD = "s3cret-pw"
WAIT = 5.0  # bound for every wait in these tests; nothing here should come close


def event_bytes(headers: dict[str, str], body: bytes = b"") -> bytes:
    """An event exactly as mod_event_socket writes it (url-encoded values, inner body)."""
    payload = "".join(f"{k}: {quote(v, safe='')}\n" for k, v in headers.items()).encode()
    payload += b"Content-Length: %d\n\n%s" % (len(body), body) if body else b"\n"
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(payload), payload)


def reply(text: str, extra: str = "") -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n{extra}\n".encode()


def api_response(body: bytes) -> bytes:
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(body), body)


NOTICE = b"Disconnected, goodbye.\n"
DISCONNECT = b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s" % (
    len(NOTICE),
    NOTICE,
)


class Command:
    def __init__(self, line: str, headers: dict[str, str], body: bytes) -> None:
        self.line, self.headers, self.body = line, headers, body


class Conn:
    """One accepted client connection on the fake server."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_command(self) -> Command | None:
        while b"\n\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        end = self.buf.index(b"\n\n")
        lines = bytes(self.buf[:end]).decode().split("\n")
        del self.buf[: end + 2]
        headers = dict(line.split(": ", 1) for line in lines[1:])
        need = int(headers.get("Content-Length", "0"))
        while len(self.buf) < need:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        body = bytes(self.buf[:need])
        del self.buf[:need]
        return Command(lines[0], headers, body)


class FakeFreeSWITCH:
    """Answers like mod_event_socket; tests script the api/bgapi behaviour per command."""

    def __init__(self, password: str = PASSWORD, port: int = 0) -> None:
        self.password = password
        self.commands: list[str] = []  # every command line received, across connections
        self.sendevents: list[Command] = []
        self.accepted = 0
        self.auth_attempts = 0
        self.conns: list[Conn] = []
        self.api_handlers: dict[str, Callable[[Conn, Command], None]] = {}
        self.bgapi_event_first = False
        self.bgapi_events_between: list[bytes] = []
        self.got_command = Flag()
        self.server = StreamServer(("127.0.0.1", port), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def close(self) -> None:
        self.server.stop(timeout=1)
        self.drop_all()

    def drop_all(self) -> None:
        for conn in list(self.conns):
            conn.sock.close()
        self.conns.clear()

    def push(self, data: bytes) -> None:
        for conn in list(self.conns):
            conn.send(data)

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with gevent.Timeout(WAIT):
            while not predicate():
                gevent.sleep(0.005)

    def _handle(self, sock, _addr) -> None:
        self.accepted += 1
        conn = Conn(sock)
        try:
            conn.send(b"Content-Type: auth/request\n\n")
            cmd = conn.read_command()
            if cmd is None:
                return
            self.auth_attempts += 1
            if cmd.line != f"auth {self.password}":
                conn.send(reply("-ERR invalid") + DISCONNECT)
                return
            conn.send(reply("+OK accepted"))
            self.conns.append(conn)
            while (cmd := conn.read_command()) is not None:
                self.commands.append(cmd.line)
                self.got_command.set()
                if not self._answer(conn, cmd):
                    return
        except OSError:
            pass
        finally:
            if conn in self.conns:
                self.conns.remove(conn)
            sock.close()

    def _answer(self, conn: Conn, cmd: Command) -> bool:
        verb, _, arg = cmd.line.partition(" ")
        if verb == "event":
            conn.send(reply("+OK event listener enabled plain"))
        elif verb == "api":
            name = arg.split(" ", 1)[0]
            if name in self.api_handlers:
                self.api_handlers[name](conn, cmd)
            elif name == "echo":
                conn.send(api_response(arg[5:].encode()))
            else:
                conn.send(api_response(f"-ERR {name} Command not found!\n".encode()))
        elif verb == "bgapi":
            job = cmd.headers["Job-UUID"]
            done = event_bytes(
                {"Event-Name": "BACKGROUND_JOB", "Job-UUID": job, "Job-Command": arg},
                b"result of " + arg.encode(),
            )
            ok = reply(f"+OK Job-UUID: {job}", f"Job-UUID: {job}\n")
            between = b"".join(self.bgapi_events_between)
            conn.send(done + between + ok if self.bgapi_event_first else ok + between + done)
        elif verb == "sendmsg":
            if arg == "live-uuid" and cmd.headers.get("call-command") == "unicast":
                conn.send(reply("+OK"))
            else:
                conn.send(reply(f"-ERR invalid session id [{arg}]"))
        elif verb == "sendevent":
            self.sendevents.append(cmd)
            conn.send(reply("+OK 0b3a2c1e-aaaa-bbbb-cccc-000000000001"))
        elif verb == "exit":
            conn.send(reply("+OK bye") + DISCONNECT)
            return False
        else:
            conn.send(reply("-ERR command not found"))
        return True


def outcome(func, *args):
    """Run a command in a greenlet; its result or the exception it raised (no stderr noise)."""
    try:
        return func(*args)
    except Exception as exc:
        return exc


@pytest.fixture
def fs():
    server = FakeFreeSWITCH()
    yield server
    server.close()


@pytest.fixture
def make_conn(fs):
    made: list[ESLConnection] = []

    def make(**kw) -> ESLConnection:
        kw.setdefault("password", PASSWORD)
        kw.setdefault("backoff_initial", 0.01)
        kw.setdefault("backoff_max", 0.05)
        conn = ESLConnection("127.0.0.1", kw.pop("port", fs.port), **kw)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.stop()


def test_connects_authenticates_subscribes_and_runs_api(fs, make_conn):
    connected = Flag()
    conn = make_conn(on_connect=connected.set)
    conn.subscribe("CHANNEL_PARK", "CUSTOM", "esl_audio_stream::command")
    assert not conn.connected
    conn.start()
    assert conn.wait_connected(WAIT)
    assert conn.connected
    assert connected.wait(WAIT)
    assert fs.commands[0] == (
        "event plain BACKGROUND_JOB CHANNEL_PARK CUSTOM esl_audio_stream::command"
    )
    assert conn.api("echo hello world") == "hello world"
    fs.api_handlers["show"] = lambda c, cmd: c.send(api_response(b"\n0 total.\n"))
    assert conn.api("show channels count") == "\n0 total.\n"
    # -ERR in an api body is data, not an exception
    assert conn.api("no_such_command x") == "-ERR no_such_command Command not found!\n"


def test_subscribe_while_connected_sends_only_new_names(fs, make_conn):
    conn = make_conn()
    conn.subscribe("CHANNEL_PARK")
    conn.start()
    assert conn.wait_connected(WAIT)
    conn.subscribe("CHANNEL_PARK", "CHANNEL_HANGUP_COMPLETE")
    conn.subscribe("custom_thing::x")  # a subclass implies CUSTOM
    conn.subscribe("CHANNEL_PARK")  # nothing new: nothing sent
    assert fs.commands == [
        "event plain BACKGROUND_JOB CHANNEL_PARK",
        "event plain CHANNEL_HANGUP_COMPLETE",
        "event plain CUSTOM custom_thing::x",
    ]


def test_commands_before_start_fail_at_once(make_conn):
    conn = make_conn()
    for call in (
        lambda: conn.api("echo x"),
        lambda: conn.bgapi("status"),
        lambda: conn.sendmsg("live-uuid", {"call-command": "unicast"}),
        lambda: conn.sendevent("CUSTOM", {"Event-Subclass": "a::b"}),
    ):
        with pytest.raises(ESLDisconnected):
            call()
    assert conn.wait_connected(0.01) is False


def test_auth_failure_is_logged_without_password_and_retried(fs, make_conn, caplog):
    caplog.set_level(logging.DEBUG, logger="esl_audio_stream")
    fs.password = "the-right-one"
    conn = make_conn(password="wrong-pw-xyz")
    conn.start()
    fs.wait_for(lambda: fs.auth_attempts >= 3)
    assert not conn.connected
    assert "refused" in caplog.text and "-ERR invalid" in caplog.text
    # operator fixes the password on the FreeSWITCH side: no restart needed
    fs.password = "wrong-pw-xyz"
    assert conn.wait_connected(WAIT)
    assert conn.api("echo ok") == "ok"
    assert "wrong-pw-xyz" not in caplog.text


def test_sendmsg_and_sendevent(fs, make_conn):
    conn = make_conn()
    conn.start()
    assert conn.wait_connected(WAIT)
    headers = {"call-command": "unicast", "local-port": "8025", "remote-port": "8026"}
    assert conn.sendmsg("live-uuid", headers) == "+OK"
    with pytest.raises(ESLError, match=r"-ERR invalid session id \[dead-uuid\]"):
        conn.sendmsg("dead-uuid", headers)
    body = '{"type":"transcription",\n\n"text":"50% done"}'
    answer = conn.sendevent(
        "CUSTOM", {"Event-Subclass": "mod_audio_stream::json", "Unique-ID": "u1"}, body
    )
    assert answer == "+OK 0b3a2c1e-aaaa-bbbb-cccc-000000000001"
    (sent,) = fs.sendevents
    assert sent.line == "sendevent CUSTOM"
    assert sent.headers["Event-Subclass"] == "mod_audio_stream::json"
    assert sent.body == body.encode()
    # injection is refused before anything is written; the connection stays usable
    with pytest.raises(CommandInjectionError):
        conn.sendmsg("live-uuid", {"call-command": "unicast\napi uuid_kill x"})
    with pytest.raises(CommandInjectionError):
        conn.api("echo a\n\nexit")
    assert conn.api("echo still fine") == "still fine"


@pytest.mark.parametrize("event_first", [False, True])
def test_bgapi_matches_its_job_among_other_events(fs, make_conn, event_first):
    seen: list[Event] = []
    conn = make_conn(on_event=seen.append)
    conn.subscribe("CHANNEL_PARK", "CUSTOM", "x::y")
    fs.bgapi_event_first = event_first
    other_job = event_bytes(
        {"Event-Name": "BACKGROUND_JOB", "Job-UUID": "someone-elses"}, b"not ours"
    )
    park = event_bytes({"Event-Name": "CHANNEL_PARK", "Unique-ID": "u-1"})
    custom = event_bytes(
        {"Event-Name": "CUSTOM", "Event-Subclass": "x::y", "Unique-ID": "u-1", "Note": "a\nb"},
        b'{"k": "v"}\n\nsecond paragraph',
    )
    fs.bgapi_events_between = [park, other_job, custom]
    conn.start()
    assert conn.wait_connected(WAIT)
    assert conn.bgapi("uuid_getvar u-1 FOO") == "result of uuid_getvar u-1 FOO"
    fs.wait_for(lambda: len(seen) == 3)
    assert [e.name for e in seen] == ["CHANNEL_PARK", "BACKGROUND_JOB", "CUSTOM"]
    assert seen[1].body == b"not ours"  # a job that is not ours reaches on_event
    assert seen[2].subclass == "x::y" and seen[2].get("Note") == "a\nb"
    assert seen[2].body == b'{"k": "v"}\n\nsecond paragraph'
    (line,) = [c for c in fs.commands if c.startswith("bgapi")]
    assert line == "bgapi uuid_getvar u-1 FOO"


def test_timeout_then_late_reply_keeps_replies_aligned(fs, make_conn):
    release = Flag()

    def slow(conn, cmd):
        release.wait(WAIT)
        conn.send(api_response(b"late answer"))

    fs.api_handlers["slow"] = slow
    conn = make_conn()
    conn.start()
    assert conn.wait_connected(WAIT)
    with pytest.raises(ESLTimeout):
        conn.api("slow thing", timeout=0.05)
    assert conn.connected  # a slow reply is not a broken connection
    later = gevent.spawn(conn.api, "echo mine", timeout=WAIT)
    gevent.sleep(0.02)
    release.set()
    assert later.get(timeout=WAIT) == "mine"  # not "late answer"
    assert conn.api("echo next") == "next"


def test_bgapi_timeout_when_job_never_arrives(fs, make_conn):
    def silent_ok(conn, cmd):
        conn.send(api_response(b"+OK\n"))

    fs.api_handlers["x"] = silent_ok
    conn = make_conn()
    conn.start()
    assert conn.wait_connected(WAIT)
    # a bgapi answered with +OK but no BACKGROUND_JOB: patch the server to drop the event
    fs.bgapi_events_between = []
    original = fs._answer

    def no_job(c, cmd):
        if cmd.line.startswith("bgapi"):
            job = cmd.headers["Job-UUID"]
            c.send(reply(f"+OK Job-UUID: {job}", f"Job-UUID: {job}\n"))
            return True
        return original(c, cmd)

    fs._answer = no_job
    with pytest.raises(ESLTimeout):
        conn.bgapi("status", timeout=0.1)
    assert conn.api("echo alive") == "alive"


def test_concurrent_commands_get_their_own_replies(fs, make_conn):
    conn = make_conn()
    conn.start()
    assert conn.wait_connected(WAIT)
    jobs = [gevent.spawn(conn.api, f"echo n{i}") for i in range(100)]
    jobs += [gevent.spawn(conn.bgapi, f"job{i}") for i in range(20)]
    gevent.joinall(jobs, timeout=WAIT, raise_error=True)
    assert [j.value for j in jobs[:100]] == [f"n{i}" for i in range(100)]
    assert [j.value for j in jobs[100:]] == [f"result of job{i}" for i in range(20)]


def test_server_drop_fails_every_pending_command_at_once(fs, make_conn):
    def never(conn, cmd):
        pass  # swallow: no reply ever

    fs.api_handlers["hang"] = never
    disconnected = Flag()
    conn = make_conn(reconnect=False, on_disconnect=disconnected.set, command_timeout=60)
    conn.start()
    assert conn.wait_connected(WAIT)
    waiting = [gevent.spawn(outcome, conn.api, f"hang {i}") for i in range(5)]
    fs.wait_for(lambda: len([c for c in fs.commands if c.startswith("api hang")]) == 5)
    fs.drop_all()
    gevent.joinall(waiting, timeout=WAIT)
    for g in waiting:
        assert isinstance(g.value, ESLDisconnected)  # not ESLTimeout: 60 s never elapsed
    assert disconnected.wait(WAIT)
    assert not conn.connected
    with pytest.raises(ESLDisconnected):
        conn.api("echo x")


def test_pending_bgapi_fails_on_drop(fs, make_conn):
    original = fs._answer

    def ack_only(c, cmd):
        if cmd.line.startswith("bgapi"):
            job = cmd.headers["Job-UUID"]
            c.send(reply(f"+OK Job-UUID: {job}", f"Job-UUID: {job}\n"))
            return True
        return original(c, cmd)

    fs._answer = ack_only
    conn = make_conn(reconnect=False, command_timeout=60)
    conn.start()
    assert conn.wait_connected(WAIT)
    job = gevent.spawn(outcome, conn.bgapi, "originate something")
    fs.wait_for(lambda: any(c.startswith("bgapi") for c in fs.commands))
    gevent.sleep(0.02)
    fs.drop_all()
    job.join(timeout=WAIT)
    assert isinstance(job.value, ESLDisconnected)


def test_reconnect_resubscribes_and_keeps_dispatching(fs, make_conn):
    seen: list[Event] = []
    connects: list[int] = []
    disconnects: list[int] = []
    conn = make_conn(
        on_event=seen.append,
        on_connect=lambda: connects.append(1),
        on_disconnect=lambda: disconnects.append(1),
    )
    conn.subscribe("CHANNEL_PARK")
    conn.start()
    assert conn.wait_connected(WAIT)
    conn.subscribe("CUSTOM", "esl_audio_stream::command")
    fs.wait_for(lambda: len(fs.commands) == 2)
    fs.commands.clear()
    fs.drop_all()
    fs.wait_for(lambda: fs.accepted == 2 and conn.connected)
    assert (
        fs.commands[0] == "event plain BACKGROUND_JOB CHANNEL_PARK CUSTOM esl_audio_stream::command"
    )
    fs.wait_for(lambda: len(connects) == 2)
    assert disconnects == [1]
    fs.push(event_bytes({"Event-Name": "CHANNEL_PARK", "Unique-ID": "after"}, b"b\n"))
    fs.wait_for(lambda: len(seen) == 1)
    assert seen[0].uuid == "after" and seen[0].body == b"b\n"
    assert conn.api("echo back") == "back"


def test_reconnects_after_server_restart(make_conn):
    first = FakeFreeSWITCH()
    port = first.port
    conn = make_conn(port=port)
    conn.start()
    assert conn.wait_connected(WAIT)
    first.close()
    with gevent.Timeout(WAIT):
        while conn.connected:
            gevent.sleep(0.005)
    with pytest.raises(ESLDisconnected):
        conn.api("echo x")
    gevent.sleep(0.1)  # a few refused attempts with backoff
    try:
        second = FakeFreeSWITCH(port=port)
    except OSError:
        pytest.skip("the port was taken by another process meanwhile")
    try:
        assert conn.wait_connected(WAIT)
        assert conn.api("echo again") == "again"
    finally:
        second.close()


def test_on_event_errors_do_not_kill_the_connection(fs, make_conn, caplog):
    seen: list[str] = []

    def on_event(event: Event) -> None:
        seen.append(event.uuid)
        if event.uuid == "bad":
            raise ValueError("handler bug")

    conn = make_conn(on_event=on_event)
    conn.start()
    assert conn.wait_connected(WAIT)
    fs.push(event_bytes({"Event-Name": "CHANNEL_PARK", "Unique-ID": "bad"}))
    fs.push(event_bytes({"Event-Name": "CHANNEL_PARK", "Unique-ID": "good"}))
    fs.wait_for(lambda: len(seen) == 2)
    assert seen == ["bad", "good"]
    assert "handler bug" in caplog.text
    assert conn.connected and conn.api("echo ok") == "ok"


def test_on_event_may_not_wait_for_replies(fs, make_conn):
    errors: list[BaseException] = []

    def on_event(event: Event) -> None:
        try:
            conn.api("echo x")
        except RuntimeError as exc:
            errors.append(exc)
        conn.subscribe("CHANNEL_HANGUP")  # fire-and-forget from the reader is allowed

    conn = make_conn(on_event=on_event)
    conn.start()
    assert conn.wait_connected(WAIT)
    fs.push(event_bytes({"Event-Name": "CHANNEL_PARK", "Unique-ID": "u"}))
    fs.wait_for(lambda: "event plain CHANNEL_HANGUP" in fs.commands)
    assert len(errors) == 1
    assert conn.api("echo aligned") == "aligned"


def test_stop_says_exit_and_ends_everything(fs, make_conn):
    disconnected = Flag()
    conn = make_conn(on_disconnect=disconnected.set)
    conn.start()
    assert conn.wait_connected(WAIT)
    runner = conn._runner
    conn.stop()
    assert "exit" in fs.commands
    assert not conn.connected
    assert disconnected.is_set()
    assert runner is not None and runner.dead
    with pytest.raises(ESLDisconnected):
        conn.api("echo x")
    fs.wait_for(lambda: not fs.conns)
    conn.stop()  # idempotent


def test_stop_while_never_connected_ends_the_retry_loop(make_conn):
    conn = make_conn(port=1)  # nothing listens on port 1 on loopback
    conn.start()
    gevent.sleep(0.05)
    runner = conn._runner
    conn.stop()
    assert runner is not None and runner.dead
    assert not conn.connected


def test_handshake_timeout_when_server_is_silent(make_conn):
    accepted = []

    def mute(sock, _addr):
        accepted.append(sock)
        gevent.sleep(WAIT)

    server = StreamServer(("127.0.0.1", 0), mute)
    server.start()
    try:
        conn = make_conn(port=server.server_port, command_timeout=0.05)
        conn.start()
        with gevent.Timeout(WAIT):
            while len(accepted) < 2:  # timed out, then retried
                gevent.sleep(0.005)
        assert not conn.connected
        conn.stop()
    finally:
        for sock in accepted:
            sock.close()
        server.stop(timeout=0.1)


def test_write_timeout_drops_the_connection_and_reconnects(fs, make_conn):
    """A command cut mid-write would desync FreeSWITCH's parser: the connection must go."""
    fs.api_handlers["stall"] = lambda c, cmd: gevent.sleep(WAIT)  # server stops reading
    conn = make_conn()
    conn.start()
    assert conn.wait_connected(WAIT)
    stalled = gevent.spawn(outcome, conn.api, "stall", WAIT)
    fs.wait_for(lambda: "api stall" in fs.commands)
    big = b"x" * (15 * 1024 * 1024)  # more than loopback socket buffers hold
    with pytest.raises(ESLTimeout):
        conn.sendevent("CUSTOM", {"Event-Subclass": "a::b"}, big, timeout=0.3)
    stalled.join(timeout=WAIT)
    assert isinstance(stalled.value, ESLDisconnected)
    fs.wait_for(lambda: fs.accepted == 2 and conn.connected)
    assert conn.api("echo recovered") == "recovered"
