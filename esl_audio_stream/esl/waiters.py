"""Who waits for what on one ESL session: command replies in wire order, bgapi jobs by Job-UUID.

FreeSWITCH answers the commands of one connection strictly in order, so a FIFO of ``AsyncResult``
(a slot taken under the connection's write lock: wire order == FIFO order) is all the matching
replies need. A timed-out command keeps its slot, so its late reply is consumed and dropped
instead of being handed to the next command. A bgapi's BACKGROUND_JOB is matched by the Job-UUID
we chose. When the session ends every waiter fails at once (`fail_all`), so none waits out its
timeout for an answer that cannot come.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from gevent.event import AsyncResult

from .protocol import Event, Message

__all__ = ["Waiters"]


class Waiters:
    """The waiters of one connection; owned by it, emptied by `fail_all` at every teardown."""

    def __init__(self) -> None:
        self._replies: deque[AsyncResult] = deque()
        self._jobs: dict[str, AsyncResult] = {}

    def expect_reply(self) -> AsyncResult:
        """The slot of a command about to be written (call under the write lock)."""
        result = AsyncResult()
        self._replies.append(result)
        return result

    def reply(self, msg: Message) -> bool:
        """Hand a command/reply or api/response to the oldest slot; False when none waits."""
        if not self._replies:
            return False
        self._replies.popleft().set(msg)
        return True

    def expect_job(self, job_id: str) -> AsyncResult:
        """Register before sending the bgapi: its event may overtake the command's reply."""
        job = self._jobs[job_id] = AsyncResult()
        return job

    def rekey_job(self, job_id: str, echoed: str) -> None:
        """A server that ignored our Job-UUID header: match the job by the one it echoed."""
        job = self._jobs.pop(job_id, None)
        if job is not None:
            self._jobs[echoed] = job

    def forget_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def job_done(self, event: Event) -> bool:
        """A BACKGROUND_JOB: True when it answered one of our bgapi (it is consumed)."""
        job = self._jobs.pop(event.headers.get("Job-UUID", ""), None)
        if job is None:
            return False
        job.set(event)
        return True

    def fail_all(self, error: Callable[[], Exception]) -> None:
        """Fail every waiter (replies first, then jobs) with a fresh `error()` each."""
        replies, self._replies = self._replies, deque()
        jobs, self._jobs = self._jobs, {}
        for result in replies:
            result.set_exception(error())
        for result in jobs.values():
            result.set_exception(error())
