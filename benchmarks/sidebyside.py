"""Two erq servers side by side, one of them with more arguments: which is
faster at lock-step sets and gets, by how much, and at what server CPU per
request.

A full run compares erq with memcached, and two full runs one after the
other differ by more than a change of a tenth (the machine's speed drifts
from minute to minute).  Here both servers run at once and take turns,
phase by phase, the order reversed every other turn, so that the drift
falls on both alike; the ratio that counts is the median of each turn's
own::

    python -m benchmarks.sidebyside --b-args=--plain-reactor --turns 8

Both run ``--sync never`` unless the arguments say otherwise.

``--rates 2000,8000`` also has one producer send sets at each of those
rates, on a fixed schedule, and shows the CPU each server spent for them:
what a server costs at a load it keeps up with, which lock-step figures do
not show (``--b-args "--idle-poll 0"`` shows what polling before sleeping
costs there).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.bench import QUICK, Bench
from benchmarks.load import Job
from benchmarks.rates import lockstep
from benchmarks.servers import Server, Settings, default_twistd, glued
from benchmarks.wire import Dialect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sidebyside", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--a-args", default="", help="more arguments of server A")
    parser.add_argument("--b-args", default="", help="more arguments of server B")
    parser.add_argument("--turns", type=int, default=8, help="turns (8)")
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="seconds a phase (1.5)"
    )
    parser.add_argument("--conns", default="1,4", help="connections, e.g. 1,4")
    parser.add_argument(
        "--rates", default="", help="paced sets per second, e.g. 2000,8000 (none)"
    )
    parser.add_argument("--scratch", default=tempfile.gettempdir())
    options = parser.parse_args(glued(argv, ("--a-args", "--b-args")))
    plan = dataclasses.replace(
        QUICK, lockstep_items=100_000, phase_seconds=options.seconds
    )
    benches = {
        side: Bench(settings(options.scratch, args), plan, lambda text: None)
        for side, args in (("A", options.a_args), ("B", options.b_args))
    }
    rates: dict[tuple[int, str, str], list[tuple[float, float]]] = {}
    paced: dict[tuple[int, str], list[tuple[float, float]]] = {}
    try:
        servers = {side: bench.erq() for side, bench in benches.items()}
        for turn in range(options.turns):
            order = "AB" if turn % 2 == 0 else "BA"
            for conns in map(int, options.conns.split(",")):
                for side in order:
                    measure(benches[side], servers[side], conns, turn, rates, side)
            for rate in paced_rates(options):
                for side in order:
                    measure_paced(benches[side], servers[side], rate, turn, paced, side)
    finally:
        for bench in benches.values():
            bench.close()
            for server in bench.settings.servers:
                server.stop()
    for line in report(options, rates) + report_paced(options, paced):
        print(line)
    return 0


def paced_rates(options: argparse.Namespace) -> list[int]:
    return [int(rate) for rate in options.rates.split(",") if rate.strip()]


def server_args(args: str) -> list[str]:
    """A server's arguments: ``args``, after ``--sync never`` unless they
    set ``--sync`` themselves."""
    extra = shlex.split(args)
    return extra if "--sync" in extra else ["--sync", "never", *extra]


def settings(scratch: str, args: str) -> Settings:
    return Settings(
        twistd=default_twistd(),
        erq_args=server_args(args),
        memcached=None,
        memcached_threads=1,
        memcached_memory_mb=64,
        scratch=Path(scratch),
        keep=False,
        sync_option="--sync",
    )


def measure(
    bench: Bench,
    server: Server | None,
    conns: int,
    turn: int,
    rates: dict[tuple[int, str, str], list[tuple[float, float]]],
    side: str,
) -> None:
    """One turn's lock-step sets and gets on one server."""
    if server is None:
        raise SystemExit(f"server {side} did not start")
    prefix = b"t%d-%d-" % (turn, conns)
    figures = lockstep(bench, server, conns, prefix, bench.plan.phase_seconds, side)
    for kind in ("sets", "gets"):
        figure = figures[kind]
        if figure.value is None or figure.server_cpu is None:
            raise SystemExit(f"server {side}, {kind}: {figure.error}")
        cpu = figure.server_cpu / figure.value * 1e6
        rates.setdefault((conns, kind, side), []).append((figure.value, cpu))


def measure_paced(
    bench: Bench,
    server: Server | None,
    rate: int,
    turn: int,
    paced: dict[tuple[int, str], list[tuple[float, float]]],
    side: str,
) -> None:
    """One turn's sets at ``rate`` a second on one server: the rate
    reached, and the server's CPU over it."""
    if server is None:
        raise SystemExit(f"server {side} did not start")
    seconds = bench.plan.phase_seconds
    dialect = Dialect(True, b"r%d-%d-" % (turn, rate))
    job = Job(
        "produce",
        server.port,
        dialect,
        b"r",
        int(rate * seconds) + 1,
        seconds,
        bench.plan.item_size,
        rate=rate,
    )
    figure, _ = bench.phase(server, [job], where=f"{side} {rate}/s")
    bench.delete(server, dialect)
    if figure.value is None or figure.server_cpu is None:
        raise SystemExit(f"server {side}, {rate}/s: {figure.error}")
    paced.setdefault((rate, side), []).append((figure.value, figure.server_cpu))


def report_paced(
    options: argparse.Namespace,
    paced: dict[tuple[int, str], list[tuple[float, float]]],
) -> list[str]:
    rates = paced_rates(options)
    if not rates:
        return []
    lines = [
        "",
        "one producer at a fixed rate: sets/s reached, and the server's CPU"
        " (% of one core)",
        f"{'':14s} {'A /s':>9s} {'B /s':>9s} {'A cpu%':>9s} {'B cpu%':>9s}",
    ]
    for rate in rates:
        a = paced[(rate, "A")]
        b = paced[(rate, "B")]
        lines.append(
            f"{rate:7,d}/s set {median(a, 0):9,.0f} {median(b, 0):9,.0f}"
            f" {median(a, 1) * 100:9.0f} {median(b, 1) * 100:9.0f}"
        )
    return lines


def report(
    options: argparse.Namespace,
    rates: dict[tuple[int, str, str], list[tuple[float, float]]],
) -> list[str]:
    lines = [
        f"A: twistd erq {shlex.join(server_args(options.a_args))}",
        f"B: twistd erq {shlex.join(server_args(options.b_args))}",
        f"{options.turns} turns of {options.seconds:g} s phases, lock-step,"
        " the median of each column",
        "",
        f"{'':14s} {'A /s':>9s} {'B /s':>9s} {'A/B':>6s}"
        f" {'A us/req':>9s} {'B us/req':>9s}   A/B each turn",
    ]
    for conns in map(int, options.conns.split(",")):
        for kind in ("sets", "gets"):
            a = rates[(conns, kind, "A")]
            b = rates[(conns, kind, "B")]
            each = [x / y for (x, _), (y, _) in zip(a, b, strict=True)]
            lines.append(
                f"{conns:2d} conn {kind:5s} {median(a, 0):9,.0f} {median(b, 0):9,.0f}"
                f" {statistics.median(each):6.3f} {median(a, 1):9.1f}"
                f" {median(b, 1):9.1f}   {' '.join(f'{r:.2f}' for r in each)}"
            )
    return lines


def median(pairs: list[tuple[float, float]], index: int) -> float:
    return statistics.median(pair[index] for pair in pairs)


if __name__ == "__main__":
    sys.exit(main())
