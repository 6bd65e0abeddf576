"""The workloads of ``benchmarks.run``, by number: each runs on erq and,
where it maps, on memcached, alternating rounds, and adds its rows to the
``Bench``'s table."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import deep, durable, flow, memory, rates, restart
from benchmarks.bench import Bench

WORKLOADS: dict[int, Callable[[Bench], None]] = {
    1: rates.w1,
    2: rates.w2,
    3: rates.w3,
    4: flow.w4,
    5: rates.w5,
    6: deep.w6,
    7: restart.w7,
    8: memory.workload,
    9: durable.w9,
}
