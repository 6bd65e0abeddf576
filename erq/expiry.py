"""A queue's expired items: never handed out, dropped, counted, passed on.

An item may expire (a client's ``exptime``, capped by the queue's
``max_age`` as it is put); once its time is up it is never handed out.
Expired items are dropped from the head as gets reach them, by the
server's periodic sweep from the head of a queue that nobody reads (where
they gather), and from anywhere in memory by ``flush_expired``.  Each one
dropped is recorded in the journal as removed (unless the journal never
had it: an item put already expired), counted, and handed to ``sink``,
which moves it to another queue for ``expire_to_queue``.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from erq.holding import Holding
from erq.items import Item


class Expiry:
    """The expiry of the items in ``holding``, by ``clock``; ``remove``
    records the end of each expired item in the queue's journal."""

    def __init__(
        self,
        clock: IReactorTime,
        holding: Holding,
        remove: Callable[[Item], None],
    ) -> None:
        self._clock = clock
        self._holding = holding
        self._remove = remove
        #: Called with each item that expires, for ``expire_to_queue``.
        self.sink: Callable[[Item], None] | None = None
        #: Items expired since the start.
        self.count = 0

    def drop_head(self, limit: int = -1) -> int:
        """Drop the expired items at the head, at most ``limit`` (-1: all);
        how many there were.  The queue's periodic sweep."""
        now = self._clock.seconds()
        return self._holding.drop_expired_head(now, limit, self.expire)

    def flush_expired(self, limit: int | None = None) -> int:
        """Drop the expired items held in memory (at most ``limit``)."""
        expired = self._holding.remove_expired(self._clock.seconds(), limit)
        for item in expired:
            self.expire(item)
        return len(expired)

    def expire(self, item: Item, journaled: bool = True) -> None:
        """``item``, out of the queue, has expired."""
        self.count += 1
        if journaled:
            self._remove(item)
        if self.sink is not None:
            self.sink(item)
