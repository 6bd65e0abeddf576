"""The figures a server reports: its counters, and the ``stats`` names.

The protocol and the service bump `Counters` as things happen; everything
else (items, bytes, connections) is read from the queues when asked.  The
names and their order are the contract of the ``stats`` and ``dump_stats``
replies (docs/protocol.md, "Stats").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from erq import __version__

if TYPE_CHECKING:
    from erq.queue import Queue
    from erq.service import QueueService


class Counters:
    """Server-wide counters, bumped by the protocol and the service."""

    __slots__ = (
        "total_connections",
        "cmd_get",
        "cmd_set",
        "cmd_peek",
        "get_hits",
        "get_misses",
        "bytes_read",
        "bytes_written",
        "queue_creates",
        "queue_deletes",
        "queue_expires",
        "auth_cmds",
        "auth_errors",
        "client_errors",
        "rejected_connections",
    )

    def __init__(self) -> None:
        self.total_connections = 0
        self.auth_cmds = 0
        self.auth_errors = 0
        self.client_errors = 0
        self.rejected_connections = 0
        self.cmd_get = 0
        self.cmd_set = 0
        self.cmd_peek = 0
        self.get_hits = 0
        self.get_misses = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.queue_creates = 0
        self.queue_deletes = 0
        self.queue_expires = 0


class AliasCounters:
    """What was set through one alias, bumped by the service."""

    __slots__ = ("put_items", "put_bytes")

    def __init__(self) -> None:
        self.put_items = 0
        self.put_bytes = 0


SERVER_STATS = (
    "uptime",
    "time",
    "version",
    "curr_items",
    "total_items",
    "bytes",
    "curr_connections",
    # These are counted as they happen:
    *Counters.__slots__,
    "server_status",
)

QUEUE_STATS = (
    "items",
    "bytes",
    "total_items",
    "logsize",
    "expired_items",
    "mem_items",
    "mem_bytes",
    "age",
    "discarded",
    "waiters",
    "open_transactions",
    "transactions",
    "canceled_transactions",
    "total_flushes",
)


#: Each alias's figures, ``alias_<name>_<figure>`` in ``stats``.
ALIAS_STATS = (*AliasCounters.__slots__, "children")


def server_stats(service: QueueService) -> list[tuple[str, object]]:
    """The ``stats`` reply: server figures, then each queue's, then each
    alias's."""
    result = server_figures(service)
    for queue in service.queues.values():
        prefix = f"queue_{queue.name}_"
        result.extend(
            (prefix + name, value) for name, value in queue_stats(service, queue)
        )
    for name in service.config.aliases:
        prefix = f"alias_{name}_"
        figures = alias_figures(service, name)
        result.extend((prefix + figure, figures[figure]) for figure in ALIAS_STATS)
    return result


def alias_figures(service: QueueService, name: str) -> dict[str, object]:
    """One alias's figures, by their names in `ALIAS_STATS`."""
    alias = service.delivery.alias_counters[name]
    return {
        "put_items": alias.put_items,
        "put_bytes": alias.put_bytes,
        "children": ",".join(service.config.aliases[name]),
    }


def server_figures(service: QueueService) -> list[tuple[str, object]]:
    """The server's own figures, the first lines of ``stats``."""
    now = service.clock.seconds()
    queues = list(service.queues.values())
    counters = service.counters
    values: dict[str, object] = {
        "uptime": int(now - service.started_at),
        "time": int(now),
        "version": __version__,
        "curr_items": sum(queue.items for queue in queues),
        "total_items": sum(queue.total_items for queue in queues),
        "bytes": sum(queue.queued_bytes for queue in queues),
        "curr_connections": len(service.connections),
        "server_status": service.status.name,
    }
    for name in Counters.__slots__:
        values[name] = getattr(counters, name)
    return [(name, values[name]) for name in SERVER_STATS]


def queue_stats(service: QueueService, queue: Queue) -> Iterable[tuple[str, object]]:
    """One queue's figures, as ``dump_stats`` shows them."""
    journal = queue.journal
    values = {
        "items": queue.items,
        "bytes": queue.queued_bytes,
        "total_items": queue.total_items,
        "logsize": 0 if journal is None else journal.size,
        "expired_items": queue.expired_items,
        "mem_items": queue.mem_items,
        "mem_bytes": queue.mem_bytes,
        "age": int(queue.age * 1000),
        "discarded": queue.limits.discarded,
        "waiters": queue.waiters,
        "open_transactions": queue.open_items,
        "transactions": queue.open_reads.transactions,
        "canceled_transactions": queue.canceled_transactions,
        "total_flushes": queue.total_flushes,
    }
    result: list[tuple[str, object]] = [(name, values[name]) for name in QUEUE_STATS]
    children = service.delivery.children(queue.name)
    if children:
        result.append(("children", ",".join(children)))
    return result
