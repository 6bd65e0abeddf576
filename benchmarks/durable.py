"""Durable lock-step sets against what the disk allows (workload 9), and
the durable limit itself, measured beside each workload's rounds: one
connection cannot store more than 1 / (round trip + fdatasync) items a
second (see "The durable limit" in README.md).  Beside them, what the disk
writes while the same connections store under ``--sync never``."""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.bench import Bench, Figures
from benchmarks.limits import (
    LIMIT_REQUESTS,
    SAMPLES,
    batch_seconds,
    disk_written,
    fdatasync_seconds,
    round_trip_seconds,
)
from benchmarks.load import Job, spread
from benchmarks.report import (
    Figure,
    MiB,
    Row,
    at_least,
    number,
    ratio,
)
from benchmarks.servers import (
    Server,
)
from benchmarks.wire import Dialect


def measure_limit(bench: Bench, workload: str) -> None:
    """Measure the durable limit's two parts once more, beside the round
    that is measured now (the disk's fsync time varies with what else
    the machine does): the fdatasync of a small append on the data
    directory's file system, and the round trip of one lock-step
    connection of the load generator storing into memcached (see "The
    durable limit" in benchmarks/README.md; erq's ``version`` on a bare
    socket without memcached)."""
    server = bench.erq_durable()
    directory = server.data_dir or bench.settings.scratch
    fsync = fdatasync_seconds(directory)
    memcached = bench.memcached()
    trip = None
    if memcached is not None:
        plan = bench.plan
        job = Job(
            "set",
            memcached.port,
            Dialect(False, b"limit-"),
            b"l",
            LIMIT_REQUESTS,
            plan.limit_seconds,
            plan.item_size,
        )
        figure, _ = bench.phase(memcached, [job], where="durable limit")
        if figure.value:
            trip = 1 / figure.value
            whose = "memcached lock-step sets, load generator"
    if trip is None:
        trip = round_trip_seconds(server.port, b"version\r\n")
        whose = "erq version, bare socket"
    bench.limits.setdefault(workload, []).append((fsync, trip))
    bench.say(
        f"durable limit: fdatasync {fsync * 1e3:.3f} ms (median of "
        f"{SAMPLES}), round trip {trip * 1e3:.3f} ms ({whose}): "
        f"{number(1 / (fsync + trip), '/s')} per connection"
    )


def durable_limit(bench: Bench, workload: str, connections: int = 1) -> Figure:
    """What ``connections`` lock-step connections can store durably at
    most: each one 1 / (round trip + fdatasync), from the medians of
    the measurements taken beside ``workload``'s rounds (not another
    workload's: the fsync time drifts over a run)."""
    if not bench.limits.get(workload):
        measure_limit(bench, workload)
    limits = bench.limits[workload]
    fsync = statistics.median(f for f, _ in limits)
    trip = statistics.median(t for _, t in limits)
    value = connections / (fsync + trip)
    return Figure(value, "/s", text=f"limit {number(value, '/s')}")


def w9(bench: Bench) -> None:
    """Durable lock-step sets against what the disk allows: one
    connection against 1 / (round trip + fdatasync), and 16 connections
    over 16 queues against the same 16 over one queue (one file to sync
    per batch against 16)."""
    if not bench.erq_durable_args():
        bench.rows.append(
            Row("9. durable lock-step: n/a without --sync", Figure.missing("/s"))
        )
        return
    conns = 16
    batches: list[tuple[float, float]] = []

    def measure(server: Server, prefix: bytes, where: str) -> Figures:
        figures: Figures = {}
        if server.kind == "bare":
            # The reference: what one lock-step connection's durable sets
            # reach on a server that only writes, syncs and answers each.
            figures["one"] = durable_sets(bench, server, 1, 1, prefix + b"a", where)
            return figures
        measure_limit(bench, "w9")
        measure_batches(bench, server, conns, batches)
        figures["one"] = durable_sets(bench, server, 1, 1, prefix + b"a", where)
        figures["spread"] = durable_sets(
            bench, server, conns, conns, prefix + b"b", where
        )
        figures["shared"] = durable_sets(bench, server, conns, 1, prefix + b"c", where)
        return figures

    both = bench.alternate(
        "w9", measure, [("erq", bench.erq_durable), ("bare", bench.bare_durable)]
    )
    found = both["erq"]
    limit = durable_limit(bench, "w9", 1)
    row = Row(
        "9. durable lock-step, 1 conn: sets/s (vs the limit)",
        found["one"],
        limit,
        ratio(found["one"], limit),
    )
    bench.rows.append(at_least(row, 0.85))
    bare = both["bare"]["one"]
    bench.rows.append(
        Row(
            "9.   1 conn, bare Twisted (write + fdatasync + reply per set)",
            bare,
            limit,
            ratio(bare, limit),
        )
    )
    shared = found["shared"]
    row = Row(
        f"9. durable, {conns} conns over {conns} queues: sets/s (vs over 1 queue)",
        found["spread"],
        Figure(
            shared.value,
            "/s",
            shared.server_cpu,
            shared.gen_cpu,
            shared.error,
            text=f"1 queue {shared.shown()}",
        ),
        ratio(found["spread"], shared),
    )
    bench.rows.append(at_least(row, 0.8))
    spread_cpu = cpu_per_request(found["spread"])
    shared_cpu = cpu_per_request(found["shared"], "1 queue ")
    bench.rows.append(
        Row(
            f"9.   server CPU per set over {conns} queues (vs over 1 queue)",
            spread_cpu,
            shared_cpu,
            ratio(spread_cpu, shared_cpu),
        )
    )
    if batches:
        many = Figure(1 / statistics.median(m for _, m in batches), "/s")
        one = 1 / statistics.median(single for single, _ in batches)
        single = Figure(one, "/s", text=f"1 file {number(one, '/s')}")
        bench.rows.append(
            Row(
                f"9.   the disk alone: batches/s over {conns} files (vs over 1 file)",
                many,
                single,
                ratio(many, single),
            )
        )
    never_writes(bench, conns)


