"""The durable limit a lock-step client can reach, measured in the run: one
request waits for its round trip and for one fdatasync, so one connection
cannot store more than 1 / (round trip + fdatasync) items a second.

The round trip is the load generator's own, against memcached (see "The
durable limit" in benchmarks/README.md); this module times the fdatasync,
and a bare socket's round trip for runs without memcached."""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.wire import HOST

#: How many fdatasyncs and round trips each median is taken over.
SAMPLES = 200
#: At most this many sets time the load generator's round trip (the phase
#: ends after ``Plan.limit_seconds`` first).
LIMIT_REQUESTS = 50_000


def fdatasync_seconds(directory: Path, count: int = SAMPLES) -> float:
    """The median time of one fdatasync after a small append, in a file of
    ``directory`` (the data directory's file system)."""
    fd, path = tempfile.mkstemp(prefix="erq-fsync-", dir=directory)
    try:
        record = b"x" * 100
        times = []
        for _ in range(count):
            os.write(fd, record)
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        os.close(fd)
        os.unlink(path)


def batch_seconds(directory: Path, files: int, count: int = SAMPLES) -> float | None:
    """The median time erq's journal engine takes to make one batch
    durable: a small record appended to each of ``files`` files, then
    the files synced together, as the server syncs the queues of a batch
    of sets (one cache flush shared by them all where the file system
    allows it; see "Shared flushes" in erq/journal/engine.py).  Each file
    has zeros written ahead and synced, as a segment has, so that a record
    only overwrites space already durable.  ``None`` without erq's C
    engine (``erq.journal._engine``)."""
    try:
        from erq.journal._engine import Engine
    except ImportError:
        return None
    from erq.journal.engine import Ops, shared_device

    device = shared_device(str(directory), None)
    record = b"x" * 100
    notify = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    fds: list[int] = []
    paths: list[str] = []
    try:
        engine = Engine(notify, shared_device=device)
        for _ in range(files):
            fd, path = tempfile.mkstemp(prefix="erq-batch-", dir=directory)
            fds.append(fd)
            paths.append(path)
            os.write(fd, bytes(len(record) * count + 4096))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        sync = None if device is None or files == 1 else True
        ops: Ops = [(fd, record) for fd in fds]
        ops += [(fd, sync) for fd in fds]
        times = []
        for _ in range(count):
            start = time.perf_counter()
            error = engine.run(ops)
            times.append(time.perf_counter() - start)
            if error:
                raise OSError(error, os.strerror(error))
        return statistics.median(times)
    finally:
        for fd in (notify, *fds):
            os.close(fd)
        for path in paths:
            os.unlink(path)


def disk_written(directory: Path) -> tuple[int, int] | None:
    """The write requests and the bytes that the block device holding
    ``directory`` has completed since it started (its statistics in
    sysfs), or ``None`` where the directory is on no block device (tmpfs,
    overlayfs) or the system says nothing of it."""
    device = os.stat(directory).st_dev
    path = f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat"
    try:
        with open(path) as f:
            fields = f.read().split()
        # Writes completed, and sectors of 512 bytes written.
        return int(fields[4]), int(fields[6]) * 512
    except (OSError, IndexError, ValueError):
        return None


def round_trip_seconds(port: int, request: bytes, count: int = SAMPLES) -> float:
    """The median time of one lock-step request and its one-line reply on
    a fresh loopback connection (memcached's ``set``, the fastest server
    on the machine, or erq's ``version`` when there is no memcached)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(request)
            reply = sock.recv(4096)
            while not reply.endswith(b"\r\n"):
                more = sock.recv(4096)
                if not more:
                    raise OSError("connection closed during a round trip")
                reply += more
            times.append(time.perf_counter() - start)
        return statistics.median(times)
