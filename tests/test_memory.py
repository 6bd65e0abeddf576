"""Tests for erq.memory: the server's cap on items in memory, and memory
given back to the system."""

from __future__ import annotations

import os
import platform

from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from erq import memory
from erq.config import parse_config
from erq.memory import GiveBack, MemoryUse, give_back
from erq.queue import Item
from erq.service import QueueService
from tests.support import DurabilityCase, payload, toml, write

KiB = 1024


class MemoryUseTests(SynchronousTestCase):
    def test_unlimited_by_default(self) -> None:
        self.assertIsNone(MemoryUse().cap)

    def test_the_cap_changes_and_lifts(self) -> None:
        use = MemoryUse(100)
        self.assertEqual(use.cap, 100)
        use.set_cap(None)
        self.assertEqual(use.cap, None)
        use.set_cap(0)
        self.assertEqual(use.cap, 0)


class GiveBackTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.use = MemoryUse()
        self.trims: list[float] = []
        self.give_back = GiveBack(
            self.use,
            self.clock,
            trim=lambda: self.trims.append(self.clock.seconds()),
            every=0.5,
            after=100,
        )
        self.give_back.start()
        self.addCleanup(self.give_back.stop)

    def held(self, amount: int) -> None:
        self.use.held = amount
        self.use.peak = max(self.use.peak, amount)

    def test_nothing_while_memory_grows(self) -> None:
        for amount in (50, 500, 5000):
            self.held(amount)
            self.clock.advance(0.5)
        self.assertEqual(self.trims, [])

    def test_given_back_once_much_was_freed_and_once_more_after(self) -> None:
        self.held(1000)
        self.clock.advance(0.5)
        self.held(950)
        self.clock.advance(0.5)
        self.assertEqual(self.trims, [])
        self.held(850)
        self.clock.advance(0.499)
        self.assertEqual(self.trims, [])
        self.clock.advance(0.001)
        self.assertEqual(self.trims, [1.5])
        # Once more at the next look, for what was still being freed.
        self.clock.advance(0.5)
        self.assertEqual(self.trims, [1.5, 2.0])
        # Then not again until as much is freed again.
        self.held(760)
        self.clock.advance(5)
        self.assertEqual(self.trims, [1.5, 2.0])
        self.held(750)
        self.clock.advance(0.5)
        self.assertEqual(self.trims, [1.5, 2.0, 7.5])
        self.assertEqual(self.give_back.times, 3)

    def test_a_fill_and_drain_between_two_looks_is_seen(self) -> None:
        self.held(10_000)
        self.held(0)
        self.clock.advance(0.5)
        self.assertEqual(self.trims, [0.5])

    def test_stopped_looks_no_more(self) -> None:
        self.give_back.stop()
        self.held(1000)
        self.held(0)
        self.clock.advance(10)
        self.assertEqual(self.trims, [])


class AllocatorTests(SynchronousTestCase):
    def test_glibc_is_asked(self) -> None:
        if platform.libc_ver()[0] != "glibc":
            raise self.skipTest("glibc only")
        self.assertIsNotNone(memory._malloc_function("malloc_trim"))
        self.assertIsInstance(give_back(), bool)

    def test_a_no_op_without_glibc(self) -> None:
        self.patch(platform, "libc_ver", lambda: ("", ""))
        self.assertIsNone(memory._malloc_function("malloc_trim"))
        self.patch(memory, "_malloc_trim", None)
        self.assertFalse(give_back())


