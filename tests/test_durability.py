"""Durability through the server: replay, sync policies, read-behind,
compaction, a full disk and damaged journals, with a real reactor, the real
journal thread and real files."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel

from erq.config import Config, parse_config
from erq.journal import FileOps, Journal, JournalWriter, queue_dir
from erq.queue import Item
from erq.service import QueueService
from erq.tap import Options
from erq.waiters import Deliver, Waiter
from tests.support import (
    DEADLINE,
    DurabilityCase,
    Server,
    assert_same_bytes,
    exchange,
    payload,
    poll_until,
    reactor,
    set_request,
    take,
)

# -- file operations a test controls -----------------------------------------------


class ControlledOps(FileOps):
    """Counts fsyncs and writes, can hold either on a gate, and can fail
    writes as a full disk does.  Runs on the journal thread."""

    def __init__(self) -> None:
        self.syncs = 0
        self.writes = 0
        self.syncs_entered = 0
        self.writes_entered = 0
        self.sync_gate = threading.Event()
        self.sync_gate.set()
        self.write_gate = threading.Event()
        self.write_gate.set()
        self.disk_full = False

    def write(self, fd: int, data: bytes) -> None:
        self.writes_entered += 1
        self.write_gate.wait(DEADLINE)
        if self.disk_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data)
        self.writes += 1

    def fsync(self, fd: int) -> None:
        self.syncs_entered += 1
        self.sync_gate.wait(DEADLINE)
        super().fsync(fd)
        self.syncs += 1


def directory_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def segments(path: str) -> list[str]:
    return sorted(
        os.path.join(path, name) for name in os.listdir(path) if name.endswith(".seg")
    )


class ReplayTests(DurabilityCase):
    async def test_round_trip_through_the_service(self) -> None:
        server = self.serve(parse_config("[defaults]\nmax_open_reads = 2\n"))
        sizes = [0, 1, 2, 7, 100, 1000, 65_536, 300_000, 5, 4096]
        flags = [0, 1, 2**32 - 1, 12345, 7, 0, 99, 2**31, 3, 65535]
        exptimes = [0, 3600, 2_000_000_000, 0, 86_400, 0, 0, 2_000_000_000, 60, 0]
        work = [
            (payload(i, size), flag, exptime)
            for i, (size, flag, exptime) in enumerate(
                zip(sizes, flags, exptimes, strict=True)
            )
        ]
        mixed = [(payload(100 + i, 50 * i), i, 0) for i in range(12)]
        writer = self.client(server)
        opener = self.client(server)
        before = time.time()

        def fill_and_use() -> None:
            self.assertEqual(set(writer.store("work", work)), {b"STORED"})
            self.assertEqual(set(writer.store("Mixed.Case", mixed)), {b"STORED"})
            self.assertEqual(set(writer.store("flushed", [b"a", b"b"])), {b"STORED"})
            self.assertEqual(set(writer.store("deleted", [b"c", b"d"])), {b"STORED"})
            # Taken for good.
            for data, flag, _ in work[:2]:
                self.assertEqual(writer.take("work", 1), [(flag, data)])
            # Handed out but never confirmed: the server stops first.
            for data, flag, _ in work[2:4]:
                self.assertEqual(opener.take("work/open", 1), [(flag, data)])
            self.assertEqual(writer.call(b"flush flushed\r\n"), b"END")
            self.assertEqual(writer.call(b"delete deleted\r\n"), b"DELETED")

        await deferToThread(fill_and_use)
        after = time.time()
        deleted_dir = queue_dir(self.data_dir, "deleted")
        await server.service.stopService()
        self.assertFalse(os.path.exists(deleted_dir))
        self.assertTrue(os.path.isdir(queue_dir(self.data_dir, "Mixed.Case")))

        server = self.serve(parse_config("[defaults]\nmax_open_reads = 2\n"))
        service = server.service
        self.assertIsNone(service.queue("deleted"))
        flushed = service.queue("flushed")
        self.assertEqual(0 if flushed is None else flushed.items, 0)
        queue = service.queue("work")
        assert queue is not None
        # The open reads are back at the head, in their order.
        self.assertEqual(queue.items, len(work) - 2)
        for data, flag, exptime in work[2:]:
            got = service.get("work", None, True, False)
            assert isinstance(got, Item)
            self.assertEqual((got.data, got.flags), (data, flag))
            if exptime == 0:
                self.assertIsNone(got.expiry)
            elif exptime > 1_000_000:
                self.assertEqual(got.expiry, float(exptime))
            else:
                assert got.expiry is not None
                self.assertTrue(before + exptime <= got.expiry <= after + exptime)
            queue.confirm(got)
        self.assertIsNone(service.get("work", None, False, False))

        def confirm_each() -> None:
            client = self.client(server)
            got = client.take("Mixed.Case/open", 1)
            for _ in mixed[1:]:
                got += client.take("Mixed.Case/close/open", 1)
            self.assertEqual(got, [(flag, data) for data, flag, _ in mixed])
            self.assertEqual(client.take("Mixed.Case/close", 1), [None])
            self.assertEqual(client.take("flushed", 1), [None])
            self.assertEqual(client.take("deleted", 1), [None])

        await deferToThread(confirm_each)

        # Everything was confirmed: a clean restart hands out nothing.
        server = await self.restart(server)

        def nothing_left() -> None:
            client = self.client(server)
            for name in ("work", "Mixed.Case", "flushed", "deleted"):
                self.assertEqual(client.take(name, 1), [None], name)

        await deferToThread(nothing_left)
        for name in ("work", "Mixed.Case"):
            queue = server.service.queue(name)
            assert queue is not None
            self.assertEqual((queue.items, queue.open_items), (0, 0))

    async def test_stop_and_start_the_same_service(self) -> None:
        service = QueueService(reactor=reactor, data_dir=self.data_dir)
        server = self.serve(service=service)

        def fill() -> None:
            client = self.client(server)
            self.assertEqual(
                client.store("q", [b"one", b"two", b"three"]), [b"STORED"] * 3
            )
            self.assertEqual(client.take("q", 1), [(0, b"one")])

        await deferToThread(fill)
        await service.stopService()
        self.assertFalse(service.running)

        server = self.serve(service=service)
        self.assertTrue(service.running)

        def use_again() -> None:
            client = self.client(server)
            self.assertEqual(client.take("q", 1), [(0, b"two")])
            self.assertEqual(client.store("q", [b"four"]), [b"STORED"])

        await deferToThread(use_again)
        await service.stopService()

        # The journal written across the restart replays as one.
        server = self.serve()

        def drained() -> list[bytes]:
            return self.client(server).drain("q")

        self.assertEqual(await deferToThread(drained), [b"three", b"four"])

    async def test_start_again_before_the_stop_is_done(self) -> None:
        service = QueueService(reactor=reactor, data_dir=self.data_dir)
        server = self.serve(service=service)
        client = self.client(server)
        self.assertEqual(await deferToThread(client.store, "q", [b"a"]), [b"STORED"])
        stopped = service.stopService()
        self.assertFalse(stopped.called)
        server = self.serve(service=service)
        client = self.client(server)
        # Journaled once the old files are closed, not refused.
        self.assertEqual(await deferToThread(client.store, "q", [b"b"]), [b"STORED"])
        await stopped
        self.assertEqual(await deferToThread(client.store, "q", [b"c"]), [b"STORED"])
        server = await self.restart(server)
        drained = await deferToThread(self.client(server).drain, "q")
        self.assertEqual(drained, [b"a", b"b", b"c"])

    async def test_open_reads_of_a_queue_read_behind(self) -> None:
        config = parse_config(
            "[defaults]\nmax_memory_size = 4096\nmax_open_reads = 3\n"
        )
        server = self.serve(config)
        items = [payload(i, 1000) for i in range(50)]
        client = self.client(server)
        self.assertEqual(
            await deferToThread(client.store, "q", items), [b"STORED"] * 50
        )
        self.assertEqual(
            await deferToThread(client.take, "q", 2), [(0, items[0]), (0, items[1])]
        )
        opened = await deferToThread(client.take, "q/open", 3)
        self.assertEqual(opened, [(0, data) for data in items[2:5]])
        server = await self.restart(server, config=config)
        drained = await deferToThread(self.client(server).drain, "q")
        self.assertEqual(drained, items[2:])

    async def test_set_again_after_flush_and_delete(self) -> None:
        config = parse_config("[defaults]\nmax_memory_size = 4096\n")
        server = self.serve(config)
        items = [payload(i, 1000) for i in range(30)]
        client = self.client(server)

        def use() -> None:
            # Flushed while most items are behind memory.
            client.store("flushed", items)
            self.assertEqual(client.call(b"flush flushed\r\n"), b"END")
            client.store("flushed", items[:3])
            client.store("deleted", items)
            self.assertEqual(client.call(b"delete deleted\r\n"), b"DELETED")
            client.store("deleted", items[3:6])

        await deferToThread(use)
        server = await self.restart(server, config=config)
        client = self.client(server)
        self.assertEqual(await deferToThread(client.drain, "flushed"), items[:3])
        self.assertEqual(await deferToThread(client.drain, "deleted"), items[3:6])

    async def test_expiry_across_a_restart(self) -> None:
        clock = Clock()
        clock.advance(1_700_000_000)
        server = self.serve(clock=clock)
        items = [(b"short", 1, 10), (b"long", 2, 100), (b"never", 3, 0)]
        self.assertEqual(
            await deferToThread(self.client(server).store, "q", items),
            [b"STORED"] * 3,
        )
        await server.service.stopService()
        clock = Clock()
        clock.advance(1_700_000_050)
        server = self.serve(clock=clock)
        got = await deferToThread(self.client(server).take, "q", 3)
        self.assertEqual(got, [(2, b"long"), (3, b"never"), None])
        queue = server.service.queue("q")
        assert queue is not None
        self.assertEqual(queue.expired_items, 1)

    async def test_names_that_need_encoding(self) -> None:
        names = ["Work", "x%y" * 80, "A" * 250, "a+b.c-d_e"]
        server = self.serve()
        client = self.client(server)
        for name in names:
            replies = await deferToThread(client.store, name, [name.encode()])
            self.assertEqual(replies, [b"STORED"])
        directories = [e for e in os.scandir(self.data_dir) if e.is_dir()]
        self.assertEqual(len(directories), len(names))
        server = await self.restart(server)
        client = self.client(server)
        for name in names:
            self.assertEqual(await deferToThread(client.drain, name), [name.encode()])


class SyncTests(DurabilityCase):
    async def test_stored_waits_for_fsync_and_sets_share_it(self) -> None:
        ops = ControlledOps()
        ops.sync_gate.clear()
        self.addCleanup(ops.sync_gate.set)
        server = self.serve(writer=JournalWriter(reactor, file_ops=ops))
        service = server.service
        client = self.client(server)
        count = 300
        items = [payload(i, 40) for i in range(count)]
        client.send(b"".join(set_request("q", data) for data in items))
        await poll_until(lambda: ops.syncs_entered >= 1)
        await poll_until(lambda: service.counters.cmd_set == count)
        queue = service.queue("q")
        assert queue is not None
        self.assertEqual(queue.items, count)
        # The first fsync is held: no set may be answered yet.
        self.assertEqual(ops.syncs, 0)
        self.assertTrue(client.nothing_yet())
        direct = service.delivery.put("q", b"direct", 0, 0)
        assert isinstance(direct, Deferred)
        self.assertFalse(direct.called)

        ops.sync_gate.set()
        replies = await deferToThread(lambda: [client.line() for _ in items])
        self.assertEqual(replies, [b"STORED"] * count)
        # Stored: fired, and not with False.
        self.assertIsNot(await direct, False)
        # Group commit: the batch held behind the first fsync shares one.
        self.assertLessEqual(ops.syncs, 3)
        self.assertGreaterEqual(ops.syncs, 1)
        drained = await deferToThread(client.drain, "q")
        self.assertEqual(drained, items + [b"direct"])

    async def test_never_answers_without_waiting(self) -> None:
        ops = ControlledOps()
        ops.write_gate.clear()
        self.addCleanup(ops.write_gate.set)
        config = parse_config('[defaults]\nsync_journal = "never"\n')
        server = self.serve(config, writer=JournalWriter(reactor, file_ops=ops))
        client = self.client(server)
        items = [payload(i, 100) for i in range(50)]
        # Answered while the journal thread cannot even write.
        replies = await deferToThread(client.store, "q", items)
        self.assertEqual(replies, [b"STORED"] * len(items))
        self.assertEqual(ops.writes, 0)
        ops.write_gate.set()
        await poll_until(lambda: ops.writes > 0)
        # Nor does it sync (until the files are closed).
        self.assertEqual(ops.syncs, 0)
        server = await self.restart(server)
        self.assertEqual(await deferToThread(self.client(server).drain, "q"), items)

    async def test_per_queue_settings_from_the_config(self) -> None:
        config = parse_config(
            "[defaults]\n"
            'sync_journal = "never"\n'
            "[queues.safe]\n"
            'sync_journal = "always"\n'
            "[queues.volatile]\n"
            "journal = false\n"
            "[queues.small]\n"
            'max_memory_size = "64KiB"\n'
        )
        ops = ControlledOps()
        ops.sync_gate.clear()
        self.addCleanup(ops.sync_gate.set)
        server = self.serve(config, writer=JournalWriter(reactor, file_ops=ops))
        service = server.service
        fast = self.client(server)
        safe = self.client(server)
        self.assertEqual(
            await deferToThread(fast.store, "fast", [b"f1", b"f2"]), [b"STORED"] * 2
        )
        safe.send(set_request("safe", b"s1"))
        await poll_until(lambda: ops.syncs_entered >= 1)
        await poll_until(lambda: service.counters.cmd_set == 3)
        self.assertTrue(safe.nothing_yet())
        # A queue that never syncs is not held up by one that does.
        self.assertEqual(await deferToThread(fast.store, "fast", [b"f3"]), [b"STORED"])
        self.assertTrue(safe.nothing_yet())
        ops.sync_gate.set()
        self.assertEqual(await deferToThread(safe.line), b"STORED")
        fast_journal = cast(Journal, service.create_queue("fast").journal)
        safe_journal = cast(Journal, service.create_queue("safe").journal)
        self.assertEqual((fast_journal.sync, safe_journal.sync), ("never", "always"))

        # journal = false: in memory only.
        self.assertEqual(
            await deferToThread(fast.store, "volatile", [b"v1", b"v2"]),
            [b"STORED"] * 2,
        )
        volatile = service.queue("volatile")
        assert volatile is not None
        self.assertIsNone(volatile.journal)
        self.assertFalse(os.path.exists(queue_dir(self.data_dir, "volatile")))

        # max_memory_size for one queue only.
        small_items = [payload(i, 4096) for i in range(40)]
        await deferToThread(fast.store, "small", small_items)
        await deferToThread(fast.store, "fast", small_items)
        stats = await deferToThread(fast.stats)
        self.assertEqual(stats["queue_small_items"], "40")
        self.assertLessEqual(int(stats["queue_small_mem_bytes"]), 64 * 1024 + 4096)
        self.assertEqual(stats["queue_fast_mem_items"], str(3 + len(small_items)))

        server = await self.restart(server, config=config)
        self.assertIsNone(server.service.queue("volatile"))

        def after_restart() -> None:
            client = self.client(server)
            self.assertEqual(client.drain("volatile"), [])
            self.assertEqual(client.drain("safe"), [b"s1"])
            self.assertEqual(client.drain("fast"), [b"f1", b"f2", b"f3"] + small_items)
            self.assertEqual(client.drain("small"), small_items)

        await deferToThread(after_restart)

    async def test_journal_turned_off_takes_the_items_into_memory(self) -> None:
        """A queue whose journal is turned off keeps the items its journal
        held, in memory; its directory goes, so a later start has none."""
        server = self.serve()
        items = [payload(i, 100) for i in range(20)]
        await deferToThread(self.client(server).store, "q", items)
        memory_only = parse_config(
            '[defaults]\nmax_memory_size = "1KiB"\n[queues.q]\njournal = false\n'
        )
        server = await self.restart(server, config=memory_only)
        queue = server.service.queue("q")
        assert queue is not None
        self.assertIsNone(queue.journal)
        self.assertEqual(queue.mem_items, len(items))
        await poll_until(lambda: not os.path.exists(queue_dir(self.data_dir, "q")))
        self.assertEqual(await deferToThread(self.client(server).drain, "q"), items)
        await deferToThread(self.client(server).store, "q", items[:3])
        server = await self.restart(server, config=memory_only)
        self.assertIsNone(server.service.queue("q"))

    async def test_sync_option(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('[queues.safe]\nsync_journal = "always"\n')
        options = Options()
        options.parseOptions(
            ["--config", path, "--sync", "never", "--data-dir", self.data_dir]
        )
        config: Config = options.config
        self.assertEqual(config.server.data_dir, self.data_dir)
        self.assertEqual(config.settings_for("q").sync_journal, "never")
        self.assertEqual(config.settings_for("safe").sync_journal, "always")
        ops = ControlledOps()
        ops.sync_gate.clear()
        self.addCleanup(ops.sync_gate.set)
        server = self.serve(config, writer=JournalWriter(reactor, file_ops=ops))
        client = self.client(server)
        self.assertEqual(await deferToThread(client.store, "q", [b"x"]), [b"STORED"])
        client.send(set_request("safe", b"y"))
        await poll_until(lambda: ops.syncs_entered >= 1)
        self.assertTrue(client.nothing_yet())
        ops.sync_gate.set()
        self.assertEqual(await deferToThread(client.line), b"STORED")

        interval = Options()
        interval.parseOptions(["--sync", "50ms"])
        self.assertEqual(interval.config.settings_for("q").sync_journal, 0.05)


class WatchedService(QueueService):
    """Notes the most memory each queue held after any put or get."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peak_mem_bytes: dict[str, int] = {}
        put = self.delivery.put

        def watched(
            name: str, data: bytes, flags: int, exptime: int
        ) -> bool | Deferred[Any]:
            result = put(name, data, flags, exptime)
            self._note(name)
            return result

        self.delivery.put = watched  # type: ignore[method-assign]

    def _note(self, name: str) -> None:
        queue = self.queues.get(name)
        if queue is not None:
            peak = self.peak_mem_bytes.get(name, 0)
            self.peak_mem_bytes[name] = max(peak, queue.mem_bytes)

    def get(
        self, name: str, timeout: float | None, open: bool, peek: bool
    ) -> Item | None | Deferred[Item | None]:
        result = super().get(name, timeout, open, peek)
        self._note(name)
        return result

    def get_for(
        self,
        deliver: Deliver,
        name: str,
        timeout: float | None,
        open: bool,
        peek: bool,
    ) -> Item | None | Waiter:
        result = super().get_for(deliver, name, timeout, open, peek)
        self._note(name)
        return result


