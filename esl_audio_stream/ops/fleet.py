"""The workers of `run --workers N` as one daemon, from outside: what the supervisor's control
endpoint serves (a `Served`, ops/control.py), and how one worker hands another a command.

Each worker has its own endpoint, a unix socket in the supervisor's private directory
(`socket_path`): no token, nothing listening on the network, only this user. The supervisor's
endpoint, the one configured, forwards:

- a command to the worker that owns its call (app/shard.py: the first word's uuid);
- `/drain` to every worker at once;
- `/streams` and the status page's rows: every worker's, each row with its `worker`;
- `/metrics`: every worker's series with a `worker` label, HELP and TYPE once per family
  (ops/metrics.py `merge`), and the supervisor's own (restarts, workers up).

A worker being replaced does not answer for a moment: a command waits for it (up to
`WAIT_WORKER` seconds, and only while its socket refuses: a command that reached a worker is
never sent twice); the rows and the metrics go on without it.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
from collections.abc import Callable, Mapping

import gevent
from gevent import socket as gsocket

from ..app import events, intake
from ..app.shard import shard_of
from . import metrics
from .control import APIS, INTAKE_PATH

log = logging.getLogger(__name__)

#: Seconds a command waits for a worker that is being replaced.
WAIT_WORKER = 10.0
#: Seconds for one worker's answer (a start waits for its WebSocket: ws_connect_timeout).
ANSWER_TIMEOUT = 30.0


def socket_path(rundir: str, index: int) -> str:
    """Worker `index`'s own control endpoint."""
    return os.path.join(rundir, f"w{index}.sock")


class _UnixHTTP(http.client.HTTPConnection):
    """http.client over a unix socket (gevent's: the wait yields to the other greenlets)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def ask(path: str, method: str, url: str, body: bytes | None = None,
        timeout: float = ANSWER_TIMEOUT, wait: float = 0.0) -> tuple[int, str]:
    """One request to a worker's endpoint: (status, text). Waits up to `wait` seconds for a
    worker that does not listen (yet); OSError when it never does."""
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        conn = _UnixHTTP(path, timeout)
        try:
            conn.connect()
        except OSError:
            conn.close()
            if time.monotonic() + pause > deadline:
                raise
            gevent.sleep(pause)
            pause = min(pause * 2, 0.5)
            continue
        try:  # connected: sent once, whatever happens now
            headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()


class Fleet:
    """The workers, served as one daemon (see the module docstring)."""

    def __init__(self, rundir: str, count: int,
                 own: Callable[[], tuple[Mapping[int, int], Mapping[int, bool]]]) -> None:
        """`own`: the supervisor's (restarts by worker, up by worker), read at scrape time."""
        self.rundir = rundir
        self.count = count
        self._own = own
        self._esl = False  # every worker's ESL up, as the last rows with levels said

    def _path(self, index: int) -> str:
        return socket_path(self.rundir, index)

    def _each(self, method: str, url: str, body: bytes | None = None,
              timeout: float = 10.0) -> dict[int, tuple[int, str]]:
        """The same request to every worker at once; those that answer."""
        def one(index: int) -> tuple[int, str] | None:
            try:
                return ask(self._path(index), method, url, body, timeout)
            except (OSError, http.client.HTTPException) as exc:  # being replaced: left out
                log.debug("worker %d did not answer %s %s: %s", index, method, url, exc)
                return None

        jobs = {i: gevent.spawn(one, i) for i in range(self.count)}
        gevent.joinall(list(jobs.values()), timeout=timeout + 1)
        out = {}
        for i, job in jobs.items():
            if job.value is not None:
                out[i] = job.value
            else:
                job.kill(block=False)
        return out

    # -- Served ---------------------------------------------------------------------------

    @property
    def esl_connected(self) -> bool:
        return self._esl

    def execute(self, args: str | bytes, api: str = APIS[0]) -> str:
        text = args.decode("utf-8", "surrogateescape") if isinstance(args, bytes) else args
        first = text.strip().split(" ", 1)[0].partition("@")[0]  # `<uuid>[@<name>] ...`
        index = shard_of(first, self.count)
        body = text.encode("utf-8", "surrogateescape")
        try:
            return ask(self._path(index), "POST", f"/api/{api}", body, wait=WAIT_WORKER)[1]
        except OSError as exc:
            return f"-ERR worker {index} (the call's) is not answering: {exc}\n"

    def drain(self) -> tuple[bool, int]:
        answers = self._each("POST", "/drain", b"", timeout=3600.0)
        total, ok = 0, len(answers) == self.count
        for _status, text in answers.values():
            words = text.split()
            ok = ok and text.startswith("+OK")
            numbers = [int(w) for w in words if w.isdigit()]
            total += numbers[0] if numbers else 0
        return ok, total

    def rows(self, level: bool = False, seen: dict[str, int] | None = None) -> list[dict]:
        out: list[dict] = []
        esl = True
        answers = self._each("GET", "/streams?feed=1" if level else "/streams")
        for index, (status, text) in sorted(answers.items()):
            if status != 200:
                continue
            data = json.loads(text)
            if level:
                esl = esl and bool(data.get("esl"))
                data = data.get("streams", [])
            for row in data:
                row["worker"] = index
                out.append(row)
        if level:
            self._esl = esl and len(answers) == self.count
        return out

    def metrics(self) -> bytes:
        answers = self._each("GET", "/metrics")
        texts = {i: text for i, (status, text) in answers.items() if status == 200}
        restarts, up = self._own()
        return metrics.merge(texts, restarts, up)


# -- a command FreeSWITCH sent, from the intake worker to the call's owner --------------------


def intake_body(found: intake.Intake, state: events.CallState) -> bytes:
    return json.dumps({"args": found.args, "uuid": found.uuid, "source": found.source,
                       "event_uuid": found.event_uuid, "api": found.api,
                       "state": state.value}).encode()


def intake_from(body: bytes) -> tuple[intake.Intake, events.CallState]:
    """ValueError (or KeyError) for a body that is not one."""
    data = json.loads(body)
    found = intake.Intake(str(data["args"]), str(data["uuid"]), str(data["source"]),
                          str(data["event_uuid"]), str(data["api"]))
    return found, events.CallState(data["state"])


def hand_intake(rundir: str, index: int, found: intake.Intake,
                state: events.CallState) -> str:
    """Hand a command to worker `index` (which runs it and fires the reply); its answer, or
    -ERR when it does not listen within WAIT_WORKER seconds."""
    try:
        return ask(socket_path(rundir, index), "POST", INTAKE_PATH, intake_body(found, state),
                   wait=WAIT_WORKER)[1]
    except OSError as exc:
        return f"-ERR worker {index} (the call's) is not answering: {exc}\n"
