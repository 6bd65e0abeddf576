"""Replies in request order: the replies of one connection, held until
every reply before them is ready, and gathered into one write.

A reply that is ready now goes straight to the output (``out``); a request
whose reply comes later (a durable set, a waiting get, a monitor) holds a
``Slot`` in the order, and every reply after it waits in ``slots`` until
the slot is filled.  A slot's parts leave as soon as every reply before it
has left, so a reply that streams (``monitor``) is written as it grows.
The durable sets of one read share one slot (``Stores``): they are usually
made durable by one journal batch, and their replies leave in one write
instead of one each.  The protocol takes the gathered output (``take``,
which its flush inlines: it runs on every read) and writes it to the
transport in one call; ``ready`` tells it that a slot was filled outside
of its own reading.  The reply to a durable set that nothing comes before
may be sent by the journal itself the moment the set is durable
(``SentAtOnce``, as ``Durable.direct`` in ``erq.durable`` says): the
connection says, through ``direct``, whether its socket can take it now.
Nothing here knows a transport or a service, so the order can be tested
alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from erq.durable import Durable, listen

#: Replies held while one batch of requests is handled: beyond this they are
#: written at once, so that a client that does not read its replies makes
#: the transport pause us, and a few bytes of pipelined requests cannot make
#: the server buffer megabytes of replies.
MAX_HELD_OUTPUT = 64 * 1024


class Slot:
    """A reply that is not ready yet, holding back the replies after it."""

    __slots__ = ("parts", "done")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done = False


class Stores(Slot):
    """The replies of the durable sets of one read, in order."""

    __slots__ = ("replies", "waiting")

    def __init__(self) -> None:
        super().__init__()
        self.replies: list[bytes] = []
        self.waiting = 0


class DirectSocket(Protocol):
    """The connection's socket, as a reply sent at once sees it."""

    def fileno_now(self) -> int:
        """The socket's descriptor, if a reply may be sent to it now
        ahead of anything its transport holds; -1 otherwise."""
        ...

    def wrote(self, count: int) -> None:
        """``count`` bytes were sent to the socket outside the transport."""
        ...


class SentAtOnce:
    """The reply to the durable set (or run of sets) that a ``Stores``
    slot holds alone, as the journal may send it to the socket the moment
    the set is durable (``erq.durable.DirectReply``): only while it is the
    connection's one reply still to write."""

    __slots__ = ("order", "stores", "reply", "direct")

    def __init__(
        self, order: ReplyOrder, stores: Stores, reply: bytes, direct: DirectSocket
    ) -> None:
        self.order = order
        self.stores = stores
        self.reply = reply
        #: The order's socket.
        self.direct = direct

    def socket(self) -> int:
        order = self.order
        stores = self.stores
        slots = order.slots
        if (
            len(stores.replies) != 1
            or stores.replies[0]
            or len(slots) != 1
            or slots[0] is not stores
            or order.out
        ):
            # Other replies before it, beside it in its slot or behind
            # it, or it was answered: it goes the usual way, in order.
            return -1
        return self.direct.fileno_now()

    def sent(self, count: int) -> None:
        self.order.sent_at_once(self.stores, self.reply, count)


def server_error(failure: Failure) -> bytes:
    """The reply to a set whose journal write failed."""
    reason = str(failure.value) or "journal failed"
    return b"SERVER_ERROR " + reason.encode("ascii", "replace") + b"\r\n"


