"""The command handlers: one per command, found by its word in ``COMMANDS``.

A handler takes the connection and the words after the command, answers in
request order through the connection's replies (``_reply``, ``_reply_raw``
for a reply with its line ends, ``_hold`` and ``_fill`` for one that comes
later), and raises a ``RequestError`` for a request it refuses; the
protocol turns that into the reply word.  The handlers are grouped by what
they touch: ``StoreCommands`` read data blocks and store them,
``ReadCommands`` hand items out and keep this connection's open reads,
``AdminCommands`` ask the service.  Each group is a mixin of
``QueueProtocol``, so the handlers call one another and the protocol's
replies as methods, as fast as before the split.

The hot paths are inlined on purpose: a get of one key on a connection
without open reads (``_get_one``), the same get or set line repeated in one
read (``_get_run``, ``_set_run``: answered, or stored and journaled, as one
batch), and a set line seen before (handled in the protocol's ``_line``
without splitting it).  They repeat a little of the general path rather
than add a call per request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure

from erq import __version__
from erq.config import ConfigError
from erq.connections import describe_peer
from erq.durable import Durable
from erq.journal.cohort import Pace
from erq.protocol.flow import FlowControl
from erq.protocol.replies import MAX_HELD_OUTPUT, ReplyOrder, Slot
from erq.protocol.requests import (
    BrokenRules,
    BrokenStream,
    ClientError,
    CommandError,
    GetRequest,
    SetLine,
    Storing,
    Unavailable,
    check_block,
    get_request,
    parse_set,
    queue_name,
)
from erq.queue import Item, Queue
from erq.status import ServerStatus

if TYPE_CHECKING:
    from erq.service import Counters, QueueService

#: The statuses that refuse sets and gets, as the hot paths compare them.
UP = ServerStatus.UP
QUIESCENT = ServerStatus.QUIESCENT

#: The whole reply to a get of one key that found an item.
ONE_VALUE = b"VALUE %s %d %d\r\n%s\r\nEND\r\n"
#: At most this many repeated requests are answered as one run ...
MAX_RUN = 1000
#: ... and a run of sets stops once it holds this much data.
MAX_RUN_BYTES = 1024 * 1024


class Cancellable(Protocol):
    """A wait to end when the connection goes: a waiting get's ``Waiter``,
    or the Deferred of a monitor's wait."""

    def cancel(self) -> None: ...


class Handlers:
    """What the handlers use of their connection, which provides it."""

    if TYPE_CHECKING:
        service: QueueService
        counters: Counters
        #: This connection's open reads, oldest first, by queue.
        open_reads: dict[Queue, deque[Item]]
        _replies: ReplyOrder
        _flow: FlowControl
        _storing: Storing
        _waiting: Cancellable | None
        _waiting_reply: tuple[Slot | None, list[bytes]]
        _waiting_get: tuple[list[GetRequest], int]
        _waiting_key: bytes
        _running: bool
        _input: bytearray
        _reply_raw: Callable[[bytes], None]
        _hold: Callable[[], Slot]
        _fill: Callable[..., None]
        _pace: Pace

        @property
        def peer(self) -> IAddress: ...
        def _reply(self, data: bytes) -> None: ...
        def _flush(self) -> None: ...
        def _close(self) -> None: ...
        def _read_block(
            self,
            words: list[bytes],
            reply_to: Callable[[bytes], None],
            cap: int | None = None,
        ) -> None: ...


