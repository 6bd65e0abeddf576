"""Tests for erq.journal.names: queue names to directory names and back."""

from __future__ import annotations

import os
import string

from twisted.trial.unittest import SynchronousTestCase

from erq.journal import (
    Journal,
    JournalWriter,
    list_queue_dirs,
    queue_dir,
    queue_dir_name,
    queue_name_from_dir,
)
from erq.queue import Item
from tests.support import FakeReactor, SyncPool


class QueueDirNameTests(SynchronousTestCase):
    def test_plain_names_stay_readable(self) -> None:
        for name in ("jobs", "orders+audit", "a.b-c_d", "0"):
            self.assertEqual(queue_dir_name(name), name)
            self.assertEqual(queue_name_from_dir(name), name)

    def test_escapes(self) -> None:
        self.assertEqual(queue_dir_name("Jobs"), "^jobs")
        self.assertEqual(queue_dir_name("a%b"), "a%25b")
        self.assertEqual(queue_dir_name("a^b~c"), "a%5eb%7ec")
        self.assertEqual(queue_dir_name("x.y"), "x.y")

    def test_round_trip_every_character(self) -> None:
        printable = [c for c in string.printable if "!" <= c <= "~" and c != "/"]
        for c in printable:
            for name in (c + "q", "q" + c):
                if name.startswith("."):
                    continue
                encoded = queue_dir_name(name)
                self.assertEqual(queue_name_from_dir(encoded), name)
                self.assertEqual(encoded, encoded.lower())
                self.assertNotIn("/", encoded)
                self.assertFalse(encoded.startswith("."))

    def test_no_collisions_after_case_folding(self) -> None:
        names = ["abc", "ABC", "Abc", "aBc", "^abc", "%5eabc", "a%41", "aA"]
        folded = {queue_dir_name(name).lower() for name in names}
        self.assertEqual(len(folded), len(names))

    def test_long_names(self) -> None:
        upper = "Q" * 250
        lower = "q" * 250
        weird = "%" * 250
        encoded = {queue_dir_name(n) for n in (upper, lower, weird)}
        self.assertEqual(len(encoded), 3)
        for name in encoded:
            self.assertLessEqual(len(name.encode()), 255)
        self.assertIsNone(queue_name_from_dir(queue_dir_name(upper)))
        self.assertNotEqual(queue_dir_name(upper), queue_dir_name(upper[:-1] + "R"))
        self.assertEqual(queue_dir_name(lower), lower)

    def test_bad_names(self) -> None:
        for name in ("", ".", "..", ".hidden", "a/b", "a b", "x" * 251, "caf\xe9"):
            self.assertRaises(ValueError, queue_dir_name, name)
        for dir_name in ("A", "a%4", "a%4G", "a^", "a^B", "a~b", "a b", "a%61"):
            self.assertIsNone(queue_name_from_dir(dir_name))

    def test_list_queue_dirs(self) -> None:
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        writer = JournalWriter(FakeReactor(), SyncPool())  # type: ignore[arg-type]
        names = ["jobs", "Jobs", "Z" * 250, "a+b"]
        for n, name in enumerate(names):
            journal = Journal(queue_dir(data_dir, name), writer, "never", name=name)
            journal.add(Item(1, b"x" * n, 0, None, 0.0))
            journal.close()
        # Not queues: a file, a hidden directory, a directory no name maps to.
        open(os.path.join(data_dir, ".lock"), "w").close()
        os.makedirs(os.path.join(data_dir, ".trash"))
        os.makedirs(os.path.join(data_dir, "NOT A QUEUE"))
        found = list_queue_dirs(data_dir)
        self.assertEqual(sorted(found), sorted(names))
        for name, path in found.items():
            self.assertEqual(path, queue_dir(data_dir, name))
        self.assertEqual(list_queue_dirs(os.path.join(data_dir, "missing")), {})

    def test_hashed_needs_a_name(self) -> None:
        writer = JournalWriter(FakeReactor(), SyncPool())  # type: ignore[arg-type]
        path = queue_dir(self.mktemp(), "Z" * 250)
        self.assertRaises(ValueError, Journal, path, writer)
