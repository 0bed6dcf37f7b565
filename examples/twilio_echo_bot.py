"""The smallest Twilio Media Streams bot: plain `websockets`, no framework.

It reads `connected` and `start` (the streamSid every answer must carry), sends back each
`media` payload as it came (so the caller hears themself), and answers each key the caller
presses with a `mark` named after it: esl-audio-stream echoes the mark once what was queued
before it has played. What a Twilio bot does, against a FreeSWITCH call streamed with
`STREAM_PROTOCOL=twilio`.

    pip install websockets
    python examples/twilio_echo_bot.py --port 8765
    # uuid_audio_stream <uuid> start ws://127.0.0.1:8765 mono 8k
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def send(ws: ServerConnection, message: dict) -> None:
    """An answer to a message read before the stream ended may find it closed: the messages
    still to read (the `stop` among them) are read all the same."""
    with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps(message))


async def answer(ws: ServerConnection) -> None:
    sid = None
    async for message in ws:
        msg = json.loads(message)
        event = msg.get("event")
        if event == "start":
            sid = msg["streamSid"]
            start = msg["start"]
            print(f"call {start['callSid']}: stream {sid}, tracks {start['tracks']}, "
                  f"parameters {start['customParameters']}", flush=True)
        elif event == "media" and msg["media"]["track"] == "inbound":
            await send(ws, {"event": "media", "streamSid": sid,
                            "media": {"payload": msg["media"]["payload"]}})
        elif event == "dtmf":
            digit = msg["dtmf"]["digit"]
            await send(ws, {"event": "mark", "streamSid": sid,
                            "mark": {"name": f"key-{digit}"}})
        elif event == "mark":
            print(f"played up to {msg['mark']['name']}", flush=True)
        elif event == "stop":
            print(f"stream {sid} stopped", flush=True)


async def main(host: str, port: int) -> None:
    async with serve(answer, host, port) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    ns = parser.parse_args()
    asyncio.run(main(ns.host, ns.port))
