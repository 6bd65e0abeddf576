"""A server that crashes loses nothing it acknowledged: a real twistd killed
with SIGKILL under load, and the journal's files as a crash would leave them
at random moments of the journal thread's work."""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from collections import Counter

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from erq.config import parse_config
from erq.journal import FileOps, JournalWriter, queue_dir
from erq.journal.replay import _Replay
from erq.queue import Item
from erq.service import QueueService
from tests.support import (
    DEADLINE,
    LOCALHOST,
    DurabilityCase,
    SocketClient,
    TwistdCase,
    free_port,
    payload,
    poll_until,
    reactor,
    set_request,
    take,
)

#: Producers, items each may set at most, and items per pipelined window.
PRODUCERS = 4
MOST_ITEMS = 20_000
WINDOW = 8
#: Longest the load may run before the kill.
LOAD_DEADLINE = 10.0


def item_name(producer: int, number: int) -> bytes:
    return b"p%d-%06d" % (producer, number)


def produce(
    port: int, producer: int, acked: list[bytes], stop: threading.Event
) -> None:
    """Set numbered items until the server dies; note each one STORED."""
    deadline = time.monotonic() + LOAD_DEADLINE
    try:
        client = SocketClient(port)
    except OSError:
        return
    try:
        number = 0
        while number < MOST_ITEMS and not stop.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the server was not killed in time")
            names = [item_name(producer, number + i) for i in range(WINDOW)]
            client.send(b"".join(set_request("crash", name) for name in names))
            for name in names:
                reply = client.line()
                if reply != b"STORED":
                    raise AssertionError(f"{name!r}: {reply!r}")
                acked.append(name)
            number += WINDOW
    except (OSError, ConnectionError):
        # The kill: whatever was not answered was not acknowledged.
        pass
    finally:
        client.close()


def consume(port: int, delivered: list[bytes], stop: threading.Event) -> None:
    """Read items as open reads, confirming each with the next read."""
    deadline = time.monotonic() + LOAD_DEADLINE
    try:
        client = SocketClient(port)
    except OSError:
        return
    try:
        while not stop.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the server was not killed in time")
            [value] = client.take("crash/close/open/t=50", 1)
            if value is not None:
                delivered.append(value[1])
    except (OSError, ConnectionError):
        pass
    finally:
        client.close()


class CrashTests(TwistdCase):
    timeout = 30

    async def start(self, port: int) -> None:
        process = self.spawn(f"tcp:{port}:interface={LOCALHOST}", "--sync", "always")
        self.process = process
        await self.wait_until_serving(process, port)

    async def test_sigkill_under_load_loses_nothing_stored(self) -> None:
        port = free_port()
        await self.start(port)

        # A consumer holds an open read when the server dies.
        def hold_open_read() -> SocketClient:
            client = SocketClient(port)
            self.assertEqual(client.store("jobs", [b"held", b"next"]), [b"STORED"] * 2)
            self.assertEqual(client.take("jobs/open", 1), [(0, b"held")])
            return client

        holder = await deferToThread(hold_open_read)
        self.addCleanup(holder.close)

        stop = threading.Event()
        self.addCleanup(stop.set)
        acked: list[list[bytes]] = [[] for _ in range(PRODUCERS)]
        consumed: list[bytes] = []
        load = [
            deferToThread(produce, port, producer, acked[producer], stop)
            for producer in range(PRODUCERS)
        ] + [deferToThread(consume, port, consumed, stop)]
        target = random.randint(200, 3000)
        await poll_until(lambda: sum(map(len, acked)) >= target, timeout=LOAD_DEADLINE)
        os.kill(self.pid(self.process), signal.SIGKILL)
        self.assertIsNone(await self.exit_code(self.process))
        stop.set()
        await gatherResults(load)
        self.assertGreaterEqual(sum(map(len, acked)), target)

        await self.start(port)

        def drain() -> tuple[list[bytes], list[bytes]]:
            client = SocketClient(port)
            try:
                return client.drain("crash"), client.drain("jobs")
            finally:
                client.close()

        drained, jobs = await deferToThread(drain)
        log = self.log(self.process)
        # The open read came back, at the head.
        self.assertEqual(jobs, [b"held", b"next"], log)
        delivered = consumed + drained
        seen = set(delivered)
        lost = [name for names in acked for name in names if name not in seen]
        self.assertEqual(lost, [], log)
        # Each producer's items come back in the order it set them.
        for names in acked:
            mine = set(names)
            back = [name for name in drained if name in mine]
            self.assertEqual(back, sorted(back))
        # Unacknowledged items may come back too; some are delivered twice.
        acknowledged = {name for names in acked for name in names}
        unacknowledged = seen - acknowledged
        self.assertLessEqual(len(unacknowledged), PRODUCERS * WINDOW)
        # A duplicate is an item read just before the kill: its removal was
        # journaled but not yet synced (at-least-once).
        counts = Counter(delivered)
        twice = {name for name, count in counts.items() if count > 1}
        self.assertLessEqual(twice, set(consumed))
        self.assertEqual(len(delivered) - len(seen), len(twice))


