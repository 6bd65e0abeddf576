"""What replay does about a damaged segment: where it cuts, what it keeps
aside for a human, and the line it reports.

Damage
------
A record whose length runs past the end of its file is torn; one whose
checksum does not match is corrupt.  Replay of a segment stops at the first
such record and the file is truncated there.  A torn or corrupt last record
at the end of the last segment (followed by nothing, or by zeros only) is
what a crash mid-write leaves, and is just cut.  Anything else (a bad record
in the middle of a segment, or in any but the last segment) cannot come from
a crash, because a segment is fsynced and closed before the next one starts:
it is bit rot or a stray write.  Then the cut bytes are first saved next to
the segment as ``<segment>.cut-<offset>`` for a human to look at, and replay
goes on with the later segments.  Keeping them loses the least acknowledged
data (every item added after the damaged spot is still there) and order
stays sane: items keep their ADD order, and records about items that were
lost in the cut are ignored as unknown.  What can go wrong is bounded by
what the cut held: items added there are lost, and items removed there may
come back once (at-least-once).  A file whose header is not an erq header is
renamed to ``<segment>.bad`` and skipped.
"""

from __future__ import annotations

import contextlib
import os

from erq.datadir import private_opener
from erq.journal.files import summary_path
from erq.journal.records import JournalError, _Damage, _zeros_from
from erq.journal.segments import _Segment


class _Cutter:
    """Cuts the damage off a queue's segments, or only finds it (for the
    command-line tool, which changes nothing on disk), and says what it
    did, one line per damaged spot, in ``damage``."""

    def __init__(self, directory: str, repair: bool, damage: list[str]) -> None:
        self.directory = directory
        self.repair = repair
        self.damage = damage

    def where(self, name: str) -> str:
        return f"queue dir {self.directory} segment {name}"

    def bad_header(self, name: str, problem: str, last: bool) -> None:
        """A segment whose header is not one replay reads: it goes aside
        (or, torn as a crash leaves the last one, goes)."""
        if problem.startswith("unsupported"):
            raise JournalError(f"{self.where(name)}: {problem}")
        path = os.path.join(self.directory, name)
        if problem == "torn header" and last:
            self.damage.append(
                f"{self.where(name)}: {problem}, removed the empty segment"
            )
            if self.repair:
                os.unlink(path)
        else:
            self.damage.append(
                f"{self.where(name)}: {problem}, set aside as {name}.bad"
            )
            if self.repair:
                os.replace(path, path + ".bad")

    def cut(
        self, segment: _Segment, name: str, buf: bytes, damage: _Damage, last: bool
    ) -> None:
        """Cut a segment at its damaged record (read into ``buf``), keeping
        the bytes cut aside unless a crash explains them."""
        end = damage.offset
        cut = len(buf) - end
        # What a crash mid-write leaves: the record runs past the end of the
        # file, or into the zeros written ahead.
        tail = last and (
            damage.record_end >= len(buf) or _zeros_from(buf, damage.record_end)
        )
        message = (
            f"{self.where(name)}: {damage.reason} at offset {end}, cut {cut} bytes"
        )
        if not tail:
            saved = f"{name}.cut-{end}"
            message += f" (saved as {saved})"
            if self.repair:
                saved_path = os.path.join(self.directory, saved)
                with open(saved_path, "wb", opener=private_opener) as f:
                    f.write(buf[end:])
                    f.flush()
                    os.fsync(f.fileno())
        self.damage.append(message)
        segment.size = end
        segment.file.offset = end
        if self.repair:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(summary_path(segment.file.path))
            os.truncate(segment.file.path, end)