async def put_all(
    service: QueueService, name: str, items: list[bytes], after_each: Callable[[], None]
) -> None:
    """``set`` each item through the service (not the socket, which would
    make the test ten times slower), checking ``after_each``; wait until the
    journal has made them durable."""
    waits: list[Deferred[Any]] = []
    for data in items:
        result = service.delivery.put(name, data, 0, 0)
        after_each()
        if isinstance(result, Deferred):
            waits.append(result)
        else:
            assert result is True
    # Every one stored: none fired with False (a failure would raise).
    assert False not in await gatherResults(waits)


class ReadBehindTests(DurabilityCase):
    async def test_deep_queue_through_a_small_memory(self) -> None:
        limit = 256 * 1024
        size = 1024
        count = 100_000
        config = parse_config(f"[defaults]\nmax_memory_size = {limit}\n")
        service = WatchedService(config, reactor=reactor, data_dir=self.data_dir)
        server = self.serve(service=service)
        queue = service.create_queue("deep")

        def within_memory() -> None:
            if queue.mem_bytes > limit + size:
                raise AssertionError(f"{queue.mem_bytes} bytes in memory")

        # The first items over the socket, the bulk through the service.
        first = [payload(i, size) for i in range(5000)]
        replies = await deferToThread(self.client(server).store, "deep", first)
        self.assertEqual(replies, [b"STORED"] * len(first))
        for start in range(len(first), count, 5000):
            items = [payload(i, size) for i in range(start, start + 5000)]
            await put_all(service, "deep", items, within_memory)
        stats = await deferToThread(self.client(server).stats)
        self.assertEqual(stats["queue_deep_items"], str(count))
        self.assertLessEqual(int(stats["queue_deep_mem_bytes"]), limit + size)
        self.assertLessEqual(service.peak_mem_bytes["deep"], limit + size)
        self.assertEqual(queue.items, count)

        def drain_socket(server: Server, start: int, stop: int) -> None:
            client = self.client(server)
            got = client.take("deep", stop - start, chunk=1000)
            for i, value in zip(range(start, stop), got, strict=True):
                if value is None or value[1] != payload(i, size):
                    assert_same_bytes(
                        b"END" if value is None else value[1], payload(i, size)
                    )

        async def drain_service(service: QueueService, start: int, stop: int) -> None:
            for i in range(start, stop):
                item = await take(service, "deep")
                if item is None or item.data != payload(i, size):
                    got = b"nothing" if item is None else item.data
                    assert_same_bytes(got, payload(i, size))
                within_memory()

        await deferToThread(drain_socket, server, 0, 10_000)
        self.assertLessEqual(service.peak_mem_bytes["deep"], limit + size)
        await drain_service(service, 10_000, 40_000)
        self.assertEqual(queue.items, count - 40_000)

        server = await self.restart(server, config=config)
        restarted = server.service.queue("deep")
        assert restarted is not None
        queue = restarted
        self.assertEqual(queue.items, count - 40_000)
        within_memory()
        await deferToThread(drain_socket, server, 40_000, 50_000)
        await drain_service(server.service, 50_000, count)
        self.assertEqual(
            await deferToThread(self.client(server).take, "deep", 1), [None]
        )
        self.assertEqual((queue.items, queue.mem_bytes, queue.behind_items), (0, 0, 0))

    async def test_items_larger_than_the_memory(self) -> None:
        config = parse_config("[defaults]\nmax_memory_size = 4096\n")
        server = self.serve(config)
        items = [payload(i, 10_000) for i in range(20)]
        client = self.client(server)
        self.assertEqual(
            await deferToThread(client.store, "q", items), [b"STORED"] * 20
        )
        self.assertEqual(await deferToThread(client.drain, "q"), items)
        self.assertEqual(
            await deferToThread(client.store, "q", items), [b"STORED"] * 20
        )
        server = await self.restart(server, config=config)
        self.assertEqual(await deferToThread(self.client(server).drain, "q"), items)


