"""Each queue's journal on disk: records, group commit, replay, compaction,
read-behind, queue directories and the ``erq-journal`` tool.

Each queue appends records (add, remove, open, confirm, abort) to segment
files in its own directory; records carry a length and a checksum, so replay
stops at the first torn or damaged record and cuts it off; a segment whose
items are all gone is deleted, oldest first.  One module per role:

- ``records``: the record format, and parsing records back;
- ``names``: queue names to directory names, and the queues of a data
  directory;
- ``journal``: ``Journal``, one queue's journal: what the queue calls,
  turned into records for the writer's next batch.  Its other roles are
  apart: ``base`` (the sync policy, and what comes back from the writer:
  written, or failed and retried), ``compaction`` (dead segments deleted,
  what they still pin copied forward), ``readbehind`` (items past the
  memory limit read back from disk) and ``takeover`` (the start from
  what ``replay`` found on disk, with ``body``, the items in memory and
  behind, and ``damage``, cut off); ``fromsummaries``: the start from the
  summaries of closed segments, where ``replay`` need not read them;
- ``segments``: which segment holds which item;
- ``summaries``: what a closed segment holds, in a small file beside it,
  so that replay need not read it;
- ``writer``: ``JournalWriter``, the one thread of a server that writes
  every journal's records, in order, with group commit; ``dispatch``: its
  hand-off with the reactor (which way of the thread runs each batch, and
  taking batches back); ``thread``: the thread itself, its own or a pool's;
  ``loop``: the Python loop that runs a batch on it;
- ``files``: what that thread does to files (``FileOps`` and the steps of a
  batch), and ``engine``: the optional C engine (``_engine``) that takes
  plain appends and fsyncs off the Python loop;
- ``tool``: the ``erq-journal`` command.

The queue only calls ``Journal``; ``Journal`` feeds the writer; the writer's
thread runs the steps of ``files`` and never calls into a queue.  Replay,
read-behind and the tool read through ``records``.
"""

from erq.journal.files import FileOps
from erq.journal.journal import Journal
from erq.journal.names import NAME_FILE as NAME_FILE
from erq.journal.names import (
    list_queue_dirs,
    queue_dir,
    queue_dir_name,
    queue_name_from_dir,
)
from erq.journal.records import FILE_HEADER as FILE_HEADER
from erq.journal.records import HEADER_SIZE as HEADER_SIZE
from erq.journal.records import JournalError
from erq.journal.replay import Replayed
from erq.journal.tool import main
from erq.journal.writer import LINGER as LINGER
from erq.journal.writer import MAX_BACKLOG as MAX_BACKLOG
from erq.journal.writer import SHUTDOWN_TIMEOUT as SHUTDOWN_TIMEOUT
from erq.journal.writer import JournalWriter

__all__ = [
    "FileOps",
    "Journal",
    "JournalError",
    "JournalWriter",
    "Replayed",
    "list_queue_dirs",
    "main",
    "queue_dir",
    "queue_dir_name",
    "queue_name_from_dir",
]
