"""Where a stored item goes: its queue, that queue's fanout children, or an
alias's destinations.

A ``set`` names one key, but its item may land in several queues: a queue
``parent`` copies each item to every fanout child ``parent+<anything>``
that exists (and keeps none itself when ``fanout_only``), and an alias of
the configuration is never a queue, only a list of destinations that each
get a copy under their own settings.  `Delivery` keeps the fanout
children of each parent as queues come and go, and what was set through
each alias, and answers a set as the client must hear it: one reply for
all the copies, ``STORED`` only once every durable copy is durable.
Items that expire in a queue with an ``expire_to_queue`` are delivered
the same way, without an expiry of their own.

The service holds one, and the protocol calls its ``put`` and ``put_many``
directly: every ``set`` on the wire comes here with no call in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.python.failure import Failure

from erq.config import Config, fanout_parent
from erq.queue import Item, Queue
from erq.stats import AliasCounters

if TYPE_CHECKING:
    from erq.service import QueueService

#: exptime values above this are absolute Unix times, as in memcached.
ABSOLUTE_EXPTIME = 1_000_000


class Delivery:
    """Puts each item where its key sends it, for the service it is given
    (whose queues it fills, creating them as needed)."""

    def __init__(self, service: QueueService, config: Config) -> None:
        self._service = service
        self._queues = service.queues
        self._create_queue = service.create_queue
        self._counters = service.counters
        self._clock = service.clock
        self._log = service.log
        # Fanout: each parent's children, ``parent+<anything>``.
        self._children: dict[str, set[str]] = {}
        #: What was set through each alias of the configuration.
        self.alias_counters: dict[str, AliasCounters] = {}
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Count what is set through the aliases of ``config``, the
        service's from now on.  An alias kept keeps its counters; a new one
        starts from nothing."""
        self.alias_counters = {
            name: self.alias_counters.get(name) or AliasCounters()
            for name in config.aliases
        }

    def added(self, name: str) -> None:
        """The queue ``name`` now exists: a fanout child is fed from now on."""
        parent = fanout_parent(name)
        if parent is not None:
            self._children.setdefault(parent, set()).add(name)

    def removed(self, name: str) -> None:
        """The queue ``name`` is gone: a fanout child is fed no more."""
        parent = fanout_parent(name)
        if parent is not None:
            siblings = self._children.get(parent, set())
            siblings.discard(name)
            if not siblings:
                self._children.pop(parent, None)

    def children(self, name: str) -> list[str]:
        """Fanout children of a queue: ``name+<anything>``."""
        return sorted(self._children.get(name, ()))

    def put(
        self, name: str, data: bytes, flags: int, exptime: int
    ) -> bool | Deferred[Any]:
        """A client's ``set``: store an item, or refuse it with ``False``.  A
        Deferred fires once the item is durable: with ``False`` if it was
        refused after all, with anything else if it was stored."""
        self._counters.cmd_set += 1
        if self._service.shutting_down:
            return False
        expiry = self.expiry(exptime) if exptime else None
        return self.deliver(name, data, flags, expiry)

    def deliver(
        self, name: str, data: bytes, flags: int, expiry: float | None
    ) -> bool | Deferred[Any]:
        """``put`` of an item that expires at ``expiry``: to an alias's
        destinations, or to the queue ``name`` and its fanout children."""
        destinations = self._service.config.aliases.get(name)
        if destinations is not None:
            return self._put_alias(name, destinations, data, flags, expiry)
        queue = self._create_queue(name)
        children = self._children.get(name)
        if not children:
            if queue.settings.fanout_only:
                # It keeps nothing, even with no child to feed.
                return True
            return queue.put(data, flags, expiry)
        return self._fan_out(queue, children, data, flags, expiry)

    def _fan_out(
        self,
        queue: Queue,
        children: set[str],
        data: bytes,
        flags: int,
        expiry: float | None,
    ) -> bool | Deferred[Any]:
        """A copy in each fanout child of ``queue``, and in ``queue`` unless
        it is ``fanout_only``: the reply is the parent's."""
        # Each child gets its own copy; one that is full simply misses it.
        queues = self._queues
        results = [queues[child].put(data, flags, expiry) for child in children]
        stored = True if queue.settings.fanout_only else queue.put(data, flags, expiry)
        waits = [
            result for result in (*results, stored) if isinstance(result, Deferred)
        ]
        if not waits:
            return stored
        return all_durable(waits).addCallback(
            lambda _: True if isinstance(stored, Deferred) else stored
        )

    def _put_alias(
        self,
        name: str,
        destinations: tuple[str, ...],
        data: bytes,
        flags: int,
        expiry: float | None,
    ) -> bool | Deferred[Any]:
        """A copy in each destination, each under its own settings: stored
        when every one stored it, refused when any refused it (the others
        keep theirs).  Durable copies are all waited for, so that ``STORED``
        means every copy is durable, and a failed journal fails the set."""
        counters = self.alias_counters[name]
        counters.put_items += 1
        counters.put_bytes += len(data)
        results = [
            self.deliver(destination, data, flags, expiry)
            for destination in destinations
        ]
        stored = all(result is not False for result in results)
        waits = [result for result in results if isinstance(result, Deferred)]
        if not waits:
            return stored
        return all_durable(waits).addCallback(
            lambda outcomes: stored and all(done is not False for done in outcomes)
        )

    def put_many(
        self, name: str, datas: list[bytes], flags: int, exptime: int
    ) -> tuple[int, Deferred[None] | None] | None:
        """Several ``set``s of one queue in a row, journaled together; see
        ``Queue.put_many``.  ``None``, and nothing done, where they must go
        one by one (fanout, a queue that refuses or hands items on)."""
        if (
            self._service.shutting_down
            or self._children.get(name)
            or name in self._service.config.aliases
        ):
            return None
        queue = self._create_queue(name)
        if queue.settings.fanout_only:
            return None
        result = queue.put_many(datas, flags, self.expiry(exptime))
        if result is not None:
            self._counters.cmd_set += len(datas)
        return result

    def expiry(self, exptime: int) -> float | None:
        """The clock time at which an item set with ``exptime`` expires."""
        if exptime == 0:
            return None
        now = self._clock.seconds()
        if exptime < 0:
            return now - 1
        if exptime <= ABSOLUTE_EXPTIME:
            return now + exptime
        return float(exptime)

    def expire_into(self, source: str, target: str) -> Callable[[Item], None]:
        """Where the items that expire in the queue ``source`` go: to
        ``target``, as a set to it would, no longer expiring."""

        def move(item: Item) -> None:
            moved = self.deliver(target, item.data, item.flags, None)
            if isinstance(moved, Deferred):
                moved.addErrback(self._not_moved, source, target)

        return move

    def _not_moved(self, failure: Failure, source: str, target: str) -> None:
        """An item that expired in ``source`` and that the journal of
        ``target`` refused, as it refuses a set: it is gone, and the log
        says so."""
        self._log.error(
            "An item expired in {source!r} could not be moved to {target!r}:"
            " {why}; it is dropped",
            source=source,
            target=target,
            why=failure.getErrorMessage(),
        )


def all_durable(waits: list[Deferred[None]]) -> Deferred[list[None]]:
    """Fires when every write is durable, or fails with the first failure."""

    def first_failure(failure: Failure) -> Failure:
        error = failure.value
        return error.subFailure if isinstance(error, FirstError) else failure

    return gatherResults(waits, consumeErrors=True).addErrback(first_failure)
