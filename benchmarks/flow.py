"""Workload 4: producers and consumers at once, the work a queue exists
for, under ``--sync never`` (against memcached's producers alone) and
``always`` (against the durable limit), with latency at half load."""

from __future__ import annotations

import functools
from collections.abc import Callable

from benchmarks.bench import Bench, Figures
from benchmarks.durable import durable_limit, measure_limit
from benchmarks.load import Job, spread
from benchmarks.report import (
    Figure,
    Row,
    at_least,
    at_most,
    number,
    ratio,
    shown_stolen,
)
from benchmarks.servers import (
    Server,
    cpu_seconds,
)
from benchmarks.wire import Dialect

#: Extra seconds consumers get to drain what producers left.
DRAIN_GRACE = 5.0

UNITS_FLOW = (("items", "/s"), ("p50", "ms"), ("p99", "ms"), ("paced", "/s"))


def w4(bench: Bench) -> None:
    servers: list[tuple[str, Callable[[], Server | None]]] = [("never", bench.erq)]
    if bench.erq_durable_args():
        servers.append(("always", bench.erq_durable))
    servers.append(("memcached", bench.memcached))
    servers.append(("bare", bench.bare))
    if bench.erq_durable_args():
        # The reference of the ``always`` row: what a Python server on
        # Twisted that syncs each set moves with the same clients.
        servers.append(("bare always", bench.bare_durable))
    figures = bench.alternate(
        "w4", functools.partial(flow_or_producers, bench), servers
    )
    plan = bench.plan
    shape = f"{plan.producers} producers + {plan.consumers} consumers"
    producers = figures.get("memcached", {}).get("items")
    for policy in ("never", "always"):
        if policy not in figures:
            continue
        found = figures[policy]
        sync = f", sync {policy}" if bench.erq_durable_args() else ""
        if policy == "never":
            against, other, bar = "memcached's producers", producers, 0.6
        else:
            other = durable_limit(bench, "w4", plan.producers)
            against, bar = "the durable limit", 0.8
        row = Row(
            f"4. {shape}{sync}: items/s (vs {against})",
            found["items"],
            other,
            ratio(found["items"], other),
        )
        bench.rows.append(at_least(row, bar))
        reference = "bare" if policy == "never" else "bare always"
        if reference in figures:
            # What a Python queue on Twisted reaches, with nothing of erq's.
            bare = figures[reference]["items"]
            how = "" if policy == "never" else " syncing each set"
            bench.rows.append(
                Row(
                    f"4.   {shape}, bare Twisted{how}: items/s",
                    bare,
                    other,
                    ratio(bare, other),
                )
            )
        rate = found["paced"].shown()
        p50 = Row(f"4.   latency p50 at half load ({rate})", found["p50"])
        if policy == "never":
            at_most(p50, 1.0, "ms")
        bench.rows.append(p50)
        p99 = Row(f"4.   latency p99 at half load ({rate})", found["p99"])
        bench.rows.append(p99)
        # At full load the queue grows: these measure the backlog.
        for key in ("p50", "p99"):
            bench.rows.append(
                Row(f"4.   latency {key} at full load", found[f"full_{key}"])
            )


def flow_or_producers(
    bench: Bench, server: Server, prefix: bytes, where: str
) -> Figures:
    """erq: producers and consumers (``flow``); the bare Twisted
    reference: the same, as fast as they go only; memcached, which has no
    queue: the same producers alone, the rate a queue's consumers would
    have to keep up with."""
    if server.kind == "bare":
        return flow_once(bench, server, prefix + b"full", where, 0.0)
    if server.kind != "memcached":
        if server is bench.durable_server():
            measure_limit(bench, "w4")
        return flow(bench, server, prefix, where)
    plan = bench.plan
    dialect = Dialect(False, prefix)
    shares = list(spread(plan.flow_items, plan.producers))
    jobs = [
        Job(
            "set",
            server.port,
            dialect,
            b"f",
            share,
            plan.flow_seconds,
            plan.item_size,
            sum(shares[:number]),
        )
        for number, share in enumerate(shares)
    ]
    figure, _ = bench.phase(server, jobs, where=f"{where} producers")
    bench.log_figure(where, "producers alone", figure)
    return {"items": figure}


