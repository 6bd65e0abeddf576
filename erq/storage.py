"""Where a server keeps its queues: the data directory, its lock, the one
journal writer, and a journal per queue.

The service routes requests to queues and knows nothing of files; this is
the one place that turns a data directory into journals.  The lock is held
from before the first journal is read until the writer's last file is
closed (see ``erq.datadir``).

The server's status (``erq.status``) is kept here too, in `STATUS_FILE`:
one word and a line end, replaced whole (written aside, fsynced, renamed
over the old one, the directory fsynced), so that a crash leaves the old
status or the new one, never half of either.  Its name starts with a dot,
which no queue's directory does.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from erq.config import ConfigError, MiB, QueueSettings
from erq.datadir import DataDirLock, lock_data_dir
from erq.journal import (
    LINGER,
    FileOps,
    Journal,
    JournalWriter,
    Replayed,
    list_queue_dirs,
    queue_dir,
)
from erq.status import ServerStatus
from erq.values import parse_status

#: Bytes of a journal segment file before the next one starts.
SEGMENT_SIZE = 16 * MiB
#: At most this much of each queue's head is read into memory at start, the
#: rest as the queue drains (read-behind), so that a deep queue serves its
#: first item without reading every item first.
START_HEAD = 1 * MiB

#: The file in the data directory that keeps the server's status.
STATUS_FILE = ".status"


class Storage:
    """A data directory and the journals in it."""

    def __init__(
        self, reactor: IReactorTime, data_dir: str, segment_size: int | None = None
    ) -> None:
        """``reactor`` runs the writer's hand-offs (it must also take calls
        from threads, as a real reactor does)."""
        self.reactor = reactor
        self.data_dir = data_dir
        self.segment_size = SEGMENT_SIZE if segment_size is None else segment_size
        #: The writer of every journal here; made when first needed, unless
        #: one is given (tests and benchmarks give theirs).
        self.writer: JournalWriter | None = None
        self._lock: DataDirLock | None = None
        self.replayed = False
        #: Given to the writer as its ``on_batch``, whenever it is made.
        self.on_batch: Callable[[float, int], object] | None = None
        # Every journal made here (a deleted queue's goes with it), for the
        # summaries of their open segments at stop.
        self._journals: weakref.WeakSet[Journal] = weakref.WeakSet()

    def hold(self, path: str | None = None) -> None:
        """Take the data directory's lock, if not held yet; raises
        `DataDirectoryInUse`, with nothing read, when another server holds
        it.  ``path`` names the directory as seen from here, where the
        process will change directories before the service starts."""
        if self._lock is None:
            self._lock = lock_data_dir(path if path is not None else self.data_dir)

    def release(self, result: object = None) -> object:
        """Let go of the lock (passes ``result`` through, for a Deferred)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
        return result

    def _writer(self) -> JournalWriter:
        if self.writer is None:
            self.writer = JournalWriter(
                cast(Any, self.reactor), linger=LINGER, data_dir=self.data_dir
            )
            self.writer.on_batch = self.on_batch
        return self.writer

    def replay(
        self, settings_for: Callable[[str], QueueSettings], log: Logger
    ) -> Iterator[tuple[str, Journal | None, Replayed]]:
        """Every queue journaled here: its name, its journal (``None`` for
        a queue no longer journaled, whose journal is erased once read),
        and what the journal holds.  Damage found is logged."""
        started = time.monotonic()
        items = queues = segments = summarized = 0
        for name, path in sorted(list_queue_dirs(self.data_dir).items()):
            settings = settings_for(name)
            journal = Journal(
                path,
                self._writer(),
                settings.sync_journal,
                segment_size=self.segment_size,
                name=name,
            )
            # A queue no longer journaled takes all its items into memory,
            # and its journal is erased once they are there.
            keeps_journal = settings.journal
            replayed = journal.replay(
                min(settings.max_memory_size, START_HEAD)
                if keeps_journal
                else sys.maxsize
            )
            for damage in replayed.damage:
                log.warn("Journal of {queue}: {damage}", queue=name, damage=damage)
            if not keeps_journal:
                journal.erase()
            else:
                self._journals.add(journal)
            queues += 1
            items += len(replayed.items) + replayed.behind_items
            segments += replayed.segments
            summarized += replayed.summarized
            yield name, journal if keeps_journal else None, replayed
        self.replayed = True
        log.info(
            "Replayed {queues} queues, {items} items, in {seconds:.2f} s; "
            "{summarized} of {segments} segments taken from their summaries",
            queues=queues,
            items=items,
            segments=segments,
            summarized=summarized,
            seconds=time.monotonic() - started,
        )

    def journal(self, name: str, settings: QueueSettings) -> Journal | None:
        """A new queue's journal, unless its settings say not to keep one."""
        if not settings.journal:
            return None
        journal = Journal(
            queue_dir(self.data_dir, name),
            self._writer(),
            settings.sync_journal,
            segment_size=self.segment_size,
            name=name,
        )
        self._journals.add(journal)
        return journal

    def _status_path(self, data_dir: str | None) -> str:
        directory = self.data_dir if data_dir is None else data_dir
        return os.path.join(directory, STATUS_FILE)

    def read_status(self, data_dir: str | None = None) -> ServerStatus | None:
        """The status kept here, or ``None`` where none is (a first start).
        `ConfigError`, naming the file, when it cannot be read or holds
        something else.  ``data_dir`` names the directory as seen from here
        (see ``hold``)."""
        path = self._status_path(data_dir)
        source = f"status file {os.path.abspath(path)}"
        try:
            with open(path, "rb") as file:
                data = file.read(64)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(f"cannot read: {error.strerror}", source) from None
        try:
            return parse_status(data.decode("ascii", "replace").strip())
        except ValueError as error:
            raise ConfigError(str(error), source) from None

    def save_status(self, status: ServerStatus, data_dir: str | None = None) -> None:
        """Keep ``status`` here, durably, replacing what was kept; `OSError`
        when it cannot be written, with the old status left in place."""
        path = self._status_path(data_dir)
        ops = FileOps()
        ops.write_file(path, status.value.encode("ascii") + b"\n")
        ops.fsync_dir(os.path.dirname(path) or ".")

    def start(self) -> None:
        if self.writer is not None:
            self.writer.start()

    def stop(self) -> Deferred[None]:
        """Write what is pending, close every file, then let the directory
        go: another server may have it once every file is closed."""
        if self.writer is None:
            self.release()
            return succeed(None)
        for journal in list(self._journals):
            # Written with the last batch, so that the next start reads no
            # segment at all.
            journal.summarize_open_segment()
        stopped = self.writer.stop()
        stopped.addBoth(self.release)
        return stopped