class ReplyOrder:
    """The replies of one connection, in the order of its requests."""

    __slots__ = (
        "out",
        "out_size",
        "slots",
        "held",
        "stores",
        "ready",
        "early",
        "direct",
    )

    def __init__(self, ready: Callable[[], None]) -> None:
        #: Replies ready to be written, in order.
        self.out: list[bytes] = []
        #: Bytes in ``out``: the protocol writes them once they grow large.
        self.out_size = 0
        #: From a slot not yet ready on: slots and the replies behind them.
        self.slots: deque[Slot | bytes] = deque()
        #: Bytes of replies ready but held in ``slots`` behind one that is not.
        self.held = 0
        #: The slot that the durable sets of the read being handled share.
        self.stores: Stores | None = None
        #: Called once a slot was filled and replies may be written.
        self.ready = ready
        #: Whether the slot was filled as soon as its sets were durable,
        #: before the queue took their items: replies may be written, but
        #: no request read (see ``erq.durable``).
        self.early = False
        #: The socket that the reply to a durable set may be sent to at
        #: once, where the connection has one.
        self.direct: DirectSocket | None = None

    def add(self, data: bytes) -> None:
        """One reply, whole (with its line ends), ready now."""
        if self.slots:
            self.slots.append(data)
            self.held += len(data)
        else:
            self.out.append(data)
            self.out_size += len(data)

    def hold(self) -> Slot:
        """Hold a place in the reply order for a reply that comes later."""
        slot = Slot()
        self.slots.append(slot)
        return slot

    def fill(self, slot: Slot, data: bytes, done: bool = True) -> None:
        """Part of the reply of ``slot`` (the last part when ``done``)."""
        slot.parts.append(data)
        slot.done = done
        slots = self.slots
        out = self.out
        if done and len(slots) == 1 and slots[0] is slot:
            # Nothing before it and nothing behind it (a lock-step durable
            # set): it goes out as it is, without the walk below.
            parts = slot.parts
            out.extend(parts)
            self.out_size += sum(map(len, parts))
            parts.clear()
            slots.clear()
            self.ready()
            return
        while slots:
            head = slots[0]
            if isinstance(head, bytes):
                out.append(head)
                self.held -= len(head)
                self.out_size += len(head)
            else:
                out.extend(head.parts)
                self.out_size += sum(len(part) for part in head.parts)
                head.parts.clear()
                if not head.done:
                    break
            slots.popleft()
        self.ready()

    def take(self) -> bytes:
        """Every reply ready to be written, as one string, and forget them."""
        out = self.out
        data = b"".join(out) if len(out) > 1 else out[0] if out else b""
        out.clear()
        self.out_size = 0
        return data

    def end_read(self) -> None:
        """The read is handled: sets of the next one take a new slot."""
        self.stores = None

    def await_stored(self, durable: Deferred[Any], count: int) -> None:
        """``count`` sets are stored once ``durable`` fires: their replies
        join the durable sets of this read in one slot."""
        stores = self.stores
        if stores is None or not self.slots or self.slots[-1] is not stores:
            stores = self.stores = Stores()
            self.slots.append(stores)
        index = len(stores.replies)
        stores.replies.append(b"")
        stores.waiting += 1
        if type(durable) is Durable:
            durable.first.append(partial(self._first, stores, index, count))
            direct = self.direct
            if not index and direct is not None:
                durable.direct = SentAtOnce(self, stores, b"STORED\r\n" * count, direct)
        listen(durable, self._stored, self._store_failed, stores, index, count)

    def _first(self, stores: Stores, index: int, count: int) -> None:
        """The sets are durable: answer them now, before the queue takes
        their items."""
        if stores.replies[index]:
            # Sent at once (``sent_at_once``).
            return
        self.early = True
        try:
            self._answer(stores, index, b"STORED\r\n" * count)
        finally:
            self.early = False

    def sent_at_once(self, stores: Stores, reply: bytes, count: int) -> None:
        """The one set (or run of sets) of ``stores``, the only slot, is
        durable, and ``count`` bytes of its ``reply`` were sent to the
        socket at once: the slot is done, and the rest of the reply, if
        any, goes the usual way."""
        assert self.direct is not None
        self.direct.wrote(count)
        stores.replies[0] = reply
        stores.waiting -= 1
        if self.stores is stores:
            self.stores = None
        if count < len(reply):
            self.early = True
            try:
                self.fill(stores, reply[count:])
            finally:
                self.early = False
        else:
            # Nothing to write; ``_stored`` lets what it held back go on.
            self.slots.popleft()

    def _stored(self, ok: bool | None, stores: Stores, index: int, count: int) -> None:
        if stores.replies[index]:
            # Answered by ``_first``; the queue has the items now, so what
            # the reply held back may go on.
            self.ready()
            return
        reply = b"NOT_STORED\r\n" if ok is False else b"STORED\r\n"
        self._answer(stores, index, reply * count)

    def _store_failed(
        self, failure: Failure, stores: Stores, index: int, count: int
    ) -> None:
        self._answer(stores, index, server_error(failure) * count)

    def _answer(self, stores: Stores, index: int, reply: bytes) -> None:
        stores.replies[index] = reply
        stores.waiting -= 1
        if not stores.waiting:
            self._stores_ready(stores)

    def _stores_ready(self, stores: Stores) -> None:
        if self.stores is stores:
            self.stores = None
        self.fill(stores, b"".join(stores.replies))
