"""Tests for erq.journal.files: the zeros written ahead of synced appends,
and what the writer learns of a segment file as it opens it."""

from __future__ import annotations

import os

from erq.journal import (
    HEADER_SIZE,
    Journal,
    files,
    readbehind,
)
from tests.support import (
    JournalTestCase,
    ids,
    item,
    segment_files,
)


class ZerosAheadTests(JournalTestCase):
    """A segment synced after every batch is written with zeros ahead of its
    appends, so that an fsync need not also record a new file size."""

    def path(self) -> str:
        return os.path.join(self.dir, "00000001.seg")

    def tail(self, path: str, start: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read()

    def test_synced_appends_have_zeros_ahead(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        end = journal.size
        # Written after the first append, and the later ones went over them.
        zeroed = HEADER_SIZE + 8 + 29 + 10 + files._ZERO_AHEAD
        self.assertEqual(os.path.getsize(self.path()), zeroed)
        self.assertEqual(self.tail(self.path(), end), bytes(zeroed - end))
        # Closing drops them: the file ends where its records do.
        journal.close()
        self.assertEqual(os.path.getsize(self.path()), end)

    def test_unsynced_appends_have_none(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="never")
        for i in range(1, 11):
            journal.add(item(i))
        self.assertEqual(os.path.getsize(self.path()), journal.size)

    def test_zeros_stop_at_the_end_of_the_segment(self) -> None:
        segment_size = 400
        journal = Journal(
            self.dir, self.fake_writer(), sync="always", segment_size=segment_size
        )
        for i in range(1, 31):
            journal.add(item(i))
        files = segment_files(self.dir)
        self.assertGreater(len(files), 2)
        # Full segments are closed without their zeros.
        for name in files[:-1]:
            with open(os.path.join(self.dir, name), "rb") as f:
                self.assertNotEqual(f.read()[-1:], b"\0")
        current = journal._current
        assert current is not None
        self.assertEqual(
            os.path.getsize(current.file.path), max(segment_size, current.size)
        )

    def test_replay_takes_the_zeros_as_the_end(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        # Not closed: what a crash leaves.
        size = os.path.getsize(self.path())
        again, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 11)))
        self.assertEqual(replayed.damage, [])
        self.assertEqual(os.path.getsize(self.path()), size)
        # Appends go on where the records end, and the next replay is clean.
        again.add(item(11))
        again.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 12)))
        self.assertEqual(replayed.damage, [])

    def test_a_record_torn_into_the_zeros_is_a_torn_tail(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        end = journal.size
        record = 8 + 29 + 10
        # The last record's second half never reached the disk.
        with open(self.path(), "r+b") as f:
            f.seek(end - record // 2)
            f.write(bytes(record // 2))
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 10)))
        [message] = replayed.damage
        self.assertIn(f"(checksum mismatch) at offset {end - record}", message)
        self.assertNotIn("saved", message)
        self.assertEqual(os.path.getsize(self.path()), end - record)

    def test_zeros_with_a_record_after_them_are_damage(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i))
        end = journal.size
        stray = 1000
        with open(self.path(), "r+b") as f:
            f.seek(end + stray)
            f.write(b"x")
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 11)))
        [message] = replayed.damage
        self.assertIn(f"at offset {end}", message)
        self.assertIn(f"saved as 00000001.seg.cut-{end}", message)

    def test_read_behind_stops_at_the_zeros(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        for i in range(1, 11):
            journal.add(item(i), in_memory=False)
        items, cursor = readbehind._read_behind(
            [(1, self.path())], (1, HEADER_SIZE), 100, 1 << 20, frozenset()
        )
        self.assertEqual(ids(items), list(range(1, 11)))
        self.assertEqual(cursor, (1, HEADER_SIZE))


class DeviceTests(JournalTestCase):
    """A segment file's device is asked once, as the writer opens it (see
    "Shared flushes" in ``erq.journal.engine``)."""

    def test_an_opened_segment_knows_its_device(self) -> None:
        journal = Journal(self.dir, self.fake_writer(), sync="always")
        journal.add(item(1))
        segment = journal._current
        assert segment is not None
        self.assertEqual(segment.file.device, os.stat(self.dir).st_dev)

    def test_a_device_that_cannot_be_told(self) -> None:
        # Not known: the engine asks it itself.
        self.assertEqual(files.FileOps().device(-1), -1)