def cpu_per_request(figure: Figure, label: str = "") -> Figure:
    """The server's CPU per request of a rate ``figure``, in microseconds:
    its reactor's in user space and in the kernel, and its other threads'
    (the journal's writer and engine), shown after ``label``."""
    threads = figure.threads
    if figure.value is None or not figure.value or threads is None:
        return Figure.missing("us")
    user, system, others = (share / figure.value * 1e6 for share in threads)
    total = user + system + others
    return Figure(
        total,
        "us",
        text=f"{label}{total:.0f} us: reactor {user:.0f} + {system:.0f} sys, "
        f"threads {others:.0f}",
    )


def measure_batches(
    bench: Bench, server: Server, files: int, batches: list[tuple[float, float]]
) -> None:
    """What the disk itself takes, beside the round, for one batch of
    small records made durable by erq's engine: over one file, and over
    ``files`` files as a batch of sets over that many queues is.  What the
    second costs beyond the first lengthens every batch of the many-queue
    case."""
    directory = server.data_dir or bench.settings.scratch
    single = batch_seconds(directory, 1)
    many = batch_seconds(directory, files)
    if single is None or many is None:
        return
    batches.append((single, many))
    bench.say(
        f"one batch made durable by erq's engine: {single * 1e6:.0f} us over "
        f"1 file, {many * 1e6:.0f} us over {files} files (medians of {SAMPLES})"
    )


def never_writes(bench: Bench, conns: int) -> None:
    """What the disk writes while ``conns`` lock-step connections store
    over as many queues of the ``--sync never`` erq, against the bytes of
    the items they store.  That policy leaves the disk to the kernel: erq
    asks it to start writing a file out only once a megabyte has gathered
    (see "Writing out what is not synced" in erq/journal/engine.py), not
    for each batch of each queue, which would send the same partly
    filled pages to the disk hundreds of times a second."""
    label = (
        f"9.   {conns} conns over {conns} queues, sync never: "
        "disk writes (vs the items stored)"
    )
    if not bench.erq_main_args():
        return
    server = bench.erq()
    directory = server.data_dir or bench.settings.scratch
    # What other processes (and earlier workloads) left for the kernel to
    # write goes now, not during the phase.
    os.sync()
    before = disk_written(directory)
    if before is None:
        bench.rows.append(Row(label, Figure.missing("MiB", "n/a: no block device")))
        return
    start = time.perf_counter()
    jobs, dialects = spread_jobs(bench, server, conns, conns, b"nw-")
    figure, outcomes = bench.phase(server, jobs, where="never: disk writes")
    after = disk_written(directory)
    seconds = time.perf_counter() - start
    for dialect in dialects:
        bench.delete(server, dialect)
    if after is None or figure.value is None:
        bench.rows.append(Row(label, Figure.failed("MiB", figure.error or "no figure")))
        return
    requests = (after[0] - before[0]) / seconds
    written = (after[1] - before[1]) / seconds / MiB
    stored = (
        (sum(outcome.hits for outcome in outcomes) * bench.plan.item_size)
        / seconds
        / MiB
    )
    bench.say(
        f"never: the disk wrote {written:.2f} MiB/s in {requests:,.0f} writes/s "
        f"while {number(figure.value, '/s')} sets stored {stored:.2f} MiB/s"
    )
    disk = Figure(
        written,
        "MiB",
        figure.server_cpu,
        figure.gen_cpu,
        text=f"{written:.2f} MiB/s, {requests:,.0f} writes/s",
    )
    items = Figure(stored, "MiB", text=f"items {stored:.2f} MiB/s")
    bench.rows.append(Row(label, disk, items, ratio(disk, items)))


def spread_jobs(
    bench: Bench, server: Server, conns: int, queues: int, prefix: bytes
) -> tuple[list[Job], list[Dialect]]:
    """The jobs of ``conns`` lock-step set connections spread over
    ``queues`` queues, and the queues' dialects (to delete them after)."""
    plan = bench.plan
    dialects = [
        Dialect(True, prefix + (b"%02d-" % (number % queues)))
        for number in range(conns)
    ]
    shares = list(spread(plan.lockstep_items, conns))
    jobs = [
        Job(
            "set",
            server.port,
            dialect,
            b"s",
            share,
            plan.durable_seconds,
            plan.item_size,
            sum(shares[:number]),
        )
        for number, (dialect, share) in enumerate(zip(dialects, shares, strict=True))
    ]
    return jobs, dialects[:queues]


def durable_sets(
    bench: Bench, server: Server, conns: int, queues: int, prefix: bytes, where: str
) -> Figure:
    """``conns`` lock-step set connections spread over ``queues``
    queues of a ``--sync always`` erq: sets/s."""
    jobs, dialects = spread_jobs(bench, server, conns, queues, prefix)
    name = f"{where} {conns} conns over {queues} queue(s)"
    figure, _ = bench.phase(server, jobs, where=name)
    for dialect in dialects:
        bench.delete(server, dialect)
    bench.log_figure(name, "durable sets", figure)
    return figure
