"""The seven workloads: each runs on erq and, where it maps, on memcached,
alternating rounds, and turns what the workers saw into table rows."""

from __future__ import annotations

import compileall
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.limits import (
    LIMIT_REQUESTS,
    SAMPLES,
    fdatasync_seconds,
    round_trip_seconds,
)
from benchmarks.load import Job, Outcome, run_jobs, spread
from benchmarks.report import (
    Figure,
    MiB,
    Row,
    at_least,
    at_most,
    median,
    number,
    ratio,
)
from benchmarks.servers import (
    CHECKOUT,
    NotReady,
    Server,
    Settings,
    ask,
    cpu_seconds,
    rss,
    tree_size,
)
from benchmarks.wire import Dialect, item


@dataclass(frozen=True)
class Plan:
    """How much each workload does; every timed phase is bounded by both a
    count and a number of seconds."""

    rounds: int
    phase_seconds: float
    lockstep_items: int
    pipeline_items: int
    flow_items: int
    flow_seconds: float
    durable_seconds: float
    deep_items: int
    deep_probe: int
    deep_rate_seconds: float
    deep_fill_seconds: float
    deep_drain_seconds: float
    restart_items: int
    restart_fill_seconds: float
    restart_wait: float
    item_size: int = 64
    deep_size: int = 1024
    batch: int = 100
    producers: int = 2
    consumers: int = 2
    max_memory_size: int = 128 * MiB
    #: How long the durable limit's round trip is measured each time.
    limit_seconds: float = 1.0


FULL = Plan(
    rounds=3,
    phase_seconds=2.5,
    lockstep_items=200_000,
    pipeline_items=300_000,
    flow_items=200_000,
    flow_seconds=3.0,
    durable_seconds=1.5,
    deep_items=1_000_000,
    deep_probe=10_000,
    deep_rate_seconds=20.0,
    deep_fill_seconds=90.0,
    deep_drain_seconds=60.0,
    restart_items=1_000_000,
    restart_fill_seconds=60.0,
    restart_wait=10.0,
)

QUICK = Plan(
    rounds=1,
    phase_seconds=0.8,
    lockstep_items=40_000,
    pipeline_items=80_000,
    flow_items=40_000,
    flow_seconds=0.8,
    durable_seconds=0.4,
    deep_items=50_000,
    deep_probe=10_000,
    deep_rate_seconds=3.0,
    deep_fill_seconds=15.0,
    deep_drain_seconds=15.0,
    restart_items=50_000,
    restart_fill_seconds=15.0,
    restart_wait=5.0,
    limit_seconds=0.3,
)

#: Extra seconds consumers get to drain what producers left.
DRAIN_GRACE = 5.0

Figures = dict[str, Figure]