class CompactionTests(DurabilityCase):
    async def test_steady_traffic_keeps_the_journal_small(self) -> None:
        segment = 64 * 1024
        server = self.serve(segment_size=segment)
        service = server.service
        backlog = 100
        size = 16
        rounds = 200_000
        over_socket = 10_000
        data = [b"%015d-" % i for i in range(backlog + rounds)]
        self.assertEqual({len(d) for d in data}, {size})
        client = self.client(server)
        replies = await deferToThread(client.store, "steady", data[:backlog])
        self.assertEqual(replies, [b"STORED"] * backlog)
        directory = queue_dir(self.data_dir, "steady")
        largest = 0

        # Sets and gets in turn, through the service (an item is handed out
        # once it is durable; a chunk is smaller than a segment) ...
        chunk = 1000
        for start in range(0, rounds - over_socket, chunk):
            waits: list[Deferred[Any]] = []
            for i in range(start, start + chunk):
                stored = service.delivery.put("steady", data[backlog + i], 0, 0)
                assert isinstance(stored, Deferred)
                waits.append(stored)
            self.assertNotIn(False, await gatherResults(waits))
            for i in range(start, start + chunk):
                item = service.get("steady", None, False, False)
                assert isinstance(item, Item) and item.data == data[i], (i, item)
            largest = max(largest, directory_size(directory))

        # ... and over the socket.
        def steady(start: int, stop: int) -> None:
            request = b"".join(
                set_request("steady", data[backlog + i]) + b"get steady\r\n"
                for i in range(start, stop)
            )
            expected = b"".join(
                b"STORED\r\nVALUE steady 0 16\r\n" + data[i] + b"\r\nEND\r\n"
                for i in range(start, stop)
            )
            got = exchange(client.sock, request, len(expected))
            assert_same_bytes(got, expected)

        # A get pipelined behind a set takes an older item: the new one is
        # handed out only once durable, so a pipeline is no longer than the
        # backlog.
        for start in range(rounds - over_socket, rounds, backlog):
            await deferToThread(steady, start, start + backlog)
        queue = service.queue("steady")
        assert queue is not None
        self.assertEqual(queue.items, backlog)
        await service.stopService()
        on_disk = directory_size(directory)
        # An ADD record: 8 bytes of frame, 29 of header, then the data.
        live = backlog * (8 + 29 + size)
        self.assertLess(on_disk, 4 * segment + live)
        self.assertLess(largest, 4 * segment + live)
        self.assertLessEqual(len(segments(directory)), 4)

        server = self.serve(segment_size=segment)
        drained = await deferToThread(self.client(server).drain, "steady")
        self.assertEqual(drained, data[-backlog:])


