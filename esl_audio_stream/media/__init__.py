"""Audio: UDP unicast endpoint, speexdsp resampling, chunking, decoding, playback, tone analysis.

Everything on the per-frame path here is allocation-light by design: 50 frames/s per call, for
up to 1000 calls, in one gevent process.
"""
