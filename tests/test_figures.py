"""erq.admin.figures: the admin server's JSON and its word on health."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.admin.figures import health, page_document, stats_document
from erq.admin.history import History
from erq.service import QueueService
from erq.status import ServerStatus


class HealthTests(SynchronousTestCase):
    def test_through_a_life(self) -> None:
        service = QueueService(reactor=Clock())
        self.assertEqual(health(service), (False, "STARTING"))
        service.startService()
        self.assertEqual(health(service), (True, "UP"))
        service.status = ServerStatus.READONLY
        self.assertEqual(health(service), (True, "READONLY"))
        service.status = ServerStatus.QUIESCENT
        self.assertEqual(health(service), (False, "QUIESCENT"))
        service.status = ServerStatus.UP
        service.stopService()
        self.assertEqual(health(service), (False, "STOPPING"))

    def test_a_shutdown_under_way(self) -> None:
        service = QueueService(reactor=Clock(), stop_server=lambda: None)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(service.shutdown())
        self.assertEqual(health(service), (False, "STOPPING"))


class DocumentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.service = QueueService(reactor=self.clock)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_stats_as_numbers(self) -> None:
        service = self.service
        service.delivery.put("news", b"abc", 0, 0)
        service.create_queue("news+mobile")
        document = stats_document(service)
        self.assertEqual(document["server"]["curr_items"], 1)
        self.assertEqual(document["server"]["version"], "1.0.0")
        self.assertEqual(document["queues"]["news"]["bytes"], 3)
        self.assertEqual(document["queues"]["news"]["children"], ["news+mobile"])
        self.assertNotIn("children", document["queues"]["news+mobile"])

    def test_page(self) -> None:
        service = self.service
        history = History(lambda: service.queues, self.clock)
        service.delivery.put("b", b"abc", 0, 0)
        history.sample()
        self.clock.advance(3)
        service.delivery.put("b", b"de", 0, 0)
        service.delivery.put("a", b"x", 0, 0)
        self.clock.advance(1)
        page = page_document(service, history)
        self.assertEqual(
            (page["status"], page["uptime"], page["items"], page["bytes"]),
            ("UP", 1004 - 1000, 3, 6),
        )
        self.assertEqual([queue["name"] for queue in page["queues"]], ["a", "b"])
        a, b = page["queues"]
        self.assertEqual(
            (b["items"], b["bytes"], b["oldest"], b["in"], b["out"]),
            (2, 5, 4.0, 1 / 4, 0.0),
        )
        self.assertEqual((page["times"], b["history"]), ([1000.0], [1]))
        self.assertEqual((a["history"], a["in"], a["oldest"]), ([], None, 1.0))
