"""The ``erq-journal`` command: ``dump``, ``check`` and ``stats`` of the
journals of a stopped server, read-only (replay without repair)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from erq.config import MiB
from erq.datadir import DataDirectoryInUse, lock_data_dir_shared
from erq.journal import records as record_format
from erq.journal.files import summary_path
from erq.journal.names import list_queue_dirs
from erq.journal.records import (
    _ADD_SIZE,
    _FORWARD_SIZE,
    ABORT,
    ADD,
    FORWARD,
    OPEN,
    OPENED,
    REMOVE,
    JournalError,
    _Damage,
    _header_problem,
    _records,
)
from erq.journal.replay import _Replay
from erq.journal.summaries import Summary, read_summary, summarize

# Assigned, not imported: a method call on an imported name compiles as a
# call of a module's function (an attribute load, then a call, which makes a
# bound method each time); on an assigned name it compiles to the cheaper
# method call.  These calls are on hot paths.
KIND_NAMES = record_format.KIND_NAMES
_ABORT = record_format._ABORT
_ADD = record_format._ADD
_FORWARD = record_format._FORWARD
_REF = record_format._REF
_REMOVE = record_format._REMOVE
_SEGMENT_RE = record_format._SEGMENT_RE


def _describe(buf: bytes, kind: int, start: int, end: int) -> str:
    if kind in (ADD, FORWARD):
        if kind == ADD:
            _, item_id, flags, expiry, added = _ADD.unpack_from(buf, start)
            data = buf[start + _ADD_SIZE : end]
            state = ""
        else:
            _, item_id, state_code, seq, flags, expiry, added = _FORWARD.unpack_from(
                buf, start
            )
            data = buf[start + _FORWARD_SIZE : end]
            state = " open" if state_code == OPENED else f" queued seq={seq}"
        exp = "-" if expiry != expiry else repr(expiry)
        preview = data[:32]
        more = "..." if len(data) > 32 else ""
        return (
            f"{KIND_NAMES[kind]} id={item_id}{state} flags={flags} expiry={exp}"
            f" added={added!r} bytes={len(data)} data={preview!r}{more}"
        )
    if kind == REMOVE:
        _, item_id, size = _REMOVE.unpack_from(buf, start)
        return f"REMOVE id={item_id} bytes={size}"
    if kind == OPEN:
        _, item_id = _REF.unpack_from(buf, start)
        return f"OPEN id={item_id}"
    if kind == ABORT:
        _, item_id, seq = _ABORT.unpack_from(buf, start)
        return f"ABORT id={item_id} seq={seq}"
    return KIND_NAMES.get(kind, f"kind {kind}")


def _segment_paths(directory: str) -> list[tuple[str, str]]:
    names = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(directory)
        if (m := _SEGMENT_RE.match(name))
    )
    return [(name, os.path.join(directory, name)) for _, name in names]


def _dump(queues: dict[str, str], out: TextIO) -> int:
    for name, directory in sorted(queues.items()):
        out.write(f"queue {name!r} in {directory}\n")
        for segment, path in _segment_paths(directory):
            with open(path, "rb") as f:
                buf = f.read()
            problem = _header_problem(buf)
            if problem is not None:
                out.write(f"{segment} 0 DAMAGE {problem}\n")
                continue
            try:
                for pos, kind, start, end in _records(buf):
                    out.write(f"{segment} {pos} {_describe(buf, kind, start, end)}\n")
            except _Damage as damage:
                out.write(
                    f"{segment} {damage.offset} DAMAGE {damage.reason},"
                    f" {len(buf) - damage.offset} bytes to the end of the file\n"
                )
    return 0


def _check(queues: dict[str, str], out: TextIO) -> int:
    status = 0
    for name, directory in sorted(queues.items()):
        segments = _segment_paths(directory)
        records = 0
        size = 0
        problems: list[str] = []
        for segment, path in segments:
            with open(path, "rb") as f:
                buf = f.read()
            size += len(buf)
            problem = _header_problem(buf)
            if problem is not None:
                problems.append(f"{segment}: {problem}")
                continue
            try:
                for _ in _records(buf):
                    records += 1
            except _Damage as damage:
                problems.append(
                    f"{segment}: {damage.reason} at offset {damage.offset},"
                    f" {len(buf) - damage.offset} bytes would be cut"
                )
            problem = _summary_problem(path, buf)
            if problem is not None:
                problems.append(f"{segment}: {problem}")
        verdict = "damaged" if problems else "ok"
        out.write(
            f"queue {name!r}: {verdict}, {len(segments)} segments,"
            f" {records} records, {size} bytes\n"
        )
        for problem in problems:
            out.write(f"  {problem}\n")
        if problems:
            status = 1
    return status


def _summary_problem(path: str, buf: bytes) -> str | None:
    """What is wrong with a segment's summary, if it has one: one that does
    not match the segment as it is is only ignored at start (the segment is
    read instead), one that matches but disagrees with it is damage."""
    sum_path = summary_path(path)
    if not os.path.exists(sum_path):
        return None
    summary = read_summary(path, sum_path)
    if summary is None:
        return None
    actual = summarize(buf, [])
    if actual is None:
        return "summary disagrees with the segment"
    if actual.complex or summary.complex:
        # Replay reads a complex segment: only its counts matter (and the
        # journal, which sees the ids of the segments before, may call
        # complex a segment whose own ids rise).
        if (actual.records, actual.adds, actual.add_bytes) != (
            summary.records,
            summary.adds,
            summary.add_bytes,
        ):
            return "summary disagrees with the segment"
        return None
    if _counts(actual) != _counts(summary):
        return "summary disagrees with the segment"
    return None


def _counts(summary: Summary) -> tuple[object, ...]:
    return (
        summary.records,
        summary.complex,
        summary.adds,
        summary.add_bytes,
        summary.first_id,
        summary.last_id,
        summary.max_id,
        summary.index,
        summary.max_seq,
        sorted(summary.states),
        sorted(summary.forwards),
        sum(last - first + 1 for first, last, _ in summary.removes),
        sum(size for _, _, size in summary.removes),
    )


def _stats(queues: dict[str, str], out: TextIO) -> int:
    for name, directory in sorted(queues.items()):
        replay = _Replay(directory, MiB, repair=False)
        try:
            replay.run()
        except JournalError as e:
            out.write(f"queue {name!r}: {e}\n")
            continue
        body = replay.body
        queued = replay.aborted_head() + list(body.window.values())
        items = len(queued) + body.behind_count
        size = sum(len(item.data) for item in queued) + body.behind_bytes
        logsize = sum(s.size for s in replay.segments)
        out.write(
            f"queue {name!r}: items={items} bytes={size}"
            f" open={len(replay.open)} segments={len(replay.segments)}"
            f" logsize={logsize} records={replay.records}"
            f" damaged={len(replay.damage)}\n"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``erq-journal dump|check|stats <data_dir> [queue]``: look at the
    journals of a stopped server (read-only).

    A running server's journals change under the reader (a record half
    written reads as damage), so the tool takes the data directory's lock
    shared (see ``erq.datadir``) and refuses, exit status 2, while a server
    holds it; no server starts while the tool reads.  Output cut short by
    its reader (``| head``) ends the tool quietly with status 141, as
    SIGPIPE ends other tools: a ``check`` not read to the end is no ``ok``."""
    parser = argparse.ArgumentParser(
        prog="erq-journal",
        description="Look at erq queue journals. Read-only; refuses to run "
        "while a server uses the data directory.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (
        ("dump", "print every record, one per line"),
        ("check", "verify checksums; exit 1 if anything is damaged"),
        ("stats", "items, bytes and open reads of each queue"),
    ):
        sub = commands.add_parser(command, help=text, description=text)
        sub.add_argument("data_dir", help="the server's data directory")
        sub.add_argument("queue", nargs="?", help="only this queue")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        sys.stderr.write(f"erq-journal: no directory {args.data_dir}\n")
        return 2
    try:
        lock = lock_data_dir_shared(args.data_dir)
    except (DataDirectoryInUse, OSError) as error:
        sys.stderr.write(f"erq-journal: {error}\n")
        return 2
    try:
        return _run(args, sys.stdout)
    except BrokenPipeError:
        # Whatever is still buffered goes nowhere, not into a traceback at
        # exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    finally:
        if lock is not None:
            lock.release()


def _run(args: argparse.Namespace, out: TextIO) -> int:
    queues = list_queue_dirs(args.data_dir)
    if args.queue is not None:
        if args.queue not in queues:
            sys.stderr.write(
                f"erq-journal: no queue {args.queue!r} in {args.data_dir}\n"
            )
            return 2
        queues = {args.queue: queues[args.queue]}
    handlers: dict[str, Callable[[dict[str, str], TextIO], int]] = {
        "dump": _dump,
        "check": _check,
        "stats": _stats,
    }
    status = handlers[args.command](queues, out)
    out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
