"""What a queue holds and what it asks of its journal: the two sides share
these, so the journal needs nothing of the queue's own module."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from erq.config import SyncPolicy


class Item:
    """An item: bytes, the client's flags, and when it expires.

    ``expiry`` and ``added`` are seconds on the queue's clock (for a real
    reactor, Unix time); ``expiry`` is ``None`` for an item that never
    expires.  ``id`` is unique and increasing within its queue, so a journal
    can name the item in later records.
    """

    __slots__ = ("id", "data", "flags", "expiry", "added")

    def __init__(
        self, id: int, data: bytes, flags: int, expiry: float | None, added: float
    ) -> None:
        self.id = id
        self.data = data
        self.flags = flags
        self.expiry = expiry
        self.added = added

    def __repr__(self) -> str:
        return f"<Item {self.id} {len(self.data)} bytes flags={self.flags}>"


class QueueJournal(Protocol):
    """What a queue, and the service that owns it, ask of its journal.
    Every call is made on the reactor thread, in the order in which the
    queue changed."""

    def add(self, item: Item, in_memory: bool = True) -> Deferred[None] | None:
        """Record a new item at the tail.  ``in_memory`` is false when the
        queue keeps only its head in memory and drops this item, to be read
        back later with ``read_behind``.  Returns a Deferred that fires once
        the record is durable when the sync policy waits for that, else
        ``None``."""

    def add_many(
        self, items: list[Item], in_memory: list[bool]
    ) -> Deferred[None] | None:
        """``add`` for each item, in order, with one Deferred for them all."""

    def remove(self, item: Item) -> None:
        """Record that a queued or open item is gone for good."""

    def remove_many(self, items: list[Item]) -> None:
        """``remove`` for each item, in order."""

    def open(self, item: Item) -> None:
        """Record that the head item was handed out as an open read."""

    def abort(self, item: Item) -> None:
        """Record that an open item went back to the head of the queue."""

    def flush(self) -> None:
        """Record that every queued (not open) item was dropped."""

    def read_behind(self, max_bytes: int) -> Deferred[list[Item]]:
        """Read the next items that are journaled but not held in memory, in
        queue order, about ``max_bytes`` of them (at least one)."""

    @property
    def size(self) -> int:
        """Bytes of the journal on disk (for stats)."""

    @property
    def sync(self) -> SyncPolicy:
        """When adds are durable; a reload may change it."""

    @sync.setter
    def sync(self, policy: SyncPolicy) -> None: ...

    def erase(self) -> Deferred[None]:
        """The queue is deleted: remove its journal; nothing is recorded
        after this."""