class Bench:
    """The run: its servers, its plan, its rows and the problems it saw."""

    def __init__(
        self, settings: Settings, plan: Plan, say: Callable[[str], None]
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.say = say
        self.problems: list[str] = []
        self.rows: list[Row] = []
        self.sync_supported = settings.sync_supported()
        self._erq: Server | None = None
        self._erq_durable: Server | None = None
        self._bare: Server | None = None
        self._memcached: Server | None = None
        # The median fdatasync and lock-step round trip, in seconds.
        #: Each workload's measurements of the durable limit (fdatasync,
        #: round trip), taken beside its own rounds.
        self._limits: dict[str, list[tuple[float, float]]] = {}

    # -- servers ---------------------------------------------------------

    def erq_args(self, policy: str) -> list[str]:
        """``--sync <policy>`` when erq has it and the user did not choose."""
        if self.sync_supported and not self.settings.user_sets_sync():
            return self.settings.sync_args(policy)
        return []

    def erq_main_args(self) -> list[str]:
        """Workloads 1, 2 and 4 measure the server, not the disk: their erq
        journals every request but leaves syncing to the operating system
        (``--sync never``).  An fsync per lock-step set would measure the
        disk's fsync rate instead; workload 5 shows that cost."""
        return self.erq_args("never")

    def erq_durable_args(self) -> list[str]:
        """Workload 3 and workload 7's restart run ``--sync always``, the
        default, explicitly."""
        return self.erq_args("always")

    def erq(self) -> Server:
        self._erq = self._alive(self._erq, "erq", self.erq_main_args())
        return self._erq

    def erq_durable(self) -> Server:
        self._erq_durable = self._alive(
            self._erq_durable, "erq-always", self.erq_durable_args()
        )
        return self._erq_durable

    def _alive(
        self,
        server: Server | None,
        label: str,
        args: list[str],
        make: Callable[[str], Server] | None = None,
    ) -> Server:
        if server is None or not server.alive():
            if server is not None:
                self.problems.append(
                    f"{server.label} died; log tail:\n{server.log_tail()}"
                )
            server = make(label) if make else self.settings.erq(label, args)
            server.start()
        return server

    def bare(self) -> Server:
        """The bare Twisted reference of workloads 1 and 2."""
        self._bare = self._alive(self._bare, "bare", [], self.settings.bare_server)
        return self._bare

    def memcached(self) -> Server | None:
        if self.settings.memcached is None:
            return None
        if self._memcached is None or not self._memcached.alive():
            if self._memcached is not None:
                self.problems.append("memcached died; restarted")
            self._memcached = self.settings.memcached_server("memcached")
            self._memcached.start()
        return self._memcached

    def close(self) -> None:
        for server in (self._erq, self._erq_durable, self._bare, self._memcached):
            if server is not None:
                self._check_log(server)
                self.settings.discard(server)

    def _check_log(self, server: Server) -> None:
        errors = server.log_errors()
        if errors:
            self.problems.append(
                f"{server.label} logged {len(errors)} error lines, first: {errors[0]}"
            )
        self.problems.extend(server.problems)
        server.problems.clear()

    # -- measuring -------------------------------------------------------

    def phase(
        self, server: Server, jobs: list[Job], unit: str = "/s", where: str = ""
    ) -> tuple[Figure, list[Outcome]]:
        """Run the jobs against ``server``; the rate of successful requests
        over the span from the first start to the last end."""
        before = cpu_seconds(server.pid)
        outcomes = run_jobs(jobs, max(job.seconds for job in jobs))
        after = cpu_seconds(server.pid)
        self._note(where, outcomes)
        started = [outcome for outcome in outcomes if outcome.start]
        errors = [outcome.error for outcome in outcomes if outcome.error]
        if errors or not started:
            return Figure.failed(
                unit, errors[0] if errors else "no worker ran"
            ), outcomes
        span = max(o.end for o in started) - min(o.start for o in started)
        hits = sum(outcome.hits for outcome in outcomes)
        if span <= 0:
            return Figure.failed(unit, "no time measured"), outcomes
        return (
            Figure(
                hits / span,
                unit,
                server_cpu=(after - before) / span,
                gen_cpu=sum(outcome.cpu for outcome in outcomes) / span,
            ),
            outcomes,
        )

    def _note(self, where: str, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.error:
                self.problems.append(f"{where} {outcome.role}: {outcome.error}")
            if outcome.odd:
                self.problems.append(
                    f"{where} {outcome.role}: {outcome.odd} unexpected replies, "
                    f"first {outcome.first_odd}"
                )
        misses = sum(o.misses for o in outcomes if o.role in ("get", "pipe-get"))
        if misses:
            self.problems.append(
                f"{where}: {misses} gets answered END although the items were there"
            )

    def log_figure(self, where: str, name: str, figure: Figure) -> None:
        cpu = f" (cpu% server/generator {figure.cpu()})" if figure.cpu() else ""
        self.say(f"{where}: {name} {figure.shown()}{cpu}")

    # -- shared shapes -----------------------------------------------------

    def lockstep(
        self, server: Server, conns: int, prefix: bytes, seconds: float, where: str
    ) -> Figures:
        """``conns`` processes, one connection each: sets, then as many gets,
        each request waiting for its reply."""
        plan = self.plan
        queue = server.kind != "memcached"
        dialect = Dialect(queue, prefix)
        shares = list(spread(plan.lockstep_items, conns))
        firsts = [sum(shares[:number]) for number in range(conns)]
        sets = [
            Job(
                "set", server.port, dialect, b"i", share, seconds, plan.item_size, first
            )
            for share, first in zip(shares, firsts, strict=True)
        ]
        set_figure, set_outcomes = self.phase(server, sets, where=f"{where} sets")
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
        get_figure, _ = self.phase(server, gets, where=f"{where} gets")
        if queue:
            self._delete(server, dialect)
        self.log_figure(where, "sets", set_figure)
        self.log_figure(where, "gets", get_figure)
        return {"sets": set_figure, "gets": get_figure}

    def pipelined(
        self, server: Server, prefix: bytes, seconds: float, where: str
    ) -> Figures:
        """Batches of 100 sets per write, then 100 gets per write, every
        reply checked in order and byte for byte."""
        plan = self.plan
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
        set_figure, set_outcomes = self.phase(server, sets, where=f"{where} sets")
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
        get_figure, _ = self.phase(server, gets, where=f"{where} gets")
        if dialect.queue:
            self._delete(server, dialect)
        self.log_figure(where, "sets", set_figure)
        self.log_figure(where, "gets", get_figure)
        return {"sets": set_figure, "gets": get_figure}

    def _delete(self, server: Server, dialect: Dialect) -> None:
        """Drop what a time-capped phase left behind."""
        try:
            ask(server.port, b"delete %s\r\n" % dialect.queue_name, timeout=30)
        except OSError as error:
            self.problems.append(f"{server.label}: delete failed: {error}")

    def alternate(
        self,
        name: str,
        measure: Callable[[Server, bytes, str], Figures],
        servers: list[tuple[str, Callable[[], Server | None]]],
    ) -> dict[str, Figures]:
        """Each round measures every server in turn; the median per figure."""
        rounds: dict[str, list[Figures]] = {label: [] for label, _ in servers}
        for turn in range(self.plan.rounds):
            for label, get_server in servers:
                server = get_server()
                if server is None:
                    continue
                prefix = b"%s-%s%d-" % (name.encode(), label[:2].encode(), turn)
                where = f"{name} {label} round {turn + 1}"
                rounds[label].append(measure(server, prefix, where))
        result: dict[str, Figures] = {}
        for label, measured in rounds.items():
            if measured:
                keys = measured[0].keys()
                result[label] = {
                    key: median([m[key] for m in measured]) for key in keys
                }
        return result

    def pair(self, label: str, key: str, figures: dict[str, Figures]) -> Row:
        """erq's figure beside memcached's; a ratio for rates only."""
        erq = figures["erq"][key]
        other = figures.get("memcached", {}).get(key)
        return Row(label, erq, other, ratio(erq, other) if erq.unit == "/s" else None)

    def servers(self) -> list[tuple[str, Callable[[], Server | None]]]:
        return [("erq", self.erq), ("memcached", self.memcached)]

    def lockstep_servers(self) -> list[tuple[str, Callable[[], Server | None]]]:
        return [*self.servers(), ("bare", self.bare)]

    def bare_rows(self, label: str, figures: dict[str, Figures]) -> None:
        """The bare Twisted reference beside memcached: the ceiling of a
        Python server on Twisted in this run."""
        if "bare" not in figures:
            return
        for key in ("sets", "gets"):
            bare = figures["bare"][key]
            other = figures.get("memcached", {}).get(key)
            self.rows.append(
                Row(f"{label} {key}/s, bare Twisted", bare, other, ratio(bare, other))
            )

    # -- the workloads -----------------------------------------------------

    def w1(self) -> None:
        seconds = self.plan.phase_seconds
        figures = self.alternate(
            "w1",
            lambda server, prefix, where: self.lockstep(
                server, 1, prefix, seconds, where
            ),
            self.lockstep_servers(),
        )
        sync = " (sync never)" if self.erq_main_args() else ""
        for key in ("sets", "gets"):
            row = self.pair(f"1. lock-step, 1 conn: {key}/s{sync}", key, figures)
            self.rows.append(at_least(row, 0.5))
        self.bare_rows("1.   1 conn:", figures)

    def w2(self) -> None:
        seconds = self.plan.phase_seconds
        for conns in (4, 16):
            measure = functools.partial(self._lockstep_of, conns, seconds)
            servers = self.lockstep_servers() if conns == 4 else self.servers()
            figures = self.alternate(f"w2c{conns}", measure, servers)
            sync = " (sync never)" if self.erq_main_args() else ""
            for key in ("sets", "gets"):
                label = f"2. lock-step, {conns} conns: {key}/s{sync}"
                row = self.pair(label, key, figures)
                self.rows.append(at_least(row, 0.45) if conns == 4 else row)
            if conns == 4:
                self.bare_rows("2.   4 conns:", figures)

    def _lockstep_of(
        self, conns: int, seconds: float, server: Server, prefix: bytes, where: str
    ) -> Figures:
        return self.lockstep(server, conns, prefix, seconds, where)

    def w3(self) -> None:
        seconds = self.plan.phase_seconds
        figures = self.alternate(
            "w3",
            lambda server, prefix, where: self.pipelined(
                server, prefix, seconds, where
            ),
            [("erq", self.erq_durable), ("memcached", self.memcached)],
        )
        sync = " (sync always)" if self.erq_durable_args() else ""
        row = self.pair(
            f"3. pipelined x{self.plan.batch}: sets/s{sync}", "sets", figures
        )
        self.rows.append(at_least(row, 0.2))
        row = self.pair(
            f"3. pipelined x{self.plan.batch}: gets/s{sync}", "gets", figures
        )
        self.rows.append(at_least(row, 0.6))

    def w4(self) -> None:
        servers: list[tuple[str, Callable[[], Server | None]]] = [("never", self.erq)]
        if self.erq_durable_args():
            servers.append(("always", self.erq_durable))
        servers.append(("memcached", self.memcached))
        figures = self.alternate("w4", self.flow_or_producers, servers)
        plan = self.plan
        shape = f"{plan.producers} producers + {plan.consumers} consumers"
        producers = figures.get("memcached", {}).get("items")
        for policy in ("never", "always"):
            if policy not in figures:
                continue
            found = figures[policy]
            sync = f", sync {policy}" if self.erq_durable_args() else ""
            if policy == "never":
                row = Row(
                    f"4. {shape}{sync}: items/s (vs memcached's producers)",
                    found["items"],
                    producers,
                    ratio(found["items"], producers),
                )
                self.rows.append(at_least(row, 0.6))
            else:
                limit = self.durable_limit("w4", plan.producers)
                row = Row(
                    f"4. {shape}{sync}: items/s (vs the durable limit)",
                    found["items"],
                    limit,
                    ratio(found["items"], limit),
                )
                self.rows.append(at_least(row, 0.8))
            rate = found["paced"].shown()
            p50 = Row(f"4.   latency p50 at half load ({rate})", found["p50"])
            if policy == "never":
                at_most(p50, 1.0, "ms")
            self.rows.append(p50)
            p99 = Row(f"4.   latency p99 at half load ({rate})", found["p99"])
            self.rows.append(p99)
            # At full load the queue grows: these measure the backlog.
            for key in ("p50", "p99"):
                self.rows.append(
                    Row(f"4.   latency {key} at full load", found[f"full_{key}"])
                )

    def flow_or_producers(self, server: Server, prefix: bytes, where: str) -> Figures:
        """erq: producers and consumers (``flow``); memcached, which has no
        queue: the same producers alone, the rate a queue's consumers would
        have to keep up with."""
        if server.kind != "memcached":
            if server is self._erq_durable:
                self.measure_limit("w4")
            return self.flow(server, prefix, where)
        plan = self.plan
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
        figure, _ = self.phase(server, jobs, where=f"{where} producers")
        self.log_figure(where, "producers alone", figure)
        return {"items": figure}

    def measure_limit(self, workload: str) -> None:
        """Measure the durable limit's two parts once more, beside the round
        that is measured now (the disk's fsync time varies with what else
        the machine does): the fdatasync of a small append on the data
        directory's file system, and the round trip of one lock-step
        connection of the load generator storing into memcached (see "The
        durable limit" in benchmarks/README.md; erq's ``version`` on a bare
        socket without memcached)."""
        server = self.erq_durable()
        directory = server.data_dir or self.settings.scratch
        fsync = fdatasync_seconds(directory)
        memcached = self.memcached()
        trip = None
        if memcached is not None:
            plan = self.plan
            job = Job(
                "set",
                memcached.port,
                Dialect(False, b"limit-"),
                b"l",
                LIMIT_REQUESTS,
                plan.limit_seconds,
                plan.item_size,
            )
            figure, _ = self.phase(memcached, [job], where="durable limit")
            if figure.value:
                trip = 1 / figure.value
                whose = "memcached lock-step sets, load generator"
        if trip is None:
            trip = round_trip_seconds(server.port, b"version\r\n")
            whose = "erq version, bare socket"
        self._limits.setdefault(workload, []).append((fsync, trip))
        self.say(
            f"durable limit: fdatasync {fsync * 1e3:.3f} ms (median of "
            f"{SAMPLES}), round trip {trip * 1e3:.3f} ms ({whose}): "
            f"{number(1 / (fsync + trip), '/s')} per connection"
        )

    def durable_limit(self, workload: str, connections: int = 1) -> Figure:
        """What ``connections`` lock-step connections can store durably at
        most: each one 1 / (round trip + fdatasync), from the medians of
        the measurements taken beside ``workload``'s rounds (not another
        workload's: the fsync time drifts over a run)."""
        if not self._limits.get(workload):
            self.measure_limit(workload)
        limits = self._limits[workload]
        fsync = statistics.median(f for f, _ in limits)
        trip = statistics.median(t for _, t in limits)
        value = connections / (fsync + trip)
        return Figure(value, "/s", text=f"limit {number(value, '/s')}")

    def flow(self, server: Server, prefix: bytes, where: str) -> Figures:
        """Producers and consumers (``get q/t=100``) at once, each item
        carrying the time it was sent: first as fast as they go (items/s),
        then with the producers paced at half that rate (latency), since at
        full speed the queue grows and latency only measures the backlog."""
        saturated = self.flow_once(server, prefix + b"full", where, 0.0)
        items = saturated["items"]
        if items.value is None:
            return {
                **saturated,
                "full_p50": saturated["p50"],
                "full_p99": saturated["p99"],
                "paced": Figure.missing("/s", "-"),
            }
        rate = items.value / 2
        paced = self.flow_once(server, prefix + b"half", where, rate)
        self.say(
            f"{where}: {items.shown()} (cpu% {items.cpu()}) with p50 "
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
        self, server: Server, prefix: bytes, where: str, rate: float
    ) -> Figures:
        plan = self.plan
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
        outcomes = run_jobs(jobs, plan.flow_seconds + DRAIN_GRACE)
        after = cpu_seconds(server.pid)
        self._note(where, outcomes)
        self._delete(server, dialect)
        errors = [outcome.error for outcome in outcomes if outcome.error]
        consumers = [o for o in outcomes if o.role == "consume"]
        latencies = sorted(ns for o in consumers for ns in o.latencies_ns)
        if errors or not latencies:
            error = errors[0] if errors else "no item got through"
            return {key: Figure.failed(unit, error) for key, unit in UNITS_FLOW}
        produced = sum(o.hits for o in outcomes if o.role == "produce")
        if produced != len(latencies):
            self.problems.append(
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
            ),
            "p50": Figure(percentile(latencies, 50) / 1e6, "ms"),
            "p99": Figure(percentile(latencies, 99) / 1e6, "ms"),
        }

    def w5(self) -> None:
        shapes = [
            ("w1", "1 conn", "sets"),
            ("w1", "1 conn", "gets"),
            ("w2c4", "4 conns", "sets"),
            ("w2c4", "4 conns", "gets"),
            ("w2c16", "16 conns", "sets"),
            ("w2c16", "16 conns", "gets"),
            ("w3", f"pipelined x{self.plan.batch}", "sets"),
            ("w3", f"pipelined x{self.plan.batch}", "gets"),
        ]

        def label(shape: tuple[str, str, str]) -> str:
            return f"5. {shape[1]}: {shape[2]}/s, always / never"

        if not self.sync_supported:
            for shape in shapes:
                row = Row(label(shape), Figure.missing("/s"))
                if shape[1:] == ("16 conns", "sets"):
                    row.bar = ">= 0.5x never"
                self.rows.append(row)
            self.say(
                f"w5: twistd erq --help shows no {self.settings.sync_option}: "
                "rows are n/a"
            )
            return
        settings = self.settings
        always = settings.erq("always", settings.sync_args("always"))
        never = settings.erq("never", settings.sync_args("never"))
        try:
            always.start()
            never.start()
            seconds = self.plan.durable_seconds

            def measure(server: Server, prefix: bytes, where: str) -> Figures:
                figures: Figures = {}
                for conns, name in ((1, "w1"), (4, "w2c4"), (16, "w2c16")):
                    found = self.lockstep(
                        server, conns, prefix + name.encode(), seconds, where
                    )
                    for key, figure in found.items():
                        figures[f"{name} {key}"] = figure
                found = self.pipelined(server, prefix + b"w3", seconds, where)
                for key, figure in found.items():
                    figures[f"w3 {key}"] = figure
                return figures

            figures = self.alternate(
                "w5", measure, [("always", lambda: always), ("never", lambda: never)]
            )
        finally:
            for server in (always, never):
                self._check_log(server)
                settings.discard(server)
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
            self.rows.append(row)

    def w9(self) -> None:
        """Durable lock-step sets against what the disk allows: one
        connection against 1 / (round trip + fdatasync), and 16 connections
        over 16 queues against the same 16 over one queue (one file to sync
        per batch against 16)."""
        if not self.erq_durable_args():
            self.rows.append(
                Row("9. durable lock-step: n/a without --sync", Figure.missing("/s"))
            )
            return
        conns = 16

        def measure(server: Server, prefix: bytes, where: str) -> Figures:
            self.measure_limit("w9")
            figures: Figures = {}
            figures["one"] = self.durable_sets(server, 1, 1, prefix + b"a", where)
            figures["spread"] = self.durable_sets(
                server, conns, conns, prefix + b"b", where
            )
            figures["shared"] = self.durable_sets(
                server, conns, 1, prefix + b"c", where
            )
            return figures

        found = self.alternate("w9", measure, [("erq", self.erq_durable)])["erq"]
        limit = self.durable_limit("w9", 1)
        row = Row(
            "9. durable lock-step, 1 conn: sets/s (vs the limit)",
            found["one"],
            limit,
            ratio(found["one"], limit),
        )
        self.rows.append(at_least(row, 0.85))
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
        self.rows.append(at_least(row, 0.8))

    def durable_sets(
        self, server: Server, conns: int, queues: int, prefix: bytes, where: str
    ) -> Figure:
        """``conns`` lock-step set connections spread over ``queues``
        queues of a ``--sync always`` erq: sets/s."""
        plan = self.plan
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
            for number, (dialect, share) in enumerate(
                zip(dialects, shares, strict=True)
            )
        ]
        name = f"{where} {conns} conns over {queues} queue(s)"
        figure, _ = self.phase(server, jobs, where=name)
        for dialect in dialects[:queues]:
            self._delete(server, dialect)
        self.log_figure(name, "durable sets", figure)
        return figure

    def split_sync(self) -> bool:
        """Whether workloads 6 and 7 may fill with ``--sync never`` where
        the fill is not what they measure (erq has ``--sync`` and the user
        did not choose it)."""
        return self.sync_supported and not self.settings.user_sets_sync()

    def w6(self) -> None:
        plan = self.plan
        settings = self.settings
        found: dict[str, Figures] = {}
        rate: Figure | None = None
        if self.split_sync():
            # The bar's filling rate is the durable one, but a million items
            # fsynced may not fit in the run: the rate is taken over a
            # bounded stretch, the depth on a second erq with sync never.
            erq = settings.erq("deep-always", settings.sync_args("always"))
            try:
                erq.start()
                rate = self.deep(
                    erq, "w6 erq always", plan.deep_rate_seconds, drain=False
                )["fill"]
            except NotReady as error:
                rate = Figure.failed("/s", str(error))
            finally:
                self._check_log(erq)
                settings.discard(erq)
            erq = settings.erq("deep-never", settings.sync_args("never"))
        else:
            erq = settings.erq("deep", self.erq_durable_args())
        try:
            erq.start()
            found["erq"] = self.deep(erq, "w6 erq", plan.deep_fill_seconds)
        except NotReady as error:
            found["erq"] = {
                key: Figure.failed(unit, str(error)) for key, unit in UNITS_DEEP
            }
        finally:
            self._check_log(erq)
            settings.discard(erq)
        if settings.memcached is not None:
            memcached = settings.memcached_server("deep-memcached")
            try:
                memcached.start()
                found["memcached"] = self.deep(
                    memcached, "w6 memcached", plan.deep_fill_seconds
                )
            except NotReady as error:
                self.problems.append(f"w6: {error}")
            finally:
                settings.discard(memcached)
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
            self.rows.append(at_least(row, 0.2))
            fill = self.pair(
                f"6.   fill {count} x {size}, sync never, items/s", "fill", found
            )
        else:
            fill = at_least(
                self.pair(f"6. deep: fill {count} x {size}, items/s", "fill", found),
                0.2,
            )
        self.rows.append(fill)
        self.rows.append(self.pair("6.   drain, items/s", "drain", found))
        self.rows.append(self.pair(f"6.   RSS at {probe} queued", "rss_probe", found))
        row = self.pair(f"6.   RSS at {count} queued", "rss_full", found)
        allowance = plan.max_memory_size + 64 * MiB
        row.bar = f"<= {probe} + {allowance // MiB} MiB"
        before, after = found["erq"]["rss_probe"].value, found["erq"]["rss_full"].value
        if before is not None and after is not None:
            row.holds = after <= before + allowance
        self.rows.append(row)
        self.rows.append(self.pair("6.   peak RSS (VmHWM)", "hwm", found))
        for key, text in (
            ("dir_full", f"data dir at {count}"),
            ("dir_drained", "data dir drained"),
        ):
            row = Row(f"6.   {text}", found["erq"][key])
            self.rows.append(row)

    def deep(
        self, server: Server, where: str, seconds: float, drain: bool = True
    ) -> Figures:
        """Fill one queue with big items, pipelined, noting RSS on the way;
        then (when ``drain``) drain it, checking every item."""
        plan = self.plan
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
        figures["fill"], outcomes = self.phase(server, [fill], where=f"{where} fill")
        stored = outcomes[0].hits
        figures["stored"] = Figure(stored, " items")
        if not drain:
            self.log_figure(where, "fill", figures["fill"])
            return figures
        if stored < plan.deep_items:
            self.problems.append(
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
                self.problems.append(
                    f"{where}: the data directory holds {size} bytes with "
                    f"{stored} items of {plan.deep_size} bytes queued: the items "
                    "are not (all) journaled"
                )
        self.log_figure(where, "fill", figures["fill"])
        self.say(
            f"{where}: RSS {figures['rss_probe'].shown()} at {plan.deep_probe}, "
            f"{figures['rss_full'].shown()} at {stored}"
        )
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
        figures["drain"], outcomes = self.phase(server, [gets], where=f"{where} drain")
        if outcomes[0].hits < stored:
            self.problems.append(
                f"{where}: drained {outcomes[0].hits} of {stored} items"
            )
        figures["hwm"] = Figure(rss(server.pid)[1], "MiB")
        if server.data_dir is not None:
            figures["dir_drained"] = Figure(tree_size(server.data_dir), "MiB")
        self.log_figure(where, "drain", figures["drain"])
        return figures

    def w7(self) -> None:
        plan = self.plan
        settings = self.settings
        # The restart is what is measured; the fill is only the way there,
        # so it need not wait for fsyncs (shutdown syncs every journal).
        fill_args = self.erq_durable_args()
        fill_sync = ""
        if self.split_sync():
            fill_args = settings.sync_args("never")
            fill_sync = ", sync never"
        dialect = Dialect(True, b"restart-")
        get = b"get %s\r\n" % dialect.queue_name
        # Start times are an installed erq's, whose bytecode pip compiled at
        # install: a checkout run with PYTHONDONTWRITEBYTECODE would compile
        # every module at every start.
        for part in ("erq", "twisted"):
            compileall.compile_dir(CHECKOUT / part, quiet=1)
        # Two depths, the smaller filled first and the same journals filled
        # on to the larger: 200k (or fewer) and --restart-items.
        depths = sorted({min(200_000, plan.restart_items), plan.restart_items})
        empty = Row("7. start, empty data dir: to port open", Figure(None, "s"))
        empty_item = Row("7. start, empty data dir: to first reply", Figure(None, "s"))
        # CPU time, which a busy machine changes far less than seconds.
        empty_cpu = Row(
            "7. start, empty data dir: CPU to first reply", Figure(None, "s")
        )
        self.rows += [empty, empty_item, empty_cpu]
        servers: list[Server] = []

        def started(label: str, args: list[str], root: Server | None) -> Server:
            server = settings.erq(
                label,
                args,
                data_dir=None if root is None else root.data_dir,
                root=None if root is None else root.root,
            )
            servers.append(server)
            return server

        first: Server | None = None
        # Each start is timed three times and the best kept: on a shared
        # machine one start may lose its core for a while.
        tries = 3
        try:
            opened: list[float] = []
            replied: list[float] = []
            used: list[float] = []
            for attempt in range(tries):
                if first is not None:
                    settings.discard(first)
                # A fresh data directory each time; the last one is filled.
                first = started(f"restart-{attempt}", fill_args, None)
                opened.append(first.start())
                answer = ask(first.port, get)
                replied.append(time.monotonic() - first.started_at)
                used.append(cpu_seconds(first.pid))
                if answer != b"END\r\n":
                    self.problems.append(f"w7: an empty queue answered {answer[:60]!r}")
            empty.erq = Figure(min(opened), "s")
            empty_item.erq = Figure(min(replied), "s")
            empty_start = min(replied)
            empty_cpu.erq = Figure(min(used), "s")
            filler: Server | None = first
            stored = taken = 0
            for depth in depths:
                count = count_text(depth)
                if filler is None:
                    filler = started(f"refill-{count}", fill_args, first)
                    filler.start()
                fill_row = Row(
                    f"7.   fill to {count} x {plan.item_size} B{fill_sync}, items/s",
                    Figure(None, "/s"),
                )
                fill = Job(
                    "pipe-set",
                    filler.port,
                    dialect,
                    b"r",
                    depth - stored,
                    plan.restart_fill_seconds,
                    plan.item_size,
                    first=stored,
                    batch=plan.batch,
                )
                fill_row.erq, outcomes = self.phase(filler, [fill], where="w7 fill")
                stored += outcomes[0].hits
                if stored != depth:
                    self.problems.append(f"w7: {stored} of {depth} items went in")
                    count = count_text(stored)
                shutdown = Row(f"7.   shutdown with {count} queued", Figure(None, "s"))
                shutdown.erq = Figure(filler.stop(b"shutdown\r\n"), "s")
                filler = None
                port_row = Row(
                    f"7. restart with {count} journaled: to port open",
                    Figure(None, "s"),
                )
                item_row = Row(
                    f"7. restart with {count} journaled: to first item",
                    Figure(None, "s"),
                )
                beyond = Row(
                    f"7. restart with {count} journaled: beyond an empty start",
                    Figure(None, "s"),
                )
                if depth >= 1_000_000:
                    item_row.bar = "<= 0.5 s"
                else:
                    beyond.bar = "<= 0.2 s"
                cpu_row = Row(
                    f"7. restart with {count} journaled: CPU to first item",
                    Figure(None, "s"),
                )
                self.rows += [fill_row, shutdown, port_row, item_row, beyond, cpu_row]
                opened, served, used = [], [], []
                try:
                    for attempt in range(tries):
                        restarted = started(
                            f"restarted-{count}-{attempt}",
                            self.erq_durable_args(),
                            first,
                        )
                        opened.append(restarted.start(timeout=plan.restart_wait))
                        # Each restart serves the next item.
                        wanted = dialect.hit_reply(
                            taken, item(b"r", taken, plan.item_size)
                        )
                        answer = b""
                        while not answer.startswith(b"VALUE"):
                            since = time.monotonic() - restarted.started_at
                            if since > plan.restart_wait:
                                raise NotReady(
                                    f"restart with {count}: no item in "
                                    f"{plan.restart_wait:g} s"
                                )
                            answer = ask(restarted.port, get)
                        served.append(time.monotonic() - restarted.started_at)
                        used.append(cpu_seconds(restarted.pid))
                        taken += 1
                        if answer != wanted:
                            self.problems.append(
                                f"w7: the item served after restart with {count}"
                                f" was {answer[:60]!r}, not item {taken - 1}"
                            )
                        restarted.stop()
                    port_row.erq = Figure(min(opened), "s")
                    item_row.erq = Figure(min(served), "s")
                    beyond.erq = Figure(min(served) - empty_start, "s")
                    cpu_row.erq = Figure(min(used), "s")
                    if item_row.bar:
                        item_row.holds = min(served) <= 0.5
                    else:
                        beyond.holds = min(served) - empty_start <= 0.2
                except NotReady as error:
                    item_row.erq = Figure.failed("s", str(error))
                    item_row.holds = beyond.holds = False
                    self.problems.append(f"w7: {error}")
                self.say(
                    f"w7: restart with {count}: port open "
                    f"{port_row.erq.shown()}, first item {item_row.erq.shown()}"
                )
        except NotReady as error:
            self.problems.append(f"w7: {error}")
        finally:
            for server in servers:
                self._check_log(server)
                server.stop()
            if first is not None:
                settings.discard(first)


UNITS_FLOW = (("items", "/s"), ("p50", "ms"), ("p99", "ms"), ("paced", "/s"))
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


def count_text(count: int) -> str:
    """1000000 as 1M, 10000 as 10k."""
    if count >= 1_000_000:
        return f"{count / 1e6:g}M"
    if count >= 1000:
        return f"{count / 1e3:g}k"
    return str(count)


def percentile(ordered: list[int], percent: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(0, min(len(ordered) - 1, int(round(percent / 100 * len(ordered))) - 1))
    return float(ordered[rank])


WORKLOADS: dict[int, Callable[[Bench], None]] = {
    1: Bench.w1,
    2: Bench.w2,
    3: Bench.w3,
    4: Bench.w4,
    5: Bench.w5,
    6: Bench.w6,
    7: Bench.w7,
    9: Bench.w9,
}
