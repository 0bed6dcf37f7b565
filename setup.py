"""Only here because cffi's build hook (`cffi_modules`) needs it; metadata lives in setup.cfg."""

from setuptools import setup

setup(cffi_modules=[
        "esl_audio_stream/media/_speex_build.py:ffibuilder",
        "esl_audio_stream/ws/_mask_build.py:ffibuilder",
        "esl_audio_stream/native/_pump_build.py:ffibuilder",  # optional: see there
    ])
