"""esl-audio-stream: mod_audio_stream's features for a stock FreeSWITCH, driven over ESL."""

__version__ = "0.1.0"
