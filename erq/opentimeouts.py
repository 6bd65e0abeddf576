"""When each open read of a queue is due back under ``open_timeout``, and
the one timer that takes the late ones back.

A queue may hold thousands of open reads, most of them closed well within
their time, so this costs O(1) per read opened or ended and keeps one
delayed call per queue, whatever the number of reads: not one per read,
which would fill the reactor's heap with calls made only to be cancelled.
The reads are kept in the order they were opened, and since they share
the queue's ``open_timeout`` they are due in that order too; the timer is
set for the oldest.  A read that ends early is just dropped from the
order: the timer then fires for nothing, at most once, and is set again
for the new oldest.  A reload that changes ``open_timeout`` would break
that order, so reads are kept apart by the timeout they were opened with,
each group in order, and the timer is set for the earliest of the groups'
oldest.  Once no read is timed the timer is cancelled, so that a queue
without open reads leaves nothing pending in the reactor.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

from erq.deadline import DeadlineTimer
from erq.items import Item

#: Who holds an open read, told when it is taken back.
H = TypeVar("H")


class OpenTimeouts(Generic[H]):
    """The open reads of one queue that have a deadline, with their
    holders; ``take_back`` is called with the late ones, ``(item,
    holder)`` in the order they were opened, once they are forgotten
    here."""

    def __init__(
        self,
        clock: IReactorTime,
        take_back: Callable[[list[tuple[Item, H]]], None],
    ) -> None:
        self._clock = clock
        self._take_back = take_back
        # By the timeout they were opened with, each in the order opened:
        # item id to (deadline, item, holder).  A group left empty stays
        # until the timer fires: the next read likely has the same timeout.
        self._due: dict[float, OrderedDict[int, tuple[float, Item, H]]] = {}
        #: How many reads are timed.
        self.count = 0
        self._timer = DeadlineTimer(clock, self._fire)

    def __len__(self) -> int:
        return self.count

    @property
    def next_deadline(self) -> float | None:
        """When the timer fires next, if it is set."""
        return self._timer.deadline

    def start(self, item: Item, timeout: float, holder: H) -> None:
        """``item`` was just handed out to ``holder`` as an open read: it is
        due back ``timeout`` seconds from now."""
        deadline = self._clock.seconds() + timeout
        reads = self._due.get(timeout)
        if reads is None:
            reads = self._due[timeout] = OrderedDict()
        reads[item.id] = (deadline, item, holder)
        self.count += 1
        if deadline < self._timer.at:
            self._timer.set(deadline)

    def stop(self, item: Item) -> None:
        """``item`` is no longer open (confirmed, aborted, or given back)."""
        if not self.count:
            return
        item_id = item.id
        for reads in self._due.values():
            if reads.pop(item_id, None) is not None:
                self.count -= 1
                if not self.count:
                    self._timer.cancel()
                return

    def clear(self) -> None:
        """Forget every read (the queue is deleted)."""
        self._due.clear()
        self.count = 0
        self._timer.cancel()

    def _fire(self, planned: float) -> None:
        """Take back the late reads (the timer was set for ``planned``, the
        oldest's deadline), and set the timer for the next."""
        now = self._clock.seconds()
        late: list[tuple[float, Item, H]] = []
        earliest = math.inf
        for timeout, reads in list(self._due.items()):
            while reads:
                entry = next(iter(reads.values()))
                if entry[0] > now:
                    earliest = min(earliest, entry[0])
                    break
                reads.popitem(last=False)
                late.append(entry)
            if not reads:
                del self._due[timeout]
        self.count -= len(late)
        # In the order opened, across timeouts too.
        late.sort(key=_deadline)
        # Set again before the late ones go back: a waiter they are handed
        # to may open them again at once.
        if earliest < math.inf:
            self._timer.set(earliest)
        if late:
            self._take_back([(item, holder) for _, item, holder in late])


def _deadline(entry: tuple[float, Item, object]) -> float:
    return entry[0]
