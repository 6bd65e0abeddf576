"""Workload 6: one queue filled deeper than memory with 1 KiB items, then
drained, every item checked; fill and drain rates, RSS on the way and the
data directory's size."""

from __future__ import annotations

from benchmarks.bench import Bench, Figures, count_text
from benchmarks.load import Job
from benchmarks.report import (
    Figure,
    MiB,
    Row,
    at_least,
    ratio,
)
from benchmarks.servers import (
    NotReady,
    Server,
    rss,
    tree_size,
)
from benchmarks.wire import Dialect

UNITS_DEEP = (
    ("stored", " items"),
    ("fill", "/s"),
    ("drain", "/s"),
    ("rss_probe", "MiB"),
    ("rss_full", "MiB"),
    ("hwm", "MiB"),
    ("dir_full", "MiB"),
    ("dir_drained", "MiB"),
)


def w6(bench: Bench) -> None:
    # The bar's filling rate is the durable one, but a million items
    # fsynced may not fit in the run: the rate is taken over a bounded
    # stretch, the depth on a second erq with sync never.
    rate = durable_fill_rate(bench) if bench.split_sync() else None
    found = fill_and_drain(bench, never=rate is not None)
    rows(bench, rate, found)


def durable_fill_rate(bench: Bench) -> Figure:
    """The fill rate of a ``--sync always`` erq over a bounded stretch."""
    settings = bench.settings
    erq = settings.erq("deep-always", settings.sync_args("always"))
    try:
        erq.start()
        seconds = bench.plan.deep_rate_seconds
        return deep(bench, erq, "w6 erq always", seconds, drain=False)["fill"]
    except NotReady as error:
        return Figure.failed("/s", str(error))
    finally:
        bench.check_log(erq)
        settings.discard(erq)


def fill_and_drain(bench: Bench, never: bool) -> dict[str, Figures]:
    """The whole depth on an erq of its own (``--sync never`` beside a
    durable fill rate, else the durable default) and on memcached."""
    settings = bench.settings
    seconds = bench.plan.deep_fill_seconds
    found: dict[str, Figures] = {}
    if never:
        erq = settings.erq("deep-never", settings.sync_args("never"))
    else:
        erq = settings.erq("deep", bench.erq_durable_args())
    try:
        erq.start()
        found["erq"] = deep(bench, erq, "w6 erq", seconds)
    except NotReady as error:
        found["erq"] = {
            key: Figure.failed(unit, str(error)) for key, unit in UNITS_DEEP
        }
    finally:
        bench.check_log(erq)
        settings.discard(erq)
    if settings.memcached is not None:
        memcached = settings.memcached_server("deep-memcached")
        try:
            memcached.start()
            found["memcached"] = deep(bench, memcached, "w6 memcached", seconds)
        except NotReady as error:
            bench.problems.append(f"w6: {error}")
        finally:
            settings.discard(memcached)
    return found


def rows(bench: Bench, rate: Figure | None, found: dict[str, Figures]) -> None:
    """Workload 6's rows: the fill rates, the drain, RSS and the data
    directory."""
    plan = bench.plan
    size = (
        f"{plan.deep_size // 1024} KiB"
        if plan.deep_size >= 1024
        else f"{plan.deep_size} B"
    )
    stored = found["erq"]["stored"].value
    count = count_text(int(stored) if stored else plan.deep_items)
    probe = count_text(plan.deep_probe)
    if rate is not None:
        other = found.get("memcached", {}).get("fill")
        row = Row(
            f"6. deep: fill x {size}, sync always, items/s",
            rate,
            other,
            ratio(rate, other),
        )
        bench.rows.append(at_least(row, 0.2))
        fill = bench.pair(
            f"6.   fill {count} x {size}, sync never, items/s", "fill", found
        )
    else:
        fill = at_least(
            bench.pair(f"6. deep: fill {count} x {size}, items/s", "fill", found),
            0.2,
        )
    bench.rows.append(fill)
    bench.rows.append(bench.pair("6.   drain, items/s", "drain", found))
    bench.rows.append(bench.pair(f"6.   RSS at {probe} queued", "rss_probe", found))
    row = bench.pair(f"6.   RSS at {count} queued", "rss_full", found)
    allowance = plan.max_memory_size + 64 * MiB
    row.bar = f"<= {probe} + {allowance // MiB} MiB"
    before, after = found["erq"]["rss_probe"].value, found["erq"]["rss_full"].value
    if before is not None and after is not None:
        row.holds = after <= before + allowance
    bench.rows.append(row)
    bench.rows.append(bench.pair("6.   peak RSS (VmHWM)", "hwm", found))
    for key, text in (
        ("dir_full", f"data dir at {count}"),
        ("dir_drained", "data dir drained"),
    ):
        row = Row(f"6.   {text}", found["erq"][key])
        bench.rows.append(row)


