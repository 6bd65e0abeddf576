"""One named FIFO of items: waiting getters, open reads, expiry and limits."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from erq.config import QueueSettings
from erq.items import Item, QueueJournal

log = Logger()


class _Waiter:
    """A get that waits for an item: served first-come first-served."""

    __slots__ = ("queue", "deferred", "open", "peek", "timed")

    def __init__(self, queue: Queue, open: bool, peek: bool, timed: bool) -> None:
        self.queue = queue
        self.open = open
        self.peek = peek
        # An untimed waiter waits only for items being read back from the
        # journal, never for new ones.
        self.timed = timed
        self.deferred: Deferred[Item | None] = Deferred(self._cancel)

    def _cancel(self, deferred: Deferred[Item | None]) -> None:
        self.queue._forget(self)


def _timed_out(result: object, timeout: float) -> None:
    return None


class _Arrival:
    """Items of one durable ``put`` (or run of puts) that the journal has
    not made durable yet.  They are counted in the queue but handed to
    nobody until then; if the journal fails they are not in the queue at
    all (the client was told ``SERVER_ERROR``)."""

    __slots__ = ("held", "count", "behind_count", "behind_bytes", "state")

    WAITING = 0
    STORED = 1
    #: Refused by the journal, or flushed while waiting.
    GONE = 2

    def __init__(self, held: list[Item], count: int) -> None:
        # The items kept in memory, in order; the others are behind.
        self.held = held
        self.count = count
        self.behind_count = 0
        self.behind_bytes = 0
        self.state = _Arrival.WAITING


class Queue:
    """A FIFO of items with waiting getters, open reads, expiry and limits.

    Pure logic: time comes from ``clock`` and every change is told to
    ``journal`` (when there is one) in the order it happens.  Open reads are
    owned by whoever asked for them; the queue only counts them and takes
    them back with ``confirm`` or ``abort``.
    """

    def __init__(
        self,
        name: str,
        clock: IReactorTime,
        settings: QueueSettings | None = None,
        journal: QueueJournal | None = None,
    ) -> None:
        self.name = name
        self.settings = settings if settings is not None else QueueSettings()
        self.journal = journal
        self._clock = clock
        self._items: deque[Item] = deque()
        # Items at the tail waiting for the journal, oldest first.
        self._arriving: deque[_Arrival] = deque()
        self._arriving_held = 0
        self._waiters: deque[_Waiter] = deque()
        self._next_id = 1
        self._refilling = False
        self._serving = False
        # Over its limits while the oldest items, to be dropped, are on disk.
        self._overfull = False
        #: Called with each item that expires, for ``expire_to_queue``.
        self.expired_sink: Callable[[Item], None] | None = None
        #: Called when the last waiter leaves, for queues that exist only
        #: because someone waits for them.
        self.on_no_waiters: Callable[[Queue], None] | None = None
        self.deleted = False

        self.mem_bytes = 0
        self.behind_items = 0
        self.behind_bytes = 0
        self.open_items = 0
        self.open_bytes = 0
        self.total_items = 0
        self.expired_items = 0
        self.discarded = 0
        self.age = 0.0
        self.transactions = 0
        self.canceled_transactions = 0
        self.total_flushes = 0
        self.touched = clock.seconds()

    # -- state -----------------------------------------------------------

    @property
    def items(self) -> int:
        """Items queued, in memory or behind it (open reads not counted),
        including those still being made durable."""
        return len(self._items) + self._arriving_held + self.behind_items

    @property
    def queued_bytes(self) -> int:
        return self.mem_bytes + self.behind_bytes

    @property
    def mem_items(self) -> int:
        return len(self._items) + self._arriving_held

    @property
    def waiters(self) -> int:
        return len(self._waiters)

    def restore(
        self, items: list[Item], behind_items: int, behind_bytes: int, next_id: int
    ) -> None:
        """Take the state a journal replayed, before any other use."""
        self._items.extend(items)
        self.mem_bytes = sum(len(item.data) for item in items)
        self.behind_items = behind_items
        self.behind_bytes = behind_bytes
        self._next_id = max(self._next_id, next_id)

    def is_idle_since(self, when: float) -> bool:
        """Empty, nothing open or waiting, and untouched since ``when``."""
        return (
            not self._items
            and not self._arriving
            and not self.behind_items
            and not self.open_items
            and not self._waiters
            and self.touched <= when
        )

    # -- adding ----------------------------------------------------------

    def put(
        self, data: bytes, flags: int = 0, expiry: float | None = None
    ) -> bool | Deferred[None]:
        """Add an item at the tail.

        Returns ``False`` when the queue refuses it (full, or the item is too
        large), ``True`` when it is stored, or a Deferred that fires once the
        journal has made it durable.
        """
        settings = self.settings
        size = len(data)
        now = self._clock.seconds()
        self.touched = now
        if settings.max_item_size is not None and size > settings.max_item_size:
            return False
        expiry = self._expiry(expiry, now)
        if (
            settings.max_items is not None or settings.max_size is not None
        ) and not self._make_room(size):
            return False
        item = Item(self._next_id, data, flags, expiry, now)
        self._next_id += 1
        self.total_items += 1
        if expiry is not None and expiry <= now:
            # Stored as asked, but never handed out.
            self._expire(item, journaled=False)
            return True
        in_memory = self._reserve(item)
        durable = None if self.journal is None else self.journal.add(item, in_memory)
        if durable is None and not self._arriving:
            if in_memory:
                self._items.append(item)
                if self._waiters:
                    self._serve()
            return True
        return self._arrive([item], [in_memory], durable)

    def put_many(
        self, datas: list[bytes], flags: int = 0, expiry: float | None = None
    ) -> tuple[int, Deferred[None] | None] | None:
        """``put`` for several items in a row, journaled together: how many
        were stored (all of them), and a Deferred that fires once they are
        durable, if the journal makes them wait.  ``None``, and nothing
        done, where a put of each could be refused or handed straight to a
        waiter (limits, waiters, an item expired already): put them one by
        one then."""
        settings = self.settings
        if (
            self._waiters
            or settings.max_items is not None
            or settings.max_size is not None
            or settings.max_item_size is not None
        ):
            return None
        now = self._clock.seconds()
        expiry = self._expiry(expiry, now)
        if expiry is not None and expiry <= now:
            return None
        self.touched = now
        items: list[Item] = []
        held: list[bool] = []
        for data in datas:
            item = Item(self._next_id, data, flags, expiry, now)
            self._next_id += 1
            items.append(item)
            held.append(self._reserve(item))
        self.total_items += len(items)
        durable = None if self.journal is None else self.journal.add_many(items, held)
        if durable is None and not self._arriving:
            self._items.extend(item for item, h in zip(items, held, strict=True) if h)
            return len(items), None
        result = self._arrive(items, held, durable)
        return len(items), result if isinstance(result, Deferred) else None

    def _expiry(self, expiry: float | None, now: float) -> float | None:
        """An item's expiry, ``max_age`` taken into account."""
        max_age = self.settings.max_age
        if max_age is None:
            return expiry
        limit = now + max_age
        return limit if expiry is None else min(expiry, limit)

    def _reserve(self, item: Item) -> bool:
        """Count a new item at the tail: held in memory (``True``), or only
        counted, its data left to the journal.  The caller puts a held item
        in place."""
        size = len(item.data)
        if self._keeps_in_memory(size):
            self.mem_bytes += size
            return True
        assert self.journal is not None
        self.behind_items += 1
        self.behind_bytes += size
        return False

    def _keeps_in_memory(self, size: int) -> bool:
        if self.journal is None:
            return True
        if self.behind_items:
            return False
        return self.mem_bytes + size <= self.settings.max_memory_size or not (
            self._items or self._arriving_held
        )

    def _arrive(
        self, items: list[Item], held: list[bool], durable: Deferred[None] | None
    ) -> bool | Deferred[None]:
        """New items wait at the tail until ``durable`` fires (or, with
        ``None``, until the items before them are durable)."""
        arrival = _Arrival(
            [item for item, h in zip(items, held, strict=True) if h], len(items)
        )
        for item, h in zip(items, held, strict=True):
            if not h:
                arrival.behind_count += 1
                arrival.behind_bytes += len(item.data)
        self._arriving.append(arrival)
        self._arriving_held += len(arrival.held)
        if durable is None:
            arrival.state = _Arrival.STORED
            self._settle()
            return True
        durable.addCallbacks(
            self._stored, self._refused, callbackArgs=(arrival,), errbackArgs=(arrival,)
        )
        return durable

    def _stored(self, result: object, arrival: _Arrival) -> object:
        if arrival.state == _Arrival.WAITING:
            arrival.state = _Arrival.STORED
            self._settle()
        return result

    def _refused(self, failure: Failure, arrival: _Arrival) -> Failure:
        """The journal could not make the items durable: they were never
        in the queue (and the journal records as much)."""
        self.total_items -= arrival.count
        if arrival.state == _Arrival.WAITING:
            arrival.state = _Arrival.GONE
            self.mem_bytes -= sum(len(item.data) for item in arrival.held)
            self.behind_items -= arrival.behind_count
            self.behind_bytes -= arrival.behind_bytes
            self._settle()
        return failure

    def _settle(self) -> None:
        """Put the items that are durable, oldest first, in place."""
        arriving = self._arriving
        placed = False
        while arriving and arriving[0].state != _Arrival.WAITING:
            arrival = arriving.popleft()
            self._arriving_held -= len(arrival.held)
            if arrival.state == _Arrival.STORED and not self.deleted:
                self._items.extend(arrival.held)
                placed = True
        if placed and self._waiters:
            self._serve()

    def _make_room(self, size: int) -> bool:
        settings = self.settings
        max_items = settings.max_items
        max_size = settings.max_size

        def full() -> bool:
            return (max_items is not None and self.items >= max_items) or (
                max_size is not None and self.queued_bytes + size > max_size
            )

        if not full():
            return True
        if not settings.discard_old_when_full:
            return False
        if max_items == 0 or (max_size is not None and size > max_size):
            # It would not fit in the empty queue: keep what is there.
            return False
        self._discard_oldest(full)
        if full() and self.behind_items:
            # The oldest items are still on disk: take the new one now and
            # drop as many of them as it displaced once they are read back.
            self._overfull = True
            self._refill()
            return True
        return not full()

    def _discard_oldest(self, full: Callable[[], bool]) -> None:
        while full() and self._items:
            item = self._pop()
            self.discarded += 1
            self._record_remove(item)

    def _trim(self) -> None:
        """Drop what a full queue took in while its oldest were on disk."""
        settings = self.settings
        max_items = settings.max_items
        max_size = settings.max_size

        def over() -> bool:
            return (max_items is not None and self.items > max_items) or (
                max_size is not None and self.queued_bytes > max_size
            )

        self._discard_oldest(over)
        self._overfull = over() and self.behind_items > 0
        if self._overfull:
            self._refill()

    # -- taking ----------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        open: bool = False,
        peek: bool = False,
    ) -> Item | None | Deferred[Item | None]:
        """Hand out the head item (or show it, with ``peek``).

        With nothing to hand out, returns ``None`` at once when ``timeout``
        is ``None`` or 0, or else a Deferred that fires with an item when one
        arrives, or with ``None`` after ``timeout`` seconds.  A Deferred may
        be returned without a timeout too, while the queue reads items back
        from its journal.
        """
        self.touched = self._clock.seconds()
        # First come, first served: while waiters are being handed items (a
        # waiter's client runs its next requests from inside ``_serve``), a
        # later get does not take what is theirs.
        item = None if self._waiters and not peek else self._take(open, peek)
        if item is not None:
            return item
        if not timeout and not self.behind_items:
            return None
        waiter = _Waiter(self, open, peek, bool(timeout))
        self._waiters.append(waiter)
        deferred = waiter.deferred
        if timeout:
            deferred.addTimeout(timeout, self._clock, onTimeoutCancel=_timed_out)
        return deferred

    def take_many(self, count: int, max_bytes: int) -> tuple[list[Item], bool]:
        """What ``count`` gets without a timeout would hand out one after
        the other, stopping once ``max_bytes`` of data are taken.  Returns
        the items, and whether the gets after them answer "nothing" at once
        (``False``: they may wait, for items read back from the journal, or
        ``max_bytes`` stopped the run)."""
        self.touched = self._clock.seconds()
        items: list[Item] = []
        if self._waiters:
            # A get without a timeout does not take what waiters wait for.
            return items, not self.behind_items
        taken = 0
        rest_empty = True
        while len(items) < count:
            if taken >= max_bytes:
                rest_empty = False
                break
            if self._head() is None:
                rest_empty = not self.behind_items
                break
            item = self._pop()
            items.append(item)
            taken += len(item.data)
        if items:
            self.age = self.touched - items[-1].added
            if self.journal is not None:
                self.journal.remove_many(items)
        return items, rest_empty

    def _head(self) -> Item | None:
        """The head item once expired ones are dropped; with nothing in
        memory, ``None``, and the journal is asked for more."""
        items = self._items
        if items and items[0].expiry is not None:
            self._drop_expired_head()
        if not items:
            self._refill()
            return None
        return items[0]

    def _take(self, open: bool, peek: bool) -> Item | None:
        head = self._head()
        if head is None or peek:
            return head
        item = self._pop()
        self.age = self._clock.seconds() - item.added
        if open:
            self.open_items += 1
            self.open_bytes += len(item.data)
            self.transactions += 1
            if self.journal is not None:
                self.journal.open(item)
        else:
            self._record_remove(item)
        return item

    def _pop(self) -> Item:
        item = self._items.popleft()
        self.mem_bytes -= len(item.data)
        if self.behind_items and self.mem_bytes < self.settings.max_memory_size // 2:
            self._refill()
        return item

    def _drop_expired_head(self, limit: int = -1) -> int:
        """Drop expired items at the head, at most ``limit`` (-1: all)."""
        items = self._items
        now = self._clock.seconds()
        dropped = 0
        while items and dropped != limit:
            expiry = items[0].expiry
            if expiry is None or expiry > now:
                break
            self._expire(self._pop())
            dropped += 1
        return dropped

    def sweep(self, limit: int) -> int:
        """The periodic sweep: drop up to ``limit`` expired items from the
        head, where expired items gather in a queue that nobody reads."""
        return self._drop_expired_head(limit)

    def _serve(self) -> None:
        """Hand items to waiters, first come first served."""
        if self._serving:
            # A waiter's callback came back here; the outer loop goes on.
            return
        self._serving = True
        try:
            waiters = self._waiters
            while waiters:
                waiter = waiters[0]
                item = self._take(waiter.open, waiter.peek)
                if item is None:
                    if not self._refilling:
                        self._release_untimed()
                    return
                waiters.popleft()
                waiter.deferred.callback(item)
        finally:
            self._serving = False

    def _release_untimed(self) -> None:
        """Nothing more is coming from the journal: waiters that only
        waited for it get nothing."""
        for waiter in [waiter for waiter in self._waiters if not waiter.timed]:
            self._waiters.remove(waiter)
            waiter.deferred.callback(None)

    def _forget(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        if not self._waiters and self.on_no_waiters is not None:
            self.on_no_waiters(self)

    def adopt_waiters(self, other: Queue) -> None:
        """Take over the waiters of ``other`` (a queue being replaced)."""
        for waiter in other._waiters:
            waiter.queue = self
        self._waiters.extend(other._waiters)
        other._waiters.clear()

    def _refill(self) -> None:
        if not self.behind_items or self._refilling or self.journal is None:
            return
        self._refilling = True
        wanted = max(self.settings.max_memory_size // 2, 1)
        self.journal.read_behind(wanted).addCallbacks(self._refilled, self._unreadable)

    def _unreadable(self, failure: Failure) -> None:
        # The journal could not give the items back (damage found while
        # running): they are lost to this run; replay at the next start
        # repairs the journal and says what it cut.
        log.failure("Reading {queue} back from its journal", failure, queue=self.name)
        self._refilling = False
        self.behind_items = 0
        self.behind_bytes = 0
        if self._waiters:
            self._serve()

    def _refilled(self, items: list[Item]) -> None:
        self._refilling = False
        if self.deleted:
            return
        if not items:
            # Nothing more behind, whatever the counts said.
            self.behind_items = 0
            self.behind_bytes = 0
        for item in items:
            size = len(item.data)
            self.behind_items -= 1
            self.behind_bytes -= size
            self._items.append(item)
            self.mem_bytes += size
        if self._overfull:
            self._trim()
        if self._waiters:
            self._serve()

    # -- open reads ------------------------------------------------------

    def confirm(self, item: Item) -> None:
        """An open read is done with: the item is gone for good."""
        # A confirmation is a command on the queue (for max_queue_age).
        self.touched = self._clock.seconds()
        self.open_items -= 1
        self.open_bytes -= len(item.data)
        self._record_remove(item)

    def abort(self, items: list[Item]) -> None:
        """Open reads go back to the head, keeping their order."""
        for item in reversed(items):
            self.open_items -= 1
            self.open_bytes -= len(item.data)
            self.canceled_transactions += 1
            self._items.appendleft(item)
            self.mem_bytes += len(item.data)
            if self.journal is not None:
                self.journal.abort(item)
        if self._waiters:
            self._serve()

    # -- dropping --------------------------------------------------------

    def flush(self) -> None:
        """Drop every queued item; open reads stay open."""
        self.touched = self._clock.seconds()
        for arrival in self._arriving:
            # Their ADD records come before the FLUSH record.
            arrival.state = _Arrival.GONE
        self._arriving.clear()
        self._arriving_held = 0
        self._items.clear()
        self.mem_bytes = 0
        self.behind_items = 0
        self.behind_bytes = 0
        self._overfull = False
        self.total_flushes += 1
        if self.journal is not None:
            self.journal.flush()

    def flush_expired(self, limit: int | None = None) -> int:
        """Drop the expired items held in memory (at most ``limit``)."""
        now = self._clock.seconds()
        items = self._items
        if not any(item.expiry is not None and item.expiry <= now for item in items):
            return 0
        kept: deque[Item] = deque()
        expired: list[Item] = []
        for item in items:
            if (
                item.expiry is not None
                and item.expiry <= now
                and (limit is None or len(expired) < limit)
            ):
                expired.append(item)
            else:
                kept.append(item)
        self._items = kept
        for item in expired:
            self.mem_bytes -= len(item.data)
            self._expire(item)
        return len(expired)

    def _expire(self, item: Item, journaled: bool = True) -> None:
        self.expired_items += 1
        if journaled:
            self._record_remove(item)
        if self.expired_sink is not None:
            self.expired_sink(item)

    def _record_remove(self, item: Item) -> None:
        if self.journal is not None:
            self.journal.remove(item)

    def close(self) -> None:
        """The queue is deleted: nothing more is journaled."""
        self.deleted = True
        self.journal = None


__all__ = ["Item", "Queue", "QueueJournal"]
