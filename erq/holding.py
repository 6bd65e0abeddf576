"""Where a queue's items are: the head in memory, the rest in the journal.

A journaled queue keeps items in memory up to ``max_memory_size`` bytes;
past that, new items are only counted ("behind"), their data left to the
journal, and every later item goes behind too, so that memory always holds
an unbroken head of the queue.  As the head drains below half the limit,
the next items are read back from the journal, about half the limit at a
time but at most ``READ_BACK_MOST`` (so that each read is soon back, and
the first gets after a restart, which starts with little in memory, do not
wait for a long one).  A queue without a journal keeps everything in
memory.

Items of durable puts wait at the tail as arrivals (`erq.arrivals`) until
the journal has them; they are counted here, in memory or behind, from the
moment they are put.

Every queue of a server also counts its bytes in memory in one shared
`erq.memory.MemoryUse`, whose cap (the server's ``max_memory_size``) a
journaled queue keeps to as it keeps to its own limit.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from erq.arrivals import Arrival, Arrivals
from erq.items import Item, QueueJournal
from erq.memory import MemoryUse
from erq.packed import PackedItems

# Logged as the queue logged it before this module was split from it.
log = Logger(namespace="erq.queue")

#: Bytes a queue with nothing in memory reads back from its journal at a
#: time, however little room the server's ``max_memory_size`` leaves.
READ_BACK_LEAST = 64 * 1024
#: The most a queue reads back at a time; it reads again as it drains.
READ_BACK_MOST = 4 * 1024 * 1024


class Holding:
    """The items of one queue, oldest first: ``items`` in memory, then
    durable puts still arriving, then those left in the journal.

    ``journal`` and ``memory_limit`` give the queue's journal and
    ``max_memory_size`` as they are at each use (both may change).  The
    queue is told ``on_items`` when items it may hand out were placed (or
    lost), ``on_read_back`` when items came back from the journal, and
    ``on_refused`` with the number of items the journal refused.
    ``memory`` counts the bytes in memory of every queue of the server
    (a count of this queue's alone when ``None``).
    """

    def __init__(
        self,
        name: str,
        journal: Callable[[], QueueJournal | None],
        memory_limit: Callable[[], int],
        on_items: Callable[[], None],
        on_read_back: Callable[[], None],
        on_refused: Callable[[int], None],
        memory: MemoryUse | None = None,
    ) -> None:
        self.name = name
        self._memory = MemoryUse() if memory is None else memory
        self._journal = journal
        self._memory_limit = memory_limit
        self._on_items = on_items
        self._on_read_back = on_read_back
        self._on_refused = on_refused
        #: In memory and ready to hand out, oldest first, packed when deep.
        self.items = PackedItems()
        self.mem_bytes = 0
        self.behind_items = 0
        self.behind_bytes = 0
        #: Items are being read back from the journal.
        self.reading = False
        self._closed = False
        # Items at the tail waiting for the journal, oldest first.
        self._arrivals = Arrivals(self._place, self._refused)
        #: Durable puts wait for the journal (not empty): a new item waits
        #: behind them.  The arrivals themselves, read without a call.
        self.arriving = self._arrivals.arriving

    @property
    def count(self) -> int:
        """Items held, in memory or behind, arriving or not."""
        return len(self.items) + self._arrivals.held + self.behind_items

    @property
    def mem_count(self) -> int:
        return len(self.items) + self._arrivals.held

    @property
    def empty(self) -> bool:
        return not self.items and not self._arrivals and not self.behind_items

    def restore(self, items: list[Item], behind_items: int, behind_bytes: int) -> None:
        """Take the state a journal replayed."""
        self.items.extend(items)
        self._count_in(sum(len(item.data) for item in items) - self.mem_bytes)
        self.behind_items = behind_items
        self.behind_bytes = behind_bytes

    def reserve(self, item: Item) -> bool:
        """Count a new item at the tail: held in memory (``True``), or only
        counted, its data left to the journal.  The caller puts a held item
        in place, with `append` or through `arrive`."""
        size = len(item.data)
        memory = self._memory
        held = memory.held + size
        # The first test is the common case, and costs no call.
        if (
            not self.behind_items
            and self.mem_bytes + size <= self._memory_limit()
            and (memory.cap is None or held <= memory.cap)
        ) or self._keeps_in_memory(size):
            self.mem_bytes += size
            memory.held = held
            if held > memory.peak:
                memory.peak = held
            return True
        self.behind_items += 1
        self.behind_bytes += size
        return False

    def _keeps_in_memory(self, size: int) -> bool:
        """Whether an item over the memory limit is held all the same:
        without a journal to leave it in, or as the only one in memory."""
        if self._journal() is None:
            return True
        return not self.behind_items and not (self.items or self._arrivals.held)

    def arrive(
        self, items: list[Item], held: list[bool], durable: Deferred[None] | None
    ) -> bool | Deferred[None]:
        """Reserved items wait at the tail until ``durable`` fires (or, with
        ``None``, until the items before them are durable)."""
        return self._arrivals.arrive(items, held, durable)

    def _place(self, stored: list[list[Item]]) -> None:
        if self._closed:
            return
        for held in stored:
            self.items.extend(held)
        self._on_items()

    def _refused(self, arrival: Arrival, waiting: bool) -> None:
        self._on_refused(arrival.count)
        if waiting and not self._closed:
            self._count_in(-arrival.held_bytes)
            self.behind_items -= arrival.behind_count
            self.behind_bytes -= arrival.behind_bytes

    def pop(self) -> Item:
        """Take the head item out; reading back starts when memory runs low."""
        items = self.items
        head = items.head
        item = head.popleft()
        if not head and items.tail is not head:
            items.refill()
        size = len(item.data)
        self.mem_bytes -= size
        self._memory.held -= size
        if self.behind_items and self.mem_bytes < self._memory_limit() // 2:
            self.read_back()
        return item

    def drop_expired_head(
        self, now: float, limit: int, expire: Callable[[Item], None]
    ) -> int:
        """Take the items expired by ``now`` off the head, at most ``limit``
        (-1: all), handing each to ``expire``; how many there were."""
        dropped = 0
        items = self.items
        while items.head and dropped != limit:
            expiry = items.head[0].expiry
            if expiry is None or expiry > now:
                break
            expire(self.pop())
            dropped += 1
        return dropped

    def push_back(self, item: Item) -> None:
        """An item handed out goes back to the head."""
        self.items.appendleft(item)
        self._count_in(len(item.data))

    def remove_expired(self, now: float, limit: int | None) -> list[Item]:
        """Take the expired items out of memory (at most ``limit``)."""
        expired = self.items.remove_expired(now, limit)
        self._count_in(-sum(len(item.data) for item in expired))
        return expired

    def clear(self) -> None:
        """Everything queued is dropped, arrivals included."""
        # Their ADD records come before the FLUSH record.
        self._arrivals.drop_all()
        self.items.clear()
        self._count_in(-self.mem_bytes)
        self.behind_items = 0
        self.behind_bytes = 0

    def read_back(self) -> None:
        """Ask the journal for the next items behind, unless it is already
        reading them or there are none."""
        journal = self._journal()
        if not self.behind_items or self.reading or journal is None:
            return
        wanted = min(self._memory_limit() // 2, READ_BACK_MOST)
        memory = self._memory
        room = wanted if memory.cap is None else memory.cap - memory.held
        if room < wanted:
            # The server's cap: other queues hold the memory.  Read only
            # into what is left of it, and with none left, only once this
            # queue has nothing in memory, a little at a time.
            if self.items:
                if room <= 0:
                    return
                wanted = room
            else:
                wanted = min(wanted, max(room, READ_BACK_LEAST))
        self.reading = True
        journal.read_behind(max(wanted, 1)).addCallbacks(self._read, self._unreadable)

    def _unreadable(self, failure: Failure) -> None:
        # The journal could not give the items back (damage found while
        # running): they are lost to this run; replay at the next start
        # repairs the journal and says what it cut.
        log.failure("Reading {queue} back from its journal", failure, queue=self.name)
        self.reading = False
        self.behind_items = 0
        self.behind_bytes = 0
        self._on_items()

    def _read(self, items: list[Item]) -> None:
        self.reading = False
        if self._closed:
            return
        if not items:
            # Nothing more behind, whatever the counts said.
            self.behind_items = 0
            self.behind_bytes = 0
        read = sum(len(item.data) for item in items)
        self.behind_items -= len(items)
        self.behind_bytes -= read
        # The list is the holding's now: emptied as its items are packed.
        self.items.take_in(items)
        self._count_in(read)
        self._on_read_back()

    def _count_in(self, size: int) -> None:
        """``size`` bytes more in memory (fewer, when negative), here and
        in the server's count (a deleted queue's no longer count there)."""
        self.mem_bytes += size
        if self._closed:
            return
        memory = self._memory
        held = memory.held = memory.held + size
        if held > memory.peak:
            memory.peak = held

    def close(self) -> None:
        """The queue is deleted: nothing more is placed in it, and its
        items no longer count in the server's memory."""
        self._count_in(-self.mem_bytes)
        self._closed = True
