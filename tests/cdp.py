"""Headless Chromium (Debian's package) driven over the DevTools protocol, for the status page test.

The protocol is spoken with the `websockets` library (already a test dependency) rather than
selenium + chromedriver: nothing more to install or keep in step with Chromium's version, and,
like tests/wspeer.py, its asyncio client runs in a thread of its own while the test waits without
blocking the gevent hub (the daemon under test serves the page from the same process).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import gevent
from websockets.asyncio.client import connect

CHROMIUM = os.environ.get("EAS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,600", "--remote-debugging-port=0"]


def _wait(future, timeout: float):
    """Wait for the CDP thread, yielding to the gevent hub meanwhile."""
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            future.cancel()
            raise TimeoutError("Chromium did not answer in time")
        gevent.sleep(0.01)
    return future.result()


class Chromium:
    """One headless Chromium process with one page, attached over CDP."""

    def __init__(self, profile: Path) -> None:
        if not shutil.which(CHROMIUM):
            raise RuntimeError(f"{CHROMIUM} is missing (scripts/_bootstrap.sh installs chromium)")
        self.profile = profile
        self.log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], stdout=self.log, stderr=self.log)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws = None
        self._reader = None
        self.session = ""

    def start(self, timeout: float = 20.0) -> Chromium:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not start (see chromium.log)")
            gevent.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self._run(self._connect(f"ws://127.0.0.1:{port}{path}"), timeout)
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call("Target.attachToTarget", {"targetId": target["targetId"],
                                                       "flatten": True}, session=False)
        self.session = attached["sessionId"]
        self.call("Page.enable")
        return self

    def _run(self, coro, timeout: float):
        return _wait(asyncio.run_coroutine_threadsafe(coro, self._loop), timeout)

    async def _connect(self, url: str) -> None:
        self._ws = await connect(url, max_size=None, open_timeout=10)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _send(self, msg: dict) -> dict:
        fut = self._loop.create_future()
        self._pending[msg["id"]] = fut
        await self._ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, 15)

    def call(self, method: str, params: dict | None = None, *, session: bool = True,
             timeout: float = 20.0) -> dict:
        msg: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        answer = self._run(self._send(msg), timeout)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if self._ws is not None:
                self._run(self._ws.close(), 5)
        except Exception:
            pass
        self.proc.terminate()
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self.log.close()
