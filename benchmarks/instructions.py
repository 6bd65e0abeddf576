"""What one lock-step request costs a server: instructions, allocations.

Rates on a shared virtual machine drift by a fifth from one minute to the
next, more than most changes to the request path move them.  The
instructions a server's process runs in user space per request do not
drift: callgrind (valgrind) counts them, whatever else the machine does.
So this runs erq and the bare Twisted reference (``benchmarks/bare.py``,
which only appends and pops) under callgrind, one at a time, and has one
connection send them lock-step sets and gets, as workload 1 does, to
count what each request costs each of them: the part of a request that
Python and the server's code decide.  The kernel's part (the system calls
of a request, which are the same for both) and the disk's are not
counted.  The same dumps count the calls of Python's allocator: the
blocks of memory a request takes, each freed again by the next requests.

Each server starts with its counting off and is warmed up (every code path
taken, the queue filled for the gets).  The counters are then zeroed, a
run of ``N1`` requests made and the counts dumped, and again for ``N2``
requests: the difference between the two, over ``N2 - N1`` requests,
leaves out whatever a run costs once.  Both are whole multiples of the
items a deep queue packs (and unpacks) at once (``erq.packed.NURSERY``),
so that each run packs as many times as its length asks, wherever it
starts.

Both servers sleep at once between requests (``--idle-poll 0``), or the
polling would be counted.  erq runs ``--sync never``, and once more
``--sync always`` for a lone durable set (its data directory on the
scratch directory's file system: the fsync is the kernel's and not
counted).

Under callgrind a server runs some fifty times slower, so what waits for
time sees fewer requests in that time than at full speed.  Under
``never`` the journal's linger (2 ms) gathers about three lock-step
requests into a batch (counted through the admin server's metrics, in a
run of its own: the admin server is not started here, as it adds work to
every batch), where at full speed it gathers ten to fifty; and a batch is
dear: in process, with a batch after every lock-step request, a request
costs about five times what it does with one batch per fifty
(``benchmarks.inprocess``, its journal in Python).  So a figure under
``never`` carries a share of a batch several times what a request pays at
full speed.  Under ``always`` a lone set is a batch of its own either way.

Run from the repository root, with valgrind installed::

    python -m benchmarks.instructions
    python -m benchmarks.instructions --erq-args=--plain-reactor
"""

from __future__ import annotations

import argparse
import glob
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import CHECKOUT, HOST, default_twistd, glued, one_client
from erq.packed import NURSERY

#: Seconds a server under valgrind may take to answer its first request.
START_TIMEOUT = 180.0
#: The queue (or key) every request names; as long as workload 1's.
NAME = b"in-QQQQQQQQ"
DATA = b"x" * 64
SET = b"set %s 0 0 %d\r\n%s\r\n" % (NAME, len(DATA), DATA)
GET = b"get %s\r\n" % NAME
STORED = b"STORED\r\n"
VALUE = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (NAME, len(DATA), DATA)
#: Requests of each kind before anything is counted.
WARM_UP = 2000
#: Where every block of memory that Python takes comes from (objects and
#: buffers alike; a large one is passed on to the C library's ``malloc``
#: from inside these, and so counted once).
ALLOCATORS = frozenset({"_PyObject_Malloc", "_PyObject_Calloc"})


@dataclass(frozen=True)
class Count:
    """Instructions and allocations per request of one kind on one server."""

    server: str
    request: str
    per_request: float
    allocations: float


@dataclass(frozen=True)
class Dump:
    """What one callgrind dump counted."""

    instructions: int
    allocations: int


class Counted:
    """A server running under callgrind, counting only when told to."""

    def __init__(self, label: str, command: list[str], scratch: Path) -> None:
        self.label = label
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--callgrind-out-file=ROOT/callgrind.out",
        ]
        # Not left running under valgrind if it fails to start or connect.
        self.server, self.sock = one_client(
            "instructions", label, valgrind + command, scratch, START_TIMEOUT
        )
        self.out = self.server.root / "callgrind.out"

    def send(self, request: bytes, reply: bytes, count: int) -> None:
        """``count`` lock-step requests, each reply checked."""
        sock = self.sock
        for _ in range(count):
            sock.sendall(request)
            got = b""
            while len(got) < len(reply):
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit(f"{self.label} closed the connection")
                got += chunk
            if got != reply:
                raise SystemExit(
                    f"{self.label} answered {got[:60]!r}, not {reply[:60]!r}"
                )

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.server.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def counted(self, request: bytes, reply: bytes, count: int) -> Dump:
        """What the server runs for ``count`` requests."""
        self._control("--zero")
        self.send(request, reply, count)
        before = set(glob.glob(f"{self.out}*"))
        self._control("--dump")
        dumps = set(glob.glob(f"{self.out}*")) - before
        if len(dumps) != 1:
            raise SystemExit(f"{self.label}: no callgrind dump came ({sorted(dumps)})")
        return _read(Path(dumps.pop()))

    def per_request(
        self, kind: str, request: bytes, reply: bytes, runs: tuple[int, int]
    ) -> Count:
        small, large = runs
        self._control("--instr=on")
        first = self.counted(request, reply, small)
        second = self.counted(request, reply, large)
        self._control("--instr=off")
        between = large - small
        return Count(
            self.label,
            kind,
            (second.instructions - first.instructions) / between,
            (second.allocations - first.allocations) / between,
        )

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.server.root, ignore_errors=True)


