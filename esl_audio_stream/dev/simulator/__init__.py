"""The FreeSWITCH simulator: an ESL server, calls and unicast media, behaving as real FreeSWITCH
does (see README.md in this directory for every known difference)."""

from .channel import SimChannel
from .core import Simulator
from .run import run_simulator

__all__ = ["SimChannel", "Simulator", "run_simulator"]
