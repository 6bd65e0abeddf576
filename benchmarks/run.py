"""The entry point: ``python -m benchmarks.run [--quick] [--only 1,3]``.

Starts its own erq (twistd) and, when the binary is there, a memcached on
free 127.0.0.1 ports, runs the chosen workloads on both, alternating rounds,
and prints one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench import FULL, QUICK, Bench, Plan
from benchmarks.report import MiB, table
from benchmarks.servers import (
    Settings,
    busy_others,
    default_twistd,
    filesystem_of,
    glued,
    idle_cpus,
    machine_ticks,
    option_value,
    version_of,
)
from benchmarks.workloads import WORKLOADS


def parse_size(text: str) -> int:
    units = {"KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB}
    for unit, scale in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * scale)
    return int(text)


def parse_only(text: str) -> list[int]:
    chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    unknown = [number for number in chosen if number not in WORKLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"no workload {unknown}; there are 1-{max(WORKLOADS)}"
        )
    return chosen


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark erq against memcached; see benchmarks/README.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts, 1 round (< 1 minute)"
    )
    parser.add_argument(
        "--only", type=parse_only, default=None, help="workloads to run, e.g. 1,3"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per server (3; quick: 1)"
    )
    parser.add_argument(
        "--erq-args",
        default="",
        help="extra arguments for 'twistd erq', e.g. \"--sync never\"",
    )
    parser.add_argument(
        "--sync-option",
        default="--sync",
        help="the erq option taking always|never (workload 5; default --sync)",
    )
    parser.add_argument("--twistd", default=default_twistd(), help="twistd to run")
    parser.add_argument(
        "--memcached",
        default=shutil.which("memcached"),
        help="memcached binary (default: from PATH)",
    )
    parser.add_argument("--no-memcached", action="store_true", help="measure erq alone")
    parser.add_argument(
        "--memcached-threads",
        type=int,
        default=1,
        help="memcached worker threads (1, like erq's one reactor thread)",
    )
    parser.add_argument(
        "--deep-items", type=int, default=None, help="workload 6 item count"
    )
    parser.add_argument(
        "--restart-items", type=int, default=None, help="workload 7 item count"
    )
    parser.add_argument(
        "--max-memory-size",
        type=parse_size,
        default=None,
        help="erq's max_memory_size, for workload 6's RSS bar (default: the "
        "--max-memory-size in --erq-args, else 128MiB)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the servers' data directories go (a real disk, not tmpfs)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data directories and logs"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for other processes to leave the CPU",
    )
    options = parser.parse_args(glued(argv, ("--erq-args",)))
    try:
        # A directory named for this run's data is made, as mkdir -p would.
        options.scratch.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--scratch {options.scratch}: {error.strerror}")
    return options


def plan_of(options: argparse.Namespace, erq_args: list[str]) -> Plan:
    """The full or quick plan with the counts the options change."""
    max_memory_size = options.max_memory_size
    if max_memory_size is None:
        max_memory_size = parse_size(option_value(erq_args, "--max-memory-size") or "0")
    changes: dict[str, int] = {"max_memory_size": max_memory_size or 128 * MiB}
    if options.rounds is not None:
        changes["rounds"] = max(1, options.rounds)
    if options.deep_items is not None:
        changes["deep_items"] = options.deep_items
    if options.restart_items is not None:
        changes["restart_items"] = options.restart_items
    return dataclasses.replace(QUICK if options.quick else FULL, **changes)


def main(argv: list[str] | None = None) -> int:
    options = arguments(argv)
    began = time.monotonic()
    erq_args = shlex.split(options.erq_args)
    plan = plan_of(options, erq_args)
    memcached = None if options.no_memcached else options.memcached
    settings = Settings(
        twistd=options.twistd,
        erq_args=erq_args,
        memcached=memcached,
        memcached_threads=options.memcached_threads,
        memcached_memory_mb=2048,
        scratch=options.scratch,
        keep=options.keep,
        sync_option=options.sync_option,
    )

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", file=sys.stderr, flush=True)

    bench = Bench(settings, plan, say)
    chosen = options.only or sorted(WORKLOADS)
    others = wait_for_quiet(options.wait_idle, say)
    waited = time.monotonic() - began
    header = describe(options, settings, bench, chosen)
    header.append(f"other processes on the CPU before the run: {shown_busy(others)}")
    ticks = machine_ticks()
    for line in header:
        say(line)
    try:
        for number in chosen:
            say(f"workload {number}")
            WORKLOADS[number](bench)
    except KeyboardInterrupt:
        say("interrupted; the table holds what was measured")
    finally:
        bench.close()
        for server in settings.servers:
            server.stop()
    took = time.monotonic() - began - waited
    after = busy_others()
    header.append(f"other processes on the CPU after the run: {shown_busy(after)}")
    stolen = machine_ticks().stolen_since(ticks)
    header.append(
        f"CPU time the machine's host took over the run (steal): {stolen:.1%}"
    )
    if sum(share for _, share in others + after) >= QUIET:
        bench.problems.insert(
            0,
            "the machine was shared with other busy processes: the figures "
            "are low and noisy (see the header)",
        )
    report(bench, header, options.quick, took, waited)
    return 0


def report(
    bench: Bench, header: list[str], quick: bool, took: float, waited: float
) -> None:
    """The table on stdout, after the run's header and before the problems
    it saw."""
    print("\n".join(header))
    print()
    print(table(bench.rows))
    print()
    print(
        "cpu% = server / load generator CPU over the phase, in % of one core "
        "(the machine has "
        f"{os.cpu_count()}); ratio = erq / memcached (5: always / never)."
    )
    if bench.problems:
        print("\nproblems seen:")
        for problem in bench.problems:
            print(f"  - {problem}")
    mode = "quick" if quick else "full"
    waiting = ""
    if waited > 2:
        waiting = f", after waiting {waited:.0f} s for a quiet machine"
    print(f"\nfinished in {took:.1f} s ({mode} mode{waiting})")


#: Other processes' CPU, in cores, below which the machine counts as quiet.
QUIET = 0.2


def wait_for_quiet(
    seconds: float, say: Callable[[str], None]
) -> list[tuple[str, float]]:
    """Who else uses the CPU; with ``seconds``, wait (bounded) for quiet."""
    deadline = time.monotonic() + seconds
    while True:
        others = busy_others()
        if sum(share for _, share in others) < QUIET or time.monotonic() > deadline:
            return others
        say(f"waiting for a quiet machine: {shown_busy(others)}")
        time.sleep(2)


def shown_busy(others: list[tuple[str, float]]) -> str:
    if not others:
        return "none"
    return ", ".join(f"{name} {share * 100:.0f}%" for name, share in others[:4])


def erq_tap() -> object:
    """``erq.tap`` of the checkout, or nothing if it does not import."""
    try:
        import erq.tap
    except ImportError:
        return None
    return erq.tap


def describe(
    options: argparse.Namespace, settings: Settings, bench: Bench, chosen: list[int]
) -> list[str]:
    erq_version = "?"
    try:
        import erq

        erq_version = erq.__version__
    except ImportError:
        pass
    sync = (
        f"{settings.sync_option} supported"
        if bench.sync_supported
        else f"no {settings.sync_option} in 'twistd erq --help': workload 5 n/a"
    )
    memcached = (
        f"{version_of([settings.memcached, '-V'])}, -t {settings.memcached_threads} "
        f"-m {settings.memcached_memory_mb}"
        if settings.memcached
        else "none (erq alone)"
    )
    writer = (
        "C engine"
        if importlib.util.find_spec("erq.journal._engine") is not None
        else "Python loop (erq.journal._engine not built)"
    )
    if "--plain-reactor" in settings.erq_args:
        reactor = "Twisted's epoll reactor as it is"
    else:
        micros = settings.idle_poll()
        if micros is None:
            default = getattr(erq_tap(), "default_idle_poll_us", None)
            micros = str(default() if default is not None else 0)
        reactor = f"idle poll {micros} us"
    extra = shlex.join(settings.erq_args) or "none"
    return [
        f"erq {erq_version} ({sync}; extra args: {extra}; "
        f"journal writes: {writer}; {reactor}); memcached: {memcached}",
        f"python {platform.python_version()}, {os.cpu_count()} cores shared by "
        f"servers and load generator; data on {settings.scratch} "
        f"({filesystem_of(settings.scratch)}); {idle_cpus()}",
        f"workloads {','.join(map(str, chosen))}, {bench.plan.rounds} round(s), "
        f"{'quick' if options.quick else 'full'} mode",
    ]


if __name__ == "__main__":
    sys.exit(main())
