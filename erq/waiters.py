"""The gets that wait on a queue for an item, first come first served.

A get that finds nothing waits, with a timeout on the queue's clock, for a
new item; a get without a timeout may still wait while the queue reads
items back from its journal, but only for those.  The queue says what a
waiter would get (it alone knows what is at its head); this line keeps
the waiters in order, serves them, times them out, and lets one that gives
up leave.

A waiting get served at once is the common case of a consumer keeping up,
and should cost little more than a get that found an item.  So a waiter
is one small object holding its deadline and the plain callable that
answers it (a connection's reply writer; ``wait`` wraps a Deferred's
``callback`` for callers that want one), and its timeout is an entry in
``Deadlines``, the heap of every timed waiter on one clock (a server's
queues share one), with one timer for the earliest: not a delayed call
per waiter, made and cancelled.  The timer is left set when its waiter is
served (it then fires once for nothing and is set again for the next
deadline) and moved earlier only by a waiter due before it.  A waiter
that leaves early stays in the heap, marked, until it reaches the top or
the heap is compacted.

Late waiters are answered one at a time, earliest deadline first (the
first come among equals), each answer's consequences (the requests its
client pipelined behind it) before the next: as if each waiter had its
own delayed call.  When the clock jumps past several deadlines, a waiter
is left for a later turn if another call of the clock is due before it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from erq.deadline import DeadlineTimer
from erq.items import Item

#: Once this many entries of waiters gone are in the heap, and more of
#: them than of waiters there, the heap is rebuilt without them.
COMPACT_AT = 64

#: How a waiter is answered: with its item, or ``None`` for nothing.
Deliver = Callable[[Item | None], object]


class Waiter:
    """A get that waits for an item; ``cancel`` makes it leave the line
    unanswered (its connection went away)."""

    __slots__ = ("line", "deliver", "open", "peek", "deadline", "waiting")

    def __init__(
        self, line: Waiters, deliver: Deliver, open: bool, peek: bool, deadline: float
    ) -> None:
        self.line = line
        self.deliver = deliver
        self.open = open
        self.peek = peek
        #: When it times out; an untimed waiter (``math.inf``) waits only
        #: for items being read back from the journal, never for new ones.
        self.deadline = deadline
        #: Still in the line: neither served, timed out nor cancelled.
        self.waiting = True

    def cancel(self) -> None:
        if self.waiting:
            self.line.forget(self)


class Deadlines:
    """The deadlines of the timed waiters on one clock, and its one timer."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        # (deadline, order of coming, waiter), with waiters gone marked.
        self._heap: list[tuple[float, int, Waiter]] = []
        self._count = 0
        #: Timed waiters still waiting.
        self.live = 0
        self._timer = DeadlineTimer(clock, self._fire)

    @property
    def next_deadline(self) -> float | None:
        """When the timer fires next, if it is set."""
        return self._timer.deadline

    def add(self, waiter: Waiter) -> None:
        self._count += 1
        heapq.heappush(self._heap, (waiter.deadline, self._count, waiter))
        self.live += 1
        if waiter.deadline < self._timer.at:
            self._timer.set(waiter.deadline)

    def gone(self, waiter: Waiter) -> None:
        """A timed waiter left before its deadline (served or cancelled,
        and marked so): its entry goes now if it is on top, else later."""
        self.live -= 1
        heap = self._heap
        if not self.live:
            heap.clear()
            return
        if heap[0][2] is waiter:
            heapq.heappop(heap)
            while heap and not heap[0][2].waiting:
                heapq.heappop(heap)
        elif len(heap) - self.live > max(COMPACT_AT, self.live):
            # In place: _fire may be walking it.
            heap[:] = [entry for entry in heap if entry[2].waiting]
            heapq.heapify(heap)

    def stop(self) -> None:
        """Leave no timer in the reactor (the server stops); waiters that
        come later set it again, and those still here are not timed."""
        self._heap.clear()
        self.live = 0
        self._timer.cancel()

    def _fire(self, planned: float) -> None:
        """Answer the late waiters, one at a time, and set the timer for
        the next; it was set for ``planned``."""
        heap = self._heap
        clock = self._clock
        while heap:
            deadline, _, waiter = heap[0]
            if not waiter.waiting:
                heapq.heappop(heap)
                continue
            if deadline > clock.seconds():
                break
            if deadline > planned and self._other_call_before(deadline):
                break
            heapq.heappop(heap)
            self.live -= 1
            waiter.line.time_out(waiter)
        if heap and heap[0][0] < self._timer.at:
            self._timer.set(heap[0][0])

    def _other_call_before(self, deadline: float) -> bool:
        """Whether a call of the clock other than this timer is due before
        ``deadline``, a waiter the clock went past: it runs first, as it
        would have before a delayed call of that waiter's own."""
        mine = self._timer.call
        return any(
            call is not mine and call.active() and call.getTime() < deadline
            for call in self._clock.getDelayedCalls()
        )


