"""The load generator: worker processes, one connection each, that start
together, run one bounded loop of requests and report what they saw."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from threading import BrokenBarrierError
from typing import Any, Literal

from benchmarks.servers import rss
from benchmarks.wire import END, STORED, Connection, Dialect, Misbehaved, filler, item

Role = Literal["set", "get", "pipe-set", "pipe-get", "produce", "consume"]

#: Seconds a worker may spend connecting and building its requests.
SETUP_TIMEOUT = 120.0
#: How often (in requests) a lock-step loop looks at the clock.
CLOCK_EVERY = 64


@dataclass(frozen=True)
class Job:
    """What one worker process does, bounded by ``count`` and ``seconds``."""

    role: Role
    port: int
    dialect: Dialect
    tag: bytes
    count: int
    seconds: float
    size: int = 64
    first: int = 0
    batch: int = 100
    #: Gets: compare each reply byte for byte (when the order is known), or
    #: only its shape (several consumers share one queue).
    exact: bool = True
    #: Pipelined sets: read this process's RSS after these many items.
    probe_pid: int = 0
    probes: tuple[int, ...] = ()
    wait_ms: int = 100
    #: Producers: sets per second (0: as fast as replies come).
    rate: float = 0.0


@dataclass
class Outcome:
    """What one worker saw."""

    role: Role
    done: int = 0
    hits: int = 0
    misses: int = 0
    odd: int = 0
    first_odd: str = ""
    start: float = 0.0
    end: float = 0.0
    last_hit: float = 0.0
    cpu: float = 0.0
    error: str | None = None
    latencies_ns: list[int] = field(default_factory=list)
    probes: dict[int, tuple[int, int]] = field(default_factory=dict)

    def unexpected(self, reply: bytes) -> None:
        self.odd += 1
        if not self.first_odd:
            self.first_odd = repr(reply[:80])


Runner = Callable[[Connection, Outcome], None]


def run_jobs(jobs: list[Job], limit: float) -> list[Outcome]:
    """Run every job in its own process, all starting at one barrier; one
    outcome per job, in the order of ``jobs``."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(jobs))
    results: multiprocessing.Queue[tuple[int, Outcome]] = context.Queue()
    producers_done = context.Event()
    processes = [
        context.Process(
            target=_work,
            args=(number, job, barrier, results, producers_done),
            daemon=True,
        )
        for number, job in enumerate(jobs)
    ]
    for process in processes:
        process.start()
    producers = sum(job.role == "produce" for job in jobs)
    produced = 0
    outcomes: dict[int, Outcome] = {}
    deadline = time.monotonic() + limit + SETUP_TIMEOUT
    while len(outcomes) < len(jobs) and time.monotonic() < deadline:
        try:
            number, outcome = results.get(timeout=0.5)
        except queue.Empty:
            if not any(process.is_alive() for process in processes):
                # Dead without reporting; allow for results still in flight.
                try:
                    number, outcome = results.get(timeout=2.0)
                except queue.Empty:
                    break
            else:
                continue
        outcomes[number] = outcome
        if outcome.role == "produce":
            produced += 1
            if produced == producers:
                producers_done.set()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
    return [
        outcomes.get(number) or Outcome(job.role, error="worker did not report in time")
        for number, job in enumerate(jobs)
    ]


