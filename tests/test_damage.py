"""Tests for erq.journal.damage: what replay cuts off a damaged segment,
what it keeps aside, and what it says."""

from __future__ import annotations

import os

from erq.journal import FILE_HEADER, HEADER_SIZE, Journal
from erq.journal.damage import _Cutter
from erq.journal.files import _SegmentFile
from erq.journal.records import _Damage
from erq.journal.segments import _Segment
from tests.support import JournalTestCase, ids, item, segment_files


class DamageTests(JournalTestCase):
    def write_items(self, count: int, segment_size: int = 16 << 20) -> None:
        journal = Journal(
            self.dir, self.fake_writer(), sync="never", segment_size=segment_size
        )
        for i in range(1, count + 1):
            journal.add(item(i, 20))
        journal.close()

    def test_torn_tail(self) -> None:
        self.write_items(10)
        path = os.path.join(self.dir, "00000001.seg")
        size = os.path.getsize(path)
        record = 8 + 29 + 20
        os.truncate(path, size - record // 2)
        journal, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 10)))
        [message] = replayed.damage
        self.assertIn("torn record", message)
        self.assertIn(f"offset {size - record}", message)
        self.assertIn(f"cut {record - record // 2} bytes", message)
        self.assertEqual(os.path.getsize(path), size - record)
        self.assertEqual(os.listdir(self.dir).count("00000001.seg.cut"), 0)
        # Writing goes on after the cut, and the next replay is clean.
        journal.add(item(replayed.next_id))
        journal.close()
        _, again = self.replay()
        self.assertEqual(ids(again.items), list(range(1, 11)))
        self.assertEqual(again.damage, [])

    def test_torn_header(self) -> None:
        self.write_items(3, segment_size=100)
        files = segment_files(self.dir)
        with open(os.path.join(self.dir, "00000099.seg"), "wb") as f:
            f.write(FILE_HEADER[:3])
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3])
        self.assertIn("torn header", replayed.damage[0])
        self.assertEqual(segment_files(self.dir), files)

    def test_flipped_byte_in_a_middle_segment(self) -> None:
        """Damage in an old segment: records before it are kept, the rest
        of that segment is cut (and saved), and later segments still
        count."""
        self.write_items(50, segment_size=600)
        files = segment_files(self.dir)
        self.assertGreater(len(files), 3)
        path = os.path.join(self.dir, files[1])
        with open(path, "rb") as f:
            raw = bytearray(f.read())
        record = 8 + 29 + 20
        in_segment = (len(raw) - HEADER_SIZE) // record
        first_id = 1 + (os.path.getsize(os.path.join(self.dir, files[0])) - 8) // record
        damaged_at = HEADER_SIZE + record * 2
        raw[damaged_at + 20] ^= 0x40
        with open(path, "wb") as f:
            f.write(raw)
        _, replayed = self.replay()
        lost = set(range(first_id + 2, first_id + in_segment))
        self.assertEqual(
            ids(replayed.items), [i for i in range(1, 51) if i not in lost]
        )
        [message] = replayed.damage
        self.assertIn(f"segment {files[1]}: corrupt record", message)
        self.assertIn(f"offset {damaged_at}", message)
        self.assertIn(f"cut {len(raw) - damaged_at} bytes", message)
        self.assertEqual(os.path.getsize(path), damaged_at)
        with open(os.path.join(self.dir, f"{files[1]}.cut-{damaged_at}"), "rb") as f:
            self.assertEqual(f.read(), bytes(raw[damaged_at:]))

    def test_flipped_byte_in_the_last_segment(self) -> None:
        self.write_items(10)
        path = os.path.join(self.dir, "00000001.seg")
        with open(path, "r+b") as f:
            f.seek(HEADER_SIZE + 57 * 4 + 40)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 1]))
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3, 4])
        self.assertIn("checksum mismatch", replayed.damage[0])

    def test_foreign_file(self) -> None:
        self.write_items(3)
        with open(os.path.join(self.dir, "00000002.seg"), "wb") as f:
            f.write(b"hello, this is not a journal")
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3])
        self.assertIn("not an erq segment", replayed.damage[0])
        self.assertTrue(os.path.exists(os.path.join(self.dir, "00000002.seg.bad")))


class CutterTests(JournalTestCase):
    """The cutter on its own: with ``repair`` off (the command-line tool)
    it only says what it would do."""

    def segment(self) -> tuple[_Segment, bytes]:
        os.makedirs(self.dir)
        buf = FILE_HEADER + b"x" * 100
        path = os.path.join(self.dir, "00000001.seg")
        with open(path, "wb") as f:
            f.write(buf)
        return _Segment(1, _SegmentFile(path, len(buf), False), len(buf)), buf

    def test_a_look_changes_nothing(self) -> None:
        segment, buf = self.segment()
        damage: list[str] = []
        cutter = _Cutter(self.dir, False, damage)
        cutter.cut(segment, "00000001.seg", buf, _Damage(20, "torn record", 30), False)
        cutter.bad_header("00000002.seg", "not an erq segment", False)
        self.assertEqual(segment.size, 20)
        self.assertEqual(len(damage), 2)
        self.assertIn("(saved as 00000001.seg.cut-20)", damage[0])
        self.assertIn("set aside as 00000002.seg.bad", damage[1])
        self.assertEqual(os.listdir(self.dir), ["00000001.seg"])
        self.assertEqual(os.path.getsize(segment.file.path), len(buf))

    def test_a_crashed_tail_is_only_cut(self) -> None:
        segment, buf = self.segment()
        damage: list[str] = []
        cutter = _Cutter(self.dir, True, damage)
        cutter.cut(segment, "00000001.seg", buf, _Damage(20, "torn record", 200), True)
        [message] = damage
        self.assertNotIn("saved", message)
        self.assertEqual(os.listdir(self.dir), ["00000001.seg"])
        self.assertEqual(os.path.getsize(segment.file.path), 20)
