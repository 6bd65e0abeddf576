"""Tests for erq.journal.takeover: a journal takes over what replay found
and goes on from it."""

from __future__ import annotations

from erq.journal import Journal
from tests.support import JournalTestCase, ids, item, segment_files


class TakeoverTests(JournalTestCase):
    """After ``Journal.replay`` the journal goes on where replay stopped."""

    def test_no_second_replay(self) -> None:
        journal, _ = self.replay()
        with self.assertRaises(RuntimeError):
            journal.replay(1 << 20)

    def test_open_reads_come_back_at_head_in_order(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 8)]
        for it in items:
            journal.add(it)
        journal.remove(items[0])
        journal.open(items[1])
        journal.open(items[2])
        journal.remove(items[2])
        journal.open(items[3])
        journal.open(items[4])
        journal.close()
        journal2, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [2, 4, 5, 6, 7])
        self.assertEqual(replayed.reopened, 3)
        # The replay journaled the aborts: a second replay agrees, and the
        # items are no longer open.
        journal2.close()
        _, again = self.replay()
        self.assertEqual(ids(again.items), [2, 4, 5, 6, 7])
        self.assertEqual(again.reopened, 0)

    def test_appends_to_last_segment_after_replay(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        journal.add(item(1))
        journal.close()
        journal, replayed = self.replay()
        journal.add(item(replayed.next_id))
        journal.close()
        self.assertEqual(segment_files(self.dir), ["00000001.seg"])
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2])