class StoreCommands(Handlers):
    """``set``, and the storage commands a queue does not support."""

    def _set(self, words: list[bytes]) -> None:
        self._read_block(words, self._store)
        self._storing = parse_set(words)

    def _store(self, block: bytes) -> None:
        name, flags, exptime, noreply, error = self._storing
        # check_block, inlined: this is every set.
        if block[-2:] != b"\r\n":
            raise BrokenStream("bad data chunk")
        if error is not None:
            raise ClientError(error.decode("ascii"), noreply=noreply)
        service = self.service
        status = service.status
        if status is not UP:
            # Read and dropped: the connection stays in step.
            self.counters.cmd_set += 1
            raise Unavailable(status.reason, noreply=noreply)
        result = service.delivery.put(name, block[:-2], flags, exptime)
        storage = service.storage
        writer = None if storage is None else storage.writer
        if writer is not None and writer.backlog > writer.max_backlog:
            # FlowControl.check_journal's test, inlined: this is every set.
            self._flow.check_journal(writer)
        if noreply:
            if isinstance(result, Deferred):
                result.addErrback(_ignore)
        elif result is True:
            replies = self._replies
            if replies.slots:
                replies.add(b"STORED\r\n")
            else:
                # ReplyOrder.add, inlined: this is every set.
                replies.out.append(b"STORED\r\n")
                replies.out_size += 8
        elif result is False:
            self._reply_raw(b"NOT_STORED\r\n")
        else:
            self._replies.await_stored(result, 1)
            if type(result) is Durable:
                # Its queue gathers the sets of connections in lock-step.
                self._pace.stored(result)

    def _set_run(
        self, known: SetLine, buffer: bytearray, start: int, position: int
    ) -> int:
        """The same set line again and again with every data block already
        read, as a producer sending a batch writes it: stored together and
        journaled as one.  Returns where the run ends, or -1 where the sets
        go one by one."""
        name, flags, exptime, noreply, error = known.storing
        length = known.length
        service = self.service
        if (
            error is not None
            or noreply
            or length > service.max_item_cap
            or service.status is not UP
        ):
            return -1
        raw = bytes(buffer[start:position])
        total = len(buffer)
        blocks: list[bytes] = []
        after = -1
        at = position
        taken = 0
        while len(blocks) < MAX_RUN and taken < MAX_RUN_BYTES:
            end = at + length
            if end + 2 > total or not buffer.startswith(b"\r\n", end):
                break
            blocks.append(bytes(buffer[at:end]))
            taken += length
            after = end + 2
            if not buffer.startswith(raw, after):
                break
            at = after + len(raw)
        if len(blocks) < 2:
            return -1
        result = service.delivery.put_many(name, blocks, flags, exptime)
        if result is None:
            return -1
        self._flow.check_journal(service.writer)
        count, durable = result
        if durable is None:
            self._reply_raw(b"STORED\r\n" * count)
        else:
            self._replies.await_stored(durable, count)
            if type(durable) is Durable:
                self._pace.stored(durable)
        return after

    def _unsupported(self, words: list[bytes]) -> None:
        self._read_block(words, _drop_unsupported)


def _drop_unsupported(block: bytes) -> None:
    check_block(block)
    raise ClientError("not supported by a queue")


def _ignore(failure: Failure) -> None:
    pass