class Ledger:
    """What the server told its clients so far: items acknowledged as
    stored, and items handed out (append-only, read from the journal
    thread)."""

    def __init__(self) -> None:
        self.stored: list[int] = []
        self.delivered: list[int] = []


class SnapshotOps(FileOps):
    """Before some of the journal thread's file operations, copies the data
    directory: what a crash at that moment would leave on disk.  Notes how
    much had been acknowledged and delivered before the copy."""

    def __init__(
        self, data_dir: str, into: str, rng: random.Random, ledger: Ledger
    ) -> None:
        self.data_dir = data_dir
        self.into = into
        self.rng = rng
        self.ledger = ledger
        self.snapshots: list[tuple[str, int, int]] = []

    def _maybe_snapshot(self) -> None:
        if len(self.snapshots) >= 12 or self.rng.random() > 0.003:
            return
        # Read the ledger first: what it holds was durable before this.
        stored = len(self.ledger.stored)
        delivered = len(self.ledger.delivered)
        target = os.path.join(self.into, str(len(self.snapshots)))
        shutil.copytree(self.data_dir, target)
        self.snapshots.append((target, stored, delivered))

    def write(self, fd: int, data: bytes) -> None:
        self._maybe_snapshot()
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe_snapshot()
        super().fsync(fd)

    def unlink(self, path: str) -> None:
        self._maybe_snapshot()
        super().unlink(path)


def item_number(item: Item) -> int:
    return int(item.data.split(b"\r\n", 1)[0])


class CrashPointTests(DurabilityCase):
    """Small segments and a small memory, so that segments are compacted,
    open items forwarded and items read back all the time."""

    async def test_a_crash_at_any_moment_loses_nothing_stored(self) -> None:
        seed = random.randrange(1 << 32)
        rng = random.Random(seed)
        ledger = Ledger()
        into = os.path.abspath(self.mktemp())
        os.makedirs(into)
        ops = SnapshotOps(self.data_dir, into, random.Random(seed + 1), ledger)
        config = parse_config(
            "[defaults]\nmax_memory_size = 4096\nmax_open_reads = 5\n"
        )
        server = self.serve(
            config, writer=JournalWriter(reactor, file_ops=ops), segment_size=2048
        )
        service = server.service
        queue = service.create_queue("q")
        opened: list[Item] = []
        ever_opened: set[int] = set()
        count = 0

        def stored(ok: object, number: int) -> None:
            ledger.stored.append(number)

        for _ in range(1500):
            waits: list[Deferred[None]] = []
            for _ in range(rng.randint(1, 20)):
                choice = rng.random()
                if choice < 0.5:
                    result = service.delivery.put(
                        "q", payload(count, rng.randint(10, 400)), 0, 0
                    )
                    assert isinstance(result, Deferred)
                    waits.append(result.addCallback(stored, count))
                    count += 1
                elif choice < 0.75:
                    item = await take(service, "q")
                    if item is not None:
                        ledger.delivered.append(item_number(item))
                elif choice < 0.85 and len(opened) < 5:
                    got = service.get("q", None, True, False)
                    if isinstance(got, Deferred):
                        got = await got.addTimeout(DEADLINE, reactor)
                    if got is not None:
                        opened.append(got)
                        ever_opened.add(item_number(got))
                        ledger.delivered.append(item_number(got))
                elif choice < 0.95 and opened:
                    queue.confirm(opened.pop(0))
                elif opened:
                    queue.abort([opened.pop(0)])
            await gatherResults(waits)
        await service.stopService()
        self.assertGreater(len(ops.snapshots), 0, f"seed {seed}")

        for target, stored_count, delivered_count in ops.snapshots:
            where = f"seed {seed}, {target}"
            crashed = QueueService(
                config, reactor=reactor, data_dir=target, segment_size=2048
            )
            self.addCleanup(self._finished, crashed)
            crashed.startService()
            back: list[int] = []
            while (item := await take(crashed, "q")) is not None:
                back.append(item_number(item))
            await crashed.stopService()
            self.assertEqual(len(back), len(set(back)), where)
            self.assertTrue(set(back) <= set(range(count)), where)
            delivered = set(ledger.delivered[:delivered_count])
            kept = set(back)
            lost = [
                number
                for number in ledger.stored[:stored_count]
                if number not in kept and number not in delivered
            ]
            self.assertEqual(lost, [], where)
            # Items never opened keep their order.
            plain = [number for number in back if number not in ever_opened]
            self.assertEqual(plain, sorted(plain), where)