class ServiceTests(SynchronousTestCase):
    """The service's count, cap and giving back, without journals."""

    def service(self, text: str = "") -> QueueService:
        service = QueueService(parse_config(toml(text)), reactor=self.clock)
        self.trims: list[float] = []
        service.give_back = GiveBack(
            service.memory, self.clock, trim=lambda: self.trims.append(1)
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def setUp(self) -> None:
        self.clock = Clock()

    def test_the_cap_comes_from_the_server_table(self) -> None:
        service = self.service(
            """
            [server]
            max_memory_size = "1MiB"
            """
        )
        self.assertEqual(service.memory.cap, 1024 * KiB)
        self.assertEqual(self.service().memory.cap, None)

    def test_every_queue_counts_in_one_place(self) -> None:
        service = self.service()
        service.delivery.put("a", b"x" * 10, 0, 0)
        service.delivery.put("b", b"x" * 20, 0, 0)
        self.assertEqual(service.memory.held, 30)
        service.delete("b")
        self.assertEqual(service.memory.held, 10)
        service.get("a", None, False, False)
        self.assertEqual(service.memory.held, 0)

    def test_a_deleted_queue_counts_no_more(self) -> None:
        service = self.service()
        service.delivery.put("a", b"x" * 10, 0, 0)
        queue = service.queue("a")
        assert queue is not None
        taken = service.get("a", None, True, False)
        assert isinstance(taken, Item)
        service.delete("a")
        # An open read given back to the deleted queue is not counted.
        queue.abort([taken])
        self.assertEqual(service.memory.held, 0)

    def test_a_reload_changes_the_cap(self) -> None:
        service = self.service()
        path = os.path.abspath(self.mktemp())
        write(path, "[server]\nmax_memory_size = 4096\n")
        service.live_config.path = path
        service.live_config.reload()
        self.assertEqual(service.memory.cap, 4096)
        write(path, "")
        service.live_config.reload()
        self.assertEqual(service.memory.cap, None)

    def test_memory_is_given_back_after_a_drain(self) -> None:
        service = self.service()
        for _ in range(20):
            service.delivery.put("a", b"x" * (1024 * KiB), 0, 0)
        self.clock.advance(1)
        self.assertEqual(self.trims, [])
        while service.get("a", None, False, False) is not None:
            pass
        self.clock.advance(0.5)
        self.assertEqual(self.trims, [1])
        service.stopService()
        self.clock.advance(10)
        self.assertEqual(self.trims, [1])


class JournaledCapTests(DurabilityCase):
    """Queues together deeper than the cap, on a real server with journals."""

    config = """
        [server]
        max_memory_size = "64KiB"
        """

    def items(self, name: str) -> list[bytes]:
        return [name.encode() + payload(i, KiB) for i in range(150)]

    def in_memory(self, server_stats: dict[str, str]) -> int:
        return sum(
            int(value)
            for name, value in server_stats.items()
            if name.endswith("_mem_bytes")
        )

    async def test_queues_together_keep_to_the_cap(self) -> None:
        server = self.serve(parse_config(toml(self.config)))
        client = self.client(server)
        cap = 64 * KiB
        # One item more than the cap, and each queue's own head.
        over = 3 * (KiB + 1)

        def fill_and_drain() -> None:
            for name in ("a", "b", "c"):
                self.assertEqual(set(client.store(name, self.items(name))), {b"STORED"})
                self.assertLessEqual(self.in_memory(client.stats()), cap + over)
            self.assertEqual(int(client.stats()["queue_c_items"]), 150)
            for name in ("a", "b", "c"):
                for start in range(0, 150, 10):
                    got = [value[1] for value in client.take(name, 10) if value]
                    self.assertEqual(got, self.items(name)[start : start + 10])
                    self.assertLessEqual(self.in_memory(client.stats()), cap + over)

        await deferToThread(fill_and_drain)
        self.assertEqual(server.service.memory.held, 0)

    async def test_replay_keeps_to_the_cap(self) -> None:
        config = parse_config(toml(self.config))
        server = self.serve(config)
        client = self.client(server)
        await deferToThread(
            lambda: [client.store(name, self.items(name)) for name in ("a", "b")]
        )
        server = await self.restart(server, config=config)
        self.assertLessEqual(server.service.memory.held, 64 * KiB + 2 * (KiB + 1))
        again = self.client(server)
        for name in ("a", "b"):
            got = await deferToThread(again.drain, name)
            self.assertEqual(got, self.items(name))
