"""Workload 8, memory: erq's resident memory, anonymous and file-backed apart
(``RssAnon`` and ``RssFile`` of ``/proc/<pid>/status``), idle, full, drained,
restarted, and under the server-wide ``max_memory_size``; memcached's for the
same data as a reference.  See "Memory" in benchmarks/README.md.

``python -m benchmarks.run --only 8`` runs it in the benchmark's table;
``python -m benchmarks.memory [--quick]`` runs it alone.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench import FULL as FULL_PLAN
from benchmarks.bench import Bench
from benchmarks.report import Figure, MiB, Row, table
from benchmarks.servers import NotReady, Server, Settings, default_twistd
from benchmarks.wire import END, HOST, STORED, Misbehaved, item

#: What the server may hold beyond its idle size once its queues drained,
#: and beyond idle plus the memory cap while full.
SLACK = 32 * MiB
#: Seconds after a drain within which RSS must be back under the bar.
SETTLE = 2.0
#: How often RSS is sampled while it settles.
SAMPLE_EVERY = 0.05
#: What 1,000,000 small items may add to the idle server, all in memory.
SMALL_ITEMS_MEMORY = 128 * MiB
#: Each queue's ``max_memory_size`` (the default).
QUEUE_MEMORY = 128 * MiB


@dataclass(frozen=True)
class Sizes:
    small_items: int  # of 64 bytes, in one queue
    deep_items: int  # of 1 KiB, in one queue
    capped_queues: int
    capped_items: int  # of 1 KiB, in each capped queue
    cap: int  # the capped server's max_memory_size
    seconds: float  # bound of each fill and each drain


FULL = Sizes(1_000_000, 300_000, 8, 40_000, 64 * MiB, 240.0)
QUICK = Sizes(100_000, 30_000, 8, 4_000, 8 * MiB, 60.0)


@dataclass
class Memory:
    """One reading of a process's memory, in bytes."""

    rss: int = 0
    anon: int = 0
    file: int = 0
    peak: int = 0

    @classmethod
    def of(cls, pid: int) -> Memory:
        fields = {}
        try:
            with open(f"/proc/{pid}/status", "rb") as status:
                for line in status:
                    name, _, value = line.partition(b":")
                    if name in (b"VmRSS", b"RssAnon", b"RssFile", b"VmHWM"):
                        fields[name] = int(value.split()[0]) * 1024
        except OSError:
            pass
        return cls(
            fields.get(b"VmRSS", 0),
            fields.get(b"RssAnon", 0),
            fields.get(b"RssFile", 0),
            fields.get(b"VmHWM", 0),
        )

    def shown(self) -> str:
        return (
            f"{self.rss / MiB:,.0f} MiB ({self.anon / MiB:,.0f} anon, "
            f"{self.file / MiB:,.0f} file)"
        )


# -- the load -----------------------------------------------------------------


def _expect(sock: socket.socket, token: bytes, count: int) -> bytes:
    """Read replies until ``count`` of them end in ``token``."""
    buffer = bytearray()
    seen = 0
    searched = 0
    while seen < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise Misbehaved("the server closed the connection")
        buffer += chunk
        while (found := buffer.find(token, searched)) >= 0:
            seen += 1
            searched = found + len(token)
    return bytes(buffer)


