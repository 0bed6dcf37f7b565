"""A stream's outgoing messages waiting for its WebSocket: the one queue between them (sans-IO).

Why one queue with this policy: audio that cannot be sent in time is worth less than audio that
is current, so beyond the bound (bytes of audio, `limit`) the OLDEST audio messages are dropped,
whole, and counted; texts (the metadata, marks, the endpoint's answers to commands) are rare and
meaningful, so they keep their place among the audio and are never dropped. The connection keeps
at most the rest of one partly sent message; everything else that waits is here, so order,
memory and what is lost are decided in one place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class Backlog:
    """Messages in send order: audio as bytes, texts as str."""

    __slots__ = ("_items", "_unreported", "audio_bytes", "dropped", "limit", "text_bytes")

    def __init__(self, limit: int) -> None:
        self.limit = limit  # bytes of audio held at most
        self._items: deque[bytes | str] = deque()
        self.audio_bytes = 0
        self.text_bytes = 0  # characters of text (reports only: texts are not bounded)
        self.dropped = 0  # audio messages dropped, in all
        self._unreported = 0  # ... of which not yet taken by `take_drops`

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[bytes | str]:
        """Oldest first (for reports and tests; the link only pops)."""
        return iter(self._items)

    @property
    def buffered(self) -> int:
        """What is held, audio and texts."""
        return self.audio_bytes + self.text_bytes

    def push_audio(self, chunk: bytes) -> bool:
        """Queue one audio message; beyond the bound the oldest audio goes. Always True: the
        message is taken (a later push may drop it), so it is the per-frame `send` itself."""
        self._items.append(chunk)
        self.audio_bytes += len(chunk)
        if self.audio_bytes > self.limit:
            self._drop_oldest()
        return True

    def push_text(self, text: str) -> None:
        self._items.append(text)
        self.text_bytes += len(text)

    def pop(self) -> bytes | str:
        """The oldest message (IndexError when empty)."""
        item = self._items.popleft()
        if item.__class__ is str:
            self.text_bytes -= len(item)
        else:
            self.audio_bytes -= len(item)
        return item

    def push_front(self, item: bytes | str) -> None:
        """Put back a message that was taken but could not be sent (its connection died)."""
        self._items.appendleft(item)
        if item.__class__ is str:
            self.text_bytes += len(item)
        else:
            self.audio_bytes += len(item)
            if self.audio_bytes > self.limit:
                self._drop_oldest()

    def take_drops(self) -> int:
        """Audio messages dropped since the last call (each drop is reported once)."""
        n, self._unreported = self._unreported, 0
        return n

    def clear(self) -> None:
        self._items.clear()
        self.audio_bytes = self.text_bytes = 0

    def _drop_oldest(self) -> None:
        items = self._items
        texts: list[str] = []
        n = 0
        while self.audio_bytes > self.limit and items:
            item = items.popleft()
            if item.__class__ is str:
                texts.append(item)  # type: ignore[arg-type]
                continue
            self.audio_bytes -= len(item)
            n += 1
        items.extendleft(reversed(texts))
        self.dropped += n
        self._unreported += n
