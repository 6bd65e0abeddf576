"""One named FIFO of items: waiting getters, open reads, expiry and limits."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from erq.config import QueueSettings
from erq.expiry import Expiry
from erq.holding import Holding
from erq.items import Item, QueueJournal
from erq.limits import Limits
from erq.memory import MemoryUse
from erq.openreads import OpenReads
from erq.packed import PackedItems
from erq.waiters import Deadlines, Deliver, Waiter, Waiters


class Queue:
    """A FIFO of items with waiting getters, open reads, expiry and limits.

    Pure logic: time comes from ``clock`` and every change is told to
    ``journal`` (when there is one) in the order it happens.  Open reads are
    owned by whoever asked for them; the queue counts them in
    ``open_reads``, whose ``confirm``, ``abort`` and ``time_open`` are its
    own.  ``limits`` keeps it to its ``max_items`` and ``max_size``, and
    ``expiry`` drops the items whose time is up.
    ``memory`` is the count of item bytes in memory that the queues of a
    server share, and their cap; ``deadlines`` times the waiting gets of
    the queues of a server on one timer (a queue has its own without it).
    """

    def __init__(
        self,
        name: str,
        clock: IReactorTime,
        settings: QueueSettings | None = None,
        journal: QueueJournal | None = None,
        memory: MemoryUse | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.name = name
        self.settings = settings if settings is not None else QueueSettings()
        self.journal = journal
        self._clock = clock
        self._holding = Holding(
            name,
            lambda: self.journal,
            lambda: self.settings.max_memory_size,
            self._serve,
            self._read_back,
            self._refused,
            memory,
        )
        self._waiters = Waiters(clock, self._no_waiters, deadlines)
        # The waiters' own deque: whether anyone waits, without a call.
        self._waiting = self._waiters.waiting
        #: What this queue has handed out as open reads; holders end them
        #: with its ``confirm`` and ``abort`` (bound once: no call between).
        self.open_reads = OpenReads(self, clock, self._holding, self._serve)
        self.time_open = self.open_reads.time_open
        self.confirm = self.open_reads.confirm
        self.abort = self.open_reads.abort
        self._next_id = 1
        #: Its ``max_items`` and ``max_size``, and the items discarded for them.
        self.limits = Limits(self._holding, self._record_remove)
        #: Its expired items: dropped, counted, handed to its ``sink``.
        self.expiry = Expiry(clock, self._holding, self._record_remove)
        self.sweep = self.expiry.drop_head
        self.flush_expired = self.expiry.flush_expired
        #: Called when the last waiter leaves, for queues that exist only
        #: because someone waits for them.
        self.on_no_waiters: Callable[[Queue], None] | None = None
        self.deleted = False

        self.total_items = 0
        #: Items taken for good: plain gets and confirmed open reads.
        self.removed_items = 0
        self.age = 0.0
        self.total_flushes = 0
        self.touched = clock.seconds()

    # -- state -----------------------------------------------------------

    @property
    def items(self) -> int:
        """Items queued, in memory or behind it (open reads not counted),
        including those still being made durable."""
        return self._holding.count

    @property
    def queued_bytes(self) -> int:
        return self._holding.mem_bytes + self._holding.behind_bytes

    @property
    def mem_items(self) -> int:
        return self._holding.mem_count

    @property
    def mem_bytes(self) -> int:
        return self._holding.mem_bytes

    @property
    def behind_items(self) -> int:
        return self._holding.behind_items

    @property
    def behind_bytes(self) -> int:
        return self._holding.behind_bytes

    @property
    def _items(self) -> PackedItems:
        """The items in memory, ready to hand out, oldest first."""
        return self._holding.items

    @property
    def open_items(self) -> int:
        return self.open_reads.count

    @property
    def canceled_transactions(self) -> int:
        """Open reads aborted, or taken back for their ``open_timeout``."""
        return self.open_reads.canceled

    @property
    def expired_items(self) -> int:
        return self.expiry.count

    @property
    def waiters(self) -> int:
        return len(self._waiters)

    @property
    def oldest_added(self) -> float | None:
        """When the oldest item held in memory was put (the head: memory
        holds an unbroken head of the queue); ``None`` with none there."""
        items = self._items
        return items[0].added if items else None

    def restore(
        self, items: list[Item], behind_items: int, behind_bytes: int, next_id: int
    ) -> None:
        """Take the state a journal replayed, before any other use."""
        self._holding.restore(items, behind_items, behind_bytes)
        self._next_id = max(self._next_id, next_id)

    def is_idle_since(self, when: float) -> bool:
        """Empty, nothing open or waiting, and untouched since ``when``."""
        return (
            self._holding.empty
            and not self.open_reads.count
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
        if settings.max_age is not None:
            expiry = settings.item_expiry(expiry, now)
        if (
            settings.max_items is not None or settings.max_size is not None
        ) and not self.limits.make_room(settings, size):
            return False
        item = Item(self._next_id, data, flags, expiry, now)
        self._next_id += 1
        self.total_items += 1
        if expiry is not None and expiry <= now:
            # Stored as asked, but never handed out.
            self.expiry.expire(item, journaled=False)
            return True
        holding = self._holding
        in_memory = holding.reserve(item)
        journal = self.journal
        durable = None if journal is None else journal.add(item, in_memory)
        if durable is None and not holding.arriving:
            if in_memory:
                holding.items.append(item)
                if self._waiting:
                    # _serve, inlined: an item handed straight to a waiter.
                    self._waiters.serve(self._take, self._reading)
            return True
        return holding.arrive([item], [in_memory], durable)

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
            self._waiting
            or settings.max_items is not None
            or settings.max_size is not None
            or settings.max_item_size is not None
        ):
            return None
        now = self._clock.seconds()
        expiry = self.settings.item_expiry(expiry, now)
        if expiry is not None and expiry <= now:
            return None
        self.touched = now
        items: list[Item] = []
        held: list[bool] = []
        for data in datas:
            item = Item(self._next_id, data, flags, expiry, now)
            self._next_id += 1
            items.append(item)
            held.append(self._holding.reserve(item))
        self.total_items += len(items)
        durable = None if self.journal is None else self.journal.add_many(items, held)
        if durable is None and not self._holding.arriving:
            self._holding.items.extend(
                [item for item, h in zip(items, held, strict=True) if h]
            )
            return len(items), None
        result = self._holding.arrive(items, held, durable)
        return len(items), result if isinstance(result, Deferred) else None

    def _refused(self, count: int) -> None:
        """The journal could not make items durable: they were never in the
        queue (and the journal records as much)."""
        self.total_items -= count

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
        item = None if self._waiting and not peek else self._take(open, peek)
        if item is not None:
            return item
        if not timeout and not self.behind_items:
            return None
        return self._waiters.wait(open, peek, timeout)

    def get_for(
        self,
        deliver: Deliver,
        timeout: float | None = None,
        open: bool = False,
        peek: bool = False,
    ) -> Item | None | Waiter:
        """``get``, waiting without a Deferred: a get that waits is answered
        by a call of ``deliver`` with the item or ``None``, and returns the
        ``Waiter``, to ``cancel`` if its client goes away.  A connection's
        gets come this way: a consumer that keeps up waits for every item."""
        now = self.touched = self._clock.seconds()
        holding = self._holding
        if holding.items.head or holding.behind_items:
            item = None if self._waiting and not peek else self._take(open, peek)
            if item is not None:
                return item
            if not timeout and not holding.behind_items:
                return None
        elif not timeout:
            # Nothing in memory or behind it: what _take would find, without
            # asking it (the empty queue of a consumer that keeps up).
            return None
        return self._waiters.wait_for(deliver, open, peek, timeout, now)

    def take_many(self, count: int, max_bytes: int) -> tuple[list[Item], bool]:
        """What ``count`` gets without a timeout would hand out one after
        the other, stopping once ``max_bytes`` of data are taken.  Returns
        the items, and whether the gets after them answer "nothing" at once
        (``False``: they may wait, for items read back from the journal, or
        ``max_bytes`` stopped the run)."""
        self.touched = self._clock.seconds()
        items: list[Item] = []
        if self._waiting:
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
            item = self._holding.pop()
            items.append(item)
            taken += len(item.data)
        if items:
            self.removed_items += len(items)
            self.age = self.touched - items[-1].added
            if self.journal is not None:
                self.journal.remove_many(items)
        return items, rest_empty

    def _head(self) -> Item | None:
        """The head item once expired ones are dropped; with nothing in
        memory, ``None``, and the journal is asked for more."""
        # Never empty while any item is in memory.
        head = self._holding.items.head
        if head and head[0].expiry is not None:
            self.expiry.drop_head()
            head = self._holding.items.head
        if not head:
            self._holding.read_back()
            return None
        return head[0]

    def _take(self, open: bool, peek: bool) -> Item | None:
        first = self._holding.items.head
        if first and first[0].expiry is None:
            # _head's common case, inlined: a head item that never expires.
            if peek:
                return first[0]
        else:
            head = self._head()
            if head is None or peek:
                return head
        item = self._holding.pop()
        self.age = self._clock.seconds() - item.added
        journal = self.journal
        if open:
            self.open_reads.opened(item)
            if journal is not None:
                journal.open(item)
        else:
            self.removed_items += 1
            if journal is not None:
                journal.remove(item)
        return item

    def _serve(self) -> None:
        """Hand items to waiters, first come first served (with none
        waiting, nothing happens)."""
        self._waiters.serve(self._take, self._reading)

    def _reading(self) -> bool:
        """Whether items are being read back from the journal."""
        return self._holding.reading

    def _no_waiters(self) -> None:
        if self.on_no_waiters is not None:
            self.on_no_waiters(self)

    def adopt_waiters(self, other: Queue) -> None:
        """Take over the waiters of ``other`` (a queue being replaced)."""
        self._waiters.adopt(other._waiters)

    def _read_back(self) -> None:
        """Items came back from the journal."""
        limits = self.limits
        if limits.overfull:
            limits.trim(self.settings)
        self._serve()

    # -- dropping --------------------------------------------------------

    def flush(self) -> None:
        """Drop every queued item; open reads stay open."""
        self.touched = self._clock.seconds()
        self._holding.clear()
        self.limits.overfull = False
        self.total_flushes += 1
        if self.journal is not None:
            self.journal.flush()

    def _record_remove(self, item: Item) -> None:
        if self.journal is not None:
            self.journal.remove(item)

    def stop(self) -> None:
        """The server stops: no timer of the waiters stays in the reactor
        (that of every queue sharing its ``deadlines``)."""
        self._waiters.stop()

    def close(self) -> None:
        """The queue is deleted: nothing more is journaled."""
        self.deleted = True
        self.journal = None
        self.open_reads.close()
        self._holding.close()


__all__ = ["Item", "Queue", "QueueJournal"]