class ReadCommands(Handlers):
    """``get`` with its options, ``monitor`` and ``confirm``: items handed
    out, and the open reads of this connection."""

    def _get(self, words: list[bytes]) -> None:
        if len(words) == 1 and not self.open_reads:
            request = get_request(words[0])
            if request.simple:
                self._get_one(request)
                return
        if not words:
            raise CommandError("get without a key")
        requests = [get_request(key) for key in words]
        if self.service.status is QUIESCENT and any(
            request.open or not (request.close or request.abort) for request in requests
        ):
            raise Unavailable(QUIESCENT.reason)
        if (
            self.open_reads or not all(request.simple for request in requests)
        ) and self._breaks_open_rules(requests):
            raise BrokenRules("open reads beyond the rules")
        self._get_from(requests, 0, [])

    def _get_run(
        self, request: GetRequest, buffer: bytearray, start: int, position: int
    ) -> int:
        """The same plain get again and again, as a consumer taking a batch
        sends it: as many as can be answered now are answered together.
        Returns where the answered ones end, or -1 where the gets go one by
        one."""
        if not request.takes or self.open_reads or self.service.status is QUIESCENT:
            return -1
        raw = bytes(buffer[start:position])
        count = 1
        while count < MAX_RUN and buffer.startswith(raw, position):
            position += len(raw)
            count += 1
        if count < 2:
            return -1
        items, rest_empty = self.service.take_many(request.name, count, MAX_HELD_OUTPUT)
        hits = len(items)
        served = count if rest_empty else hits
        if not served:
            return -1
        counters = self.counters
        counters.cmd_get += served
        counters.get_hits += hits
        counters.get_misses += served - hits
        key = request.key
        parts = [
            ONE_VALUE % (key, item.flags, len(item.data), item.data) for item in items
        ]
        if served > hits:
            parts.append(b"END\r\n" * (served - hits))
        self._reply_raw(b"".join(parts))
        return start + served * len(raw)

    def _get_one(self, request: GetRequest) -> None:
        """``_get_from`` for the most common request, a get or peek of one
        key on a connection without open reads: no rule to check, no list
        of parts."""
        if self.service.status is QUIESCENT:
            raise Unavailable(QUIESCENT.reason)
        counters = self.counters
        counters.cmd_get += 1
        if request.peek:
            counters.cmd_peek += 1
        result = self.service.get_for(
            self._got_one, request.name, request.timeout, False, request.peek
        )
        if result is None:
            counters.get_misses += 1
            self._reply_raw(b"END\r\n")
        elif result.__class__ is Item:
            counters.get_hits += 1
            item: Any = result
            data = item.data
            self._reply_raw(ONE_VALUE % (request.key, item.flags, len(data), data))
        else:
            # A Waiter, that calls _got_one.
            waiter: Any = result
            self._waiting = waiter
            # With no reply before it still to come, its own needs no place
            # in the order: none comes after it while it waits, as the
            # requests behind it are not read until it is answered.
            slot = self._hold() if self._replies.slots else None
            self._waiting_reply = (slot, [])
            self._waiting_key = request.key

    def _got_one(self, item: Item | None) -> None:
        """``_got`` for the wait of ``_get_one``: the item (or nothing) is
        the whole reply."""
        self._waiting = None
        counters = self.counters
        if item is None:
            counters.get_misses += 1
            reply = b"END\r\n"
        else:
            counters.get_hits += 1
            data = item.data
            reply = ONE_VALUE % (self._waiting_key, item.flags, len(data), data)
        slot = self._waiting_reply[0]
        if slot is None:
            self._reply_raw(reply)
            if not self._running:
                self._flush()
        else:
            self._fill(slot, reply)
        if self._input:
            # Requests came in behind the wait (a lock-step client sends
            # none): they go on now.
            self._flow.wait_ended()

    def _breaks_open_rules(self, requests: list[GetRequest]) -> bool:
        """Whether these keys, in turn, would open more reads than a queue
        allows, or read plainly from a queue with an open read here."""
        counts: dict[str, int] = {}
        for request in requests:
            name = request.name
            if name not in counts:
                queue = self.service.queue(name)
                counts[name] = len(self.open_reads.get(queue, ())) if queue else 0
            if request.close or request.abort:
                counts[name] = max(counts[name] - 1, 0)
            if request.open:
                if counts[name] >= self.service.settings_for(name).max_open_reads:
                    return True
                counts[name] += 1
            elif not (request.peek or request.close or request.abort):
                if counts[name]:
                    return True
        return False

    def _get_from(
        self,
        requests: list[GetRequest],
        index: int,
        parts: list[bytes],
        slot: Slot | None = None,
    ) -> None:
        """Answer the keys from ``index`` on, waiting where a key waits."""
        counters = self.counters
        service = self.service
        for position in range(index, len(requests)):
            request = requests[position]
            counters.cmd_get += 1
            if request.close or request.abort:
                self._end_open_read(request)
                if not request.open:
                    continue
            if request.peek:
                counters.cmd_peek += 1
            result = service.get_for(
                self._got, request.name, request.timeout, request.open, request.peek
            )
            if result is not None and result.__class__ is not Item:
                # A Waiter, that calls _got.
                if slot is None:
                    slot = self._hold()
                waiter: Any = result
                self._waiting = waiter
                self._waiting_reply = (slot, parts)
                self._waiting_get = (requests, position)
                return
            # An Item or None; ``typing.cast`` would be a call per get.
            found: Any = result
            self._answer(request, found, parts)
        parts.append(b"END\r\n")
        data = b"".join(parts)
        if slot is None:
            self._reply_raw(data)
        else:
            self._fill(slot, data)

    def _got(self, item: Item | None) -> None:
        """The key of ``_get_from`` that waited is answered: the keys after
        it go on."""
        self._waiting = None
        slot, parts = self._waiting_reply
        assert slot is not None
        requests, index = self._waiting_get
        self._answer(requests[index], item, parts)
        self._get_from(requests, index + 1, parts, slot)
        if self._waiting is None:
            self._flow.wait_ended()

    def _answer(
        self, request: GetRequest, item: Item | None, parts: list[bytes]
    ) -> None:
        if item is None:
            self.counters.get_misses += 1
            return
        self.counters.get_hits += 1
        if request.open:
            self._opened(request.name, item)
        data = item.data
        parts.append(b"VALUE %s %d %d\r\n" % (request.key, item.flags, len(data)))
        parts.append(data)
        parts.append(b"\r\n")

    def _end_open_read(self, request: GetRequest) -> None:
        """``/close`` or ``/abort`` the oldest open read on that queue."""
        queue = self.service.queue(request.name)
        if queue is None:
            return
        items = self.open_reads.get(queue)
        if not items:
            return
        item = items.popleft()
        if not items:
            del self.open_reads[queue]
        if request.close:
            queue.confirm(item)
        else:
            queue.abort([item])

    def _monitor(self, words: list[bytes]) -> None:
        if not 2 <= len(words) <= 3 or not all(word.isdigit() for word in words[1:]):
            raise ClientError("bad command line format")
        name = queue_name(words[0])
        if self.service.status is QUIESCENT:
            raise Unavailable(QUIESCENT.reason)
        limit = int(words[2]) if len(words) == 3 else 100
        deadline = self.service.clock.seconds() + int(words[1])
        self._monitor_from(words[0], name, deadline, limit, self._hold())

    def _monitor_from(
        self, key: bytes, name: str, deadline: float, left: int, slot: Slot
    ) -> None:
        """Hand out items as open reads until time or count runs out."""
        service = self.service
        while left > 0:
            timeout = deadline - service.clock.seconds()
            result = service.get(name, timeout if timeout > 0 else None, True, False)
            if isinstance(result, Deferred):
                self._waiting = result
                self._waiting_reply = (slot, [])
                result.addCallbacks(
                    self._monitored,
                    _wait_failed,
                    callbackArgs=(key, name, deadline, left, slot),
                )
                return
            if result is None:
                break
            self._hand_monitored(key, name, result, slot)
            left -= 1
        self._fill(slot, b"END\r\n")

    def _monitored(
        self,
        item: Item | None,
        key: bytes,
        name: str,
        deadline: float,
        left: int,
        slot: Slot,
    ) -> None:
        self._waiting = None
        if item is None:
            self._fill(slot, b"END\r\n")
        else:
            self._hand_monitored(key, name, item, slot)
            self._monitor_from(key, name, deadline, left - 1, slot)
        if self._waiting is None:
            self._flow.wait_ended()

    def _hand_monitored(self, key: bytes, name: str, item: Item, slot: Slot) -> None:
        self._opened(name, item)
        self.counters.get_hits += 1
        data = item.data
        self._fill(
            slot,
            b"VALUE %s %d %d\r\n%s\r\n" % (key, item.flags, len(data), data),
            done=False,
        )

    def _confirm(self, words: list[bytes]) -> None:
        if len(words) != 2 or not words[1].isdigit():
            raise ClientError("bad command line format")
        count = int(words[1])
        queue = self.service.queue(queue_name(words[0]))
        items = self.open_reads.get(queue) if queue is not None else None
        if count and (queue is None or items is None or len(items) < count):
            raise CommandError("confirm of reads not open")
        if queue is not None and items is not None:
            for _ in range(count):
                queue.confirm(items.popleft())
            if not items:
                del self.open_reads[queue]
        self._reply(b"END")

    def _opened(self, name: str, item: Item) -> None:
        """Keep an item handed out as an open read of this connection."""
        queue = self.service.queue(name)
        assert queue is not None
        self.open_reads.setdefault(queue, deque()).append(item)
        if queue.settings.open_timeout is not None:
            queue.time_open(item, self._taken_back)

    def _taken_back(self, queue: Queue, item: Item) -> None:
        """The queue took an open read back for its ``open_timeout``: it is
        no longer this connection's to close or abort."""
        items = self.open_reads.get(queue)
        if items is None or item not in items:
            return
        items.remove(item)
        if not items:
            del self.open_reads[queue]
        # A consumer that is stuck, or slower than the setting allows: the
        # item will be delivered again.
        self.service.warn_limited(
            "open read timed out",
            "An open read of {queue} was not closed by {peer} within its"
            " open_timeout: it went back to the queue",
            queue=queue.name,
            peer=describe_peer(self.peer),
        )


