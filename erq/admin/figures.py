"""The admin server's JSON: ``/stats.json``, the figures of ``stats`` and
``dump_stats`` as they are built for those commands, and ``/page.json``,
what the status page shows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from erq import __version__
from erq.stats import alias_figures, queue_stats, server_figures
from erq.status import ServerStatus

if TYPE_CHECKING:
    from erq.admin.history import History
    from erq.service import QueueService


def stats_document(service: QueueService) -> dict[str, Any]:
    """``{"server": {...}, "queues": {"<name>": {...}}, "aliases":
    {"<name>": {...}}}``: every figure of ``stats`` and ``dump_stats`` under
    its name there, numbers as numbers and a queue's fanout children and an
    alias's destinations as lists."""
    queues: dict[str, dict[str, Any]] = {}
    for name, queue in service.queues.items():
        figures: dict[str, Any] = dict(queue_stats(service, queue))
        if "children" in figures:
            figures["children"] = service.delivery.children(name)
        queues[name] = figures
    aliases: dict[str, dict[str, Any]] = {}
    for name, destinations in service.config.aliases.items():
        aliases[name] = {**alias_figures(service, name), "children": destinations}
    return {
        "server": dict(server_figures(service)),
        "queues": queues,
        "aliases": aliases,
    }


def health(service: QueueService) -> tuple[bool, str]:
    """Whether the server should get traffic, and its status's name: up and
    read-only servers should (consumers still drain a read-only one); a
    quiescent one, or one starting or stopping, should not."""
    if service.shutting_down or not service.running:
        return False, "STOPPING" if service.shutting_down else "STARTING"
    status = service.status
    return status is not ServerStatus.QUIESCENT, status.name


def page_document(service: QueueService, history: History) -> dict[str, Any]:
    """What the status page shows: the server, and for each queue its
    figures now, its rates over the last minute and its recent depths."""
    now = service.clock.seconds()
    server = dict(server_figures(service))
    queues = []
    views = history.view()
    for name, queue in sorted(service.queues.items()):
        added = queue.oldest_added
        depths, rates = views.get(name, ([], None))
        queues.append(
            {
                "name": name,
                "items": queue.items,
                "bytes": queue.queued_bytes,
                "open": queue.open_items,
                "waiters": queue.waiters,
                "oldest": None if added is None else max(now - added, 0.0),
                "in": None if rates is None else rates[0],
                "out": None if rates is None else rates[1],
                # Its depths at the last of ``times``.
                "history": depths,
            }
        )
    _, status = health(service)
    return {
        "version": __version__,
        "status": status,
        "uptime": server["uptime"],
        "time": now,
        "connections": server["curr_connections"],
        "items": server["curr_items"],
        "bytes": server["bytes"],
        "interval": history.interval,
        "span": history.interval * history.size,
        "times": history.times(),
        "queues": queues,
    }
