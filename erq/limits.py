"""A queue's limits: refusing a put, or discarding the oldest items for it.

``max_items`` and ``max_size`` bound what a queue holds (open reads do not
count).  A put that would break them is refused, unless the queue has
``discard_old_when_full``: then its oldest items are dropped to make room,
as a get would take them, and counted as discarded.  An item that would not
fit in the empty queue is refused all the same, and the queue keeps what it
has.

The oldest items are not always there to drop: a journaled queue leaves
those beyond ``max_memory_size`` on disk and reads them back as its head
drains.  When they are all that stands in the way, the new item is taken
at once and the queue is *overfull*: it asks for its oldest items back,
and drops as many as the new items displaced once they are in memory
(`Limits.trim`), so that a client never waits on the disk for a put that
the limits would let in.
"""

from __future__ import annotations

from collections.abc import Callable

from erq.config import QueueSettings
from erq.holding import Holding
from erq.items import Item


class Limits:
    """Where the items of ``holding`` are kept within their queue's
    ``max_items`` and ``max_size``; ``discard`` is told of each item
    dropped for that (for the journal).  The settings are handed to each
    call, as they are then (a reload may change them)."""

    def __init__(self, holding: Holding, discard: Callable[[Item], None]) -> None:
        self._holding = holding
        self._discard = discard
        #: Over the limits while the oldest items, to be dropped, are on disk.
        self.overfull = False
        #: Items dropped to make room (``discard_old_when_full``).
        self.discarded = 0

    def make_room(self, settings: QueueSettings, size: int) -> bool:
        """Whether a new item of ``size`` bytes may be put, once the oldest
        items are dropped for it if the settings say so."""
        max_items = settings.max_items
        max_size = settings.max_size
        holding = self._holding

        def full() -> bool:
            return settings.over_limits(
                holding.count + 1, holding.mem_bytes + holding.behind_bytes + size
            )

        if not full():
            return True
        if not settings.discard_old_when_full:
            return False
        if max_items == 0 or (max_size is not None and size > max_size):
            # It would not fit in the empty queue: keep what is there.
            return False
        self._discard_oldest(full)
        if full() and holding.behind_items:
            # The oldest items are still on disk: take the new one now and
            # drop as many of them as it displaced once they are read back.
            self.overfull = True
            holding.read_back()
            return True
        return not full()

    def trim(self, settings: QueueSettings) -> None:
        """Drop what an overfull queue took in, now that more of its oldest
        items are back in memory."""
        holding = self._holding

        def over() -> bool:
            return settings.over_limits(
                holding.count, holding.mem_bytes + holding.behind_bytes
            )

        self._discard_oldest(over)
        self.overfull = over() and holding.behind_items > 0
        if self.overfull:
            holding.read_back()

    def _discard_oldest(self, full: Callable[[], bool]) -> None:
        holding = self._holding
        while full() and holding.items:
            item = holding.pop()
            self.discarded += 1
            self._discard(item)
