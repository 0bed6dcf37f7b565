"""A Pipecat bot, written for Twilio Media Streams, answering a FreeSWITCH call unchanged.

esl-audio-stream in Twilio mode (`STREAM_PROTOCOL=twilio`) speaks to the bot exactly as Twilio
would: `connected`, `start` (streamSid, callSid = the channel's uuid, customParameters = the
start's metadata), `media` (µ-law 8 kHz), `dtmf`, `mark`, `stop`. So the usual Pipecat telephony
wiring -- a FastAPI WebSocket route, `parse_telephony_websocket`, `TwilioFrameSerializer`,
`FastAPIWebsocketTransport` -- runs as it is. Only `auto_hang_up` is off: it would call Twilio's
REST API; with FreeSWITCH the call is hung up by FreeSWITCH (closing the WebSocket ends the
stream, not the call).

This bot echoes what the caller says back into the call and tells FreeSWITCH which key was
pressed: its message `{"event":"keypress","digit":"5"}` reaches FreeSWITCH subscribers as a
`mod_audio_stream::json` event. Put a speech-to-text, an LLM and a text-to-speech service
between `transport.input()` and `transport.output()` for a voice agent.

    pip install 'pipecat-ai[websocket]' uvicorn      # or: pip install -e '.[pipecat]'
    python examples/pipecat_twilio_bot.py --port 8765
    # on FreeSWITCH: a call with STREAM_PROTOCOL=twilio, then
    #   uuid_audio_stream <uuid> start ws://127.0.0.1:8765/ws mono 8k
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

app = FastAPI()


class EchoAndKeys(FrameProcessor):
    """The caller's audio straight back; each key as a message to the endpoint's side."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(OutputAudioRawFrame(
                audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels))
        elif isinstance(frame, InputDTMFFrame):
            await self.push_frame(OutputTransportMessageUrgentFrame(
                message={"event": "keypress", "digit": frame.button.value}))
        else:
            await self.push_frame(frame, direction)


@app.websocket("/ws")
async def media_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    kind, call = await parse_telephony_websocket(websocket)  # reads `connected` and `start`
    if kind != "twilio":
        await websocket.close(1008, "expected Twilio Media Streams")
        return
    serializer = TwilioFrameSerializer(
        stream_sid=call["stream_id"], call_sid=call["call_id"],
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
    transport = FastAPIWebsocketTransport(websocket=websocket, params=FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True, audio_out_auto_silence=False,
        add_wav_header=False, serializer=serializer))
    worker = PipelineWorker(
        Pipeline([transport.input(), EchoAndKeys(), transport.output()]),
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        idle_timeout_secs=None)

    @transport.event_handler("on_client_disconnected")
    async def _gone(_transport, _ws) -> None:  # the stream stopped, or the call hung up
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    ns = parser.parse_args()
    uvicorn.run(app, host=ns.host, port=ns.port, log_level="warning")


if __name__ == "__main__":
    main()
