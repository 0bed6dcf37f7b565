"""An operator's ESL client for tests: kept apart from the helpers that import conftest, so that
conftest's own `esl` fixture uses it too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from esl_audio_stream.esl.connection import ESLConnection


@contextmanager
def listening(address: tuple[str, int], *subclasses: str,
              password: str = "ClueCon") -> Iterator[ESLConnection]:
    """An operator's ESL client on FreeSWITCH (or the simulator), keeping every event it hears
    (`seen`), subscribed to these CUSTOM subclasses (none: no CUSTOM subscription)."""
    seen: list = []
    conn = ESLConnection(*address, password, on_event=seen.append)
    conn.seen = seen  # type: ignore[attr-defined]
    if subclasses:
        conn.subscribe("CUSTOM", *subclasses)
    conn.start()
    assert conn.wait_connected(5)
    try:
        yield conn
    finally:
        conn.stop()
