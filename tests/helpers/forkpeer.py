"""A mod_audio_fork endpoint for the tests: the `websockets` peer (tests/wspeer.py), insisting on
the subprotocol jambonz's module offers -- a client that does not offer it gets HTTP 400 -- and
offering no compression (lws, jambonz's client, asks for none). What a connection's handshake
carried (Authorization, the subprotocol, extensions) is in its `headers`."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.server import serve
from wspeer import WSPeer

from esl_audio_stream.protocols import audio_fork as af

SUBPROTOCOL = af.SUBPROTOCOL


class ForkPeer(WSPeer):
    def __init__(self, subprotocol: str = SUBPROTOCOL, **kwargs) -> None:
        super().__init__(compression=None, **kwargs)
        self.subprotocol = subprotocol

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self.want_port, compression=None,
                         max_size=None, subprotocols=[self.subprotocol]) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()


def fork_events(esl, uuid: str, subclass: str | None = None) -> list:
    """The mod_audio_fork events the operator's ESL client saw for `uuid`, in order."""
    return [e for e in esl.seen if e.subclass.startswith("mod_audio_fork::")
            and (subclass is None or e.subclass == subclass)
            and e.get("Audio-Stream-UUID") == uuid]


def message(kind: str, data: object = None) -> str:
    msg: dict = {"type": kind}
    if data is not None:
        msg["data"] = data
    return json.dumps(msg)