def _wait_failed(failure: Failure) -> None:
    # Cancelled because the connection went away: nothing to answer.
    failure.trap(CancelledError)


class AdminCommands(Handlers):
    """The commands that ask the service: delete, flush, stats, version,
    reload, shutdown, status; and ``quit``."""

    def _check_changes(self, noreply: bool = False) -> None:
        """Refuse a request that changes queues where the status forbids
        it (``set`` checks for itself, on its hot path)."""
        status = self.service.status
        if not status.changes_queues:
            raise Unavailable(status.reason, noreply=noreply)

    def _delete(self, words: list[bytes]) -> None:
        noreply = bool(words) and words[-1] == b"noreply"
        if noreply:
            words = words[:-1]
        if not words or len(words) > 2 or (len(words) == 2 and words[1] != b"0"):
            raise ClientError("bad command line format")
        name = queue_name(words[0])
        self._check_changes(noreply)
        deleted = self.service.delete(name)
        if not noreply:
            self._reply(b"DELETED" if deleted else b"NOT_FOUND")

    def _flush_queue(self, words: list[bytes]) -> None:
        if len(words) != 1:
            raise ClientError("bad command line format")
        name = queue_name(words[0])
        self._check_changes()
        self.service.flush(name)
        self._reply(b"END")

    def _flush_all(self, words: list[bytes]) -> None:
        self._check_changes()
        self.service.flush_all()
        self._reply(b"Flushed all queues.")

    def _flush_expired(self, words: list[bytes]) -> None:
        if len(words) != 1:
            raise ClientError("bad command line format")
        count = self.service.flush_expired(queue_name(words[0]))
        self._reply(b"%d" % count)

    def _flush_all_expired(self, words: list[bytes]) -> None:
        self._reply(b"%d" % self.service.flush_all_expired())

    def _stats(self, words: list[bytes]) -> None:
        lines = [
            b"STAT %s %s\r\n" % (name.encode(), str(value).encode())
            for name, value in self.service.stats()
        ]
        lines.append(b"END\r\n")
        self._reply_raw(b"".join(lines))

    def _dump_stats(self, words: list[bytes]) -> None:
        service = self.service
        if words:
            names = [queue_name(word) for word in words]
            queues = [service.queues[name] for name in names if name in service.queues]
        else:
            queues = list(service.queues.values())
        lines = []
        for queue in queues:
            lines.append(b"queue '%s' {\r\n" % queue.name.encode())
            for name, value in service.queue_stats(queue):
                lines.append(b"  %s=%s\r\n" % (name.encode(), str(value).encode()))
            lines.append(b"}\r\n")
        lines.append(b"END\r\n")
        self._reply_raw(b"".join(lines))

    def _version(self, words: list[bytes]) -> None:
        self._reply(b"VERSION " + __version__.encode())

    def _shutdown(self, words: list[bytes]) -> None:
        refused = self.service.shutdown_refused(self.peer)
        if refused is not None:
            raise ClientError(refused)
        # Every connection, this one too, closes once the replies to the
        # requests it has read have left.
        self.service.shutdown()

    def _reload(self, words: list[bytes]) -> None:
        try:
            self.service.live_config.reload_logged("the reload command", reraise=True)
        except ConfigError as error:
            self._reply(b"SERVER_ERROR " + str(error).encode("ascii", "replace"))
        else:
            self._reply(b"Reloaded config.")

    def _status(self, words: list[bytes]) -> None:
        """``status`` answers the server's status; ``status <status>``
        changes it."""
        if not words:
            self._reply(self.service.status.name.encode("ascii"))
            return
        try:
            if len(words) != 1:
                raise ValueError
            status = ServerStatus(words[0].decode("ascii").lower())
        except (ValueError, UnicodeDecodeError):
            raise ClientError("bad status") from None
        unkept = self.service.kept_status.set(status, self.peer)
        if unkept is None:
            self._reply(b"END")
        else:
            self._reply(b"SERVER_ERROR " + unkept.encode("ascii", "replace"))

    def _quit(self, words: list[bytes]) -> None:
        self._close()


#: A handler: the connection, and the words after the command.
Handler = Callable[[Any, list[bytes]], None]

#: Every command, by its word (lower case).
COMMANDS: dict[bytes, Handler] = {
    b"set": StoreCommands._set,
    b"get": ReadCommands._get,
    b"gets": ReadCommands._get,
    b"delete": AdminCommands._delete,
    b"flush": AdminCommands._flush_queue,
    b"flush_all": AdminCommands._flush_all,
    b"flush_expired": AdminCommands._flush_expired,
    b"flush_all_expired": AdminCommands._flush_all_expired,
    b"stats": AdminCommands._stats,
    b"dump_stats": AdminCommands._dump_stats,
    b"version": AdminCommands._version,
    b"shutdown": AdminCommands._shutdown,
    b"quit": AdminCommands._quit,
    b"monitor": ReadCommands._monitor,
    b"reload": AdminCommands._reload,
    b"confirm": ReadCommands._confirm,
    b"status": AdminCommands._status,
    b"add": StoreCommands._unsupported,
    b"replace": StoreCommands._unsupported,
    b"append": StoreCommands._unsupported,
    b"prepend": StoreCommands._unsupported,
    b"cas": StoreCommands._unsupported,
}
