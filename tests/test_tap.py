"""erq.tap: twistd's options, the endpoint listened on, and the server's
start, failures included."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from erq.config import MiB
from erq.service import QueueService
from erq.tap import Options, StartupError, makeService


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def parse(*arguments: str) -> Options:
    options = Options()
    options.parseOptions(list(arguments))
    return options


# -- options ---------------------------------------------------------------


class OptionTests(SynchronousTestCase):
    """An option takes every value that its key in the file takes."""

    def test_max_memory_size_is_a_size(self) -> None:
        for text, size in (("1048576", MiB), ("128MiB", 128 * MiB), ("1 KiB", 1024)):
            config = parse("--max-memory-size", text).config
            self.assertEqual(config.defaults.max_memory_size, size, text)

    def test_max_connections_may_be_unlimited(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, "[server]\nmax_connections = 5\n")
        self.assertEqual(parse("-c", path).config.server.max_connections, 5)
        options = parse("-c", path, "--max-connections", "unlimited")
        self.assertIsNone(options.config.server.max_connections)
        self.assertEqual(
            parse("--max-connections", "7").config.server.max_connections, 7
        )
        # And it stays lifted when the file is read again.
        queues = makeService(options).getServiceNamed("erq")
        assert isinstance(queues, QueueService)
        queues.reload()
        self.assertIsNone(queues.max_connections)

    def test_sync_takes_what_sync_journal_takes(self) -> None:
        for text, policy in (("always", "always"), ("never", "never"), ("50ms", 0.05)):
            config = parse("--sync", text).config
            self.assertEqual(config.defaults.sync_journal, policy)

    def test_every_error_names_its_option_and_value(self) -> None:
        for option, value, reason in (
            ("--max-memory-size", "12XB", "unknown size unit XB"),
            ("--max-memory-size", "-1", "expected a non-negative size"),
            ("--max-connections", "lots", 'positive integer or "unlimited"'),
            ("--sync", "sometimes", 'expected "always", "never" or a duration'),
            ("--sync", "0ms", "expected a positive duration"),
            ("--port", "70000", "port number up to 65535"),
            ("--port", "", "a port number or an endpoint description"),
            ("--data-dir", "", "expected a directory path"),
        ):
            with self.assertRaises(StartupError) as raised:
                parse(option, value)
            message = str(raised.exception)
            shown = value or '""'
            self.assertTrue(message.startswith(f"erq: {option} {shown}: "), message)
            self.assertIn(reason, message)
            self.assertNotIn("\n", message)
            self.assertEqual(raised.exception.code, message)

    def test_unknown_option_is_one_line(self) -> None:
        with self.assertRaises(StartupError) as raised:
            parse("--frobnicate")
        self.assertEqual(
            str(raised.exception),
            "erq: option --frobnicate not recognized"
            " (twistd erq --help lists the options)",
        )

    def test_a_bad_configuration_file_is_one_line(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, "[server]\nport = 'x'\n")
        with self.assertRaises(StartupError) as raised:
            parse("-c", path)
        message = str(raised.exception)
        self.assertTrue(message.startswith(f"erq: {path} line 2: server.port: "))
        self.assertNotIn("\n", message)
