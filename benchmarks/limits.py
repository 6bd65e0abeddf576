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
