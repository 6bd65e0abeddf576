"""Tests for erq.names: the one rule of which names may name a queue, for
names from the wire (bytes) and from the settings (str), and fanout."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.names import MAX_QUEUE_NAME, fanout_parent, valid_queue_name

GOOD = ["a", "q", "orders+audit", "a.b", "x" * MAX_QUEUE_NAME, "!~", "a..b", "0"]
BAD = [
    "",
    ".hidden",
    ".",
    "..",
    "a b",
    "a/b",
    "/",
    "x" * (MAX_QUEUE_NAME + 1),
    "tab\there",
    "new\nline",
    "nul\x00",
    "del\x7f",
]


class QueueNameRuleTests(SynchronousTestCase):
    def test_limit(self) -> None:
        self.assertEqual(MAX_QUEUE_NAME, 250)

    def test_good_names(self) -> None:
        for name in GOOD:
            self.assertTrue(valid_queue_name(name), name)
            self.assertTrue(valid_queue_name(name.encode("ascii")), name)

    def test_bad_names(self) -> None:
        for name in BAD:
            self.assertFalse(valid_queue_name(name), name)
            self.assertFalse(valid_queue_name(name.encode("ascii")), name)

    def test_every_byte(self) -> None:
        """Printable ASCII but ``/`` may stand anywhere; nothing else may."""
        for byte in range(256):
            allowed = 0x21 <= byte <= 0x7E and byte != 0x2F
            self.assertEqual(valid_queue_name(b"q" + bytes([byte])), allowed, byte)
            text = "q" + chr(byte)
            self.assertEqual(valid_queue_name(text), allowed, byte)

    def test_outside_ascii(self) -> None:
        for name in ["caf\xe9", "\u2603", "q\U0001f600"]:
            self.assertFalse(valid_queue_name(name), name)
            self.assertFalse(valid_queue_name(name.encode("utf-8")), name)
        self.assertFalse(valid_queue_name(b"\xff"))

    def test_length_counts_bytes_and_characters_alike(self) -> None:
        self.assertTrue(valid_queue_name(b"x" * MAX_QUEUE_NAME))
        self.assertFalse(valid_queue_name(b"x" * (MAX_QUEUE_NAME + 1)))


class FanoutParentTests(SynchronousTestCase):
    def test_children(self) -> None:
        self.assertEqual(fanout_parent("orders+audit"), "orders")
        self.assertEqual(fanout_parent("orders+a+b"), "orders")
        self.assertEqual(fanout_parent("orders+"), "orders")

    def test_not_children(self) -> None:
        for name in ["orders", "+audit", "+"]:
            self.assertIsNone(fanout_parent(name), name)

    def test_still_importable_from_config(self) -> None:
        from erq import config

        self.assertIs(config.fanout_parent, fanout_parent)
        self.assertIs(config.valid_queue_name, valid_queue_name)
