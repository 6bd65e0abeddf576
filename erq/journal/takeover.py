"""``Journal.replay``: a journal takes over the state replay found (see
``erq.journal.replay``) and goes on from it.

What replay found becomes the journal's: its segments and their index, the
head (open reads first, in id order, then the aborted items), the cursor
of the items left behind memory, the segment to append to.  The open reads
are then journaled as aborted, so that the disk says what the queue does,
compaction runs once, and the closed segments replay had to read get the
summary they lack, once the server runs.
"""

from __future__ import annotations

from erq.items import Item
from erq.journal.base import _JournalBase
from erq.journal.files import _Mkdir, _Summarize
from erq.journal.names import _read_name_file
from erq.journal.records import _abort_record
from erq.journal.replay import Replayed, _Replay
from erq.journal.segments import _Segment
from erq.journal.summaries import SummaryBuilder


def _item_id(item: Item) -> int:
    return item.id


class _Replaying(_JournalBase):
    """``Journal.replay``: the journal takes over what replay found."""

    def replay(self, max_memory_size: int) -> Replayed:
        """Read every segment and give back the queue's state.

        Synchronous: meant for service start, before the server listens.
        Damaged records are cut off (see ``erq.journal.damage``); open reads
        come back at the head and are journaled as aborted.
        """
        if self._replayed or self._segments or self._chunk is not None:
            raise RuntimeError("replay() must come first, and only once")
        self._replayed = True
        # At least one item in memory, so removals at the head find it.
        replay = _Replay(self.directory, max(max_memory_size, 1), repair=True)
        replay.run()
        self._dir_ready = replay.dir_exists
        if replay.dir_exists and self._name is not None:
            if _read_name_file(self.directory) != self._name:
                self._add_step(_Mkdir(self.directory, self._name, False))
        opened = sorted(replay.open.values(), key=_item_id)
        head = self._take_state(replay, opened)
        self._abort_opened(opened)
        current = self._current
        self._compact()
        self._summarize_lacking(replay, current)
        self._wake()
        return Replayed(
            items=head + list(replay.body.window.values()),
            behind_items=self._behind_count,
            behind_bytes=self._behind_bytes,
            next_id=replay.max_id + 1,
            damage=replay.damage,
            reopened=len(opened),
            segments=len(replay.segments),
            summarized=replay.summarized,
        )

    def _take_state(self, replay: _Replay, opened: list[Item]) -> list[Item]:
        """Take replay's segments, head and items behind over: the head."""
        self._segments = replay.segments
        self._firsts = replay.firsts
        self._ranged = replay.ranged
        body = replay.body
        self._max_native = body.max_native
        self._next_number = replay.max_number + 1
        aborted = replay.aborted_head()
        head = opened + aborted
        self._prefix = {item.id: item for item in head}
        self._abort_seqs = {item.id: replay.prefix_seqs[item.id] for item in aborted}
        self._next_seq = replay.max_seq + 1
        self._forwarded = {
            item_id: segment
            for item_id, segment in replay.forwarded.items()
            if item_id in self._prefix or item_id in body.window
        }
        for item in head:
            segment = self._locate(item.id)
            if segment is not None:
                segment.pinned += 1
        if body.behind_count and body.reader is not None:
            self._behind_count = body.behind_count
            self._behind_bytes = body.behind_bytes
            self._cursor = (
                replay.segments[body.reader.index].number,
                body.reader.pos,
            )
            self._skip = body.skip
        self._size = sum(s.size for s in self._segments)
        if self._segments and self._segments[-1].size < self._segment_size:
            self._current = self._segments[-1]
            if replay.last_summary is not None:
                # Its summary goes on as records are appended to it.
                self._current.summary = SummaryBuilder.resume(
                    replay.last_summary, self._firsts
                )
        return head

    def _abort_opened(self, opened: list[Item]) -> None:
        """Journal the open reads as aborted, the first one last: it is
        the head."""
        for item in reversed(opened):
            seq = self._next_seq
            self._next_seq += 1
            self._abort_seqs[item.id] = seq
            summary = self._append(_abort_record(item.id, seq))[0].summary
            if summary is not None:
                summary.abort(item.id, seq)

    def _summarize_lacking(self, replay: _Replay, current: _Segment | None) -> None:
        """Closed segments read the slow way get the summary they lack, once
        the server runs: those compaction kept (the current one, if
        forwarding filled it, got its own as it closed)."""
        lacking = {
            segment.number
            for segment in replay.segments
            if segment.number not in replay.summary_numbers and segment is not current
        }
        firsts = list(self._firsts)
        for segment in self._segments:
            if segment.number in lacking:
                self._add_step(
                    _Summarize(segment.file.path, SummaryBuilder(list(firsts)))
                )
