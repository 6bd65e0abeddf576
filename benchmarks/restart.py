"""Workload 7: how long a start takes, empty and with 200k and 1M items
journaled, to the port opening and to the first item served."""

from __future__ import annotations

import compileall
import time

from benchmarks.bench import Bench, count_text
from benchmarks.load import Job
from benchmarks.report import Figure, Row
from benchmarks.servers import CHECKOUT, NotReady, Server, ask, cpu_seconds
from benchmarks.wire import Dialect, item

#: Each start is timed this many times and the best kept: on a shared
#: machine one start may lose its core for a while.
TRIES = 3


def w7(bench: Bench) -> None:
    # Start times are an installed erq's, whose bytecode pip compiled at
    # install: a checkout run with PYTHONDONTWRITEBYTECODE would compile
    # every module at every start.
    for part in ("erq", "twisted"):
        compileall.compile_dir(CHECKOUT / part, quiet=1)
    Restarts(bench).run()


class Restarts:
    """Empty starts first; then one data directory filled in steps to each
    depth (200k, or fewer, and ``--restart-items``), shut down and started
    again at each."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        settings = bench.settings
        # The restart is what is measured; the fill is only the way there,
        # so it need not wait for fsyncs (shutdown syncs every journal).
        self.fill_args = bench.erq_durable_args()
        self.fill_sync = ""
        if bench.split_sync():
            self.fill_args = settings.sync_args("never")
            self.fill_sync = ", sync never"
        self.dialect = Dialect(True, b"restart-")
        self.get = b"get %s\r\n" % self.dialect.queue_name
        self.servers: list[Server] = []
        #: The data directory that is filled and restarted.
        self.first: Server | None = None
        #: Items stored so far, and taken by the restarts.
        self.stored = 0
        self.taken = 0

    def run(self) -> None:
        plan = self.bench.plan
        depths = sorted({min(200_000, plan.restart_items), plan.restart_items})
        try:
            empty_start = self.empty_starts()
            filler = self.first
            for depth in depths:
                if filler is None:
                    filler = self.started(
                        f"refill-{count_text(depth)}", self.fill_args, self.first
                    )
                    filler.start()
                count = self.fill(filler, depth)
                filler = None
                self.restarts(count, depth, empty_start)
        except NotReady as error:
            self.bench.problems.append(f"w7: {error}")
        finally:
            for server in self.servers:
                self.bench.check_log(server)
                server.stop()
            if self.first is not None:
                self.bench.settings.discard(self.first)

    def started(self, label: str, args: list[str], root: Server | None) -> Server:
        server = self.bench.settings.erq(
            label,
            args,
            data_dir=None if root is None else root.data_dir,
            root=None if root is None else root.root,
        )
        self.servers.append(server)
        return server

    def empty_starts(self) -> float:
        """Start on a fresh data directory ``TRIES`` times, the last one kept
        to be filled; the seconds to the first reply of the best start."""
        empty = Row("7. start, empty data dir: to port open", Figure(None, "s"))
        empty_item = Row("7. start, empty data dir: to first reply", Figure(None, "s"))
        # CPU time, which a busy machine changes far less than seconds.
        empty_cpu = Row(
            "7. start, empty data dir: CPU to first reply", Figure(None, "s")
        )
        self.bench.rows += [empty, empty_item, empty_cpu]
        opened: list[float] = []
        replied: list[float] = []
        used: list[float] = []
        for attempt in range(TRIES):
            if self.first is not None:
                self.bench.settings.discard(self.first)
            self.first = first = self.started(
                f"restart-{attempt}", self.fill_args, None
            )
            opened.append(first.start())
            answer = ask(first.port, self.get)
            replied.append(time.monotonic() - first.started_at)
            used.append(cpu_seconds(first.pid))
            if answer != b"END\r\n":
                self.bench.problems.append(
                    f"w7: an empty queue answered {answer[:60]!r}"
                )
        empty.erq = Figure(min(opened), "s")
        empty_item.erq = Figure(min(replied), "s")
        empty_cpu.erq = Figure(min(used), "s")
        return min(replied)

    def fill(self, filler: Server, depth: int) -> str:
        """Fill on to ``depth`` items and shut ``filler`` down; the count
        reached, as the rows show it."""
        bench, plan = self.bench, self.bench.plan
        count = count_text(depth)
        fill_row = Row(
            f"7.   fill to {count} x {plan.item_size} B{self.fill_sync}, items/s",
            Figure(None, "/s"),
        )
        fill = Job(
            "pipe-set",
            filler.port,
            self.dialect,
            b"r",
            depth - self.stored,
            plan.restart_fill_seconds,
            plan.item_size,
            first=self.stored,
            batch=plan.batch,
        )
        fill_row.erq, outcomes = bench.phase(filler, [fill], where="w7 fill")
        self.stored += outcomes[0].hits
        if self.stored != depth:
            bench.problems.append(f"w7: {self.stored} of {depth} items went in")
            count = count_text(self.stored)
        shutdown = Row(f"7.   shutdown with {count} queued", Figure(None, "s"))
        shutdown.erq = Figure(filler.stop(b"shutdown\r\n"), "s")
        bench.rows += [fill_row, shutdown]
        return count

    def restarts(self, count: str, depth: int, empty_start: float) -> None:
        """Start ``TRIES`` times on the filled data directory, each start
        serving the next item; the best of each figure, and the start
        beyond an empty one."""
        rows = [
            Row(f"7. restart with {count} journaled: {what}", Figure(None, "s"))
            for what in (
                "to port open",
                "to first item",
                "beyond an empty start",
                "CPU to first item",
            )
        ]
        port_row, item_row, beyond, cpu_row = rows
        if depth >= 1_000_000:
            item_row.bar = "<= 0.5 s"
        else:
            beyond.bar = "<= 0.2 s"
        self.bench.rows += rows
        opened: list[float] = []
        served: list[float] = []
        used: list[float] = []
        try:
            for attempt in range(TRIES):
                restarted = self.started(
                    f"restarted-{count}-{attempt}",
                    self.bench.erq_durable_args(),
                    self.first,
                )
                opened.append(restarted.start(timeout=self.bench.plan.restart_wait))
                served.append(self.first_item(restarted, count))
                used.append(cpu_seconds(restarted.pid))
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
            self.bench.problems.append(f"w7: {error}")
        self.bench.say(
            f"w7: restart with {count}: port open "
            f"{port_row.erq.shown()}, first item {item_row.erq.shown()}"
        )

    def first_item(self, restarted: Server, count: str) -> float:
        """Ask ``restarted`` for an item until one comes: the seconds from
        its start.  It must be the next item in order."""
        plan = self.bench.plan
        wanted = self.dialect.hit_reply(
            self.taken, item(b"r", self.taken, plan.item_size)
        )
        answer = b""
        while not answer.startswith(b"VALUE"):
            since = time.monotonic() - restarted.started_at
            if since > plan.restart_wait:
                raise NotReady(
                    f"restart with {count}: no item in {plan.restart_wait:g} s"
                )
            answer = ask(restarted.port, self.get)
        served = time.monotonic() - restarted.started_at
        self.taken += 1
        if answer != wanted:
            self.bench.problems.append(
                f"w7: the item served after restart with {count}"
                f" was {answer[:60]!r}, not item {self.taken - 1}"
            )
        return served