class SummarySnapshotOps(SnapshotOps):
    """SnapshotOps that also copies the data directory before a segment's
    summary is written."""

    def write_file(self, path: str, data: bytes, durable: bool = True) -> None:
        self._maybe_snapshot()
        super().write_file(path, data, durable)


class SummaryCrashPointTests(DurabilityCase):
    """Sets, gets and open reads confirmed in turn (no aborts), so that
    closed segments are taken from their summaries at the restart, with the
    files as a crash at any moment would leave them."""

    async def test_a_crash_with_summaries_loses_nothing_stored(self) -> None:
        seed = random.randrange(1 << 32)
        rng = random.Random(seed)
        ledger = Ledger()
        into = os.path.abspath(self.mktemp())
        os.makedirs(into)
        ops = SummarySnapshotOps(self.data_dir, into, random.Random(seed + 1), ledger)
        config = parse_config(
            "[defaults]\nmax_memory_size = 4096\nmax_open_reads = 5\n"
        )
        server = self.serve(
            config, writer=JournalWriter(reactor, file_ops=ops), segment_size=2048
        )
        service = server.service
        queue = service.create_queue("q")
        opened: list[Item] = []
        ever_opened: set[int] = set()
        count = 0

        def stored(ok: object, number: int) -> None:
            ledger.stored.append(number)

        for _ in range(1500):
            waits: list[Deferred[None]] = []
            for _ in range(rng.randint(1, 20)):
                choice = rng.random()
                if choice < 0.55:
                    result = service.delivery.put(
                        "q", payload(count, rng.randint(10, 400)), 0, 0
                    )
                    assert isinstance(result, Deferred)
                    waits.append(result.addCallback(stored, count))
                    count += 1
                elif choice < 0.8:
                    item = await take(service, "q")
                    if item is not None:
                        ledger.delivered.append(item_number(item))
                elif choice < 0.9 and len(opened) < 2:
                    got = service.get("q", None, True, False)
                    if isinstance(got, Deferred):
                        got = await got.addTimeout(DEADLINE, reactor)
                    if got is not None:
                        opened.append(got)
                        ever_opened.add(item_number(got))
                        ledger.delivered.append(item_number(got))
                elif opened:
                    queue.confirm(opened.pop(0))
            await gatherResults(waits)
        await service.stopService()
        self.assertGreater(len(ops.snapshots), 0, f"seed {seed}")

        summarized = 0
        for target, stored_count, delivered_count in ops.snapshots:
            where = f"seed {seed}, {target}"
            model = _Replay(queue_dir(target, "q"), 4096, repair=False)
            model.run()
            summarized += model.summarized
            crashed = QueueService(
                config, reactor=reactor, data_dir=target, segment_size=2048
            )
            self.addCleanup(self._finished, crashed)
            crashed.startService()
            back: list[int] = []
            while (item := await take(crashed, "q")) is not None:
                back.append(item_number(item))
            await crashed.stopService()
            self.assertEqual(len(back), len(set(back)), where)
            self.assertTrue(set(back) <= set(range(count)), where)
            delivered = set(ledger.delivered[:delivered_count])
            kept = set(back)
            lost = [
                number
                for number in ledger.stored[:stored_count]
                if number not in kept and number not in delivered
            ]
            self.assertEqual(lost, [], where)
            plain = [number for number in back if number not in ever_opened]
            self.assertEqual(plain, sorted(plain), where)
        # Restarts took segments from their summaries.
        self.assertGreater(summarized, 0, f"seed {seed}")
