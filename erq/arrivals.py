"""Items of durable puts, waiting at a queue's tail for the journal.

A put whose journal waits for an fsync answers the client only once the
record is durable, and until then its items must not be handed out: a
reader could otherwise see an item that a crash then loses.  So they wait
here, counted in the queue (its limits and stats see them) but in nobody's
hands.  They are placed in the queue in the order they were put, whatever
order the journal answers in: an arrival durable before the ones ahead of
it waits for them.  If the journal refuses an arrival (the client is told
``SERVER_ERROR``), its items were never in the queue; a flush drops every
arrival still waiting (their records come before the flush's).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from erq.durable import listen
from erq.items import Item


class ArrivalState(enum.Enum):
    WAITING = "waiting"
    STORED = "stored"
    #: Refused by the journal, or flushed while waiting.
    GONE = "gone"


class Arrival:
    """Items of one durable ``put`` (or run of puts) that the journal has
    not made durable yet."""

    __slots__ = ("held", "count", "behind_count", "behind_bytes", "state")

    def __init__(self, items: list[Item], held: list[bool]) -> None:
        self.count = len(items)
        self.state = ArrivalState.WAITING
        if self.count == 1 and len(held) == 1:
            # One set, the commonest arrival: no loops over the items.
            item = items[0]
            if held[0]:
                self.held = [item]
                self.behind_count = self.behind_bytes = 0
            else:
                self.held = []
                self.behind_count = 1
                self.behind_bytes = len(item.data)
            return
        # The items kept in memory, in order; the others are behind.
        self.held = [item for item, h in zip(items, held, strict=True) if h]
        self.behind_count = 0
        self.behind_bytes = 0
        for item, h in zip(items, held, strict=True):
            if not h:
                self.behind_count += 1
                self.behind_bytes += len(item.data)

    @property
    def held_bytes(self) -> int:
        return sum(len(item.data) for item in self.held)


class Arrivals:
    """The arrivals of one queue, oldest first.

    ``place`` is called with the held items of arrivals that are now
    stored, oldest first, whenever some are; ``refused`` with an arrival the
    journal refused, and whether it was still waiting (rather than flushed),
    for the queue to stop counting its items.
    """

    def __init__(
        self,
        place: Callable[[list[list[Item]]], None],
        refused: Callable[[Arrival, bool], None],
    ) -> None:
        #: The arrivals, oldest first: empty when none waits.
        self.arriving: deque[Arrival] = deque()
        self._place = place
        self._on_refused = refused
        #: Items held in memory among the arrivals.
        self.held = 0

    def __bool__(self) -> bool:
        return bool(self.arriving)

    def arrive(
        self, items: list[Item], held: list[bool], durable: Deferred[None] | None
    ) -> bool | Deferred[None]:
        """New items wait at the tail until ``durable`` fires (or, with
        ``None``, until the items before them are durable)."""
        arrival = Arrival(items, held)
        self.arriving.append(arrival)
        self.held += len(arrival.held)
        if durable is None:
            arrival.state = ArrivalState.STORED
            self.settle()
            return True
        listen(durable, self._stored, self._refused, arrival)
        return durable

    def _stored(self, result: object, arrival: Arrival) -> object:
        if arrival.state is ArrivalState.WAITING:
            arrival.state = ArrivalState.STORED
            self.settle()
        return result

    def _refused(self, failure: Failure, arrival: Arrival) -> Failure:
        waiting = arrival.state is ArrivalState.WAITING
        if waiting:
            arrival.state = ArrivalState.GONE
        self._on_refused(arrival, waiting)
        if waiting:
            self.settle()
        return failure

    def settle(self) -> None:
        """Hand the items that are durable, oldest first, to ``place``."""
        arriving = self.arriving
        stored: list[list[Item]] = []
        while arriving and arriving[0].state is not ArrivalState.WAITING:
            arrival = arriving.popleft()
            self.held -= len(arrival.held)
            if arrival.state is ArrivalState.STORED:
                stored.append(arrival.held)
        if stored:
            self._place(stored)

    def drop_all(self) -> None:
        """The queue is flushed: no arrival is placed, now or later."""
        for arrival in self.arriving:
            arrival.state = ArrivalState.GONE
        self.arriving.clear()
        self.held = 0
