"""erq.admin.metrics: the service's figures for Prometheus, read at each
scrape, in a registry of the server's own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from erq.admin.metrics import BATCH_BYTES, BATCH_SECONDS, BatchHistograms, registry_for
from erq.service import QueueService
from erq.status import ServerStatus

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    """What a scrape of ``registry`` shows, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(service: QueueService) -> Samples:
    registry, _ = registry_for(service)
    return samples(registry)


class CollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.service = QueueService(reactor=self.clock)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_live_figures_at_each_scrape(self) -> None:
        service = self.service
        registry, _ = registry_for(service)
        service.delivery.put("a", b"xyz", 0, 0)
        first = generate_latest(registry)
        self.assertIn(b'erq_queue_items{queue="a"} 1.0', first)
        service.delivery.put("a", b"xyz", 0, 0)
        self.assertIn(b'erq_queue_items{queue="a"} 2.0', generate_latest(registry))

    def test_queue_figures(self) -> None:
        service = self.service
        for data in (b"one", b"two", b"three"):
            service.delivery.put("work", data, 0, 0)
        self.clock.advance(2.5)
        service.get("work", None, False, False)
        opened = service.get("work", None, True, False)
        self.assertIsNotNone(opened)
        service.delivery.put("work", b"x", 0, -1)
        found = scrape(service)
        labels = (("queue", "work"),)
        self.assertEqual(
            {
                name: found[(f"erq_{name}", labels)]
                for name in (
                    "queue_items",
                    "queue_bytes",
                    "queue_open_reads",
                    "queue_waiters",
                    "queue_items_added_total",
                    "queue_items_removed_total",
                    "queue_items_expired_total",
                    "queue_reads_opened_total",
                    "queue_oldest_item_age_seconds",
                )
            },
            {
                "queue_items": 1,
                "queue_bytes": 5,
                "queue_open_reads": 1,
                "queue_waiters": 0,
                "queue_items_added_total": 4,
                "queue_items_removed_total": 1,
                "queue_items_expired_total": 1,
                "queue_reads_opened_total": 1,
                "queue_oldest_item_age_seconds": 2.5,
            },
        )

    def test_status_and_server(self) -> None:
        service = self.service
        service.status = ServerStatus.READONLY
        self.clock.advance(42)
        found = scrape(service)
        self.assertEqual(
            [found[("erq_status", (("status", s.value),))] for s in ServerStatus],
            [0, 1, 0],
        )
        self.assertEqual(found[("erq_uptime_seconds", ())], 42)
        self.assertEqual(found[("erq_build_info", (("version", "1.0.0"),))], 1)
        self.assertEqual(found[("erq_connections", ())], 0)
        # No data directory, no journal: no backlog, empty histograms.
        self.assertNotIn(("erq_journal_backlog_bytes", ()), found)
        self.assertEqual(found[("erq_journal_batch_seconds_count", ())], 0)

    def test_batches(self) -> None:
        registry, batches = registry_for(self.service)
        batches.observe(0.003, 5000)
        batches.observe(0.2, 100)
        text = generate_latest(registry).decode()
        found = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        self.assertEqual(found[("erq_journal_batch_seconds_count", ())], 2)
        self.assertEqual(
            found[("erq_journal_batch_seconds_bucket", (("le", "0.005"),))], 1
        )
        self.assertEqual(found[("erq_journal_batch_bytes_sum", ())], 5100)
        self.assertEqual(
            found[("erq_journal_batch_bytes_bucket", (("le", "256.0"),))], 1
        )

    @given(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(BATCH_SECONDS),
                    st.floats(0, 20, allow_nan=False),
                ),
                st.one_of(
                    st.sampled_from([int(bound) for bound in BATCH_BYTES]),
                    st.integers(0, 1 << 30),
                ),
            ),
            max_size=30,
        )
    )
    def test_batches_as_prometheus_client_counts_them(
        self, batches: list[tuple[float, int]]
    ) -> None:
        """The scrape shows what prometheus_client's own ``Histogram``
        shows for the same values, a value on a bound counted in that
        bound's bucket."""
        ours = CollectorRegistry()
        histograms = BatchHistograms(ours)
        theirs = CollectorRegistry()
        seconds = Histogram(
            "erq_journal_batch_seconds", "", buckets=BATCH_SECONDS, registry=theirs
        )
        size = Histogram(
            "erq_journal_batch_bytes", "", buckets=BATCH_BYTES, registry=theirs
        )
        for took, wrote in batches:
            histograms.observe(took, wrote)
            seconds.observe(took)
            size.observe(wrote)
        expected = {
            key: value
            for key, value in samples(theirs).items()
            if not key[0].endswith("_created")
        }
        found = samples(ours)
        self.assertEqual(found.keys(), expected.keys())
        for key, value in expected.items():
            self.assertAlmostEqual(found[key], value, places=6, msg=key)

    def test_two_servers_in_one_process(self) -> None:
        """Each server's registry is its own: no name collides, and the
        global registry holds none of them."""
        other = QueueService(reactor=self.clock)
        other.delivery.put("b", b"x", 0, 0)
        self.service.delivery.put("a", b"x", 0, 0)
        one, two = scrape(self.service), scrape(other)
        self.assertIn(("erq_queue_items", (("queue", "a"),)), one)
        self.assertNotIn(("erq_queue_items", (("queue", "b"),)), one)
        self.assertIn(("erq_queue_items", (("queue", "b"),)), two)
        self.assertNotIn(b"erq_", generate_latest(REGISTRY))
