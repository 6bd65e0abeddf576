"""The gets that wait on a queue for an item, first come first served.

A get that finds nothing waits, with a timeout on the queue's clock, for a
new item; a get without a timeout may still wait while the queue reads
items back from its journal, but only for those.  The queue says what a
waiter would get (it alone knows what is at its head); this line keeps
the waiters in order, serves them, times them out, and lets one that gives
up leave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from erq.items import Item


class Waiter:
    """A get that waits for an item.

    Its timeout is one delayed call of its own, cancelled when it is
    served, rather than ``Deferred.addTimeout``: a waiting get served at
    once is the common case of a consumer keeping up, and should cost
    little more than a get that found an item."""

    __slots__ = ("line", "deferred", "open", "peek", "timed", "timer")

    def __init__(self, line: Waiters, open: bool, peek: bool, timed: bool) -> None:
        self.line = line
        self.open = open
        self.peek = peek
        # An untimed waiter waits only for items being read back from the
        # journal, never for new ones.
        self.timed = timed
        self.timer: IDelayedCall | None = None
        self.deferred: Deferred[Item | None] = Deferred(self._cancel)

    def _cancel(self, deferred: Deferred[Item | None]) -> None:
        self.stop_timer()
        self.line.forget(self)

    def stop_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()


def _timed_out(waiter: Waiter) -> None:
    """``waiter`` waited its whole timeout: it leaves with nothing."""
    waiter.timer = None
    waiter.line.forget(waiter)
    waiter.deferred.callback(None)


class Waiters:
    """The waiters of one queue, in the order they came.

    ``on_empty`` is called when a waiter that leaves (timed out or
    cancelled) was the last one.
    """

    def __init__(self, on_empty: Callable[[], None]) -> None:
        self._waiting: deque[Waiter] = deque()
        self._on_empty = on_empty
        self._serving = False

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(
        self, open: bool, peek: bool, timeout: float | None, clock: IReactorTime
    ) -> Deferred[Item | None]:
        """A new waiter at the end of the line; it gets ``None`` after
        ``timeout`` seconds, if it has one."""
        waiter = Waiter(self, open, peek, bool(timeout))
        self._waiting.append(waiter)
        if timeout:
            waiter.timer = clock.callLater(timeout, _timed_out, waiter)
        return waiter.deferred

    def serve(
        self, take: Callable[[bool, bool], Item | None], reading: Callable[[], bool]
    ) -> None:
        """Hand items to waiters, first come first served: ``take`` gives
        the item for a waiter's kind of get (``open``, ``peek``) or
        ``None``; ``reading`` says whether more may come back from the
        journal, for the waiters without a timeout."""
        if self._serving:
            # A waiter's callback came back here; the outer loop goes on.
            return
        self._serving = True
        try:
            waiting = self._waiting
            while waiting:
                waiter = waiting[0]
                item = take(waiter.open, waiter.peek)
                if item is None:
                    if not reading():
                        self.release_untimed()
                    return
                waiting.popleft()
                timer = waiter.timer
                if timer is not None:
                    waiter.timer = None
                    timer.cancel()
                waiter.deferred.callback(item)
        finally:
            self._serving = False

    def release_untimed(self) -> None:
        """Nothing more is coming from the journal: waiters that only
        waited for it get nothing."""
        for waiter in [waiter for waiter in self._waiting if not waiter.timed]:
            self._waiting.remove(waiter)
            waiter.deferred.callback(None)

    def forget(self, waiter: Waiter) -> None:
        """``waiter`` gave up (timed out or cancelled)."""
        try:
            self._waiting.remove(waiter)
        except ValueError:
            return
        if not self._waiting:
            self._on_empty()

    def adopt(self, other: Waiters) -> None:
        """Take over the waiters of ``other``, behind these."""
        for waiter in other._waiting:
            waiter.line = self
        self._waiting.extend(other._waiting)
        other._waiting.clear()
