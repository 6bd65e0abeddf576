"""Request rates, erq against memcached and a bare Twisted server:
lock-step sets and gets over 1, 4 and 16 connections (workloads 1 and 2),
pipelined batches (3), and all of them under ``--sync always`` against
``never`` (5)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from benchmarks.bench import Bench, Figures
from benchmarks.load import Job, spread
from benchmarks.report import (
    Figure,
    Row,
    at_least,
    ratio,
)
from benchmarks.servers import (
    Server,
)
from benchmarks.wire import Dialect


def lockstep(
    bench: Bench, server: Server, conns: int, prefix: bytes, seconds: float, where: str
) -> Figures:
    """``conns`` processes, one connection each: sets, then as many gets,
    each request waiting for its reply."""
    plan = bench.plan
    queue = server.kind != "memcached"
    dialect = Dialect(queue, prefix)
    shares = list(spread(plan.lockstep_items, conns))
    firsts = [sum(shares[:number]) for number in range(conns)]
    sets = [
        Job("set", server.port, dialect, b"i", share, seconds, plan.item_size, first)
        for share, first in zip(shares, firsts, strict=True)
    ]
    set_figure, set_outcomes = bench.phase(server, sets, where=f"{where} sets")
    # Each get connection asks for what its set connection stored: the
    # same keys on memcached, the same number of items off erq's queue.
    # Several consumers of one queue cannot know whose item comes next,
    # so then only each reply's shape is checked.
    gets = [
        Job(
            "get",
            server.port,
            dialect,
            b"i",
            outcome.hits,
            seconds,
            plan.item_size,
            first,
            exact=conns == 1 or not queue,
        )
        for outcome, first in zip(set_outcomes, firsts, strict=True)
    ]
    get_figure, _ = bench.phase(server, gets, where=f"{where} gets")
    if queue:
        bench.delete(server, dialect)
    bench.log_figure(where, "sets", set_figure)
    bench.log_figure(where, "gets", get_figure)
    return {"sets": set_figure, "gets": get_figure}


def pipelined(
    bench: Bench, server: Server, prefix: bytes, seconds: float, where: str
) -> Figures:
    """Batches of 100 sets per write, then 100 gets per write, every
    reply checked in order and byte for byte."""
    plan = bench.plan
    dialect = Dialect(server.kind == "erq", prefix)
    sets = [
        Job(
            "pipe-set",
            server.port,
            dialect,
            b"p",
            plan.pipeline_items,
            seconds,
            plan.item_size,
            batch=plan.batch,
        )
    ]
    set_figure, set_outcomes = bench.phase(server, sets, where=f"{where} sets")
    stored = set_outcomes[0].hits
    gets = [
        Job(
            "pipe-get",
            server.port,
            dialect,
            b"p",
            stored,
            seconds,
            plan.item_size,
            batch=plan.batch,
        )
    ]
    get_figure, _ = bench.phase(server, gets, where=f"{where} gets")
    if dialect.queue:
        bench.delete(server, dialect)
    bench.log_figure(where, "sets", set_figure)
    bench.log_figure(where, "gets", get_figure)
    return {"sets": set_figure, "gets": get_figure}


def lockstep_servers(bench: Bench) -> list[tuple[str, Callable[[], Server | None]]]:
    return [*bench.servers(), ("bare", bench.bare)]


def bare_rows(bench: Bench, label: str, figures: dict[str, Figures]) -> None:
    """The bare Twisted reference beside memcached: the ceiling of a
    Python server on Twisted, reaching the socket as erq does, in this
    run."""
    if "bare" not in figures:
        return
    for key in ("sets", "gets"):
        bare = figures["bare"][key]
        other = figures.get("memcached", {}).get(key)
        bench.rows.append(
            Row(f"{label} {key}/s, bare Twisted", bare, other, ratio(bare, other))
        )


def w1(bench: Bench) -> None:
    seconds = bench.plan.phase_seconds
    figures = bench.alternate(
        "w1",
        lambda server, prefix, where: lockstep(
            bench, server, 1, prefix, seconds, where
        ),
        lockstep_servers(bench),
    )
    sync = " (sync never)" if bench.erq_main_args() else ""
    for key in ("sets", "gets"):
        row = bench.pair(f"1. lock-step, 1 conn: {key}/s{sync}", key, figures)
        bench.rows.append(at_least(row, 0.85))
    bare_rows(bench, "1.   1 conn:", figures)


def w2(bench: Bench) -> None:
    seconds = bench.plan.phase_seconds
    for conns in (4, 16):
        measure = functools.partial(_lockstep_of, bench, conns, seconds)
        servers = lockstep_servers(bench) if conns == 4 else bench.servers()
        figures = bench.alternate(f"w2c{conns}", measure, servers)
        sync = " (sync never)" if bench.erq_main_args() else ""
        for key in ("sets", "gets"):
            label = f"2. lock-step, {conns} conns: {key}/s{sync}"
            row = bench.pair(label, key, figures)
            bench.rows.append(at_least(row, 0.7) if conns == 4 else row)
        if conns == 4:
            bare_rows(bench, "2.   4 conns:", figures)


def _lockstep_of(
    bench: Bench, conns: int, seconds: float, server: Server, prefix: bytes, where: str
) -> Figures:
    return lockstep(bench, server, conns, prefix, seconds, where)


def w3(bench: Bench) -> None:
    seconds = bench.plan.phase_seconds
    figures = bench.alternate(
        "w3",
        lambda server, prefix, where: pipelined(bench, server, prefix, seconds, where),
        [("erq", bench.erq_durable), ("memcached", bench.memcached)],
    )
    sync = " (sync always)" if bench.erq_durable_args() else ""
    row = bench.pair(f"3. pipelined x{bench.plan.batch}: sets/s{sync}", "sets", figures)
    bench.rows.append(at_least(row, 0.2))
    row = bench.pair(f"3. pipelined x{bench.plan.batch}: gets/s{sync}", "gets", figures)
    bench.rows.append(at_least(row, 0.6))


def w5(bench: Bench) -> None:
    shapes = [
        ("w1", "1 conn", "sets"),
        ("w1", "1 conn", "gets"),
        ("w2c4", "4 conns", "sets"),
        ("w2c4", "4 conns", "gets"),
        ("w2c16", "16 conns", "sets"),
        ("w2c16", "16 conns", "gets"),
        ("w3", f"pipelined x{bench.plan.batch}", "sets"),
        ("w3", f"pipelined x{bench.plan.batch}", "gets"),
    ]

    def label(shape: tuple[str, str, str]) -> str:
        return f"5. {shape[1]}: {shape[2]}/s, always / never"

    if not bench.sync_supported:
        for shape in shapes:
            row = Row(label(shape), Figure.missing("/s"))
            if shape[1:] == ("16 conns", "sets"):
                row.bar = ">= 0.5x never"
            bench.rows.append(row)
        bench.say(
            f"w5: twistd erq --help shows no {bench.settings.sync_option}: rows are n/a"
        )
        return
    figures = always_and_never(bench)
    for shape in shapes:
        key = f"{shape[0]} {shape[2]}"
        first, second = figures["always"][key], figures["never"][key]
        shown = Figure(
            first.value,
            "/s",
            first.server_cpu,
            first.gen_cpu,
            first.error,
            text=f"{first.shown()} / {second.shown()}",
        )
        row = Row(label(shape), shown, None, ratio(first, second), "a/n")
        if shape[1:] == ("16 conns", "sets"):
            at_least(row, 0.5).bar = ">= 0.5x never"
        bench.rows.append(row)


def always_and_never(bench: Bench) -> dict[str, Figures]:
    """Workloads 1, 2 and 3's shapes on two erqs of their own, one
    ``--sync always`` and one ``never``, alternating."""
    settings = bench.settings
    always = settings.erq("always", settings.sync_args("always"))
    never = settings.erq("never", settings.sync_args("never"))
    try:
        always.start()
        never.start()
        return bench.alternate(
            "w5",
            functools.partial(every_shape, bench),
            [("always", lambda: always), ("never", lambda: never)],
        )
    finally:
        for server in (always, never):
            bench.check_log(server)
            settings.discard(server)


def every_shape(bench: Bench, server: Server, prefix: bytes, where: str) -> Figures:
    """Lock-step over 1, 4 and 16 connections and pipelined, each for
    ``Plan.durable_seconds``."""
    seconds = bench.plan.durable_seconds
    figures: Figures = {}
    for conns, name in ((1, "w1"), (4, "w2c4"), (16, "w2c16")):
        found = lockstep(bench, server, conns, prefix + name.encode(), seconds, where)
        for key, figure in found.items():
            figures[f"{name} {key}"] = figure
    found = pipelined(bench, server, prefix + b"w3", seconds, where)
    for key, figure in found.items():
        figures[f"w3 {key}"] = figure
    return figures
