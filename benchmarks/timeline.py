"""Where a lone durable set's time goes: the server's system calls for
each set, timed by ``perf trace``, and the gaps between them.

A lock-step client's durable set waits for everything its server does
between reading it and answering it, and for whatever the server still
does after the answer once the client's next set has arrived.  Workload 9
reports the rate against the limit (one ``fdatasync`` plus a round trip),
but on a disk whose ``fdatasync`` time doubles within minutes a rate
cannot say which part is the disk's and which the server's.  The system
calls can: a server that syncs each set makes the same ones for every set
(read the request, write its record, ``fdatasync``, send the reply, wait
for the next), so the time spent inside them is the kernel's and the
disk's, and each gap between two of them is the server's own work in user
space, on that set's path.

This runs the bare Twisted reference syncing each set
(``benchmarks/bare.py --durable``, erq's way to the socket) and erq
(``--sync always``), one at a time, each with one lock-step connection and
``--idle-poll 0``, so that a wait for the next request is one
``epoll_wait``.  ``perf trace`` records the server's system calls from
before a warm-up; the sets measured lie between two ``version`` requests,
whose reads are the only ones of their length, sent once ``perf trace``
has begun to write its file.  For each set made of exactly a read, a
write, an ``fdatasync`` and a send, in that order (a set that also writes
zeros ahead is left out), it takes each system call's time and each gap,
and prints their medians side by side.  The gaps' total is the server's
own time on a set's path; "after the reply" counts only up to the next
wait, which a client that is quicker to send its next set than the server
is to finish its bookkeeping finds already over.

``perf trace`` adds a few microseconds to each system call it records, the
same for both servers.  The gaps are CPU time, so they follow the speed of
the machine's CPU that minute: six runs of the same code here put erq's
own time per set between 146 and 205 us, and its excess over the
reference's between 67 and 116 us; compare the two servers within a run.
Run from the repository root, with ``perf`` installed
(``linux-perf`` or ``linux-tools``) and allowed to trace (root, or
``kernel.perf_event_paranoid`` at 1 or below)::

    python -m benchmarks.timeline
    python -m benchmarks.timeline --erq-args=--plain-reactor
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.instructions import bare_command, erq_command
from benchmarks.servers import START_TIMEOUT, glued, one_client

SET = b"set timeline 0 0 64\r\n" + b"x" * 64 + b"\r\n"
STORED = b"STORED\r\n"
#: What marks where the measured sets begin and end: the one request read
#: whose length is its own.
MARK = b"version\r\n"
#: Sets before the first mark (and more, until ``perf trace`` records).
WARM_UP = 3000
#: Seconds ``perf trace`` may take to start recording.
ATTACH_TIMEOUT = 30.0
#: What the server's process calls, of what a set takes.
CALLS = "recvfrom,read,write,writev,pwrite64,fdatasync,sendto,epoll_wait"
#: One line of ``perf trace``: start (ms), duration (ms), thread (shown
#: only for a process of several), call, returned value.
LINE = re.compile(
    r"^\s*(?P<at>[\d.]+) \(\s*(?P<took>[\d.]+) ms\): (?:\S+?/(?P<tid>\d+) )?"
    r"(?P<call>\w+)\(.*\)\s+= (?P<value>-?\d+)"
)
READS = frozenset({"recvfrom", "read"})
WRITES = frozenset({"write", "writev", "pwrite64"})
SENDS = frozenset({"sendto"})
#: What follows a set's reply: the wait for the next request, or its read.
NEXT = READS | {"epoll_wait"}

#: The figures of a set, in the order of its path: what each names, and
#: whether it is a gap (the server's own work) or a system call.
PARTS = (
    ("read", "read the request", False),
    ("before", "before the write", True),
    ("write", "write the record", False),
    ("to_sync", "between write and fdatasync", True),
    ("sync", "fdatasync", False),
    ("to_reply", "between fdatasync and reply", True),
    ("reply", "send the reply", False),
    ("after", "after the reply, to the next wait", True),
)


@dataclass(frozen=True)
class Call:
    """One system call the server made."""

    at: float  # microseconds, from perf trace's start
    took: float  # microseconds
    thread: int
    name: str
    value: int

    @property
    def end(self) -> float:
        return self.at + self.took


def parse(lines: list[str]) -> list[Call]:
    """The completed system calls of a ``perf trace`` output, in order."""
    calls = []
    for line in lines:
        found = LINE.match(line)
        if found is not None:
            calls.append(
                Call(
                    float(found["at"]) * 1000,
                    float(found["took"]) * 1000,
                    int(found["tid"] or 0),
                    found["call"],
                    int(found["value"]),
                )
            )
    return calls


def sets(calls: list[Call]) -> list[dict[str, float]]:
    """Each lone durable set between the two marks, as ``PARTS``
    (microseconds); only the thread that read the first mark counts."""
    marks = [i for i, c in enumerate(calls) if c.name in READS and c.value == len(MARK)]
    if len(marks) < 2:
        raise SystemExit(
            "perf trace did not see both marks: it attached late, or cannot "
            "trace this process (try again, or check perf_event_paranoid)"
        )
    thread = calls[marks[0]].thread
    window = [c for c in calls[marks[0] + 1 : marks[-1]] if c.thread == thread]
    found = []
    for i in range(len(window) - 4):
        read, write, sync, reply, after = window[i : i + 5]
        if (
            read.name in READS
            and read.value == len(SET)
            and write.name in WRITES
            and sync.name == "fdatasync"
            and reply.name in SENDS
            and after.name in NEXT
        ):
            found.append(
                {
                    "read": read.took,
                    "before": write.at - read.end,
                    "write": write.took,
                    "to_sync": sync.at - write.end,
                    "sync": sync.took,
                    "to_reply": reply.at - sync.end,
                    "reply": reply.took,
                    "after": after.at - reply.end,
                }
            )
    return found


def median_parts(found: list[dict[str, float]]) -> dict[str, float]:
    medians = {key: statistics.median(s[key] for s in found) for key, _, _ in PARTS}
    medians["own"] = statistics.median(
        sum(s[key] for key, _, gap in PARTS if gap) for s in found
    )
    return medians


class Traced:
    """A server with one lock-step connection, its calls traced."""

    def __init__(self, label: str, command: list[str], scratch: Path) -> None:
        self.label = label
        self.server, self.sock = one_client(
            "timeline", label, command, scratch, START_TIMEOUT
        )
        self.trace_file = self.server.root / "perf-trace.txt"
        self.trace: subprocess.Popen[bytes] | None = None

    def ask(self, request: bytes, reply: bytes, count: int) -> float:
        """``count`` lock-step requests, each reply checked; the median
        round trip, in microseconds."""
        sock = self.sock
        took = []
        for _ in range(count):
            began = time.perf_counter()
            sock.sendall(request)
            got = b""
            while not got.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit(f"{self.label} closed the connection")
                got += chunk
            took.append(time.perf_counter() - began)
            if not got.startswith(reply):
                raise SystemExit(
                    f"{self.label} answered {got[:60]!r}, not {reply[:60]!r}"
                )
        return statistics.median(took) * 1e6

    def measure(self, count: int) -> tuple[list[dict[str, float]], float]:
        """The sets' parts, and their median round trip as the client saw it
        (under the trace)."""
        self.trace = subprocess.Popen(
            ["perf", "trace", "-p", str(self.server.pid), "-e", CALLS]
            + ["-o", str(self.trace_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.ask(SET, STORED, WARM_UP)
        # perf trace writes its file a block at a time: once a block is
        # there, it records.
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while not self.trace_file.exists() or not self.trace_file.stat().st_size:
            if self.trace.poll() is not None:
                said = self.trace.communicate()[1].decode(errors="replace")
                raise SystemExit(f"perf trace stopped: {said[-500:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"perf trace recorded nothing in {ATTACH_TIMEOUT:g} s")
            self.ask(SET, STORED, 100)
        self.ask(MARK, b"VERSION", 1)
        round_trip = self.ask(SET, STORED, count)
        self.ask(MARK, b"VERSION", 1)
        self.trace.send_signal(signal.SIGINT)
        try:
            said = self.trace.communicate(timeout=60)[1].decode(errors="replace")
        except subprocess.TimeoutExpired:
            self.trace.kill()
            raise SystemExit("perf trace did not stop") from None
        if not self.trace_file.exists():
            raise SystemExit(f"perf trace wrote nothing: {said[-500:]}")
        lines = self.trace_file.read_text(errors="replace").splitlines()
        return sets(parse(lines)), round_trip

    def stop(self) -> None:
        if self.trace is not None and self.trace.poll() is None:
            self.trace.kill()
            self.trace.wait()
        self.server.stop()
        shutil.rmtree(self.server.root, ignore_errors=True)


def measure(
    label: str, command: list[str], scratch: Path, count: int
) -> tuple[dict[str, float], int, float]:
    server = Traced(label, command, scratch)
    try:
        found, round_trip = server.measure(count)
    finally:
        server.stop()
    if len(found) < count // 2:
        raise SystemExit(
            f"{label}: only {len(found)} of {count} sets made the calls of a "
            "lone durable set, in order"
        )
    return median_parts(found), len(found), round_trip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=2000, help="sets measured")
    parser.add_argument("--erq-args", default="", help="more arguments for twistd erq")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    options = parser.parse_args(glued(argv, ("--erq-args",)))
    if options.sets < 10:
        parser.error("--sets wants at least 10")
    if shutil.which("perf") is None:
        raise SystemExit("perf is needed: apt-get install linux-perf (or linux-tools)")
    options.scratch.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(options.erq_args)
    durable_bare = [*bare_command(), "--durable=ROOT/durable"]
    results = [
        measure("bare Twisted", durable_bare, options.scratch, options.sets),
        measure("erq", erq_command("always", extra), options.scratch, options.sets),
    ]
    (bare, bare_sets, bare_trip), (erq, erq_sets, erq_trip) = results
    print(
        f"one lone durable set, median microseconds (perf trace; "
        f"{bare_sets} and {erq_sets} sets; data on {options.scratch})"
    )
    print(f"{'':40} {'bare Twisted':>13} {'erq':>8} {'erq - bare':>11}")
    rows = [(f"{text}{'' if gap else ' (call)'}", key) for key, text, gap in PARTS]
    rows.append(("the server's own time (the gaps' total)", "own"))
    bare["trip"], erq["trip"] = bare_trip, erq_trip
    rows.append(("round trip the client saw (traced)", "trip"))
    for name, key in rows:
        print(
            f"{name:40} {bare[key]:13.0f} {erq[key]:8.0f} {erq[key] - bare[key]:11.0f}"
        )
    if extra:
        print(f"erq with: {shlex.join(extra)}")


if __name__ == "__main__":
    main()