def fill(
    port: int,
    name: bytes,
    count: int,
    size: int,
    seconds: float,
    keys: bool = False,
) -> int:
    """Set ``count`` items of ``size`` bytes, pipelined in batches of about
    128 KiB, into queue ``name`` (or, with ``keys``, under distinct keys for
    memcached); the number stored before ``seconds`` ran out."""
    batch = max(1, min(1000, (128 * 1024) // (size + 40)))
    deadline = time.monotonic() + seconds
    done = 0
    with socket.create_connection((HOST, port), timeout=30) as sock:
        while done < count and time.monotonic() < deadline:
            part = min(batch, count - done)
            sock.sendall(
                b"".join(
                    b"set %s 0 0 %d\r\n%s\r\n"
                    % (
                        b"%s%d" % (name, done + i) if keys else name,
                        size,
                        item(b"m", done + i, size),
                    )
                    for i in range(part)
                )
            )
            replies = _expect(sock, b"\r\n", part)
            if replies.count(STORED) != part:
                raise Misbehaved(f"not every set stored: {replies[:80]!r}")
            done += part
    return done


def drain(port: int, name: bytes, count: int, size: int, seconds: float) -> int:
    """Plain gets of queue ``name``, pipelined, until ``count`` items came
    back or ``seconds`` ran out; the number that came back."""
    batch = max(1, min(1000, (128 * 1024) // (size + 40)))
    deadline = time.monotonic() + seconds
    got = 0
    with socket.create_connection((HOST, port), timeout=30) as sock:
        while got < count and time.monotonic() < deadline:
            part = min(batch, count - got)
            sock.sendall(b"get %s\r\n" % name * part)
            replies = _expect(sock, END, part)
            values = replies.count(b"VALUE ")
            got += values
            if values < part:
                break
    return got


def settle(pid: int, bar: int) -> tuple[Memory, float | None]:
    """Sample a process's memory for ``SETTLE`` seconds; the last reading,
    and how soon RSS was at or under ``bar`` (``None``: not in time)."""
    began = time.monotonic()
    under: float | None = None
    while True:
        now = Memory.of(pid)
        elapsed = time.monotonic() - began
        if under is None and now.rss <= bar:
            under = elapsed
        if elapsed >= SETTLE:
            return now, under
        time.sleep(SAMPLE_EVERY)


# -- the workload -------------------------------------------------------------


class MemoryWorkload:
    """Starts its own servers (erq with its default, durable settings, on
    fresh data directories) and adds a row for each figure."""

    def __init__(
        self,
        settings: Settings,
        sizes: Sizes,
        say: Callable[[str], None],
        rows: list[Row],
        problems: list[str],
    ) -> None:
        self.settings = settings
        self.sizes = sizes
        self.say = say
        self.rows = rows
        self.problems = problems
        #: memcached's memory with the same items, by (count, size).
        self.reference: dict[tuple[int, int], Memory] = {}

    def row(
        self,
        label: str,
        memory: Memory,
        bar: int | None = None,
        bar_text: str = "",
        holds: bool | None = None,
        memcached: Memory | None = None,
        rss: int | None = None,
    ) -> None:
        value = memory.rss if rss is None else rss
        text = memory.shown() if rss is None else f"{rss / MiB:,.0f} MiB"
        figure = Figure(value, "MiB", text=text)
        reference = None
        if memcached is not None:
            reference = Figure(memcached.rss, "MiB", text=memcached.shown())
        shown_ratio = None
        if memcached is not None and memcached.rss:
            shown_ratio = value / memcached.rss
        if bar is not None and holds is None:
            holds = value <= bar
        self.rows.append(
            Row(label, figure, reference, shown_ratio, "", bar_text, holds)
        )
        self.say(
            f"w8 {label}: {figure.shown()}" + (f", bar {bar_text}" if bar_text else "")
        )

    def erq(self, label: str, extra: list[str] | None = None) -> Server:
        server = self.settings.erq(label, extra)
        server.start()
        return server

    def idle(self, server: Server) -> Memory:
        # Let start-up garbage go before reading the idle size.
        time.sleep(0.5)
        return Memory.of(server.pid)

    def run(self) -> None:
        for part in (self.memcached, self.small, self.deep, self.capped):
            try:
                part()
            except (NotReady, Misbehaved, OSError) as error:
                self.problems.append(f"w8 {part.__name__}: {error}")

    def small(self) -> None:
        """1,000,000 x 64 B: queued, after a restart, drained."""
        sizes = self.sizes
        count = sizes.small_items
        server = self.erq("memory-small")
        try:
            idle = self.idle(server)
            self.row("8 erq idle", idle)
            stored = fill(server.port, b"small", count, 64, sizes.seconds)
            # All of it in memory: the items' own bytes are well under the
            # queue's max_memory_size, so this is what holding them costs.
            full = Memory.of(server.pid)
            bar = idle.rss + SMALL_ITEMS_MEMORY
            self.row(
                f"8 {count_text(stored)} x 64 B queued",
                full,
                bar,
                "<= idle+128MiB",
                full.rss <= bar,
                memcached=self.reference.get((stored, 64)),
            )
            server.stop(b"shutdown\r\n")
            again = self.settings.erq(
                "memory-small", data_dir=server.data_dir, root=server.root
            )
            again.start()
            server = again
            time.sleep(0.5)
            self.row("8 same, after a restart", Memory.of(server.pid))
            got = drain(server.port, b"small", stored, 64, sizes.seconds)
            if got != stored:
                self.problems.append(f"w8: {stored} small items set, {got} drained")
            bar = idle.rss + SLACK
            settled, under = settle(server.pid, bar)
            self.row(
                "8 same, drained, +2 s",
                settled,
                bar,
                f"<= idle+32MiB in {SETTLE:g} s",
                under is not None and settled.rss <= bar,
            )
        finally:
            self.settings.discard(server)

    def deep(self) -> None:
        """300,000 x 1 KiB in one queue, full then drained."""
        sizes = self.sizes
        count = sizes.deep_items
        server = self.erq("memory-deep")
        try:
            idle = self.idle(server)
            stored = fill(server.port, b"deep", count, 1024, sizes.seconds)
            full = Memory.of(server.pid)
            bar = idle.rss + QUEUE_MEMORY + SLACK
            self.row(
                f"8 {count_text(stored)} x 1 KiB queued",
                full,
                bar,
                "<= idle+128MiB+32MiB",
                memcached=self.reference.get((stored, 1024)),
            )
            got = drain(server.port, b"deep", stored, 1024, sizes.seconds)
            if got != stored:
                self.problems.append(f"w8: {stored} deep items set, {got} drained")
            drained_bar = idle.rss + SLACK
            settled, under = settle(server.pid, drained_bar)
            self.row(
                "8 same, peak (VmHWM)",
                settled,
                bar,
                "<= idle+128MiB+32MiB",
                rss=settled.peak,
            )
            self.row(
                "8 same, drained, +2 s",
                settled,
                drained_bar,
                f"<= idle+32MiB in {SETTLE:g} s",
                under is not None and settled.rss <= drained_bar,
            )
        finally:
            self.settings.discard(server)

    def capped(self) -> None:
        """Queues together deeper than the server's ``max_memory_size``."""
        sizes = self.sizes
        root = self.settings.new_root("memory-capped")
        config = root / "erq.toml"
        cap = sizes.cap
        config.write_text(f'[server]\nmax_memory_size = "{cap // MiB}MiB"\n')
        server = self.settings.erq(
            "memory-capped", ["--config", str(config)], root=root
        )
        server.start()
        try:
            idle = self.idle(server)
            names = [b"capped%d" % number for number in range(sizes.capped_queues)]
            stored = [
                fill(server.port, name, sizes.capped_items, 1024, sizes.seconds)
                for name in names
            ]
            total = sum(stored)
            bar = idle.rss + cap + SLACK
            self.row(
                f"8 {len(names)} queues, {total * 1024 // MiB} MiB, "
                f"cap {cap // MiB} MiB: full",
                Memory.of(server.pid),
                bar,
                f"<= idle+{cap // MiB}MiB+32MiB",
            )
            for name, count in zip(names, stored, strict=True):
                got = drain(server.port, name, count, 1024, sizes.seconds)
                if got != count:
                    self.problems.append(f"w8: {count} set in {name!r}, {got} drained")
            settled, _ = settle(server.pid, idle.rss + SLACK)
            self.row(
                "8 same, peak (VmHWM) over fill and drain",
                settled,
                bar,
                f"<= idle+{cap // MiB}MiB+32MiB",
                rss=settled.peak,
            )
        finally:
            self.settings.discard(server)

    def memcached(self) -> None:
        """memcached's RSS for the same data, each set on a fresh one."""
        if self.settings.memcached is None:
            return
        sizes = self.sizes
        for count, size in ((sizes.small_items, 64), (sizes.deep_items, 1024)):
            server = self.settings.memcached_server("memory-memcached")
            try:
                server.start()
                time.sleep(0.2)
                idle = Memory.of(server.pid)
                stored = fill(server.port, b"k", count, size, sizes.seconds, keys=True)
                full = Memory.of(server.pid)
                self.reference[(stored, size)] = full
                self.say(
                    f"w8 memcached idle {idle.shown()}, {count_text(stored)} x "
                    f"{size_text(size)} set: {full.shown()}"
                )
            finally:
                self.settings.discard(server)


def count_text(count: int) -> str:
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000}k"
    return f"{count:,}"


def size_text(size: int) -> str:
    return "1 KiB" if size == 1024 else f"{size} B"


def workload(bench: Bench) -> None:
    """Workload 8 of ``benchmarks.run``."""
    quick = bench.plan.phase_seconds < FULL_PLAN.phase_seconds
    MemoryWorkload(
        bench.settings, QUICK if quick else FULL, bench.say, bench.rows, bench.problems
    ).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description="erq's memory; see 'Memory' in benchmarks/README.md.",
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the items")
    parser.add_argument("--twistd", default=default_twistd(), help="twistd to run")
    parser.add_argument(
        "--memcached", default=shutil.which("memcached"), help="memcached binary"
    )
    parser.add_argument("--no-memcached", action="store_true")
    parser.add_argument(
        "--scratch", type=Path, default=Path("/tmp"), help="where data goes"
    )
    options = parser.parse_args(argv)
    began = time.monotonic()
    settings = Settings(
        twistd=options.twistd,
        erq_args=[],
        memcached=None if options.no_memcached else options.memcached,
        memcached_threads=1,
        memcached_memory_mb=2048,
        scratch=options.scratch,
    )

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", file=sys.stderr, flush=True)

    rows: list[Row] = []
    problems: list[str] = []
    try:
        MemoryWorkload(
            settings, QUICK if options.quick else FULL, say, rows, problems
        ).run()
    finally:
        for server in settings.servers:
            server.stop()
    print(table(rows))
    for problem in problems:
        print(f"  - {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
