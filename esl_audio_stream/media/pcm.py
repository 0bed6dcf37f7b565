"""audioop, imported once for the whole package: L16 arithmetic in C (add, rms, G.711).

The stdlib module warns on Python 3.11/3.12 (deprecated, removed in 3.13); on 3.13+ the
audioop-lts package provides the same module without the warning. Everything that needs it
imports it from here, so the warning filter is written once.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["audioop"]
