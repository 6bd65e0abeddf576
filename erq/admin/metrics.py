"""The server's figures for Prometheus: ``/metrics`` of the admin server.

A scrape reads the live figures (`ServiceCollector.collect`), the same
ones ``stats`` reports (``erq.stats``), so serving requests keeps no
bookkeeping for it.  The journal's batches are the one exception: the
writer tells `BatchHistograms` of each batch it takes back.  Each server
has a registry of its own, not prometheus_client's global one, so that two
servers in one process (tests, an application embedding erq) do not
collide; the process's own figures (CPU, memory, file descriptors) are in
it too.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from erq import __version__
from erq.stats import queue_stats, server_figures
from erq.status import ServerStatus

if TYPE_CHECKING:
    from erq.service import QueueService

_Kind = type[GaugeMetricFamily] | type[CounterMetricFamily]

#: Each queue figure of ``dump_stats`` that Prometheus gets, as what kind
#: of metric, with its name and help.
QUEUE_METRICS: tuple[tuple[str, _Kind, str, str], ...] = (
    ("items", GaugeMetricFamily, "queue_items", "Items queued (not open)."),
    ("bytes", GaugeMetricFamily, "queue_bytes", "Bytes of the items queued."),
    ("mem_items", GaugeMetricFamily, "queue_memory_items", "Items held in memory."),
    ("mem_bytes", GaugeMetricFamily, "queue_memory_bytes", "Bytes held in memory."),
    ("logsize", GaugeMetricFamily, "queue_journal_bytes", "Bytes of the journal."),
    ("open_transactions", GaugeMetricFamily, "queue_open_reads", "Open reads."),
    ("waiters", GaugeMetricFamily, "queue_waiters", "Gets waiting for an item."),
    ("total_items", CounterMetricFamily, "queue_items_added", "Items added."),
    ("expired_items", CounterMetricFamily, "queue_items_expired", "Items expired."),
    (
        "discarded",
        CounterMetricFamily,
        "queue_items_discarded",
        "Items dropped by a full queue (discard_old_when_full).",
    ),
    ("transactions", CounterMetricFamily, "queue_reads_opened", "Open reads begun."),
    (
        "canceled_transactions",
        CounterMetricFamily,
        "queue_reads_aborted",
        "Open reads given back to the queue.",
    ),
    ("total_flushes", CounterMetricFamily, "queue_flushes", "Flushes of the queue."),
)

#: Each server counter of ``stats`` that Prometheus gets.
SERVER_METRICS: tuple[tuple[str, _Kind, str, str], ...] = (
    ("curr_connections", GaugeMetricFamily, "connections", "Client connections."),
    (
        "total_connections",
        CounterMetricFamily,
        "connections_accepted",
        "Client connections accepted.",
    ),
    (
        "rejected_connections",
        CounterMetricFamily,
        "connections_rejected",
        "Client connections refused (max_connections).",
    ),
    ("get_hits", CounterMetricFamily, "get_hits", "Gets that found an item."),
    ("get_misses", CounterMetricFamily, "get_misses", "Gets that found none."),
    ("bytes_read", CounterMetricFamily, "read_bytes", "Bytes read from clients."),
    ("bytes_written", CounterMetricFamily, "written_bytes", "Bytes sent to clients."),
    ("queue_creates", CounterMetricFamily, "queues_created", "Queues created."),
    ("queue_deletes", CounterMetricFamily, "queues_deleted", "Queues deleted."),
    (
        "queue_expires",
        CounterMetricFamily,
        "queues_expired",
        "Idle queues deleted (max_queue_age).",
    ),
    ("auth_cmds", CounterMetricFamily, "logins", "Login attempts."),
    ("auth_errors", CounterMetricFamily, "logins_failed", "Failed login attempts."),
    (
        "client_errors",
        CounterMetricFamily,
        "client_errors",
        "Requests answered CLIENT_ERROR.",
    ),
)

#: Commands counted by ``stats``, as the ``command`` label of
#: ``erq_commands_total``.
COMMANDS = (("cmd_get", "get"), ("cmd_set", "set"), ("cmd_peek", "peek"))

#: Seconds a journal batch takes, from leaving for the writer's thread to
#: being taken back: from a fraction of a millisecond (no fsync, or a fast
#: one) to seconds (a disk in trouble).
BATCH_SECONDS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Bytes a journal batch writes: one small record to many mebibytes.
BATCH_BYTES = tuple(float(4**n * 64) for n in range(12))


class ServiceCollector(Collector):
    """Everything ``stats`` and ``dump_stats`` know, as Prometheus
    metrics named ``erq_...``, each queue's with a ``queue`` label."""

    def __init__(self, service: QueueService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        server = {
            name: value
            for name, value in server_figures(service)
            if isinstance(value, int | float)
        }
        info = InfoMetricFamily("erq_build", "The erq server's version.")
        info.add_metric([], {"version": __version__})
        yield info
        status = GaugeMetricFamily(
            "erq_status",
            "1 for the server's status (up, readonly, quiescent), 0 for the others.",
            labels=["status"],
        )
        for each in ServerStatus:
            status.add_metric([each.value], 1.0 if service.status is each else 0.0)
        yield status
        yield GaugeMetricFamily(
            "erq_uptime_seconds", "Seconds since the server started.", server["uptime"]
        )
        yield GaugeMetricFamily(
            "erq_queues", "Queues on the server.", len(service.queues)
        )
        for key, kind, name, documentation in SERVER_METRICS:
            yield kind(f"erq_{name}", documentation, value=server[key])
        commands = CounterMetricFamily(
            "erq_commands", "Commands by kind (gets per key).", labels=["command"]
        )
        for key, command in COMMANDS:
            commands.add_metric([command], server[key])
        yield commands
        writer = service.writer
        if writer is not None:
            yield GaugeMetricFamily(
                "erq_journal_backlog_bytes",
                "Bytes of items journaled and not yet written.",
                writer.backlog,
            )
        yield from self._queues()

    def _queues(self) -> Iterator[Metric]:
        service = self.service
        families = [
            (key, kind(f"erq_{name}", documentation, labels=["queue"]))
            for key, kind, name, documentation in QUEUE_METRICS
        ]
        removed = CounterMetricFamily(
            "erq_queue_items_removed",
            "Items taken for good (gets and confirmed open reads).",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "erq_queue_oldest_item_age_seconds",
            "Seconds the oldest item in memory has waited (0: none).",
            labels=["queue"],
        )
        now = service.clock.seconds()
        for name, queue in service.queues.items():
            figures = {
                key: value
                for key, value in queue_stats(service, queue)
                if isinstance(value, int | float)
            }
            labels = [name]
            for key, family in families:
                family.add_metric(labels, figures[key])
            removed.add_metric(labels, queue.removed_items)
            added = queue.oldest_added
            oldest.add_metric(labels, 0.0 if added is None else max(now - added, 0.0))
        for _, family in families:
            yield family
        yield removed
        yield oldest


class _Buckets:
    """A histogram's counts: how many values fell at or below each bound
    (and above the last), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        # The first bound at or above the value, as Prometheus's ``le``.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        les = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]
        return HistogramMetricFamily(
            name,
            documentation,
            buckets=list(zip(les, accumulate(self.counts), strict=True)),
            sum_value=self.sum,
        )


class BatchHistograms(Collector):
    """The journal's batches, as the writer tells of them (``observe``).

    Each batch adds to two lists of counts, which become histograms only
    when scraped: prometheus_client's own ``Histogram`` takes a lock and
    some microseconds per value, which every batch would pay, a lone
    durable set's included, whether anyone scrapes or not.  Batches are
    told of on the reactor's thread, and scrapes read them there too."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = _Buckets(BATCH_SECONDS)
        self.bytes = _Buckets(BATCH_BYTES)
        registry.register(self)

    def observe(self, seconds: float, size: int) -> None:
        self.seconds.add(seconds)
        self.bytes.add(size)

    def collect(self) -> Iterator[Metric]:
        yield self.seconds.family(
            "erq_journal_batch_seconds",
            "Seconds from a journal batch leaving for the writer's thread"
            " (its writes and fsyncs) until it was taken back.",
        )
        yield self.bytes.family(
            "erq_journal_batch_bytes", "Bytes a journal batch wrote."
        )


def registry_for(service: QueueService) -> tuple[CollectorRegistry, BatchHistograms]:
    """A registry of the service's metrics and the process's, and the
    histograms that the journal writer feeds."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServiceCollector(service))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry, BatchHistograms(registry)
