"""A queue's items in memory: loose `Item` objects at both ends, and packed
in large chunks in between once the queue is deep.

An `Item` object with its bytes, its id and its times costs Python some 145
bytes beyond its data, and a deep queue holds millions of items.
`PackedItems` holds a queue's items in three parts, oldest first:

- ``head``: a deque of `Item` objects, the next ones to hand out.  It is
  empty only when the whole store is, so ``head[0]`` is always the head
  item, and a queue looks at it and pops it without a call.
- chunks: items packed in arrival order, the part of a deep queue between
  its two ends.  A chunk holds the data of up to ``nursery`` items back to
  back in one bytes object of up to ``chunk_bytes`` (an item larger than
  that gets a chunk of its own, its bytes not copied), and arrays of their
  ids, where their data end and when they were added; flags and expiry
  times (NaN: never) get arrays only in a chunk where some item needs them.
  That is 20 bytes an item, 32 at most.  When ``head`` runs dry, the first
  chunk is unpacked into it whole, and dropped, so memory goes back in
  large pieces.
- ``tail``: the newest items, as they were put.  While nothing is packed,
  ``tail`` *is* ``head`` (one deque, as a queue without packing would
  have): a queue that keeps up with its producers never packs anything.
  Once that deque holds ``2 * nursery`` items, all but the first
  ``nursery`` are packed, and from then on new items gather in a separate
  ``tail`` that is packed whole each time it holds ``nursery`` items.
  Once the chunks are all unpacked and ``head`` is empty, ``tail`` becomes
  the one deque again.

Removing expired items from the middle repacks only the chunks that may
hold some: each chunk knows the earliest expiry it holds.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import accumulate, chain, repeat

from erq.items import Item

#: The data bytes of a chunk, at most (but for an item larger than that).
CHUNK_BYTES = 256 * 1024
#: Items packed together, at most; the loose items kept at each end.
NURSERY = 4096

_NEVER = float("nan")
_INF = float("inf")


class _Chunk:
    """Items packed in arrival order (see the module's docstring)."""

    __slots__ = ("data", "ends", "ids", "added", "flags", "expiry", "min_expiry")

    def __init__(self, items: list[Item], datas: list[bytes]) -> None:
        data = self.data = b"".join(datas)
        self.ends = array("I" if len(data) < 1 << 32 else "Q")
        self.ends.extend(accumulate(map(len, datas)))
        self.ids = array("q", [item.id for item in items])
        self.added = array("d", [item.added for item in items])
        self.flags: array[int] | None = None
        flags = [item.flags for item in items]
        if any(flags):
            self.flags = array("I", flags)
        self.expiry: array[float] | None = None
        #: The earliest expiry of the items here (infinite: none expires).
        self.min_expiry = _INF
        expiries = [item.expiry for item in items]
        if expiries.count(None) != len(expiries):
            self.min_expiry = min(e for e in expiries if e is not None)
            self.expiry = array("d", [_NEVER if e is None else e for e in expiries])

    def __len__(self) -> int:
        return len(self.ids)

    def unpack(self) -> list[Item]:
        """The items, made again, each equal in every field to the one
        packed."""
        data = self.data
        ends = self.ends
        if len(ends) == 1:
            # An item with a chunk of its own: its bytes as they came.
            datas: Iterable[bytes] = (data,)
        else:
            # Each item starts where the one before it ends (one start too
            # many, which zip drops).
            starts = chain((0,), ends)
            datas = [data[s:e] for s, e in zip(starts, ends, strict=False)]
        flags: Iterable[int] = repeat(0) if self.flags is None else self.flags
        expiry: Iterable[float | None] = (
            repeat(None)
            if self.expiry is None
            else [None if e != e else e for e in self.expiry]
        )
        return list(map(Item, self.ids, datas, flags, expiry, self.added))


def _pack(items: list[Item], chunk_bytes: int, most: int) -> list[_Chunk]:
    """``items`` in order in chunks of at most ``most`` items and
    ``chunk_bytes`` bytes (an item larger than that: alone)."""
    datas = [item.data for item in items]
    if len(items) <= most and sum(map(len, datas)) <= chunk_bytes:
        # The common case: one chunk.
        return [_Chunk(items, datas)] if items else []
    chunks: list[_Chunk] = []
    start = 0
    size = 0
    for index, data in enumerate(datas):
        length = len(data)
        if length >= chunk_bytes:
            if index > start:
                chunks.append(_Chunk(items[start:index], datas[start:index]))
            chunks.append(_Chunk([items[index]], [data]))
            start = index + 1
            size = 0
        elif size + length > chunk_bytes or index - start >= most:
            chunks.append(_Chunk(items[start:index], datas[start:index]))
            start = index
            size = length
        else:
            size += length
    if len(items) > start:
        chunks.append(_Chunk(items[start:], datas[start:]))
    return chunks


class PackedItems:
    """A queue's items in memory, oldest first (see the module's
    docstring).  It behaves as a deque of `Item` for what a queue does with
    one: ``append``, ``extend``, ``appendleft``, ``popleft``, ``clear``,
    ``len``, iteration and indexing; an item that was packed comes out as a
    new `Item` equal in every field to the one put in."""

    __slots__ = (
        "head",
        "tail",
        "_chunks",
        "_packed",
        "_limit",
        "_chunk_bytes",
        "_nursery",
    )

    def __init__(
        self,
        items: Iterable[Item] = (),
        chunk_bytes: int = CHUNK_BYTES,
        nursery: int = NURSERY,
    ) -> None:
        #: The next items, never empty while any item is held.
        self.head: deque[Item] = deque()
        #: The newest items: ``head`` itself while nothing is packed.
        self.tail = self.head
        self._chunks: deque[_Chunk] = deque()
        # Items in the chunks.
        self._packed = 0
        self._chunk_bytes = chunk_bytes
        self._nursery = nursery
        # The length of ``tail`` at which it is packed.
        self._limit = 2 * nursery
        self.extend(items)

    def __len__(self) -> int:
        head = self.head
        tail = self.tail
        return len(head) + self._packed + (0 if tail is head else len(tail))

    def __bool__(self) -> bool:
        return bool(self.head)

    def __iter__(self) -> Iterator[Item]:
        yield from self.head
        if self.tail is not self.head:
            for chunk in self._chunks:
                yield from chunk.unpack()
            yield from self.tail

    def __getitem__(self, index: int) -> Item:
        if index == 0:
            return self.head[0]
        if index == -1:
            tail = self.tail
            if tail:
                return tail[-1]
            if self._chunks:
                return self._chunks[-1].unpack()[-1]
            return self.head[-1]
        return list(self)[index]

    def __repr__(self) -> str:
        loose = len(self.head) + (0 if self.tail is self.head else len(self.tail))
        return (
            f"<PackedItems {len(self)} items: {self._packed} in "
            f"{len(self._chunks)} chunks, {loose} loose>"
        )

    @property
    def chunks(self) -> int:
        """How many chunks there are (for tests and benchmarks)."""
        return len(self._chunks)

    @property
    def packed(self) -> int:
        """How many items are packed (for tests and benchmarks)."""
        return self._packed

    def data_bytes(self) -> int:
        """The bytes of the items' data."""
        size = sum(len(item.data) for item in self.head)
        if self.tail is not self.head:
            size += sum(len(chunk.data) for chunk in self._chunks)
            size += sum(len(item.data) for item in self.tail)
        return size

    def append(self, item: Item) -> None:
        tail = self.tail
        tail.append(item)
        if len(tail) >= self._limit:
            self._spill()

    def extend(self, items: Iterable[Item]) -> None:
        tail = self.tail
        tail.extend(items)
        if len(tail) >= self._limit:
            self._spill()

    def take_in(self, items: list[Item]) -> None:
        """``extend`` with ``items``, a list that is this store's to empty:
        they are taken out of it as they are packed, a nursery's worth at a
        time, so that a long list (items read back from a journal) is never
        held twice, as `Item` objects and packed."""
        nursery = self._nursery
        items.reverse()
        while items:
            batch = items[-nursery:]
            del items[-nursery:]
            batch.reverse()
            self.extend(batch)

    def appendleft(self, item: Item) -> None:
        self.head.appendleft(item)

    def popleft(self) -> Item:
        head = self.head
        item = head.popleft()
        if not head and self.tail is not head:
            self.refill()
        return item

    def refill(self) -> None:
        """With ``head`` empty, bring the next items into it: the first
        chunk, unpacked, or with none, ``tail`` (which becomes ``head``)."""
        chunks = self._chunks
        if chunks:
            chunk = chunks.popleft()
            self._packed -= len(chunk)
            self.head = deque(chunk.unpack())
        else:
            self.head = self.tail
            self._limit = 2 * self._nursery

    def _spill(self) -> None:
        """Pack what lies between the loose items at the two ends."""
        nursery = self._nursery
        tail = self.tail
        if tail is self.head:
            items = list(tail)
            self.head = deque(items[:nursery])
            del items[:nursery]
            self.tail = deque()
            self._limit = nursery
        else:
            items = list(tail)
            tail.clear()
        for chunk in _pack(items, self._chunk_bytes, nursery):
            self._chunks.append(chunk)
        self._packed += len(items)
        if not self.head:
            self.refill()

    def clear(self) -> None:
        self.head = self.tail = deque()
        self._chunks.clear()
        self._packed = 0
        self._limit = 2 * self._nursery

    def remove_expired(self, now: float, limit: int | None) -> list[Item]:
        """Take out the items expired by ``now``, the first ``limit`` of them
        in queue order (``None``: all), and return them in that order."""
        head = self.head
        tail = self.tail
        apart = tail is not head
        chunks = self._chunks if apart else deque()

        def any_expired(items: Iterable[Item]) -> bool:
            return any(i.expiry is not None and i.expiry <= now for i in items)

        suspects = [chunk.min_expiry <= now for chunk in chunks]
        if not (any_expired(head) or any(suspects) or (apart and any_expired(tail))):
            return []
        expired: list[Item] = []

        def sift(items: Iterable[Item]) -> list[Item]:
            kept = []
            for item in items:
                expiry = item.expiry
                if (
                    expiry is not None
                    and expiry <= now
                    and (limit is None or len(expired) < limit)
                ):
                    expired.append(item)
                else:
                    kept.append(item)
            return kept

        kept_head = sift(head)
        if not apart:
            self.head = self.tail = deque(kept_head)
            return expired
        kept_chunks: deque[_Chunk] = deque()
        for chunk, suspect in zip(chunks, suspects, strict=True):
            if not suspect or (limit is not None and len(expired) >= limit):
                kept_chunks.append(chunk)
                continue
            items = chunk.unpack()
            kept = sift(items)
            if len(kept) == len(items):
                kept_chunks.append(chunk)
            else:
                kept_chunks.extend(_pack(kept, self._chunk_bytes, self._nursery))
        self._chunks = kept_chunks
        self._packed = sum(map(len, kept_chunks))
        self.head = deque(kept_head)
        self.tail = deque(sift(tail))
        if not self.head:
            self.refill()
        return expired