class DiskFullTests(DurabilityCase):
    def writing_again(self) -> bool:
        return any("writing again" in text for text in self.logged())

    async def test_full_disk_refuses_sets_and_recovers(self) -> None:
        ops = ControlledOps()
        writer = JournalWriter(reactor, file_ops=ops, retry_delay=0.05)
        server = self.serve(writer=writer)
        client = self.client(server)
        before = [b"before-%d" % i for i in range(5)]
        self.assertEqual(
            await deferToThread(client.store, "q", before), [b"STORED"] * 5
        )

        ops.disk_full = True
        refused = [b"refused-%d" % i for i in range(4)]
        replies = await deferToThread(client.store, "q", refused[:2])
        # One at a time too: each set meets the full disk on its own.
        for data in refused[2:]:
            replies += await deferToThread(client.store, "q", [data])
        self.assertEqual(replies, [b"SERVER_ERROR no space left on device"] * 4)
        # What was stored before is still handed out.
        self.assertEqual(
            await deferToThread(client.take, "q", 2), [(0, before[0]), (0, before[1])]
        )
        errors = [
            text for text in self.logged(LogLevel.error) if "no space left" in text
        ]
        self.assertEqual(len(errors), 1, self.logged())
        self.assertIn(queue_dir(self.data_dir, "q"), errors[0])

        # Refused at once while the journal cannot write, without a record.
        again = await deferToThread(client.store, "q", [b"again"])
        self.assertEqual(again, [b"SERVER_ERROR no space left on device"])
        ops.disk_full = False
        # Accepted again once the retry timer found room.
        await poll_until(self.writing_again)
        after = [b"after-%d" % i for i in range(3)]
        self.assertEqual(await deferToThread(client.store, "q", after), [b"STORED"] * 3)

        server = await self.restart(server)
        drained = await deferToThread(self.client(server).drain, "q")
        # Everything STORED is back, in order, and nothing refused.
        self.assertEqual(drained, before[2:] + after)

    async def test_a_refused_set_is_not_handed_out(self) -> None:
        """A consumer waiting while the disk fills up does not receive the
        item whose set was refused."""
        ops = ControlledOps()
        writer = JournalWriter(reactor, file_ops=ops, retry_delay=0.05)
        server = self.serve(writer=writer)
        producer, consumer = self.client(server), self.client(server)
        self.assertEqual(await deferToThread(producer.store, "q", [b"a"]), [b"STORED"])
        self.assertEqual(await deferToThread(consumer.take, "q", 1), [(0, b"a")])
        # The write is held until the consumer waits.
        ops.write_gate.clear()
        entered = ops.writes_entered
        refused = deferToThread(producer.store, "q", [b"refused"])
        await poll_until(lambda: ops.writes_entered > entered)
        consumer.send(b"get q/t=300\r\n")
        await poll_until(lambda: server.service.queue("q").waiters == 1)  # type: ignore[union-attr]
        ops.disk_full = True
        ops.write_gate.set()
        self.assertEqual(await refused, [b"SERVER_ERROR no space left on device"])
        self.assertIsNone(await deferToThread(consumer.value))
        ops.disk_full = False
        await poll_until(self.writing_again)
        self.assertEqual(await deferToThread(producer.store, "q", [b"b"]), [b"STORED"])
        self.assertEqual(await deferToThread(consumer.take, "q", 2), [(0, b"b"), None])

    async def test_what_is_consumed_while_the_disk_is_full_stays_gone(self) -> None:
        """Gets go on while the journal cannot write.  Their removals are
        written once the disk has room again: by the retry timer, or at the
        latest when the server stops cleanly.  Nothing consumed comes back
        after a restart."""
        for retry_delay in (0.05, 3600.0):
            ops = ControlledOps()
            writer = JournalWriter(reactor, file_ops=ops, retry_delay=retry_delay)
            server = self.serve(writer=writer)
            client = self.client(server)
            items = [b"item-%d" % i for i in range(6)]
            stored = await deferToThread(client.store, "q", items)
            self.assertEqual(stored, [b"STORED"] * 6)
            ops.disk_full = True
            refused = await deferToThread(client.store, "q", [b"refused"])
            self.assertEqual(refused, [b"SERVER_ERROR no space left on device"])
            taken = await deferToThread(client.take, "q", 3)
            self.assertEqual(taken, [(0, data) for data in items[:3]])
            ops.disk_full = False
            if retry_delay < 1:
                await poll_until(self.writing_again)
            server = await self.restart(server)
            drained = await deferToThread(self.client(server).drain, "q")
            self.assertEqual(drained, items[3:], f"retry every {retry_delay} s")
            await server.service.stopService()

    async def test_an_expired_item_the_full_disk_refuses_is_logged(self) -> None:
        """An expired item moved to ``expire_to_queue`` while the disk is
        full is refused there like a set: the server says so in its log,
        naming both queues, and not as an unhandled error."""
        ops = ControlledOps()
        writer = JournalWriter(reactor, file_ops=ops, retry_delay=3600.0)
        clock = Clock()
        config = parse_config('[queues.q]\nexpire_to_queue = "dead"\n')
        server = self.serve(config, writer=writer, clock=clock)
        service = server.service
        stored = service.delivery.put("q", b"short-lived", 0, 10)
        assert isinstance(stored, Deferred)
        self.assertIsNot(await stored, False)
        ops.disk_full = True
        # The periodic sweep or this flush moves it, whichever comes first.
        clock.advance(11)
        service.flush_expired("q")
        self.assertEqual(service.queue("q").items, 0)  # type: ignore[union-attr]

        def refused() -> list[str]:
            return [
                text
                for text in self.logged(LogLevel.error)
                if "could not be moved" in text
            ]

        await poll_until(lambda: bool(refused()))
        [text] = refused()
        self.assertIn("'q'", text)
        self.assertIn("'dead'", text)
        self.assertIn("no space left on device", text)
        self.assertEqual(service.queue("dead").items, 0)  # type: ignore[union-attr]


