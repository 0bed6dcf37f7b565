"""Wire protocols: what a stream says to its endpoint and what the endpoint's messages mean.

The stream talks to its endpoint only through a protocol object, so a protocol is added beside
mod_audio_stream's without touching the stream. See `actions.py` for the interface.
"""
