"""The servers under test: an erq (twistd) and a memcached subprocess each on a
free loopback port, and what /proc says about them."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from benchmarks.wire import HOST

START_TIMEOUT = 60.0
STOP_TIMEOUT = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: What marks an error in a twistd log (twisted.logger levels, tracebacks).
LOG_ERROR_MARKS = ("Traceback", "Unhandled", "#error]", "#critical]", "#failure]")
#: The checkout these benchmarks belong to.
CHECKOUT = Path(__file__).resolve().parent.parent


def option_value(args: list[str], name: str) -> str | None:
    """The value given to ``name`` in ``args`` (``--name=v`` or ``--name v``),
    the last one winning as it does for twistd."""
    found = None
    for number, arg in enumerate(args):
        if arg.startswith(name + "="):
            found = arg[len(name) + 1 :]
        elif arg == name and number + 1 < len(args):
            found = args[number + 1]
    return found


def glued(argv: list[str] | None, names: tuple[str, ...]) -> list[str]:
    """The command line ``argv`` (or this process's), with each option of
    ``names`` joined to the value after it by ``=``.  These options take
    other programs' arguments, and argparse reads a lone value such as
    ``--plain-reactor`` as an option of its own: ``--erq-args
    --plain-reactor`` then means what ``--erq-args=--plain-reactor`` does."""
    args = sys.argv[1:] if argv is None else argv
    joined: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg in names:
            value = next(rest, None)
            if value is not None:
                arg = f"{arg}={value}"
        joined.append(arg)
    return joined


def checkout_env() -> dict[str, str]:
    """The environment of a server: the checkout first on its path, so that
    it runs this checkout's code and finds its twistd plugin however erq was
    installed (an editable install maps the package, not the plugin)."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(CHECKOUT) + (os.pathsep + path if path else "")
    return env


class NotReady(Exception):
    """A server did not start, or did not answer as wanted in time."""


def free_port() -> int:
    """A port nothing listens on right now (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def ask(port: int, request: bytes, timeout: float = 2.0) -> bytes:
    """One request on a fresh connection; the first reply line (or block)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while not data.endswith(b"\r\n") or (
            data.startswith((b"VALUE", b"STAT")) and not data.endswith(b"END\r\n")
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def rss(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in bytes; zeros once it is gone."""
    now = peak = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    now = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return now, peak


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used."""
    user, system = _user_system(f"/proc/{pid}/stat")
    return user + system


class ThreadTimes(NamedTuple):
    """CPU seconds a server has used: its main thread's (the reactor's) in
    user space and in the kernel, and those of all its other threads (the
    journal's writer and the engine's), living or gone."""

    user: float
    system: float
    others: float

    def since(self, before: ThreadTimes, span: float) -> ThreadTimes:
        """What was used from ``before`` to these, in fractions of one core
        over ``span`` seconds."""
        return ThreadTimes(
            (self.user - before.user) / span,
            (self.system - before.system) / span,
            (self.others - before.others) / span,
        )


def thread_times(pid: int) -> ThreadTimes:
    """What ``pid``'s threads have used so far (see ``ThreadTimes``)."""
    user, system = _user_system(f"/proc/{pid}/task/{pid}/stat")
    whole_user, whole_system = _user_system(f"/proc/{pid}/stat")
    return ThreadTimes(user, system, whole_user + whole_system - user - system)


def _user_system(path: str) -> tuple[float, float]:
    """The user and system CPU seconds in a ``stat`` file of /proc (a
    process's, its threads' together, or one thread's); zero if it is
    gone."""
    found = _stat(path)
    return (0.0, 0.0) if found is None else found[1:]


def _stat(path: str) -> tuple[str, float, float] | None:
    """The command name, and the user and system CPU seconds, in a
    ``stat`` file of /proc; ``None`` if it cannot be read."""
    try:
        with open(path, "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    name = raw[raw.find(b"(") + 1 : raw.rfind(b")")].decode(errors="replace")
    fields = raw.rsplit(b")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15.
    return name, int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


class MachineTicks(NamedTuple):
    """The clock ticks this machine's CPUs have counted in all, and of
    them the ticks in which a virtual machine's host ran something else
    instead (steal), from ``/proc/stat``: zeros where it cannot be read."""

    total: int
    stolen: int

    def stolen_since(self, before: MachineTicks) -> float:
        """The share of the CPU time from ``before`` to these that the host
        took (0 to 1)."""
        total = self.total - before.total
        return (self.stolen - before.stolen) / total if total > 0 else 0.0


def machine_ticks() -> MachineTicks:
    """The machine's ticks so far (see ``MachineTicks``)."""
    try:
        with open("/proc/stat", "rb") as stat:
            line = stat.readline()
    except OSError:
        return MachineTicks(0, 0)
    fields = line.split()
    if not fields or fields[0] != b"cpu":
        return MachineTicks(0, 0)
    # user nice system idle iowait irq softirq steal (guest time is in user).
    ticks = [int(field) for field in fields[1:9]]
    return MachineTicks(sum(ticks), ticks[7] if len(ticks) > 7 else 0)


def tree_size(path: Path) -> int:
    """Apparent size in bytes of every file under ``path``."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def filesystem_of(path: Path) -> str:
    """The type of the file system holding ``path`` (ext4, tmpfs, ...)."""
    best, kind = "", "?"
    target = str(path.resolve())
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1]
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, parts[2]
    except OSError:
        pass
    return kind


#: Linux's cpuidle driver, and the poll of its ``haltpoll`` driver (the
#: one a KVM or Firecracker guest may run) before an idle CPU halts.
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")
GUEST_HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def idle_cpus() -> str:
    """How this machine's idle CPUs wait for work, as far as Linux says.
    A virtual CPU that halts at once costs the host tens of microseconds to
    wake, once for every lock-step request of a server that sleeps between
    requests; a guest that polls before halting does not pay it."""
    try:
        driver = CPUIDLE_DRIVER.read_text().strip()
    except OSError:
        return "idle CPUs: no cpuidle driver"
    if driver != "haltpoll":
        return f"idle CPUs: cpuidle {driver}"
    try:
        nanos = int(GUEST_HALT_POLL.read_text())
    except (OSError, ValueError):
        return "idle CPUs: haltpoll"
    if nanos == 0:
        return "idle CPUs: haltpoll, halting at once (guest_halt_poll_ns 0)"
    return f"idle CPUs: haltpoll, polling up to {nanos // 1000} us before halting"


def default_twistd() -> str:
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return str(beside)
    return shutil.which("twistd") or "twistd"


@dataclass
class Server:
    """A server subprocess on a loopback port."""

    kind: str  # "erq" or "memcached"
    label: str
    command: list[str]
    port: int
    root: Path
    data_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after: float = 0.0
    problems: list[str] = field(default_factory=list)
    answer: bytes = b""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.label}.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(
        self,
        ready: bytes = b"version\r\n",
        accept: Callable[[bytes], bool] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> float:
        """Start the process and ask ``ready`` until ``accept`` likes the
        answer (by default: any answer but an error); the seconds from
        process start to that answer."""
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=checkout_env(),
            start_new_session=True,
        )
        log.close()
        deadline = self.started_at + timeout
        answer = b""
        while True:
            if self.process.poll() is not None:
                raise NotReady(
                    f"{self.label} exited with {self.process.returncode} at start:\n"
                    + self.log_tail()
                )
            try:
                answer = ask(self.port, ready)
            except OSError:
                answer = b""
            if accept is None:
                good = bool(answer) and not answer.startswith((b"ERROR", b"SERVER_"))
            else:
                good = accept(answer)
            if good:
                self.ready_after = time.monotonic() - self.started_at
                self.answer = answer
                return self.ready_after
            if time.monotonic() > deadline:
                said = f"last answer {answer[:60]!r}" if answer else "no answer"
                raise NotReady(
                    f"{self.label}: {ready.strip()!r} not answered as wanted "
                    f"{timeout:g}s after start ({said})"
                )
            time.sleep(0.005)

    def stop(self, command: bytes | None = None) -> float:
        """Stop the process (by ``command`` when given, else SIGTERM); the
        seconds it took to exit."""
        process = self.process
        if process is None or process.poll() is not None:
            return 0.0
        began = time.monotonic()
        sent = False
        if command is not None:
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as sock:
                    sock.sendall(command)
                    sock.settimeout(STOP_TIMEOUT)
                    while sock.recv(4096):
                        pass
                sent = True
            except OSError as error:
                self.problems.append(f"{self.label}: {command!r} failed: {error}")
        if not sent:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.problems.append(
                f"{self.label} still running {STOP_TIMEOUT:.0f}s after being told "
                "to stop; killed"
            )
            process.kill()
            process.wait(10)
        took = time.monotonic() - began
        if process.returncode not in (0, -signal.SIGTERM):
            self.problems.append(f"{self.label} exited with {process.returncode}")
        return took

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_errors(self) -> list[str]:
        """Tracebacks and unhandled errors the server logged."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            if any(mark in line for mark in LOG_ERROR_MARKS):
                found.append(line.strip())
        return found


def one_client(
    kind: str, label: str, command: list[str], scratch: Path, timeout: float
) -> tuple[Server, socket.socket]:
    """A server of ``command`` started in a directory of its own under
    ``scratch`` (``ROOT`` in the command) on a free loopback port
    (``PORT``), and one connection to it, without Nagle's delay: what the
    instruments that watch one lock-step client use.  If either fails the
    server is stopped and its directory removed, and the reason is the
    ``SystemExit``."""
    root = Path(tempfile.mkdtemp(prefix=f"erq-{kind}-{label}-", dir=scratch))
    port = free_port()
    command = [
        part.replace("PORT", str(port)).replace("ROOT", str(root)) for part in command
    ]
    server = Server(kind, label, command, port, root)
    try:
        server.start(timeout=timeout)
        sock = socket.create_connection((HOST, port), timeout=60)
    except (NotReady, OSError) as error:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise SystemExit(f"{error}\n{server.log_tail()}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server, sock


@dataclass
class Settings:
    """How to start the servers, from the command line."""

    twistd: str
    erq_args: list[str]
    memcached: str | None
    memcached_threads: int
    memcached_memory_mb: int
    scratch: Path
    keep: bool = False
    sync_option: str = "--sync"
    servers: list[Server] = field(default_factory=list)

    def new_root(self, label: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"erq-bench-{label}-", dir=self.scratch))

    def erq(
        self,
        label: str,
        extra: list[str] | None = None,
        data_dir: Path | None = None,
        root: Path | None = None,
    ) -> Server:
        """An erq server, not started yet; a fresh data directory unless
        one is given (to restart on the same journals)."""
        root = root or self.new_root(label)
        data_dir = data_dir or root / "data"
        data_dir.mkdir(exist_ok=True)
        port = free_port()
        command = [
            self.twistd,
            "-n",
            "--pidfile=",
            "erq",
            "--port",
            f"tcp:{port}:interface={HOST}",
            "--data-dir",
            str(data_dir),
            *self.erq_args,
            *(extra or []),
        ]
        server = Server("erq", label, command, port, root, data_dir)
        self.servers.append(server)
        return server

    def bare_server(self, label: str, durable: bool = False) -> Server:
        """The bare Twisted reference server (``benchmarks/bare.py``), on
        erq's way to the socket unless erq runs ``--plain-reactor``; with
        ``durable``, syncing each set to a file of its own directory."""
        root = self.new_root(label)
        port = free_port()
        command = [sys.executable, str(Path(__file__).with_name("bare.py")), str(port)]
        if durable:
            command.append(f"--durable={root / 'durable'}")
        if "--plain-reactor" not in self.erq_args:
            command.append("--erq-io")
            idle_poll = self.idle_poll()
            if idle_poll is not None:
                command.append(f"--idle-poll={idle_poll}")
        server = Server("bare", label, command, port, root)
        self.servers.append(server)
        return server

    def idle_poll(self) -> str | None:
        """The ``--idle-poll`` that ``--erq-args`` gives erq, if any."""
        return option_value(self.erq_args, "--idle-poll")

    def memcached_server(self, label: str) -> Server:
        assert self.memcached is not None
        root = self.new_root(label)
        port = free_port()
        command = [
            self.memcached,
            "-l",
            HOST,
            "-p",
            str(port),
            "-U",
            "0",
            "-t",
            str(self.memcached_threads),
            "-m",
            str(self.memcached_memory_mb),
            "-c",
            "4096",
        ]
        if os.geteuid() == 0:
            command += ["-u", _unprivileged_user()]
        server = Server("memcached", label, command, port, root)
        self.servers.append(server)
        return server

    def discard(self, server: Server) -> None:
        """Stop a server and remove its files (unless asked to keep them)."""
        server.stop()
        if not self.keep:
            shutil.rmtree(server.root, ignore_errors=True)

    def erq_help(self) -> str:
        result = subprocess.run(
            [self.twistd, "erq", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.scratch,
            env=checkout_env(),
        )
        return result.stdout + result.stderr

    def sync_supported(self) -> bool:
        words = self.erq_help().replace(",", " ").split()
        return any(word.rstrip("=") == self.sync_option for word in words)

    def sync_args(self, policy: str) -> list[str]:
        return [self.sync_option, policy]

    def user_sets_sync(self) -> bool:
        return any(
            arg == self.sync_option or arg.startswith(self.sync_option + "=")
            for arg in self.erq_args
        )


def _unprivileged_user() -> str:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "root"
    return "nobody"


def version_of(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _process_times() -> dict[int, tuple[str, float]]:
    times: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        found = _stat(f"/proc/{entry}/stat")
        if found is not None:
            name, user, system = found
            times[int(entry)] = (name, user + system)
    return times


def busy_others(seconds: float = 1.0) -> list[tuple[str, float]]:
    """Processes that used CPU over ``seconds`` (not this one), busiest
    first, with the fraction of one core each used: a benchmark on a shared
    machine measures them too."""
    before = _process_times()
    time.sleep(seconds)
    after = _process_times()
    mine = os.getpid()
    busy = []
    for pid, (name, used) in after.items():
        if pid == mine:
            continue
        share = (used - before.get(pid, (name, used))[1]) / seconds
        if share >= 0.05:
            busy.append((f"{name}[{pid}]", share))
    return sorted(busy, key=lambda entry: -entry[1])
