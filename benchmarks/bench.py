"""What every workload of ``benchmarks.run`` stands on: the plan of a run
(how much each workload does), the servers it starts, and the ``Bench``
that times a phase of jobs against a server, alternates servers round by
round and collects the table's rows and the problems seen.  The workloads
themselves are in ``rates``, ``flow``, ``durable``, ``deep``, ``restart``
and ``memory``; ``workloads`` numbers them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.load import Job, Outcome, run_jobs
from benchmarks.report import (
    Figure,
    MiB,
    Row,
    median,
    ratio,
    shown_stolen,
)
from benchmarks.servers import (
    Server,
    Settings,
    ask,
    machine_ticks,
    thread_times,
)
from benchmarks.wire import Dialect

#: The share of the machine's CPU time its host may take during a phase
#: (steal) before the run says that the phase's figures are low for it.
STOLEN = 0.05


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
        self._bare_durable: Server | None = None
        self._memcached: Server | None = None
        #: Each workload's measurements of the durable limit (fdatasync,
        #: round trip, in seconds), taken beside its own rounds.
        self.limits: dict[str, list[tuple[float, float]]] = {}

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

    def durable_server(self) -> Server | None:
        """The ``--sync always`` erq that workloads share, if started."""
        return self._erq_durable

    def bare(self) -> Server:
        """The bare Twisted reference of workloads 1 and 2."""
        self._bare = self._alive(self._bare, "bare", [], self.settings.bare_server)
        return self._bare

    def bare_durable(self) -> Server:
        """The bare Twisted reference that syncs each set (workload 9)."""
        self._bare_durable = self._alive(
            self._bare_durable,
            "bare-durable",
            [],
            lambda label: self.settings.bare_server(label, durable=True),
        )
        return self._bare_durable

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
        for server in (
            self._erq,
            self._erq_durable,
            self._bare,
            self._bare_durable,
            self._memcached,
        ):
            if server is not None:
                self.check_log(server)
                self.settings.discard(server)

    def check_log(self, server: Server) -> None:
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
        before = thread_times(server.pid)
        outcomes, stolen = self.run(where, jobs, max(job.seconds for job in jobs))
        after = thread_times(server.pid)
        self.note(where, outcomes)
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
        threads = after.since(before, span)
        return (
            Figure(
                hits / span,
                unit,
                server_cpu=sum(threads),
                gen_cpu=sum(outcome.cpu for outcome in outcomes) / span,
                threads=threads,
                stolen=stolen,
            ),
            outcomes,
        )

    def run(
        self, where: str, jobs: list[Job], limit: float
    ) -> tuple[list[Outcome], float]:
        """Run the jobs (``run_jobs``): their outcomes, and the share of the
        machine's CPU time that its host took meanwhile (steal, on a
        virtual machine), noted as a problem of the run when it is
        ``STOLEN`` or more."""
        before = machine_ticks()
        outcomes = run_jobs(jobs, limit)
        share = machine_ticks().stolen_since(before)
        if share >= STOLEN:
            self.problems.append(
                f"{where}: the host took {share:.0%} of this machine's CPU "
                "time meanwhile (steal): its figures are low for it"
            )
        return outcomes, share

    def note(self, where: str, outcomes: list[Outcome]) -> None:
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
        self.say(f"{where}: {name} {figure.shown()}{cpu}{shown_stolen(figure)}")

    # -- shared shapes -----------------------------------------------------
    def delete(self, server: Server, dialect: Dialect) -> None:
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

    def split_sync(self) -> bool:
        """Whether workloads 6 and 7 may fill with ``--sync never`` where
        the fill is not what they measure (erq has ``--sync`` and the user
        did not choose it)."""
        return self.sync_supported and not self.settings.user_sets_sync()


def count_text(count: int) -> str:
    """1000000 as 1M, 10000 as 10k."""
    if count >= 1_000_000:
        return f"{count / 1e6:g}M"
    if count >= 1000:
        return f"{count / 1e3:g}k"
    return str(count)