def flow(bench: Bench, server: Server, prefix: bytes, where: str) -> Figures:
    """Producers and consumers (``get q/t=100``) at once, each item
    carrying the time it was sent: first as fast as they go (items/s),
    then with the producers paced at half that rate (latency), since at
    full speed the queue grows and latency only measures the backlog."""
    saturated = flow_once(bench, server, prefix + b"full", where, 0.0)
    items = saturated["items"]
    if items.value is None:
        return {
            **saturated,
            "full_p50": saturated["p50"],
            "full_p99": saturated["p99"],
            "paced": Figure.missing("/s", "-"),
        }
    rate = items.value / 2
    paced = flow_once(bench, server, prefix + b"half", where, rate)
    bench.say(
        f"{where}: {items.shown()} (cpu% {items.cpu()}{shown_stolen(items)}) with p50 "
        f"{saturated['p50'].shown()}, p99 {saturated['p99'].shown()}; "
        f"at {number(rate, '/s')}: p50 {paced['p50'].shown()}, "
        f"p99 {paced['p99'].shown()}"
    )
    return {
        "items": items,
        "p50": paced["p50"],
        "p99": paced["p99"],
        "full_p50": saturated["p50"],
        "full_p99": saturated["p99"],
        "paced": Figure(rate, "/s"),
    }


def flow_once(
    bench: Bench, server: Server, prefix: bytes, where: str, rate: float
) -> Figures:
    plan = bench.plan
    dialect = Dialect(True, prefix)
    count = plan.flow_items
    if rate:
        count = min(count, int(rate * plan.flow_seconds))
    jobs = [
        Job(
            "produce",
            server.port,
            dialect,
            b"f",
            share,
            plan.flow_seconds,
            rate=rate / plan.producers,
        )
        for share in spread(count, plan.producers)
    ] + [
        Job(
            "consume",
            server.port,
            dialect,
            b"f",
            count,
            plan.flow_seconds + DRAIN_GRACE,
        )
        for _ in range(plan.consumers)
    ]
    before = cpu_seconds(server.pid)
    outcomes, stolen = bench.run(
        f"{where} ({'paced' if rate else 'full'})",
        jobs,
        plan.flow_seconds + DRAIN_GRACE,
    )
    after = cpu_seconds(server.pid)
    bench.note(where, outcomes)
    bench.delete(server, dialect)
    errors = [outcome.error for outcome in outcomes if outcome.error]
    consumers = [o for o in outcomes if o.role == "consume"]
    latencies = sorted(ns for o in consumers for ns in o.latencies_ns)
    if errors or not latencies:
        error = errors[0] if errors else "no item got through"
        return {key: Figure.failed(unit, error) for key, unit in UNITS_FLOW}
    produced = sum(o.hits for o in outcomes if o.role == "produce")
    if produced != len(latencies):
        bench.problems.append(
            f"{where}: {produced} items stored but {len(latencies)} consumed"
        )
    start = min(o.start for o in outcomes)
    span = max(o.last_hit for o in consumers) - start
    return {
        "items": Figure(
            len(latencies) / span,
            "/s",
            (after - before) / span,
            sum(o.cpu for o in outcomes) / span,
            stolen=stolen,
        ),
        "p50": Figure(percentile(latencies, 50) / 1e6, "ms"),
        "p99": Figure(percentile(latencies, 99) / 1e6, "ms"),
    }


def percentile(ordered: list[int], percent: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(0, min(len(ordered) - 1, int(round(percent / 100 * len(ordered))) - 1))
    return float(ordered[rank])
