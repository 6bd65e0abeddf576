"""Tests for erq.items: the item and the journal interface a queue uses."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.items import Item, QueueJournal
from erq.journal import Journal
from tests.support import FakeJournal


class ItemTests(SynchronousTestCase):
    def test_an_item_holds_no_dict(self) -> None:
        item = Item(3, b"data", 7, None, 1.5)
        self.assertEqual(
            (item.id, item.data, item.flags, item.expiry, item.added),
            (3, b"data", 7, None, 1.5),
        )
        self.assertFalse(hasattr(item, "__dict__"))
        self.assertEqual(repr(item), "<Item 3 4 bytes flags=7>")

    def test_the_journal_and_the_fake_have_the_whole_interface(self) -> None:
        wanted = {
            name
            for name in dir(QueueJournal)
            if not name.startswith("_") and name not in dir(object)
        }
        self.assertIn("erase", wanted)
        for journal in (Journal, FakeJournal):
            missing = {name for name in wanted if not hasattr(journal, name)}
            self.assertEqual(missing, set(), journal)