def deep(
    bench: Bench, server: Server, where: str, seconds: float, drain: bool = True
) -> Figures:
    """Fill one queue with big items, pipelined, noting RSS on the way;
    then (when ``drain``) drain it, checking every item."""
    plan = bench.plan
    dialect = Dialect(server.kind == "erq", b"deep-")
    fill = Job(
        "pipe-set",
        server.port,
        dialect,
        b"d",
        plan.deep_items,
        seconds,
        plan.deep_size,
        batch=plan.batch,
        probe_pid=server.pid,
        probes=(plan.deep_probe,),
    )
    figures: Figures = {}
    figures["fill"], outcomes = bench.phase(server, [fill], where=f"{where} fill")
    stored = outcomes[0].hits
    figures["stored"] = Figure(stored, " items")
    if not drain:
        bench.log_figure(where, "fill", figures["fill"])
        return figures
    if stored < plan.deep_items:
        bench.problems.append(
            f"{where}: only {stored} of {plan.deep_items} items went in"
        )
    probe = outcomes[0].probes.get(plan.deep_probe)
    figures["rss_probe"] = (
        Figure(probe[0], "MiB") if probe else Figure.failed("MiB", "no probe")
    )
    now, _ = rss(server.pid)
    figures["rss_full"] = Figure(now, "MiB")
    if server.data_dir is not None:
        size = tree_size(server.data_dir)
        figures["dir_full"] = Figure(size, "MiB")
        if stored and size < stored * plan.deep_size:
            bench.problems.append(
                f"{where}: the data directory holds {size} bytes with "
                f"{stored} items of {plan.deep_size} bytes queued: the items "
                "are not (all) journaled"
            )
    bench.log_figure(where, "fill", figures["fill"])
    bench.say(
        f"{where}: RSS {figures['rss_probe'].shown()} at {plan.deep_probe}, "
        f"{figures['rss_full'].shown()} at {stored}"
    )
    figures.update(drained(bench, server, dialect, stored, where))
    return figures


def drained(
    bench: Bench, server: Server, dialect: Dialect, stored: int, where: str
) -> Figures:
    """Take the ``stored`` items back, checking every one: the rate, the
    peak RSS and what is left in the data directory."""
    plan = bench.plan
    gets = Job(
        "pipe-get",
        server.port,
        dialect,
        b"d",
        stored,
        plan.deep_drain_seconds,
        plan.deep_size,
        batch=plan.batch,
    )
    figures: Figures = {}
    figures["drain"], outcomes = bench.phase(server, [gets], where=f"{where} drain")
    if outcomes[0].hits < stored:
        bench.problems.append(f"{where}: drained {outcomes[0].hits} of {stored} items")
    figures["hwm"] = Figure(rss(server.pid)[1], "MiB")
    if server.data_dir is not None:
        figures["dir_drained"] = Figure(tree_size(server.data_dir), "MiB")
    bench.log_figure(where, "drain", figures["drain"])
    return figures