class DamageTests(DurabilityCase):
    async def fill(self, items: list[bytes], **options: Any) -> None:
        server = self.serve(**options)
        replies = await deferToThread(self.client(server).store, "q", items)
        self.assertEqual(replies, [b"STORED"] * len(items))
        await server.service.stopService()

    def damage_logged(self) -> list[str]:
        return [
            text
            for text in self.logged(LogLevel.warn)
            if text.startswith("Journal of q:")
        ]

    async def test_torn_tail(self) -> None:
        items = [payload(i, 200) for i in range(20)]
        await self.fill(items)
        [last] = segments(queue_dir(self.data_dir, "q"))
        size = os.path.getsize(last)
        # A crash in the middle of writing the last item.
        os.truncate(last, size - 100)

        server = self.serve()
        [logged] = self.damage_logged()
        self.assertIn("torn record", logged)
        self.assertIn(f"cut {200 + 8 + 29 - 100} bytes", logged)
        self.assertEqual(os.path.getsize(last), size - (200 + 8 + 29))
        client = self.client(server)
        self.assertEqual(await deferToThread(client.store, "q", [b"new"]), [b"STORED"])
        server = await self.restart(server)
        self.assertEqual(
            await deferToThread(self.client(server).drain, "q"), items[:-1] + [b"new"]
        )
        self.assertEqual(self.damage_logged(), [logged])

    async def test_flipped_byte_in_a_middle_segment(self) -> None:
        items = [payload(i, 200) for i in range(60)]
        await self.fill(items, segment_size=4096)
        files = segments(queue_dir(self.data_dir, "q"))
        self.assertGreaterEqual(len(files), 3)
        contents = []
        for path in files:
            with open(path, "rb") as f:
                contents.append(f.read())
        home = [
            next(n for n, content in enumerate(contents) if data in content)
            for data in items
        ]
        victim = home.index(1) + 2
        self.assertEqual(home[victim], 1)
        with open(files[1], "r+b") as f:
            offset = contents[1].index(items[victim]) + 100
            f.seek(offset)
            f.write(bytes([contents[1][offset] ^ 0x40]))

        server = self.serve(segment_size=4096)
        drained = await deferToThread(self.client(server).drain, "q")
        # Everything before the damage, and everything in later segments.
        later = [data for data, n in zip(items, home, strict=True) if n > 1]
        self.assertEqual(drained, items[:victim] + later)
        [logged] = self.damage_logged()
        self.assertIn("corrupt record", logged)
        self.assertIn(os.path.basename(files[1]), logged)
        self.assertIn("saved as", logged)

    async def test_damage_is_cut_once(self) -> None:
        items = [payload(i, 200) for i in range(60)]
        await self.fill(items, segment_size=4096)
        files = segments(queue_dir(self.data_dir, "q"))
        with open(files[1], "r+b") as f:
            f.seek(1000)
            byte = f.read(1)
            f.seek(1000)
            f.write(bytes([byte[0] ^ 1]))
        server = self.serve(segment_size=4096)
        first = await deferToThread(self.client(server).take, "q", 10)
        self.assertEqual(first, [(0, data) for data in items[:10]])
        queue = server.service.queue("q")
        assert queue is not None
        left = queue.items
        self.assertLess(left, 50)
        await deferToThread(self.client(server).store, "q", [b"new"])
        server = await self.restart(server, segment_size=4096)
        queue = server.service.queue("q")
        assert queue is not None
        self.assertEqual(queue.items, left + 1)
        drained = await deferToThread(self.client(server).drain, "q")
        self.assertEqual(drained[-1], b"new")
        self.assertEqual(len(self.damage_logged()), 1)