class Waiters:
    """The waiters of one queue, in the order they came, timed on ``clock``
    (through ``deadlines``, shared by the queues of a server; a line of its
    own if not given).

    ``on_empty`` is called when a waiter that leaves (timed out or
    cancelled) was the last one.
    """

    def __init__(
        self,
        clock: IReactorTime,
        on_empty: Callable[[], None],
        deadlines: Deadlines | None = None,
    ) -> None:
        self._clock = clock
        self.deadlines = deadlines if deadlines is not None else Deadlines(clock)
        #: The waiters, in order.  Always the same deque, so that the queue
        #: tests whether anyone waits without a call.
        self.waiting: deque[Waiter] = deque()
        self._on_empty = on_empty
        self._serving = False

    def __len__(self) -> int:
        return len(self.waiting)

    @property
    def next_deadline(self) -> float | None:
        """When the timer of these waiters fires next, if it is set."""
        return self.deadlines.next_deadline

    def wait_for(
        self,
        deliver: Deliver,
        open: bool,
        peek: bool,
        timeout: float | None,
        now: float | None = None,
    ) -> Waiter:
        """A new waiter at the end of the line, answered by a call of
        ``deliver`` with its item, or with ``None`` after ``timeout``
        seconds (from ``now``, the clock's time) if it has one: the
        waiter, to cancel."""
        if not timeout:
            waiter = Waiter(self, deliver, open, peek, math.inf)
            self.waiting.append(waiter)
            return waiter
        deadline = (self._clock.seconds() if now is None else now) + timeout
        waiter = Waiter(self, deliver, open, peek, deadline)
        self.waiting.append(waiter)
        self.deadlines.add(waiter)
        return waiter

    def wait(
        self, open: bool, peek: bool, timeout: float | None
    ) -> Deferred[Item | None]:
        """``wait_for``, answered through a Deferred; cancelling it makes
        the waiter leave."""
        deferred: Deferred[Item | None] = Deferred(lambda _: waiter.cancel())
        waiter = self.wait_for(deferred.callback, open, peek, timeout)
        return deferred

    def serve(
        self, take: Callable[[bool, bool], Item | None], reading: Callable[[], bool]
    ) -> None:
        """Hand items to waiters, first come first served: ``take`` gives
        the item for a waiter's kind of get (``open``, ``peek``) or
        ``None``; ``reading`` says whether more may come back from the
        journal, for the waiters without a timeout."""
        if self._serving:
            # A waiter's answer came back here; the outer loop goes on.
            return
        self._serving = True
        try:
            waiting = self.waiting
            while waiting:
                waiter = waiting[0]
                item = take(waiter.open, waiter.peek)
                if item is None:
                    if not reading():
                        self.release_untimed()
                    return
                waiting.popleft()
                waiter.waiting = False
                if waiter.deadline != math.inf:
                    self.deadlines.gone(waiter)
                waiter.deliver(item)
        finally:
            self._serving = False

    def release_untimed(self) -> None:
        """Nothing more is coming from the journal: waiters that only
        waited for it get nothing."""
        released = [w for w in self.waiting if w.deadline == math.inf]
        if not released:
            return
        for waiter in released:
            self.waiting.remove(waiter)
            waiter.waiting = False
        for waiter in released:
            waiter.deliver(None)

    def forget(self, waiter: Waiter) -> None:
        """``waiter`` gave up (cancelled)."""
        if not waiter.waiting:
            return
        waiter.waiting = False
        self.waiting.remove(waiter)
        if waiter.deadline != math.inf:
            deadlines = self.deadlines
            deadlines.gone(waiter)
            if not deadlines.live:
                # Nobody is timed: nothing is left in the reactor.
                deadlines.stop()
        if not self.waiting:
            self._on_empty()

    def time_out(self, waiter: Waiter) -> None:
        """``waiter``'s deadline came (its entry is out of the heap)."""
        waiter.waiting = False
        self.waiting.remove(waiter)
        if not self.waiting:
            self._on_empty()
        waiter.deliver(None)

    def stop(self) -> None:
        """Leave no timer in the reactor (the server stops)."""
        self.deadlines.stop()

    def adopt(self, other: Waiters) -> None:
        """Take over the waiters of ``other``, behind these, with their
        deadlines."""
        moved = list(other.waiting)
        other.waiting.clear()
        for waiter in moved:
            waiter.line = self
        self.waiting.extend(moved)
        if other.deadlines is self.deadlines:
            return
        for waiter in moved:
            if waiter.deadline != math.inf:
                waiter.waiting = False
                other.deadlines.gone(waiter)
                waiter.waiting = True
                self.deadlines.add(waiter)
        if not other.deadlines.live:
            other.deadlines.stop()