def _read(dump: Path) -> Dump:
    """The instructions one callgrind dump counted, and the calls in it of
    ``ALLOCATORS``.  A call is a ``calls=`` line after the ``cfn=`` line
    that names (or numbers, once named) the function called."""
    total = None
    allocations = 0
    names: dict[str, str] = {}
    called = ""
    with open(dump) as lines:
        for line in lines:
            if line.startswith(("fn=(", "cfn=(")):
                number, _, name = line.partition("=")[2].rstrip("\n").partition(" ")
                if name:
                    names[number] = name
                if line.startswith("cfn="):
                    called = names.get(number, "")
            elif line.startswith("calls=") and called.split("'")[0] in ALLOCATORS:
                allocations += int(line[len("calls=") :].split()[0])
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None:
        raise SystemExit(f"{dump} has no totals")
    return Dump(total, allocations)


def bare_command() -> list[str]:
    return [
        sys.executable,
        str(CHECKOUT / "benchmarks" / "bare.py"),
        "PORT",
        "--erq-io",
        "--idle-poll=0",
    ]


def erq_command(sync: str, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        default_twistd(),
        "-n",
        "--pidfile=",
        "erq",
        "--port",
        f"tcp:PORT:interface={HOST}",
        "--data-dir",
        "ROOT/data",
        "--idle-poll",
        "0",
        "--sync",
        sync,
        *extra,
    ]


def measure(
    label: str, command: list[str], scratch: Path, runs: tuple[int, int], gets: bool
) -> list[Count]:
    """Sets (and gets) on one server: instructions per request of each."""
    server = Counted(label, command, scratch)
    try:
        # The gets take what the warm-up and the counted sets left.
        server.send(SET, STORED, WARM_UP + (runs[0] + runs[1] if gets else 0))
        if gets:
            server.send(GET, VALUE, WARM_UP // 4)
        counts = [server.per_request("set", SET, STORED, runs)]
        if gets:
            counts.append(server.per_request("get", GET, VALUE, runs))
        return counts
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests",
        default=f"{NURSERY},{2 * NURSERY}",
        help="the two runs whose counts are differenced (default: "
        f"{NURSERY},{2 * NURSERY}, whole multiples of what a queue packs at once)",
    )
    parser.add_argument("--erq-args", default="", help="more arguments for twistd erq")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    options = parser.parse_args(glued(argv, ("--erq-args",)))
    small, large = (int(part) for part in options.requests.split(","))
    if not 0 < small < large:
        parser.error("--requests wants two counts, the first the smaller")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit(
            "valgrind (with callgrind_control) is needed: apt-get install valgrind"
        )
    options.scratch.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(options.erq_args)
    runs = (small, large)
    began = time.monotonic()
    counts = measure("bare Twisted", bare_command(), options.scratch, runs, gets=True)
    counts += measure(
        "erq never", erq_command("never", extra), options.scratch, runs, gets=True
    )
    counts += measure(
        "erq always", erq_command("always", extra), options.scratch, runs, gets=False
    )
    bare = {
        count.request: count.per_request
        for count in counts
        if count.server == "bare Twisted"
    }
    took = time.monotonic() - began
    print(
        f"user-space instructions per lock-step request (callgrind; {large} "
        f"requests less {small}, over the {large - small} between; {took:.0f} s)"
    )
    print(
        f"{'server':14} {'request':8} {'instructions':>14} {'vs bare Twisted':>16}"
        f" {'allocations':>12}"
    )
    for count in counts:
        ratio = count.per_request / bare[count.request]
        figure = f"{count.per_request:14,.0f}"
        print(
            f"{count.server:14} {count.request:8} {figure} {ratio:15.2f}x"
            f" {count.allocations:12.1f}"
        )
    print(
        "allocations: blocks Python takes from its allocator per request "
        "(calls of " + ", ".join(sorted(ALLOCATORS)) + ")"
    )
    if extra:
        print(f"erq with: {shlex.join(extra)}")


if __name__ == "__main__":
    main()
