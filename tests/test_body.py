"""Tests for erq.journal.body: the body of a replayed queue, in memory up
to its limit and counted behind on disk past it."""

from __future__ import annotations

from erq.journal import Journal
from erq.journal.body import _Body
from erq.journal.replay import _Replay
from tests.support import JournalTestCase, ids, item


class BodyTests(JournalTestCase):
    """Replay of 20 items of 100 bytes with room for 5: 1 to 5 in memory,
    6 to 20 behind."""

    def body(self) -> _Body:
        journal = Journal(self.dir, self.fake_writer(), sync="never")
        for i in range(1, 21):
            journal.add(item(i, 100))
        journal.close()
        replay = _Replay(self.dir, 500, repair=False)
        replay.run()
        body = replay.body
        self.assertEqual(ids(list(body.window.values())), [1, 2, 3, 4, 5])
        self.assertEqual((body.behind_count, body.behind_bytes), (15, 1500))
        self.assertEqual((body.window_last, body.max_native), (5, 20))
        return body

    def test_taken_from_memory_makes_room(self) -> None:
        body = self.body()
        got = body.take(1)
        assert got is not None
        self.assertEqual(got.id, 1)
        self.assertEqual(ids(list(body.window.values())), [2, 3, 4, 5, 6])
        self.assertEqual((body.behind_count, body.behind_bytes), (14, 1400))

    def test_taken_from_behind_reads_up_to_it(self) -> None:
        body = self.body()
        got = body.take(8)
        assert got is not None
        self.assertEqual(got.id, 8)
        self.assertEqual(ids(list(body.window.values())), [1, 2, 3, 4, 5, 6, 7])
        self.assertEqual(body.window_last, 8)
        self.assertEqual((body.behind_count, body.behind_bytes), (12, 1200))

    def test_an_unknown_item_is_not_taken(self) -> None:
        body = self.body()
        self.assertIsNone(body.take(21))
        self.assertEqual(body.behind_count, 15)

    def test_dropped_behind_is_skipped(self) -> None:
        body = self.body()
        self.assertTrue(body.drop(6, 100))
        self.assertFalse(body.drop(6, 100))
        self.assertFalse(body.drop(2, 100))
        self.assertEqual((body.behind_count, body.behind_bytes), (14, 1400))
        body.take(1)
        self.assertEqual(ids(list(body.window.values())), [2, 3, 4, 5, 7])
        self.assertEqual(body.skip, set())

    def test_the_last_behind_dropped_ends_reading(self) -> None:
        body = self.body()
        for i in range(6, 21):
            self.assertTrue(body.drop(i, 100))
        self.assertEqual((body.behind_count, body.behind_bytes), (0, 0))
        self.assertIsNone(body.reader)
        self.assertEqual(body.skip, set())
        self.assertFalse(body.is_behind(7))

    def test_flush_drops_memory_and_behind(self) -> None:
        body = self.body()
        body.flush()
        self.assertEqual(body.window, {})
        self.assertEqual((body.mem_bytes, body.behind_count), (0, 0))
        self.assertIsNone(body.reader)
        self.assertIsNone(body.take(8))
