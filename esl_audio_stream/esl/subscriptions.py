"""The `event plain` names a connection has asked for, kept so every reconnect subscribes again
(pure: no I/O; the connection sends what this returns)."""

from __future__ import annotations

__all__ = ["BACKGROUND_JOB", "Subscriptions"]

BACKGROUND_JOB = "BACKGROUND_JOB"


class Subscriptions:
    """Remembered ``event plain`` names, so every reconnect can send them again.

    Kept as plain names + custom subclasses because on the wire every token after ``CUSTOM`` is a
    subclass: a merged list must be re-ordered, not just concatenated.
    """

    def __init__(self) -> None:
        self.events: list[str] = [BACKGROUND_JOB]  # bgapi needs it, always
        self.custom = False
        self.subclasses: list[str] = []
        self.version = 0  # bumped by every change: the handshake re-sends until it is stable

    def add(self, names: tuple[str, ...]) -> list[str]:
        """Remember names; return the ``event plain`` tokens for the new ones only."""
        new_events: list[str] = []
        new_subclasses: list[str] = []
        new_custom = False
        after_custom = False
        for token in (t for name in names for t in name.split()):
            if token == "CUSTOM":
                after_custom = True
                if not self.custom:
                    self.custom = new_custom = True
            elif after_custom or "::" in token:
                if token not in self.subclasses:
                    self.subclasses.append(token)
                    new_subclasses.append(token)
            elif token not in self.events:
                self.events.append(token)
                new_events.append(token)
        if new_subclasses and not self.custom:
            self.custom = new_custom = True
        tokens = new_events
        if new_custom or new_subclasses:
            tokens = [*tokens, "CUSTOM", *new_subclasses]
        if tokens:
            self.version += 1
        return tokens

    def all(self) -> list[str]:
        if self.custom:
            return [*self.events, "CUSTOM", *self.subclasses]
        return list(self.events)
