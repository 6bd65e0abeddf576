"""Tests for erq.values: the checks of sizes, durations, sync policies and
command-line values."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.config import MiB
from erq.values import (
    parse_duration,
    parse_option,
    parse_size,
    parse_sync_journal,
)


class ValueTests(SynchronousTestCase):
    def test_sizes(self) -> None:
        cases: list[tuple[int | str, int]] = [
            (0, 0),
            (1000, 1000),
            ("512B", 512),
            ("64KiB", 64 * 1024),
            ("128MiB", 128 * MiB),
            ("1GiB", 1024 * MiB),
            ("2TiB", 2 * 1024 * 1024 * MiB),
            ("1.5KiB", 1536),
            ("128 MiB", 128 * MiB),
        ]
        for given, expected in cases:
            self.assertEqual(parse_size(given), expected, given)

    def test_bad_sizes(self) -> None:
        for given in [-1, "-1KiB", "12", "12XB", "0.3B", "1.5", "12 KiB ", "KiB"]:
            self.assertRaises(ValueError, parse_size, given)

    def test_decimal_units_refused(self) -> None:
        """KB, MB, GB would leave the reader guessing 1000 or 1024."""
        for unit, binary in [("KB", "KiB"), ("MB", "MiB"), ("GB", "GiB")]:
            error = self.assertRaises(ValueError, parse_size, "12" + unit)
            self.assertIn(f'"12{binary}"', str(error))

    def test_durations(self) -> None:
        cases = [
            ("250ms", 0.25),
            ("30s", 30.0),
            ("1.5s", 1.5),
            ("5m", 300.0),
            ("1h", 3600.0),
            ("7d", 7 * 86400.0),
            ("10 s", 10.0),
        ]
        for given, expected in cases:
            self.assertEqual(parse_duration(given), expected, given)

    def test_bad_durations(self) -> None:
        for given in ["30", "30x", "0s", "-1s", "s", "1h30m", ""]:
            self.assertRaises(ValueError, parse_duration, given)

    def test_sync_journal(self) -> None:
        self.assertEqual(parse_sync_journal("always"), "always")
        self.assertEqual(parse_sync_journal("never"), "never")
        self.assertEqual(parse_sync_journal("50ms"), 0.05)
        self.assertEqual(parse_sync_journal("2s"), 2.0)
        for given in ["sometimes", "Always", "0ms", "50"]:
            self.assertRaises(ValueError, parse_sync_journal, given)

    def test_option_integers_are_what_a_file_would_hold(self) -> None:
        """Command-line text that is an integer is checked as the TOML
        integer, anything else as the TOML string."""
        self.assertEqual(parse_option("max_memory_size", "1048576"), MiB)
        self.assertEqual(parse_option("max_memory_size", "1MiB"), MiB)
        self.assertIsNone(parse_option("max_items", "unlimited"))
        self.assertEqual(parse_option("max_items", "+7"), 7)
        self.assertEqual(parse_option("expiry_sweep", "250ms"), 0.25)
        error = self.assertRaises(ValueError, parse_option, "max_items", "-1")
        self.assertIn("non-negative integer", str(error))
        error = self.assertRaises(ValueError, parse_option, "expiry_sweep", "5")
        self.assertIn('"5s"', str(error))

    def test_option_text_keys_stay_text(self) -> None:
        """A directory or a queue may be named with digits."""
        self.assertEqual(parse_option("data_dir", "2024"), "2024")
        self.assertEqual(parse_option("expire_to_queue", "42"), "42")
        self.assertIsNone(parse_option("expire_to_queue", ""))
