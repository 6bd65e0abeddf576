"""The reads a queue has handed out open, until each is confirmed or aborted.

An open read (``get q/open``) takes the head item out of the queue without
ending it: the item is its holder's (a connection's) until the holder
confirms it, and it is gone for good, or aborts it, and it goes back to
the head, before everything still queued, where the next get finds it.
The holder keeps the items; the queue keeps only their count and bytes,
which are neither queued nor free to go (open reads do not count toward
``max_items``, and keep a queue from being idle).

With an ``open_timeout``, a read not ended within it is taken back as an
abort puts it, its holder told first so that it forgets the item; the
reads are timed together on one timer (`erq.opentimeouts`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from erq.holding import Holding
from erq.items import Item
from erq.opentimeouts import OpenTimeouts

if TYPE_CHECKING:
    from erq.queue import Queue

#: What the holder of an open read is told when its queue takes the read
#: back for its ``open_timeout``: the queue and the item.
TakenBack = Callable[["Queue", Item], None]


class OpenReads:
    """The open reads of ``queue``, whose items were taken out of
    ``holding``: counted as the queue hands them out (``opened``), and
    ended by their holders with ``confirm`` or ``abort``.  Ending one is a
    change of the queue, recorded in its journal; an aborted item goes back
    to ``holding`` and ``serve`` hands it to a waiter."""

    def __init__(
        self,
        queue: Queue,
        clock: IReactorTime,
        holding: Holding,
        serve: Callable[[], None],
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._holding = holding
        self._serve = serve
        self._timeouts: OpenTimeouts[TakenBack] = OpenTimeouts(clock, self._take_back)
        #: Reads open now, and the bytes of their items.
        self.count = 0
        self.bytes = 0
        #: Reads begun, and those aborted (or taken back), since the start.
        self.transactions = 0
        self.canceled = 0

    def opened(self, item: Item) -> None:
        """``item`` was just handed out as an open read."""
        self.count += 1
        self.bytes += len(item.data)
        self.transactions += 1

    def time_open(self, item: Item, taken_back: TakenBack) -> None:
        """Start the clock of an open read just handed out, if the queue
        has an ``open_timeout``: unless confirmed or aborted within it, the
        item goes back to the head as an abort puts it, and its holder is
        told with ``taken_back(queue, item)`` first, to forget it.  The
        timeout is the one set now; a reload changes it for later reads."""
        timeout = self._queue.settings.open_timeout
        if timeout is not None:
            self._timeouts.start(item, timeout, taken_back)

    def _take_back(self, late: list[tuple[Item, TakenBack]]) -> None:
        """Open reads outlived their ``open_timeout``."""
        queue = self._queue
        for item, taken_back in late:
            taken_back(queue, item)
        self.abort([item for item, _ in late])

    def confirm(self, item: Item) -> None:
        """An open read is done with: the item is gone for good."""
        queue = self._queue
        # A confirmation is a command on the queue (for max_queue_age).
        queue.touched = self._clock.seconds()
        timeouts = self._timeouts
        if timeouts.count:
            timeouts.stop(item)
        self.count -= 1
        self.bytes -= len(item.data)
        queue.removed_items += 1
        journal = queue.journal
        if journal is not None:
            journal.remove(item)

    def abort(self, items: list[Item]) -> None:
        """Open reads go back to the head, keeping their order."""
        timeouts = self._timeouts
        holding = self._holding
        journal = self._queue.journal
        for item in reversed(items):
            if timeouts.count:
                timeouts.stop(item)
            self.count -= 1
            self.bytes -= len(item.data)
            self.canceled += 1
            holding.push_back(item)
            if journal is not None:
                journal.abort(item)
        self._serve()

    def close(self) -> None:
        """The queue is deleted: no read is timed any longer."""
        self._timeouts.clear()