def _work(
    number: int, job: Job, barrier: Barrier, results: Any, producers_done: Event
) -> None:
    outcome = Outcome(job.role)
    connection: Connection | None = None
    started = False
    cpu = 0.0
    try:
        connection = Connection(job.port)
        run = PREPARE[job.role](job, producers_done)
        barrier.wait(SETUP_TIMEOUT)
        started = True
        cpu = time.process_time()
        outcome.start = time.monotonic()
        run(connection, outcome)
    except BrokenBarrierError:
        outcome.error = "another worker failed before the start"
    except (Misbehaved, OSError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
        barrier.abort()
    except Exception as error:  # report anything rather than hang the run
        outcome.error = f"worker crashed: {type(error).__name__}: {error}"
        barrier.abort()
    finally:
        if started:
            outcome.end = time.monotonic()
            outcome.cpu = time.process_time() - cpu
        if connection is not None:
            connection.close()
        results.put((number, outcome))


# -- lock-step ---------------------------------------------------------------


def _prepare_set(job: Job, producers_done: Event) -> Runner:
    dialect = job.dialect
    requests = [
        dialect.set_request(index, item(job.tag, index, job.size))
        for index in range(job.first, job.first + job.count)
    ]

    def run(connection: Connection, outcome: Outcome) -> None:
        sendall = connection.sock.sendall
        recv_into = connection.sock.recv_into
        view = connection.view
        buffer = connection.buffer
        finish = connection.finish
        deadline = time.monotonic() + job.seconds
        done = hits = 0
        for request in requests:
            sendall(request)
            got = recv_into(view)
            if got == 8 and buffer.startswith(STORED):
                hits += 1
            else:
                got = finish(got, None)
                if got == 8 and buffer.startswith(STORED):
                    hits += 1
                else:
                    outcome.unexpected(bytes(buffer[:got]))
            done += 1
            if not done % CLOCK_EVERY and time.monotonic() > deadline:
                break
        outcome.done, outcome.hits = done, hits

    return run


def _prepare_get(job: Job, producers_done: Event) -> Runner:
    dialect = job.dialect
    indexes = range(job.first, job.first + job.count)
    requests = [dialect.get_request(index) for index in indexes]
    replies = [
        dialect.hit_reply(index, item(job.tag, index, job.size)) for index in indexes
    ]
    if not replies:
        return lambda connection, outcome: None
    value_len = len(replies[0])
    # The shape every reply to a shared queue has, whoever's item it is.
    head = replies[0][: replies[0].index(b"\r\n") + 2]
    tail = b"\r\nEND\r\n"

    def run(connection: Connection, outcome: Outcome) -> None:
        sendall = connection.sock.sendall
        recv_into = connection.sock.recv_into
        view = connection.view
        buffer = connection.buffer
        finish = connection.finish
        exact = job.exact
        deadline = time.monotonic() + job.seconds
        done = hits = misses = 0
        for request, reply in zip(requests, replies, strict=True):
            sendall(request)
            got = recv_into(view)
            if got != value_len:
                got = finish(got, value_len)
            if got == value_len and (
                buffer[:got] == reply
                if exact
                else buffer.startswith(head) and buffer[got - 7 : got] == tail
            ):
                hits += 1
            elif buffer[:got] == END:
                misses += 1
            else:
                outcome.unexpected(bytes(buffer[:got]))
            done += 1
            if not done % CLOCK_EVERY and time.monotonic() > deadline:
                break
        outcome.done, outcome.hits, outcome.misses = done, hits, misses

    return run


# -- pipelined ---------------------------------------------------------------


def _pipeline(
    job: Job,
    batch_at: Callable[[int, int], tuple[bytes, bytes]],
    after_batch: Callable[[int, Outcome], None] | None = None,
) -> Runner:
    """Write a batch, build the next while the server works, then check the
    whole batch of replies against what was expected."""
    batches = (job.count + job.batch - 1) // job.batch

    def bounds(number: int) -> tuple[int, int]:
        start = job.first + number * job.batch
        return start, min(start + job.batch, job.first + job.count)

    def run(connection: Connection, outcome: Outcome) -> None:
        deadline = time.monotonic() + job.seconds
        sendall = connection.sock.sendall
        expect = connection.expect
        upcoming = batch_at(*bounds(0)) if batches else (b"", b"")
        done = 0
        for number in range(batches):
            request, expected = upcoming
            sendall(request)
            if number + 1 < batches:
                upcoming = batch_at(*bounds(number + 1))
            try:
                expect(expected)
            except Misbehaved as error:
                outcome.done = outcome.hits = done
                raise Misbehaved(f"batch of items {bounds(number)}: {error}") from None
            start, stop = bounds(number)
            done += stop - start
            outcome.done = outcome.hits = done
            if after_batch is not None:
                after_batch(done, outcome)
            if time.monotonic() > deadline:
                break

    return run


def _prepare_pipe_set(job: Job, producers_done: Event) -> Runner:
    dialect = job.dialect

    def batch_at(start: int, stop: int) -> tuple[bytes, bytes]:
        request = b"".join(
            [
                dialect.set_request(i, item(job.tag, i, job.size))
                for i in range(start, stop)
            ]
        )
        return request, STORED * (stop - start)

    probes = set(job.probes)

    def after_batch(done: int, outcome: Outcome) -> None:
        if done in probes:
            outcome.probes[done] = rss(job.probe_pid)

    return _pipeline(job, batch_at, after_batch if probes else None)


def _prepare_pipe_get(job: Job, producers_done: Event) -> Runner:
    dialect = job.dialect

    def batch_at(start: int, stop: int) -> tuple[bytes, bytes]:
        indexes = range(start, stop)
        request = b"".join([dialect.get_request(i) for i in indexes])
        expected = b"".join(
            [dialect.hit_reply(i, item(job.tag, i, job.size)) for i in indexes]
        )
        return request, expected

    return _pipeline(job, batch_at)


# -- producers and consumers at once -----------------------------------------

STAMP = 20


def _prepare_produce(job: Job, producers_done: Event) -> Runner:
    head = b"set %s 0 0 %d\r\n" % (job.dialect.queue_name, job.size)
    tail = b":" + filler(job.size - STAMP - 1) + b"\r\n"

    def run(connection: Connection, outcome: Outcome) -> None:
        sendall = connection.sock.sendall
        recv_into = connection.sock.recv_into
        view = connection.view
        buffer = connection.buffer
        stamp = time.monotonic_ns
        clock = time.monotonic
        deadline = clock() + job.seconds
        interval = 1.0 / job.rate if job.rate else 0.0
        due = clock()
        done = hits = 0
        for _ in range(job.count):
            if interval:
                # A fixed schedule: a late set is sent at once, not skipped.
                due += interval
                delay = due - clock()
                if delay > 0:
                    time.sleep(delay)
            sendall(b"%s%020d%s" % (head, stamp(), tail))
            got = recv_into(view)
            if got != 8:
                got = connection.finish(got, None)
            if got == 8 and buffer.startswith(STORED):
                hits += 1
            else:
                outcome.unexpected(bytes(buffer[:got]))
            done += 1
            if not done % CLOCK_EVERY and time.monotonic() > deadline:
                break
        outcome.done, outcome.hits = done, hits

    return run


def _prepare_consume(job: Job, producers_done: Event) -> Runner:
    key = b"%s/t=%d" % (job.dialect.queue_name, job.wait_ms)
    request = b"get %s\r\n" % key
    head = b"VALUE %s 0 %d\r\n" % (key, job.size)
    value_len = len(head) + job.size + len(b"\r\nEND\r\n")
    at, until = len(head), len(head) + STAMP

    def run(connection: Connection, outcome: Outcome) -> None:
        sendall = connection.sock.sendall
        recv_into = connection.sock.recv_into
        view = connection.view
        buffer = connection.buffer
        now = time.monotonic_ns
        # Consumers go on after the producers stop, to drain the queue.
        deadline = time.monotonic() + job.seconds
        latencies = outcome.latencies_ns
        done = hits = misses = 0
        last = 0
        while done < job.count and time.monotonic() < deadline:
            sendall(request)
            got = recv_into(view)
            if got != value_len:
                got = connection.finish(got, value_len)
            if got == value_len and buffer.startswith(head):
                last = now()
                latencies.append(last - int(buffer[at:until]))
                hits += 1
            elif buffer[:got] == END:
                misses += 1
                if producers_done.is_set():
                    break
            else:
                outcome.unexpected(bytes(buffer[:got]))
            done += 1
        outcome.done, outcome.hits, outcome.misses = done, hits, misses
        outcome.last_hit = last / 1e9

    return run


PREPARE: dict[Role, Callable[[Job, Event], Runner]] = {
    "set": _prepare_set,
    "get": _prepare_get,
    "pipe-set": _prepare_pipe_set,
    "pipe-get": _prepare_pipe_get,
    "produce": _prepare_produce,
    "consume": _prepare_consume,
}


def spread(total: int, parts: int) -> Iterator[int]:
    """``total`` cut into ``parts`` near-equal whole shares."""
    share, extra = divmod(total, parts)
    for part in range(parts):
        yield share + (1 if part < extra else 0)
