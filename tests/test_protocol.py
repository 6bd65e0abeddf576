"""Tests for erq.protocol: the memcache text protocol as docs/protocol.md states it."""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from erq import __version__
from erq.config import Config, QueueSettings, ServerSettings, parse_config
from erq.protocol import MAX_BACKLOG, MAX_HELD_OUTPUT, QueueFactory
from erq.queue import Item, Queue
from erq.service import SHUTDOWN_GRACE
from tests.support import (
    Client,
    FakeJournal,
    HandWrittenService,
    ProtocolTestCase,
    set_line,
    value,
)

SERVER_STAT_NAMES = (
    "uptime time version curr_items total_items bytes curr_connections "
    "total_connections cmd_get cmd_set cmd_peek get_hits get_misses bytes_read "
    "bytes_written queue_creates queue_deletes queue_expires auth_cmds auth_errors "
    "client_errors rejected_connections server_status"
).split()

QUEUE_STAT_NAMES = (
    "items bytes total_items logsize expired_items mem_items mem_bytes age "
    "discarded waiters open_transactions transactions canceled_transactions "
    "total_flushes"
).split()


class FramingTests(ProtocolTestCase):
    def test_crlf_and_bare_lf(self) -> None:
        self.assertEqual(self.ask(b"set q 1 0 2\nab\r\n"), b"STORED\r\n")
        self.assertEqual(self.ask(b"get q\n"), value(b"q", b"ab", 1) + b"END\r\n")
        self.assertEqual(self.ask(b"version\r\n"), b"VERSION %s\r\n" % b"1.0.0")

    def test_spaces(self) -> None:
        """Several spaces separate like one; leading and trailing ones go."""
        self.assertEqual(self.ask(b"  set   q  5   0  2 \r\nab\r\n"), b"STORED\r\n")
        self.assertEqual(self.ask(b"set q 0 0 2 \r\ncd\r\n"), b"STORED\r\n")
        self.assertEqual(
            self.ask(b" get   q    q  \r\n"),
            value(b"q", b"ab", 5) + value(b"q", b"cd") + b"END\r\n",
        )
        self.assertIn(b"STAT cmd_set 2\r\n", self.ask(b"stats \r\n"))

    def test_tab_is_not_a_separator(self) -> None:
        self.assertEqual(self.ask(b"version\t\r\n"), b"ERROR\r\n")
        self.assertEqual(self.ask(b"get\tq\r\n"), b"ERROR\r\n")
        self.assertEqual(self.ask(b"get q\tr\r\n"), b"CLIENT_ERROR bad queue name\r\n")
        self.assertFalse(self.client.closed)

    def test_command_words_ignore_case_names_do_not(self) -> None:
        self.assertEqual(self.ask(b"SET Q 0 0 1\r\na\r\n"), b"STORED\r\n")
        self.assertEqual(self.ask(b"Get q\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"GET Q\r\n"), value(b"Q", b"a") + b"END\r\n")
        self.assertEqual(self.ask(b"VeRsIoN\r\n"), b"VERSION %s\r\n" % b"1.0.0")

    def test_line_of_2048_bytes(self) -> None:
        line = b"get q/" + b"x" * (2048 - 6)
        self.assertEqual(len(line), 2048)
        self.assertEqual(self.ask(line + b"\r\n"), b"END\r\n")
        self.assertEqual(self.ask(line + b"\n"), b"END\r\n")
        self.assertEqual(self.ask(line + b"\r"), b"")
        self.assertEqual(self.ask(b"\n"), b"END\r\n")
        self.assertFalse(self.client.closed)

    def test_line_too_long(self) -> None:
        line = b"get q/" + b"x" * (2049 - 6)
        reply = self.ask(line + b"\r\nversion\r\n")
        self.assertEqual(reply, b"CLIENT_ERROR line too long\r\n")
        self.assertTrue(self.client.closed)

    def test_line_too_long_without_line_end(self) -> None:
        """An endless line is refused without waiting for its end."""
        self.assertEqual(self.ask(b"get q/" + b"x" * 2042 + b"\r"), b"")
        self.assertFalse(self.client.closed)
        self.client.send(b"x" * 10000)
        self.assertEqual(self.client.take(), b"CLIENT_ERROR line too long\r\n")
        self.assertTrue(self.client.closed)

    def test_line_too_long_one_byte_at_a_time(self) -> None:
        for byte in b"get " + b"q" * 2100:
            self.client.send(bytes([byte]))
        self.assertEqual(self.client.take(), b"CLIENT_ERROR line too long\r\n")
        self.assertTrue(self.client.closed)

    def test_bad_data_chunk(self) -> None:
        reply = self.ask(b"set q 0 0 5\r\nhelloXYget q\r\n")
        self.assertEqual(reply, b"CLIENT_ERROR bad data chunk\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.connect().ask(b"get q\r\n"), b"END\r\n")

    def test_bad_data_chunk_bare_lf(self) -> None:
        """The data block must end in exactly ``\\r\\n``."""
        reply = self.ask(b"set q 0 0 5\r\nhello\nX")
        self.assertEqual(reply, b"CLIENT_ERROR bad data chunk\r\n")
        self.assertTrue(self.client.closed)

    def test_data_may_hold_line_ends(self) -> None:
        data = b"a\r\nb\nget q\r\n"
        self.assertEqual(self.ask(set_line(b"q", data)), b"STORED\r\n")
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", data) + b"END\r\n")

    def test_empty_data(self) -> None:
        self.assertEqual(self.ask(b"set q 0 0 0\r\n\r\n"), b"STORED\r\n")
        self.assertEqual(self.ask(b"get q\r\n"), b"VALUE q 0 0\r\n\r\nEND\r\n")

    def assert_set_refused(self, line: bytes, reason: bytes) -> None:
        """The data block (``version``) is dropped, not run as a command."""
        reply = self.ask(line + b"\r\nversion\r\nget q\r\n")
        self.assertEqual(reply, b"CLIENT_ERROR " + reason + b"\r\nEND\r\n")
        self.assertFalse(self.client.closed)
        self.assertEqual(self.service.counters.cmd_set, 0)

    def test_set_bad_name(self) -> None:
        self.assert_set_refused(b"set q/x 0 0 7", b"bad queue name")
        self.assert_set_refused(b"set .. 0 0 7", b"bad queue name")
        self.assertEqual(list(self.service.queues), [])

    def test_set_bad_flags(self) -> None:
        self.assert_set_refused(b"set q x 0 7", b"bad flags")
        self.assert_set_refused(b"set q -1 0 7", b"bad flags")
        self.assert_set_refused(b"set q 4294967296 0 7", b"bad flags")

    def test_set_bad_exptime(self) -> None:
        self.assert_set_refused(b"set q 0 x 7", b"bad exptime")
        self.assert_set_refused(b"set q 0 - 7", b"bad exptime")
        self.assert_set_refused(b"set q 0 1.5 7", b"bad exptime")

    def test_set_bad_noreply_word(self) -> None:
        reply = self.ask(b"set q 0 0 1 please\r\na\r\nget q\r\n")
        self.assertTrue(reply.startswith(b"CLIENT_ERROR "), reply)
        self.assertTrue(reply.endswith(b"\r\nEND\r\n"), reply)
        self.assertFalse(self.client.closed)

    def test_set_refused_with_noreply_says_nothing(self) -> None:
        self.assertEqual(self.ask(b"set q x 0 1 noreply\r\na\r\nget q\r\n"), b"END\r\n")

    def test_set_missing_bytes(self) -> None:
        reply = self.ask(b"set q 0 0\r\nversion\r\n")
        self.assertTrue(reply.startswith(b"CLIENT_ERROR "), reply)
        self.assertEqual(reply.count(b"\r\n"), 1)
        self.assertGreater(len(reply.strip()), len(b"CLIENT_ERROR "))
        self.assertTrue(self.client.closed)

    def test_set_non_numeric_bytes(self) -> None:
        for bytes_word in [b"x", b"-1", b"1.0", b"+3"]:
            client = self.connect()
            reply = client.ask(b"set q 0 0 %s\r\nabc\r\nversion\r\n" % bytes_word)
            self.assertTrue(reply.startswith(b"CLIENT_ERROR "), reply)
            self.assertEqual(reply.count(b"\r\n"), 1)
            self.assertTrue(client.closed)
        self.assertEqual(self.connect().ask(b"get q\r\n"), b"END\r\n")

    def test_set_above_default_cap(self) -> None:
        reply = self.ask(b"set q 0 0 %d\r\n" % (64 * 1024 * 1024 + 1))
        self.assertEqual(reply, b"SERVER_ERROR object too large\r\n")
        self.assertTrue(self.client.closed)

    def test_set_at_default_cap_waits_for_data(self) -> None:
        self.assertEqual(self.ask(b"set q 0 0 %d\r\n" % (64 * 1024 * 1024)), b"")
        self.assertFalse(self.client.closed)

    def test_add_above_cap(self) -> None:
        reply = self.ask(b"add q 0 0 %d\r\n" % (64 * 1024 * 1024 + 1))
        self.assertEqual(reply, b"SERVER_ERROR object too large\r\n")
        self.assertTrue(self.client.closed)

    def test_queue_names(self) -> None:
        good = [b"a", b"A" * 250, b"a.b", b"x..", b"~!@#$%^&*()_-=[]{}|;:'\",<>?"]
        for name in good:
            self.assertEqual(self.ask(set_line(name, b"x")), b"STORED\r\n", name)
            self.assertEqual(
                self.ask(b"get %s\r\n" % name), value(name, b"x") + b"END\r\n"
            )
        bad = [b"A" * 251, b".", b"..", b".hidden", b"a/b", b"\xc3\xa9", b"a\x01b"]
        for name in bad:
            self.assertEqual(
                self.ask(set_line(name, b"x")), b"CLIENT_ERROR bad queue name\r\n"
            )
            commands = [b"delete %s", b"flush %s", b"flush_expired %s"]
            if b"/" not in name:
                commands.append(b"get %s")
            for command in commands:
                self.assertEqual(
                    self.ask(command % name + b"\r\n"),
                    b"CLIENT_ERROR bad queue name\r\n",
                    command % name,
                )
        self.assertEqual(
            self.ask(b"get ./t=10\r\n"), b"CLIENT_ERROR bad queue name\r\n"
        )
        # In a get, the name ends at the first ``/``, where options begin.
        self.assertEqual(self.ask(b"get a/b\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"get /t=10\r\n"), b"CLIENT_ERROR bad queue name\r\n")
        self.assertFalse(self.client.closed)
        self.assertEqual(sorted(self.service.queues), sorted(n.decode() for n in good))


class SetTests(ProtocolTestCase):
    def test_flags_kept(self) -> None:
        for flags in [0, 1, 12345, 2**32 - 1]:
            self.assertEqual(self.ask(set_line(b"q", b"x", flags)), b"STORED\r\n")
        self.assertEqual(
            self.ask(b"get q q q q\r\n"),
            value(b"q", b"x")
            + value(b"q", b"x", 1)
            + value(b"q", b"x", 12345)
            + value(b"q", b"x", 2**32 - 1)
            + b"END\r\n",
        )

    def test_set_creates_queue(self) -> None:
        self.assertIsNone(self.service.queue("q"))
        self.ask(set_line(b"q", b"x"))
        self.assertEqual(self.queue("q").items, 1)

    def test_noreply(self) -> None:
        reply = self.ask(b"set q 0 0 1 noreply\r\na\r\nget q\r\n")
        self.assertEqual(reply, value(b"q", b"a") + b"END\r\n")

    def test_relative_exptime(self) -> None:
        self.clock.advance(1_000_000_000)
        self.ask(set_line(b"q", b"x", exptime=10))
        self.clock.advance(9.9)
        self.assertEqual(
            self.ask(b"get q/peek\r\n"), value(b"q/peek", b"x") + b"END\r\n"
        )
        self.clock.advance(0.2)
        self.assertEqual(self.ask(b"get q\r\n"), b"END\r\n")
        self.assertEqual(self.queue_stat("q", "expired_items"), 1)

    def test_absolute_exptime(self) -> None:
        self.clock.advance(1_000_000_000)
        self.ask(set_line(b"q", b"x", exptime=1_000_000_005))
        self.clock.advance(4.9)
        self.assertEqual(
            self.ask(b"get q/peek\r\n"), value(b"q/peek", b"x") + b"END\r\n"
        )
        self.clock.advance(0.2)
        self.assertEqual(self.ask(b"get q\r\n"), b"END\r\n")
        self.assertEqual(self.queue_stat("q", "expired_items"), 1)

    def test_absolute_exptime_in_the_past(self) -> None:
        self.clock.advance(1_000_000_000)
        self.assertEqual(
            self.ask(set_line(b"q", b"x", exptime=2_000_000)), b"STORED\r\n"
        )
        self.assertEqual(self.ask(b"get q\r\n"), b"END\r\n")

    def test_negative_exptime(self) -> None:
        """Stored, never handed out, counted as expired."""
        self.assertEqual(self.ask(set_line(b"q", b"x", exptime=-1)), b"STORED\r\n")
        self.assertEqual(self.ask(b"get q/peek\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"get q\r\n"), b"END\r\n")
        stats = self.stats()
        self.assertEqual(stats["queue_q_expired_items"], "1")
        self.assertEqual(stats["queue_q_total_items"], "1")
        self.assertEqual(stats["queue_q_items"], "0")

    def test_expired_item_never_goes_to_a_waiter(self) -> None:
        waiter = self.connect()
        waiter.send(b"get q/t=1000\r\n")
        self.ask(set_line(b"q", b"old", exptime=-1) + set_line(b"q", b"new"))
        self.assertEqual(waiter.take(), value(b"q/t=1000", b"new") + b"END\r\n")

    def test_not_stored_when_shutting_down(self) -> None:
        self.client.send(b"shutdown\r\n")
        self.assertEqual(self.connect().ask(set_line(b"q", b"x")), b"NOT_STORED\r\n")


class GetRunTests(ProtocolTestCase):
    """The same plain get many times in a row is answered as a run, exactly
    as the gets one by one would be."""

    def test_items_in_order_then_nothing(self) -> None:
        self.ask(b"".join(set_line(b"run-a", b"%d" % i, flags=i) for i in range(4)))
        # Seen once, the line is known from then on.
        self.assertEqual(self.ask(b"get run-a\r\n"), b"VALUE run-a 0 1\r\n0\r\nEND\r\n")
        runs: list[int] = []
        take_many = self.service.take_many

        def counted(name: str, count: int, max_bytes: int) -> tuple[list[Item], bool]:
            runs.append(count)
            return take_many(name, count, max_bytes)

        self.service.take_many = counted  # type: ignore[method-assign]
        reply = self.ask(b"get run-a\r\n" * 5)
        self.assertEqual(runs, [5])
        expected = b"".join(
            b"VALUE run-a %d 1\r\n%d\r\nEND\r\n" % (i, i) for i in range(1, 4)
        )
        self.assertEqual(reply, expected + b"END\r\n" * 2)
        stats = self.stats()
        self.assertEqual(
            (stats["cmd_get"], stats["get_hits"], stats["get_misses"]), ("6", "4", "2")
        )
        self.assertEqual(self.queue("run-a").items, 0)

    def test_bare_newlines_and_other_lines_between(self) -> None:
        self.ask(set_line(b"run-b", b"x") + set_line(b"run-b", b"y"))
        reply = self.ask(b"get run-b\nget run-b\r\nversion\r\nget run-b\n" * 1)
        self.assertEqual(
            reply,
            value(b"run-b", b"x")
            + b"END\r\n"
            + value(b"run-b", b"y")
            + b"END\r\nVERSION %s\r\nEND\r\n" % __version__.encode(),
        )

    def test_expired_items_are_skipped(self) -> None:
        self.ask(set_line(b"run-c", b"old", exptime=1) + set_line(b"run-c", b"new"))
        self.clock.advance(2)
        reply = self.ask(b"get run-c\r\n" * 2)
        self.assertEqual(reply, value(b"run-c", b"new") + b"END\r\nEND\r\n")
        self.assertEqual(self.queue("run-c").expired_items, 1)

    def test_large_items_leave_in_several_writes(self) -> None:
        items = [bytes([65 + i]) * 40_000 for i in range(5)]
        self.ask(b"".join(set_line(b"run-d", item) for item in items))
        self.client.transport.writes.clear()
        reply = self.ask(b"get run-d\r\n" * 6)
        expected = b"".join(value(b"run-d", item) + b"END\r\n" for item in items)
        self.assertEqual(reply, expected + b"END\r\n")
        self.assertGreater(len(self.client.transport.writes), 1)

    def test_unknown_queue_and_fanout_child(self) -> None:
        self.assertEqual(self.ask(b"get run-none\r\n" * 3), b"END\r\n" * 3)
        self.assertIsNone(self.service.queue("run-none"))
        self.assertEqual(self.ask(b"get run-e+child\r\n" * 2), b"END\r\n" * 2)
        self.ask(set_line(b"run-e", b"fed"))
        self.assertEqual(
            self.ask(b"get run-e+child\r\n" * 2),
            value(b"run-e+child", b"fed") + b"END\r\nEND\r\n",
        )

    def test_a_waiting_get_keeps_its_place(self) -> None:
        waiting = self.connect()
        waiting.send(b"get run-f/t=1000\r\n")
        self.ask(set_line(b"run-f", b"first") + set_line(b"run-f", b"second"))
        self.assertEqual(waiting.take(), value(b"run-f/t=1000", b"first") + b"END\r\n")
        self.assertEqual(
            self.ask(b"get run-f\r\n" * 2),
            value(b"run-f", b"second") + b"END\r\nEND\r\n",
        )

    def test_with_an_open_read_here_the_rule_still_holds(self) -> None:
        self.ask(set_line(b"run-g", b"a") + set_line(b"run-g", b"b"))
        self.ask(b"get run-g/open\r\n")
        self.assertEqual(self.ask(b"get run-g\r\n" * 2), b"ERROR\r\n")
        self.assertTrue(self.client.closed)


class SetRunTests(ProtocolTestCase):
    """The same set line many times in a row, its data blocks all read, is
    stored as a run, exactly as the sets one by one would be."""

    def warm(self, name: bytes, data: bytes) -> None:
        """Set and take one item: its set line is known from then on."""
        self.assertEqual(self.ask(set_line(name, data)), b"STORED\r\n")
        self.assertEqual(self.ask(b"get %s\r\n" % name), value(name, data) + b"END\r\n")

    def count_runs(self) -> list[int]:
        runs: list[int] = []
        put_many = self.service.delivery.put_many

        def counted(
            name: str, datas: list[bytes], flags: int, exptime: int
        ) -> tuple[int, Deferred[None] | None] | None:
            runs.append(len(datas))
            return put_many(name, datas, flags, exptime)

        self.service.delivery.put_many = counted  # type: ignore[method-assign]
        return runs

    def test_stored_in_order(self) -> None:
        self.warm(b"srun-a", b"one")
        runs = self.count_runs()
        items = [b"%03d" % i for i in range(10)]
        reply = self.ask(b"".join(set_line(b"srun-a", item) for item in items))
        self.assertEqual(reply, b"STORED\r\n" * 10)
        self.assertEqual(runs, [10])
        self.assertEqual(self.stats()["cmd_set"], "11")
        got = self.ask(b"get srun-a\r\n" * 10)
        self.assertEqual(
            got, b"".join(value(b"srun-a", item) + b"END\r\n" for item in items)
        )

    def test_durable_run_answers_once_its_write_is_durable(self) -> None:
        self.warm(b"srun-b", b"x")
        journal = self.journal("srun-b")
        self.client.transport.writes.clear()
        self.client.send(set_line(b"srun-b", b"x") * 5 + b"version\r\n")
        self.assertEqual(len(journal.pending), 1)
        self.assertEqual(self.client.take(), b"")
        journal.pending[0].callback(None)
        self.assertEqual(
            self.client.transport.writes,
            [b"STORED\r\n" * 5 + b"VERSION %s\r\n" % __version__.encode()],
        )

    def test_durable_run_failure(self) -> None:
        self.warm(b"srun-c", b"x")
        journal = self.journal("srun-c")
        self.client.send(set_line(b"srun-c", b"x") * 3)
        journal.pending[0].errback(OSError("disk full"))
        self.assertEqual(self.client.take(), b"SERVER_ERROR disk full\r\n" * 3)

    def test_a_block_still_on_its_way(self) -> None:
        self.warm(b"srun-d", b"abc")
        runs = self.count_runs()
        data = set_line(b"srun-d", b"abc") * 4
        self.client.send(data[:-3])
        self.client.send(data[-3:])
        self.assertEqual(self.client.take(), b"STORED\r\n" * 4)
        # Three blocks were there: a run; the fourth came later, alone.
        self.assertEqual(runs, [3])
        self.assertEqual(self.queue("srun-d").items, 4)

    def test_a_bad_block_ends_the_run(self) -> None:
        line = b"set srun-e 0 0 1\r\n"
        reply = self.ask(line + b"a\r\n" + line + b"b\r\n" + line + b"cc\r\n")
        self.assertEqual(reply, b"STORED\r\nSTORED\r\nCLIENT_ERROR bad data chunk\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.queue("srun-e").items, 2)

    def test_a_waiter_takes_the_first(self) -> None:
        waiting = self.connect()
        waiting.send(b"get srun-f/t=1000\r\n")
        self.assertEqual(self.ask(set_line(b"srun-f", b"1") * 3), b"STORED\r\n" * 3)
        self.assertEqual(waiting.take(), value(b"srun-f/t=1000", b"1") + b"END\r\n")
        self.assertEqual(self.queue("srun-f").items, 2)

    def test_noreply_and_fanout_go_one_by_one(self) -> None:
        self.warm(b"srun-h", b"y")
        runs = self.count_runs()
        self.assertEqual(self.ask(b"set srun-g 0 0 1 noreply\r\nx\r\n" * 3), b"")
        self.assertEqual(self.queue("srun-g").items, 3)
        self.ask(b"get srun-h+copy\r\n")
        self.assertEqual(self.ask(set_line(b"srun-h", b"y") * 2), b"STORED\r\n" * 2)
        self.assertEqual(self.queue("srun-h+copy").items, 2)
        self.assertEqual(runs, [2])
        self.assertEqual(self.queue("srun-h").items, 2)

    def journal(self, name: str) -> FakeJournal:
        journal = FakeJournal(durable=True)
        self.service.create_queue(name).journal = journal
        return journal


class LimitTests(ProtocolTestCase):
    defaults = QueueSettings(max_items=2, max_item_size=3)

    def test_full_queue(self) -> None:
        reply = self.ask(set_line(b"q", b"a") * 3)
        self.assertEqual(reply, b"STORED\r\nSTORED\r\nNOT_STORED\r\n")

    def test_item_too_large_for_the_queue(self) -> None:
        reply = self.ask(set_line(b"q", b"abcd") + set_line(b"q", b"abc"))
        self.assertEqual(reply, b"NOT_STORED\r\nSTORED\r\n")
        self.assertFalse(self.client.closed)


class SmallCapTests(ProtocolTestCase):
    max_item_cap = 10

    def test_at_cap(self) -> None:
        self.assertEqual(self.ask(set_line(b"q", b"x" * 10)), b"STORED\r\n")

    def test_above_cap(self) -> None:
        reply = self.ask(set_line(b"q", b"x" * 11) + b"version\r\n")
        self.assertEqual(reply, b"SERVER_ERROR object too large\r\n")
        self.assertTrue(self.client.closed)
        self.assertIsNone(self.service.queue("q"))


class GetTests(ProtocolTestCase):
    def test_fifo(self) -> None:
        self.ask(b"".join(set_line(b"q", b"%d" % i) for i in range(5)))
        replies = [self.ask(b"get q\r\n") for i in range(6)]
        self.assertEqual(
            replies,
            [value(b"q", b"%d" % i) + b"END\r\n" for i in range(5)] + [b"END\r\n"],
        )

    def test_several_keys(self) -> None:
        self.ask(set_line(b"a", b"1") + set_line(b"c", b"3", 9) + set_line(b"c", b"4"))
        self.assertEqual(
            self.ask(b"get a b c c c\r\n"),
            value(b"a", b"1") + value(b"c", b"3", 9) + value(b"c", b"4") + b"END\r\n",
        )

    def test_gets(self) -> None:
        self.ask(set_line(b"a", b"1") + set_line(b"b", b"2"))
        self.assertEqual(
            self.ask(b"gets a b\r\n"),
            value(b"a", b"1") + value(b"b", b"2") + b"END\r\n",
        )

    def test_get_never_creates_a_queue(self) -> None:
        self.assertEqual(self.ask(b"get nope\r\nget nope/peek\r\n"), b"END\r\nEND\r\n")
        self.assertEqual(self.ask(b"get nope/t=10\r\n"), b"")
        self.clock.advance(0.01)
        self.assertEqual(self.client.take(), b"END\r\n")
        stats = self.stats()
        self.assertEqual(stats["queue_creates"], "0")
        self.assertEqual([name for name in stats if "nope" in name], [])
        self.assertEqual(self.ask(b"delete nope\r\n"), b"NOT_FOUND\r\n")

    def test_timeout_edge(self) -> None:
        self.assertEqual(self.ask(b"get q/t=500\r\n"), b"")
        self.clock.advance(0.499)
        self.assertEqual(self.client.take(), b"")
        self.clock.advance(0.002)
        self.assertEqual(self.client.take(), b"END\r\n")

    def test_timeout_on_existing_queue(self) -> None:
        self.ask(set_line(b"q", b"x") + b"get q\r\n")
        self.assertEqual(self.ask(b"get q/t=500\r\n"), b"")
        self.assertEqual(self.queue("q").waiters, 1)
        self.clock.advance(0.499)
        self.assertEqual(self.client.take(), b"")
        self.clock.advance(0.002)
        self.assertEqual(self.client.take(), b"END\r\n")
        self.assertEqual(self.queue("q").waiters, 0)

    def test_zero_timeout(self) -> None:
        self.assertEqual(self.ask(b"get q/t=0\r\n"), b"END\r\n")

    def test_item_arrives_while_waiting(self) -> None:
        self.assertEqual(self.ask(b"get q/t=500\r\n"), b"")
        other = self.connect()
        self.assertEqual(other.ask(set_line(b"q", b"x", 3)), b"STORED\r\n")
        self.assertEqual(self.client.take(), value(b"q/t=500", b"x", 3) + b"END\r\n")
        self.assertEqual(self.queue("q").items, 0)
        self.assertEqual(other.ask(b"get q\r\n"), b"END\r\n")
        self.clock.advance(1)
        self.assertEqual(self.client.take(), b"")

    def test_waiters_first_come_first_served(self) -> None:
        waiters = [self.connect() for i in range(3)]
        for waiter in waiters:
            waiter.send(b"get q/t=1000\r\n")
        self.ask(set_line(b"q", b"1") + set_line(b"q", b"2"))
        self.assertEqual(waiters[0].take(), value(b"q/t=1000", b"1") + b"END\r\n")
        self.assertEqual(waiters[1].take(), value(b"q/t=1000", b"2") + b"END\r\n")
        self.assertEqual(waiters[2].take(), b"")
        self.ask(set_line(b"q", b"3"))
        self.assertEqual(waiters[2].take(), value(b"q/t=1000", b"3") + b"END\r\n")

    def test_waiters_share_one_timer(self) -> None:
        """Consumers waiting on a queue with different timeouts leave one
        delayed call on the clock, not one each; each still times out on
        time, whoever was served or went away before it."""
        timeouts = [750, 250, 750, 500, 250]
        waiters = [self.connect() for _ in timeouts]
        for waiter, timeout in zip(waiters, timeouts, strict=True):
            waiter.send(b"get q/t=%d\r\n" % timeout)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.ask(set_line(b"q", b"1"))
        self.assertEqual(waiters[0].take(), value(b"q/t=750", b"1") + b"END\r\n")
        waiters[4].close()
        # Times that add up exactly, each deadline and a hair before it.
        for deadline, timed_out in [(0.25, 1), (0.5, 3), (0.75, 2)]:
            self.clock.advance(deadline - 1 / 1024 - self.clock.seconds())
            self.assertEqual([waiter.take() for waiter in waiters[1:4]], [b""] * 3)
            self.clock.advance(1 / 1024)
            answers = [waiter.take() for waiter in waiters[1:4]]
            self.assertEqual(answers[timed_out - 1], b"END\r\n", deadline)
            self.assertEqual(answers.count(b""), 2)
        self.assertEqual(self.queue("q").waiters, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wait_for_a_queue_to_be_created(self) -> None:
        self.client.send(b"get new/t=1000\r\n")
        self.assertIsNone(self.service.queue("new"))
        self.assertEqual(self.stats()["queue_creates"], "0")
        self.connect().ask(set_line(b"new", b"x"))
        self.assertEqual(self.client.take(), value(b"new/t=1000", b"x") + b"END\r\n")
        self.assertEqual(self.queue("new").items, 0)

    def test_several_keys_waiting(self) -> None:
        self.ask(set_line(b"b", b"2"))
        self.client.send(b"get a/t=100 b c/t=100\r\n")
        self.clock.advance(0.1)
        self.assertEqual(self.client.take(), b"")
        self.clock.advance(0.1)
        self.assertEqual(self.client.take(), value(b"b", b"2") + b"END\r\n")

    def test_key_echoed_with_options(self) -> None:
        self.ask(set_line(b"q", b"x") * 2)
        self.assertEqual(
            self.ask(b"get q/t=10/foo\r\n"), value(b"q/t=10/foo", b"x") + b"END\r\n"
        )
        self.assertEqual(
            self.ask(b"get q/peek/\r\n"), value(b"q/peek/", b"x") + b"END\r\n"
        )

    def test_unknown_options_ignored(self) -> None:
        self.ask(set_line(b"q", b"x"))
        self.assertEqual(
            self.ask(b"get q/foo/bar=1/TIMEOUT=x\r\n"),
            value(b"q/foo/bar=1/TIMEOUT=x", b"x") + b"END\r\n",
        )

    def test_bad_timeout(self) -> None:
        for option in [b"t=", b"t=x", b"t=-1", b"t=1.5", b"t=1e3", b"t= 1"]:
            self.assertEqual(
                self.ask(b"get q/%s\r\n" % option), b"CLIENT_ERROR bad timeout\r\n"
            )
        self.assertFalse(self.client.closed)
        self.assertEqual(self.ask(b"version\r\n"), b"VERSION 1.0.0\r\n")

    def test_bad_option_combination(self) -> None:
        self.ask(set_line(b"q", b"x"))
        for options in [
            b"peek/open",
            b"open/peek",
            b"peek/close",
            b"peek/abort",
            b"abort/open",
            b"close/abort",
            b"t=10/abort/close/open",
        ]:
            self.assertEqual(
                self.ask(b"get q/%s\r\n" % options),
                b"CLIENT_ERROR bad option combination\r\n",
                options,
            )
        self.assertFalse(self.client.closed)
        self.assertEqual(self.queue("q").items, 1)

    def test_peek(self) -> None:
        self.ask(set_line(b"q", b"a", 4) + set_line(b"q", b"b"))
        self.assertEqual(
            self.ask(b"get q/peek\r\n"), value(b"q/peek", b"a", 4) + b"END\r\n"
        )
        self.assertEqual(
            self.ask(b"get q/peek\r\n"), value(b"q/peek", b"a", 4) + b"END\r\n"
        )
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", b"a", 4) + b"END\r\n")
        self.assertEqual(
            self.ask(b"get q/peek\r\n"), value(b"q/peek", b"b") + b"END\r\n"
        )
        self.assertEqual(self.queue("q").items, 1)

    def test_peek_empty(self) -> None:
        self.assertEqual(self.ask(b"get q/peek\r\n"), b"END\r\n")

    def test_peek_waits(self) -> None:
        self.assertEqual(self.ask(b"get q/peek/t=500\r\n"), b"")
        self.clock.advance(0.2)
        self.connect().ask(set_line(b"q", b"x"))
        self.assertEqual(self.client.take(), value(b"q/peek/t=500", b"x") + b"END\r\n")
        self.assertEqual(self.queue("q").items, 1)

    def test_peek_waiter_and_taker_share_an_item(self) -> None:
        taker = self.connect()
        self.client.send(b"get q/t=500/peek\r\n")
        taker.send(b"get q/t=500\r\n")
        self.connect().ask(set_line(b"q", b"x"))
        self.assertEqual(self.client.take(), value(b"q/t=500/peek", b"x") + b"END\r\n")
        self.assertEqual(taker.take(), value(b"q/t=500", b"x") + b"END\r\n")
        self.assertEqual(self.queue("q").items, 0)

    def test_peek_times_out(self) -> None:
        self.ask(set_line(b"q", b"x") + b"get q\r\n")
        self.assertEqual(self.ask(b"get q/peek/t=500\r\n"), b"")
        self.clock.advance(0.501)
        self.assertEqual(self.client.take(), b"END\r\n")

    def test_get_hands_out_the_head_after_a_wait(self) -> None:
        """A waiter is handed what was queued first, in FIFO order."""
        other = self.connect()
        self.client.send(b"get q/t=500\r\n")
        other.ask(set_line(b"q", b"1") + set_line(b"q", b"2"))
        self.assertEqual(self.client.take(), value(b"q/t=500", b"1") + b"END\r\n")
        self.assertEqual(other.ask(b"get q\r\n"), value(b"q", b"2") + b"END\r\n")


class OpenReadTests(ProtocolTestCase):
    def test_open_and_close(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"a") + b"END\r\n"
        )
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.open_items), (1, 1))
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.assertEqual((queue.items, queue.open_items), (1, 0))
        self.client.close()
        self.assertEqual(
            self.connect().ask(b"get q\r\n"), value(b"q", b"b") + b"END\r\n"
        )

    def test_close_with_nothing_open(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.assertEqual(
            self.ask(b"get q/close\r\nget nope/close\r\n"), b"END\r\nEND\r\n"
        )
        self.assertFalse(self.client.closed)
        self.assertEqual(self.queue("q").items, 1)
        self.assertIsNone(self.service.queue("nope"))

    def test_close_open(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b") + set_line(b"q", b"c"))
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"a") + b"END\r\n"
        )
        self.assertEqual(
            self.ask(b"get q/close/open\r\n"), value(b"q/close/open", b"b") + b"END\r\n"
        )
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.open_items), (1, 1))
        self.client.close()
        self.assertEqual(
            self.connect().ask(b"get q q q\r\n"),
            value(b"q", b"b") + value(b"q", b"c") + b"END\r\n",
        )

    def test_close_open_on_empty_queue(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.ask(b"get q/open/close\r\n"), b"END\r\n")
        self.assertEqual(self.queue("q").open_items, 0)
        self.assertEqual(self.ask(b"get q/open/close\r\n"), b"END\r\n")

    def test_close_open_waits(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.ask(b"get q/close/open/t=500\r\n"), b"")
        self.assertEqual(self.queue("q").open_items, 0)
        self.connect().ask(set_line(b"q", b"b"))
        self.assertEqual(
            self.client.take(), value(b"q/close/open/t=500", b"b") + b"END\r\n"
        )
        self.assertEqual(self.queue("q").open_items, 1)

    def test_abort(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.ask(b"get q/abort\r\n"), b"END\r\n")
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.open_items), (2, 0))
        self.assertEqual(queue.canceled_transactions, 1)
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", b"a") + b"END\r\n")

    def test_abort_with_nothing_open(self) -> None:
        self.assertEqual(self.ask(b"get q/abort\r\n"), b"END\r\n")
        self.assertFalse(self.client.closed)

    def test_abort_goes_to_a_waiter(self) -> None:
        waiter = self.connect()
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        waiter.send(b"get q/t=500\r\n")
        self.ask(b"get q/abort\r\n")
        self.assertEqual(waiter.take(), value(b"q/t=500", b"a") + b"END\r\n")

    def test_latest_abort_comes_out_first(self) -> None:
        other = self.connect()
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b") + set_line(b"q", b"c"))
        self.ask(b"get q/open\r\n")
        other.ask(b"get q/open\r\n")
        self.ask(b"get q/abort\r\n")
        other.ask(b"get q/abort\r\n")
        self.assertEqual(
            self.ask(b"get q q q\r\n"),
            value(b"q", b"b") + value(b"q", b"a") + value(b"q", b"c") + b"END\r\n",
        )

    def test_peek_with_open_read(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(
            self.ask(b"get q/peek\r\n"), value(b"q/peek", b"b") + b"END\r\n"
        )
        self.assertFalse(self.client.closed)

    def test_second_open_closes_the_connection(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.ask(b"get q/open\r\nversion\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(
            self.connect().ask(b"get q q\r\n"),
            value(b"q", b"a") + value(b"q", b"b") + b"END\r\n",
        )

    def test_two_opens_in_one_get(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.assertEqual(self.ask(b"get q/open q/open\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.queue("q").items, 2)

    def test_plain_get_with_open_read_closes_the_connection(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.ask(b"get q\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.queue("q").items, 2)

    def test_open_reads_on_several_queues(self) -> None:
        self.ask(set_line(b"a", b"1") + set_line(b"b", b"2"))
        self.assertEqual(
            self.ask(b"get a/open b/open\r\n"),
            value(b"a/open", b"1") + value(b"b/open", b"2") + b"END\r\n",
        )
        self.assertFalse(self.client.closed)
        self.client.close()
        self.assertEqual(
            self.connect().ask(b"get a b\r\n"),
            value(b"a", b"1") + value(b"b", b"2") + b"END\r\n",
        )

    def test_disconnect_returns_open_reads_to_the_head(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        self.connect().ask(set_line(b"q", b"c"))
        self.client.close()
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.open_items), (3, 0))
        self.assertEqual(
            self.connect().ask(b"get q q q\r\n"),
            value(b"q", b"a") + value(b"q", b"b") + value(b"q", b"c") + b"END\r\n",
        )

    def test_quit_returns_open_reads(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\nquit\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.queue("q").items, 1)

    def test_open_read_of_deleted_queue(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.connect().ask(b"delete q\r\n"), b"DELETED\r\n")
        self.connect().ask(set_line(b"q", b"b"))
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.client.close()
        self.assertEqual(self.queue("q").items, 1)
        self.assertEqual(
            self.connect().ask(b"get q\r\n"), value(b"q", b"b") + b"END\r\n"
        )


class TwoOpenReadsTests(ProtocolTestCase):
    defaults = QueueSettings(max_open_reads=2)

    def test_max_open_reads(self) -> None:
        self.ask(b"".join(set_line(b"q", b"%d" % i) for i in range(4)))
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"0") + b"END\r\n"
        )
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"1") + b"END\r\n"
        )
        self.assertEqual(self.ask(b"get q/open\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)

    def test_close_confirms_the_oldest(self) -> None:
        self.ask(b"".join(set_line(b"q", b"%d" % i) for i in range(3)))
        self.ask(b"get q/open q/open\r\n")
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.client.close()
        self.assertEqual(
            self.connect().ask(b"get q q\r\n"),
            value(b"q", b"1") + value(b"q", b"2") + b"END\r\n",
        )

    def test_disconnect_keeps_original_order(self) -> None:
        self.ask(b"".join(set_line(b"q", b"%d" % i) for i in range(3)))
        self.ask(b"get q/open\r\nget q/open\r\n")
        self.client.close()
        self.assertEqual(
            self.connect().ask(b"get q q q\r\n"),
            value(b"q", b"0") + value(b"q", b"1") + value(b"q", b"2") + b"END\r\n",
        )


class OpenTimeoutTests(ProtocolTestCase):
    """An open read not closed within open_timeout goes back to its queue,
    and its connection no longer holds it."""

    defaults = QueueSettings(open_timeout=1.0)

    def timed_out(self) -> Client:
        """``a`` and ``b`` queued; ``a`` opened here and timed out; the
        client that took it again."""
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"a") + b"END\r\n"
        )
        self.clock.advance(0.999)
        self.assertEqual(self.queue_stat("q", "open_transactions"), 1)
        self.clock.advance(0.001)
        self.assertEqual(self.queue_stat("q", "open_transactions"), 0)
        self.assertEqual(self.queue_stat("q", "canceled_transactions"), 1)
        other = self.connect()
        self.assertEqual(
            other.ask(b"get q/open\r\n"), value(b"q/open", b"a") + b"END\r\n"
        )
        return other

    def test_back_at_the_head(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        self.clock.advance(1)
        self.assertEqual(self.queue_stat("q", "items"), 2)
        self.assertEqual(
            self.connect().ask(b"get q q\r\n"),
            value(b"q", b"a") + value(b"q", b"b") + b"END\r\n",
        )

    def test_a_waiting_consumer_gets_it(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        waiter = self.connect()
        self.assertEqual(waiter.ask(b"get q/t=5000\r\n"), b"")
        self.clock.advance(1)
        self.assertEqual(waiter.take(), value(b"q/t=5000", b"a") + b"END\r\n")
        self.assertEqual(self.queue_stat("q", "items"), 0)

    def test_close_after_it_confirms_nothing(self) -> None:
        other = self.timed_out()
        # Nothing open here: as for any close with nothing open.
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.assertFalse(self.client.closed)
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.open_items), (1, 1))
        # The other client's read of the same item is still its own.
        self.assertEqual(other.ask(b"get q/close\r\n"), b"END\r\n")
        self.assertEqual((queue.items, queue.open_items), (1, 0))
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", b"b") + b"END\r\n")

    def test_abort_after_it_returns_nothing(self) -> None:
        other = self.timed_out()
        self.assertEqual(self.ask(b"get q/abort\r\n"), b"END\r\n")
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.open_items), (1, 1))
        self.assertEqual(queue.canceled_transactions, 1)
        other.close()
        self.assertEqual(
            self.ask(b"get q q q\r\n"),
            value(b"q", b"a") + value(b"q", b"b") + b"END\r\n",
        )

    def test_confirm_after_it_finds_nothing_open(self) -> None:
        self.timed_out()
        self.assertEqual(self.ask(b"confirm q 1\r\n"), b"ERROR\r\n")
        self.assertEqual(self.queue("q").open_items, 1)

    def test_the_next_open_read_works(self) -> None:
        self.timed_out()
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"b") + b"END\r\n"
        )
        self.assertFalse(self.client.closed)
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.assertEqual(self.queue("q").open_items, 1)

    def test_a_plain_get_is_allowed_again(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        self.clock.advance(1)
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", b"a") + b"END\r\n")
        self.assertFalse(self.client.closed)

    def test_close_before_it_cancels_the_timer(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(
            self.ask(b"get q/close/open\r\n"), value(b"q/close/open", b"b") + b"END\r\n"
        )
        self.clock.advance(0.5)
        self.ask(b"get q/close\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.canceled_transactions), (0, 0))

    def test_abort_before_it_cancels_the_timer(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        self.ask(b"get q/abort\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(self.queue("q").canceled_transactions, 1)

    def test_disconnect_cancels_the_timer(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        self.client.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.canceled_transactions), (1, 1))

    def test_monitor_reads_each_timed_from_when_handed_out(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.assertEqual(self.ask(b"monitor q 10\r\n"), value(b"q", b"a"))
        self.clock.advance(0.5)
        self.connect().ask(set_line(b"q", b"b"))
        self.assertEqual(self.client.take(), value(b"q", b"b"))
        self.clock.advance(0.5)
        # "a" is back, and handed to the monitor again.
        self.assertEqual(self.client.take(), value(b"q", b"a"))
        self.assertEqual(self.queue("q").canceled_transactions, 1)
        self.clock.advance(0.5)
        self.assertEqual(self.client.take(), value(b"q", b"b"))
        self.assertEqual(self.queue("q").canceled_transactions, 2)
        self.assertEqual(len(self.client.protocol.open_reads[self.queue("q")]), 2)

    def test_a_fanout_child_has_its_own(self) -> None:
        self.service.live_config.apply(
            parse_config(
                '[queues.q]\nopen_timeout = "5s"\n'
                '[queues."q+slow"]\nopen_timeout = "none"\n'
            )
        )
        self.ask(b"get q+slow/t=0\r\nget q+fast/t=0\r\n")
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open q+slow/open q+fast/open\r\n")
        self.clock.advance(4.999)
        self.assertEqual(self.stats()["queue_q_canceled_transactions"], "0")
        self.clock.advance(0.001)
        stats = self.stats()
        self.assertEqual(
            [
                stats[f"queue_{name}_canceled_transactions"]
                for name in ("q", "q+slow", "q+fast")
            ],
            ["1", "0", "1"],
        )

    def test_logged_once_a_second(self) -> None:
        lines: list[str] = []
        self.service.log = Logger(
            observer=cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        )
        self.ask(b"".join(set_line(b"q", b"%d" % i) for i in range(3)))
        for client in [self.client, self.connect(), self.connect()]:
            client.ask(b"get q/open\r\n")
        self.clock.advance(1)
        self.assertEqual(
            lines,
            [
                "An open read of q was not closed by 127.0.0.1:40000 within its"
                " open_timeout: it went back to the queue"
            ],
        )
        self.ask(b"get q/open\r\n")
        self.clock.advance(1)
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[1].endswith("(2 more like it since the last such line)"))

    def test_a_reload_applies_to_reads_opened_after_it(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\n")
        other = self.connect()
        self.service.live_config.apply(
            parse_config('[defaults]\nopen_timeout = "10s"\n')
        )
        other.ask(b"get q/open\r\n")
        self.clock.advance(1)
        queue = self.queue("q")
        self.assertEqual((queue.open_items, queue.canceled_transactions), (1, 1))
        self.clock.advance(9)
        self.assertEqual((queue.open_items, queue.canceled_transactions), (0, 2))


class OpenTimeoutTwoReadsTests(ProtocolTestCase):
    defaults = QueueSettings(open_timeout=1.0, max_open_reads=2)

    def test_taken_back_into_a_wait_of_the_same_connection(self) -> None:
        self.ask(set_line(b"q", b"a"))
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.ask(b"get q/open/t=5000\r\n"), b"")
        self.clock.advance(1)
        self.assertEqual(self.client.take(), value(b"q/open/t=5000", b"a") + b"END\r\n")
        queue = self.queue("q")
        self.assertEqual(len(self.client.protocol.open_reads[queue]), 1)
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.assertEqual((queue.items, queue.open_items), (0, 0))
        self.assertEqual(self.client.protocol.open_reads, {})
        self.clock.advance(5)
        self.assertEqual(queue.canceled_transactions, 1)


class CommandTests(ProtocolTestCase):
    def test_delete(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.assertEqual(self.ask(b"delete q\r\n"), b"DELETED\r\n")
        self.assertIsNone(self.service.queue("q"))
        self.assertEqual(self.ask(b"delete q\r\n"), b"NOT_FOUND\r\n")
        self.assertEqual(self.ask(b"get q\r\n"), b"END\r\n")
        self.assertEqual(self.service.counters.queue_deletes, 1)

    def test_delete_forms(self) -> None:
        self.ask(set_line(b"a", b"x") + set_line(b"b", b"x"))
        self.assertEqual(self.ask(b"delete a 0\r\n"), b"DELETED\r\n")
        self.assertEqual(
            self.ask(b"delete b noreply\r\nversion\r\n"), b"VERSION 1.0.0\r\n"
        )
        self.assertEqual(
            self.ask(b"delete b 0 noreply\r\nversion\r\n"), b"VERSION 1.0.0\r\n"
        )
        self.assertEqual(self.service.queues, {})

    def test_delete_bad_line(self) -> None:
        for line in [b"delete", b"delete q 5", b"delete q 0 0"]:
            reply = self.ask(line + b"\r\n")
            self.assertTrue(reply.startswith(b"CLIENT_ERROR "), (line, reply))
        self.assertFalse(self.client.closed)

    def test_waiter_on_deleted_queue_waits_for_re_creation(self) -> None:
        self.ask(set_line(b"q", b"a") + b"get q\r\n")
        self.client.send(b"get q/t=1000\r\n")
        other = self.connect()
        self.assertEqual(other.ask(b"delete q\r\n"), b"DELETED\r\n")
        self.assertEqual(self.client.take(), b"")
        self.assertEqual(other.ask(set_line(b"q", b"b")), b"STORED\r\n")
        self.assertEqual(self.client.take(), value(b"q/t=1000", b"b") + b"END\r\n")
        self.assertEqual(self.queue("q").items, 0)

    def test_waiter_on_deleted_queue_times_out(self) -> None:
        self.ask(set_line(b"q", b"a") + b"get q\r\n")
        self.client.send(b"get q/t=1000\r\n")
        self.connect().ask(b"delete q\r\n")
        self.clock.advance(1)
        self.assertEqual(self.client.take(), b"END\r\n")
        self.connect().ask(set_line(b"q", b"b"))
        self.assertEqual(self.queue("q").items, 1)

    def test_flush(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b") + set_line(b"r", b"c"))
        self.assertEqual(self.ask(b"flush q\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"get q r\r\n"), value(b"r", b"c") + b"END\r\n")
        self.assertEqual(self.queue_stat("q", "total_flushes"), 1)
        self.assertEqual(self.ask(b"flush nope\r\n"), b"END\r\n")
        self.assertIsNone(self.service.queue("nope"))

    def test_flush_keeps_open_reads(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"q", b"b"))
        self.ask(b"get q/open\r\nflush q\r\n")
        self.client.close()
        self.assertEqual(
            self.connect().ask(b"get q q\r\n"), value(b"q", b"a") + b"END\r\n"
        )

    def test_flush_all(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"r", b"b"))
        self.assertEqual(self.ask(b"flush_all\r\n"), b"Flushed all queues.\r\n")
        self.assertEqual(self.ask(b"get q r\r\n"), b"END\r\n")
        self.assertEqual(sorted(self.service.queues), ["q", "r"])

    def test_flush_expired(self) -> None:
        self.clock.advance(100)
        self.ask(
            set_line(b"q", b"a", exptime=10)
            + set_line(b"q", b"b")
            + set_line(b"q", b"c", exptime=10)
            + set_line(b"q", b"d", exptime=20)
        )
        self.assertEqual(self.ask(b"flush_expired q\r\n"), b"0\r\n")
        self.clock.advance(15)
        self.assertEqual(self.ask(b"flush_expired q\r\n"), b"2\r\n")
        self.assertEqual(self.queue("q").items, 2)
        self.assertEqual(self.queue_stat("q", "expired_items"), 2)
        self.assertEqual(self.ask(b"flush_expired nope\r\n"), b"0\r\n")

    def test_flush_all_expired(self) -> None:
        self.ask(
            set_line(b"q", b"a", exptime=10)
            + set_line(b"r", b"b", exptime=10)
            + set_line(b"r", b"c", exptime=10)
            + set_line(b"s", b"d")
        )
        self.clock.advance(11)
        self.assertEqual(self.ask(b"flush_all_expired\r\n"), b"3\r\n")
        self.assertEqual(self.ask(b"flush_all_expired\r\n"), b"0\r\n")
        self.assertEqual(self.ask(b"get s\r\n"), value(b"s", b"d") + b"END\r\n")

    def test_version(self) -> None:
        reply = self.ask(b"version\r\n")
        self.assertTrue(reply.startswith(b"VERSION ") and reply.endswith(b"\r\n"))
        numbers = reply[8:-2].split(b".")
        self.assertEqual(len(numbers), 3)
        self.assertGreaterEqual(int(numbers[0]), 1)
        self.assertEqual(reply[8:-2].decode(), __version__)

    def test_quit(self) -> None:
        other = self.connect()
        reply = self.ask(b"version\r\nquit\r\nversion\r\n")
        self.assertEqual(reply, b"VERSION 1.0.0\r\n")
        self.assertTrue(self.client.closed)
        self.assertFalse(other.closed)
        self.assertEqual(self.stops, [])

    def test_unknown_command(self) -> None:
        self.assertEqual(self.ask(b"frobnicate q\r\n"), b"ERROR\r\n")
        self.assertEqual(self.ask(b"incr q 1\r\n"), b"ERROR\r\n")
        self.assertFalse(self.client.closed)
        self.assertEqual(self.ask(b"version\r\n"), b"VERSION 1.0.0\r\n")

    def test_storage_commands_not_supported(self) -> None:
        for command in [b"add", b"replace", b"append", b"prepend"]:
            reply = self.ask(b"%s q 0 0 7\r\nversion\r\n" % command)
            self.assertEqual(reply, b"CLIENT_ERROR not supported by a queue\r\n")
        reply = self.ask(b"cas q 0 0 7 12345\r\nversion\r\n")
        self.assertEqual(reply, b"CLIENT_ERROR not supported by a queue\r\n")
        self.assertFalse(self.client.closed)
        self.assertIsNone(self.service.queue("q"))
        self.assertEqual(self.service.counters.cmd_set, 0)

    def test_storage_command_bad_data_chunk(self) -> None:
        reply = self.ask(b"add q 0 0 2\r\nabcd\r\n")
        self.assertEqual(reply, b"CLIENT_ERROR bad data chunk\r\n")
        self.assertTrue(self.client.closed)


class ShutdownTests(ProtocolTestCase):
    def test_shutdown(self) -> None:
        others = [self.connect(), self.connect()]
        others[0].send(b"get q/t=1000\r\n")
        reply = self.ask(b"version\r\nshutdown\r\nversion\r\n")
        self.assertEqual(reply, b"VERSION 1.0.0\r\n")
        self.assertTrue(self.client.closed)
        self.assertTrue(all(other.closed for other in others))
        self.assertEqual(list(self.service.connections), [])
        self.clock.advance(0)
        self.assertEqual(self.stops, [None])

    def journal(self, name: str) -> FakeJournal:
        journal = FakeJournal(durable=True)
        self.service.create_queue(name).journal = journal
        return journal

    def test_a_durable_set_before_shutdown_is_answered_first(self) -> None:
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a") + b"shutdown\r\nversion\r\n")
        self.assertFalse(self.client.closed)
        self.assertEqual(self.client.take(), b"")
        journal.pending[0].callback(None)
        self.assertEqual(self.client.take(), b"STORED\r\n")
        self.assertTrue(self.client.closed)
        self.clock.advance(0)
        self.assertEqual(self.stops, [None])

    def test_other_connections_get_their_durable_replies(self) -> None:
        journal = self.journal("q")
        other = self.connect()
        other.send(set_line(b"q", b"a", flags=1) + set_line(b"q", b"b", flags=2))
        self.ask(b"shutdown\r\n")
        self.assertTrue(self.client.closed)
        self.assertFalse(other.closed)
        # Nothing more is read from it.
        other.send(b"version\r\n" + set_line(b"q", b"c"))
        self.assertEqual(len(journal.pending), 2)
        journal.pending[1].callback(None)
        self.assertEqual(other.take(), b"")
        journal.pending[0].errback(OSError("disk full"))
        self.assertEqual(other.take(), b"SERVER_ERROR disk full\r\nSTORED\r\n")
        self.assertTrue(other.closed)

    def test_a_waiting_get_is_answered_with_what_it_took(self) -> None:
        self.ask(set_line(b"a", b"x"))
        other = self.connect()
        other.send(b"get a b/t=1000\r\nversion\r\n")
        self.assertEqual(other.take(), b"")
        self.ask(b"shutdown\r\n")
        self.assertEqual(other.take(), value(b"a", b"x") + b"END\r\n")
        self.assertTrue(other.closed)
        self.clock.advance(2)
        self.assertEqual(self.queue("a").items, 0)
        self.assertEqual(self.service.queue("b"), None)

    def test_a_waiting_get_of_one_key_is_answered_end(self) -> None:
        """Alone, or behind a durable set still to be answered."""
        journal = self.journal("d")
        alone, behind = self.connect(), self.connect()
        alone.send(b"get q/t=1000\r\n")
        behind.send(set_line(b"d", b"x") + b"get q/t=1000\r\n")
        stopped = self.service.stopService()
        self.assertEqual(alone.take(), b"END\r\n")
        self.assertTrue(alone.closed)
        self.assertEqual(behind.take(), b"")
        journal.pending[0].callback(None)
        self.assertEqual(behind.take(), b"STORED\r\nEND\r\n")
        self.assertTrue(behind.closed)
        self.successResultOf(stopped)

    def test_a_monitor_ends_and_its_reads_go_back(self) -> None:
        self.ask(set_line(b"q", b"x"))
        other = self.connect()
        other.send(b"monitor q 10\r\n")
        self.assertEqual(other.take(), value(b"q", b"x"))
        self.ask(b"shutdown\r\n")
        self.assertEqual(other.take(), b"END\r\n")
        self.assertTrue(other.closed)
        self.assertEqual(self.queue("q").items, 1)

    def test_stopping_waits_for_replies_still_owed(self) -> None:
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a"))
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        self.assertFalse(self.client.closed)
        journal.pending[0].callback(None)
        self.assertEqual(self.client.take(), b"STORED\r\n")
        self.assertTrue(self.client.closed)
        self.successResultOf(stopped)

    def test_stopping_leaves_no_timer_of_a_served_wait(self) -> None:
        """The waiters' timer (one for every queue), left set when a
        waiting get was served, goes when the server stops."""
        self.client.send(b"get q/t=1000\r\nget new/t=1000\r\n")
        self.assertEqual(self.connect().ask(set_line(b"q", b"a")), b"STORED\r\n")
        self.assertEqual(self.client.take(), value(b"q/t=1000", b"a") + b"END\r\n")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopping_cuts_off_what_is_late(self) -> None:
        self.journal("q")
        self.client.send(set_line(b"q", b"a"))
        stopped = self.service.stopService()
        self.clock.advance(SHUTDOWN_GRACE - 0.001)
        self.assertNoResult(stopped)
        self.clock.advance(0.002)
        self.successResultOf(stopped)
        self.assertTrue(self.client.closed)
        self.assertEqual(self.client.take(), b"")
        self.assertEqual(list(self.service.connections), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_from_local_peers_only(self) -> None:
        refused = (
            b"CLIENT_ERROR shutdown disabled except from loopback or a Unix socket\r\n"
        )
        for host in ["192.168.1.1", "10.0.0.127", "::ffff:10.0.0.1", "fe80::1%eth0"]:
            kind = IPv6Address if ":" in host else IPv4Address
            client = self.connect(kind("TCP", host, 40000))
            self.assertEqual(client.ask(b"shutdown\r\n"), refused, host)
            self.assertFalse(client.closed)
            self.assertEqual(client.ask(b"version\r\n"), b"VERSION 1.0.0\r\n")
        self.clock.advance(1)
        self.assertEqual(self.stops, [])
        client = self.connect(UNIXAddress(b"/run/erq.sock"))
        self.assertEqual(client.ask(b"shutdown\r\n"), b"")
        self.assertTrue(client.closed)
        self.clock.advance(0)
        self.assertEqual(self.stops, [None])

    def test_from_other_loopback_addresses(self) -> None:
        for host in ["127.0.0.2", "::1", "::ffff:127.0.0.1"]:
            kind = IPv6Address if ":" in host else IPv4Address
            self.service.shutting_down = False
            client = self.connect(kind("TCP", host, 40000))
            self.assertEqual(client.ask(b"shutdown\r\n"), b"", host)
            self.assertTrue(client.closed, host)


class ShutdownFromAnywhereTests(ProtocolTestCase):
    allow_shutdown = "any"

    def test_obeyed_from_any_peer(self) -> None:
        client = self.connect(IPv4Address("TCP", "192.168.1.1", 40000))
        self.assertEqual(client.ask(b"version\r\nshutdown\r\n"), b"VERSION 1.0.0\r\n")
        self.assertTrue(client.closed)
        self.clock.advance(0)
        self.assertEqual(self.stops, [None])


class ShutdownDisabledTests(ProtocolTestCase):
    allow_shutdown = False

    def test_shutdown_disabled(self) -> None:
        other = self.connect()
        self.assertEqual(
            self.ask(b"shutdown\r\n"), b"CLIENT_ERROR shutdown disabled\r\n"
        )
        unix = self.connect(UNIXAddress(b"/run/erq.sock"))
        self.assertEqual(
            unix.ask(b"shutdown\r\n"), b"CLIENT_ERROR shutdown disabled\r\n"
        )
        self.clock.advance(1)
        self.assertEqual(self.stops, [])
        self.assertFalse(self.client.closed or other.closed or unix.closed)
        self.assertEqual(self.ask(set_line(b"q", b"x")), b"STORED\r\n")


def login(user: bytes, password: bytes, key: bytes = b"login") -> bytes:
    return set_line(key, user + b" " + password)


class AuthTests(ProtocolTestCase):
    users = b"# who may use erq\nalice:s3cret\nbob:hunter2 with spaces\n"

    def test_every_command_before_login_is_refused(self) -> None:
        for request in [
            b"version",
            b"get q",
            b"get q/t=1000",
            b"gets q",
            b"stats",
            b"dump_stats",
            b"delete q",
            b"flush q",
            b"flush_all",
            b"reload",
            b"monitor q 1",
            b"confirm q 0",
            b"shutdown",
            b"bogus",
            b"",
            b"  ",
        ]:
            self.assertEqual(
                self.ask(request + b"\r\n"),
                b"CLIENT_ERROR unauthenticated\r\n",
                request,
            )
        self.assertFalse(self.client.closed)
        self.clock.advance(1)
        self.assertEqual(self.stops, [])
        self.assertEqual(self.service.queues, {})

    def test_login_then_the_protocol(self) -> None:
        self.assertEqual(self.ask(login(b"alice", b"s3cret")), b"STORED\r\n")
        self.assertEqual(self.service.queues, {})
        self.assertEqual(
            self.ask(set_line(b"q", b"x") + b"get q\r\nversion\r\n"),
            b"STORED\r\n" + value(b"q", b"x") + b"END\r\nVERSION 1.0.0\r\n",
        )
        other = self.connect()
        self.assertEqual(
            other.ask(login(b"bob", b"hunter2 with spaces", b"any/key")),
            b"STORED\r\n",
        )
        stats = self.stats(other)
        self.assertEqual((stats["auth_cmds"], stats["auth_errors"]), ("2", "0"))

    def test_login_and_requests_in_one_write(self) -> None:
        self.assertEqual(
            self.ask(login(b"alice", b"s3cret") + set_line(b"q", b"x") + b"get q\r\n"),
            b"STORED\r\nSTORED\r\n" + value(b"q", b"x") + b"END\r\n",
        )

    def test_failed_logins(self) -> None:
        for data in [
            b"alice hunter2 with spaces",
            b"bob s3cret",
            b"alice s3cret ",
            b"alice  s3cret",
            b"carol s3cret",
            b"alice",
            b"alice:s3cret",
            b"",
        ]:
            self.assertEqual(
                self.ask(set_line(b"k", data)),
                b"CLIENT_ERROR authentication failure\r\n",
                data,
            )
            self.assertEqual(
                self.ask(b"version\r\n"), b"CLIENT_ERROR unauthenticated\r\n"
            )
        self.assertFalse(self.client.closed)
        stats = self.stats(self.logged_in())
        self.assertEqual((stats["auth_cmds"], stats["auth_errors"]), ("9", "8"))
        self.assertEqual(self.ask(login(b"alice", b"s3cret")), b"STORED\r\n")

    def logged_in(self) -> Client:
        client = self.connect()
        self.assertEqual(client.ask(login(b"alice", b"s3cret")), b"STORED\r\n")
        return client

    def test_lines_known_from_logged_in_connections_are_refused(self) -> None:
        """The fast ways through repeated lines check the login too."""
        ready = self.logged_in()
        ready.ask((set_line(b"q", b"a") + b"get q\r\n") * 3)
        self.assertEqual(
            self.ask(b"get q\r\n" * 3), b"CLIENT_ERROR unauthenticated\r\n" * 3
        )
        self.assertEqual(
            self.ask(set_line(b"q", b"a") * 3),
            b"CLIENT_ERROR authentication failure\r\n" * 3,
        )
        self.assertEqual(self.queue("q").items, 0)

    def test_other_storage_commands_are_read_and_refused(self) -> None:
        self.assertEqual(
            self.ask(b"add q 0 0 5\r\nhello\r\ncas q 0 0 1 1\r\nx\r\nversion\r\n"),
            b"CLIENT_ERROR unauthenticated\r\n" * 3,
        )
        self.assertFalse(self.client.closed)
        self.assertEqual(
            self.ask(b"append q 0 0 5000\r\n"),
            b"SERVER_ERROR object too large\r\n",
        )
        self.assertTrue(self.client.closed)

    def test_a_login_too_long_is_not_read(self) -> None:
        self.assertEqual(
            self.ask(b"set k 0 0 4097\r\n"),
            b"CLIENT_ERROR authentication failure\r\n",
        )
        self.assertTrue(self.client.closed)

    def test_a_login_with_a_bad_block(self) -> None:
        self.assertEqual(
            self.ask(b"set k 0 0 12\r\nalice s3cretXX"),
            b"CLIENT_ERROR bad data chunk\r\n",
        )
        self.assertTrue(self.client.closed)
        client = self.connect()
        self.assertEqual(
            client.ask(b"set k 0 0 x\r\n"),
            b"CLIENT_ERROR bad data chunk length\r\n",
        )
        self.assertTrue(client.closed)

    def test_noreply_login(self) -> None:
        self.assertEqual(
            self.ask(b"set k 0 0 10 noreply\r\nalice nope\r\nversion\r\n"),
            b"CLIENT_ERROR unauthenticated\r\n",
        )
        self.assertEqual(
            self.ask(b"set k 0 0 12 noreply\r\nalice s3cret\r\nversion\r\n"),
            b"VERSION 1.0.0\r\n",
        )

    def test_quit_before_login(self) -> None:
        self.assertEqual(self.ask(b"QUIT\r\n"), b"")
        self.assertTrue(self.client.closed)

    def write_users(self, users: bytes) -> None:
        assert self.auth_file is not None
        with open(self.auth_file, "wb") as file:
            file.write(users)

    def test_reload_reads_the_file_again(self) -> None:
        ready = self.logged_in()
        self.write_users(b"carol:new\n")
        self.assertEqual(ready.ask(b"reload\r\n"), b"Reloaded config.\r\n")
        # Logged in before: still.
        self.assertEqual(ready.ask(b"version\r\n"), b"VERSION 1.0.0\r\n")
        self.assertEqual(
            self.ask(login(b"alice", b"s3cret")),
            b"CLIENT_ERROR authentication failure\r\n",
        )
        self.assertEqual(self.ask(login(b"carol", b"new")), b"STORED\r\n")

    def test_a_reload_that_cannot_read_the_file_keeps_the_users(self) -> None:
        ready = self.logged_in()
        assert self.auth_file is not None
        os.remove(self.auth_file)
        self.assertEqual(
            ready.ask(b"reload\r\n"),
            b"SERVER_ERROR %s: cannot read: No such file or directory\r\n"
            % self.auth_file.encode(),
        )
        self.write_users(b"alice:s3cret\nbob\n")
        self.assertEqual(
            ready.ask(b"reload\r\n"),
            b"SERVER_ERROR %s line 2: expected user:password\r\n"
            % self.auth_file.encode(),
        )
        self.assertEqual(self.ask(login(b"alice", b"s3cret")), b"STORED\r\n")

    def test_a_reload_may_turn_logins_off_and_on(self) -> None:
        ready = self.logged_in()
        waiting = self.connect()
        assert self.auth_file is not None
        self.service.live_config.apply(Config())
        self.assertEqual(waiting.ask(b"version\r\n"), b"VERSION 1.0.0\r\n")
        self.service.live_config.apply(Config(ServerSettings(auth_file=self.auth_file)))
        self.assertEqual(
            waiting.ask(b"version\r\n"), b"CLIENT_ERROR unauthenticated\r\n"
        )
        self.assertEqual(ready.ask(b"version\r\n"), b"VERSION 1.0.0\r\n")
        self.assertEqual(
            self.connect().ask(b"version\r\n"), b"CLIENT_ERROR unauthenticated\r\n"
        )

    def test_secrets_are_never_logged(self) -> None:
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        self.service.log = Logger(observer=observer)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        ready = self.logged_in()
        for _ in range(3):
            self.ask(login(b"alice", b"hunter2 with spaces"))
            self.clock.advance(2)
        self.ask(login(b"alice", b"s3cret"))
        self.write_users(b"alice:s3cret\nbob hunter2\n")
        ready.ask(b"reload\r\n")
        self.service.live_config.reload_logged()
        self.connect().ask(b"set k 0 0 100\r\nhunter2 s3cret\r\n")
        text = "\n".join(formatEvent(event) + repr(event) for event in events)
        for secret in ["s3cret", "hunter2"]:
            self.assertNotIn(secret, text)
        self.assertNotIn(b"s3cret", self.ask(b"stats\r\ndump_stats\r\n"))


class ClientErrorTests(ProtocolTestCase):
    def capture_log(self) -> list[str]:
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            text = formatEvent(event)
            lines.append(text)

        self.service.log = Logger(observer=cast(ILogObserver, observe))
        return lines

    def test_counted(self) -> None:
        self.ask(set_line(b"q", b"x") + b"get q\r\nversion\r\nstats\r\n")
        self.assertEqual(self.stats()["client_errors"], "0")
        self.ask(
            b"bogus\r\n"
            + set_line(b"bad/name", b"x")
            + b"set q 0 x 1 noreply\r\nx\r\n"
            + b"get q/t=x\r\nconfirm q 1\r\nget\r\n"
            + b"add q 0 0 1\r\nx\r\n"
        )
        self.assertEqual(self.stats()["client_errors"], "7")
        other = self.connect()
        other.ask(b"g" * 3000 + b"\r\n")
        self.assertTrue(other.closed)
        big = self.connect()
        big.ask(b"set q 0 0 %d\r\n" % (self.max_item_cap + 1))
        self.assertTrue(big.closed)
        self.assertEqual(self.stats()["client_errors"], "9")

    def test_logged_once_a_second_for_each_kind(self) -> None:
        lines = self.capture_log()
        self.ask(b"bogus\r\n" * 3 + set_line(b"bad/name", b"x") * 2)
        self.assertEqual(
            lines,
            [
                "ERROR (unknown command) to 127.0.0.1:40000",
                "CLIENT_ERROR bad queue name to 127.0.0.1:40000",
            ],
        )
        self.clock.advance(0.999)
        self.ask(b"bogus\r\n")
        self.assertEqual(len(lines), 2)
        self.clock.advance(0.002)
        other = self.connect(IPv6Address("TCP", "::1", 50000))
        other.ask(b"bogus\r\nbogus\r\n")
        self.assertEqual(
            lines[2:],
            [
                "ERROR (unknown command) to [::1]:50000"
                " (3 more like it since the last such line)"
            ],
        )
        self.clock.advance(1)
        self.connect(UNIXAddress(b"/run/erq.sock")).ask(b"bogus\r\n")
        self.assertEqual(
            lines[3:],
            [
                "ERROR (unknown command) to a Unix socket"
                " (1 more like it since the last such line)"
            ],
        )

    def test_rejected_connections(self) -> None:
        lines = self.capture_log()
        self.service.live_config.apply(Config(ServerSettings(max_connections=1)))
        refused = [self.connect() for _ in range(3)]
        self.assertTrue(all(client.closed for client in refused))
        self.assertEqual(refused[0].take(), b"SERVER_ERROR too many connections\r\n")
        self.clock.advance(1)
        refused.append(self.connect())
        self.assertEqual(
            lines,
            [
                "Refused a connection from 127.0.0.1:40000: already 1 connections",
                "Refused a connection from 127.0.0.1:40000: already 1 connections"
                " (2 more like it since the last such line)",
            ],
        )
        stats = self.stats(self.client)
        self.assertEqual(stats["rejected_connections"], "4")
        self.assertEqual(stats["client_errors"], "0")


class StatsTests(ProtocolTestCase):
    def test_stat_names(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"r", b"b"))
        stats = self.stats()
        names = list(stats)
        self.assertEqual(names[: len(SERVER_STAT_NAMES)], SERVER_STAT_NAMES)
        expected = set(SERVER_STAT_NAMES)
        for queue in ["q", "r"]:
            expected.update(f"queue_{queue}_{name}" for name in QUEUE_STAT_NAMES)
        self.assertEqual(set(names), expected)
        self.assertEqual(stats["version"], __version__)

    def test_dump_stats(self) -> None:
        self.ask(set_line(b"q", b"ab") + set_line(b"r", b"b"))
        reply = self.ask(b"dump_stats\r\n")
        lines = reply.decode().split("\r\n")
        self.assertEqual(lines[-2:], ["END", ""])
        blocks: dict[str, dict[str, str]] = {}
        current: dict[str, str] = {}
        for line in lines[:-2]:
            if line.startswith("queue '"):
                self.assertTrue(line.endswith("' {"), line)
                current = blocks[line[7:-3]] = {}
            elif line == "}":
                current = {}
            else:
                self.assertTrue(line.startswith("  "), line)
                name, stat = line[2:].split("=", 1)
                current[name] = stat
        self.assertEqual(sorted(blocks), ["q", "r"])
        for block in blocks.values():
            self.assertEqual(set(block), set(QUEUE_STAT_NAMES))
        self.assertEqual(blocks["q"]["bytes"], "2")
        self.assertEqual(blocks["r"]["items"], "1")

    def test_dump_stats_of_named_queues(self) -> None:
        self.ask(set_line(b"q", b"a") + set_line(b"r", b"b") + set_line(b"s", b"c"))
        reply = self.ask(b"dump_stats s nope q\r\n")
        self.assertEqual(reply.count(b"{\r\n"), 2)
        self.assertIn(b"queue 's' {\r\n  items=1\r\n", reply)
        self.assertIn(b"queue 'q' {\r\n", reply)
        self.assertNotIn(b"'r'", reply)
        self.assertTrue(reply.endswith(b"}\r\nEND\r\n"))
        self.assertEqual(self.ask(b"dump_stats nope\r\n"), b"END\r\n")

    def test_get_counters(self) -> None:
        self.ask(set_line(b"a", b"1") + set_line(b"b", b"2") + set_line(b"b", b"3"))
        self.ask(b"get a b c\r\nget b/peek\r\nget b/peek c/peek\r\n")
        stats = self.stats()
        self.assertEqual(stats["cmd_set"], "3")
        self.assertEqual(stats["cmd_peek"], "3")
        self.assertEqual(stats["get_hits"], "4")
        self.assertEqual(stats["get_misses"], "2")
        self.assertGreaterEqual(int(stats["cmd_get"]), 3)
        self.ask(b"get a b c\r\n")
        after = self.stats()
        self.assertEqual(int(after["cmd_get"]) - int(stats["cmd_get"]), 3)
        self.assertEqual(after["get_hits"], "5")
        self.assertEqual(after["get_misses"], "4")

    def test_timed_out_get_is_a_miss(self) -> None:
        self.ask(b"get q/t=10\r\n")
        self.clock.advance(1)
        stats = self.stats()
        self.assertEqual((stats["get_hits"], stats["get_misses"]), ("0", "1"))

    def test_bytes_read_and_written(self) -> None:
        request = set_line(b"q", b"hello") + b"get q\r\nbogus\r\n"
        reply = self.ask(request)
        stats_request = b"stats\r\n"
        stats = dict(
            line.split(b" ")[1:3]
            for line in self.ask(stats_request).split(b"\r\n")[:-2]
        )
        self.assertEqual(int(stats[b"bytes_read"]), len(request) + len(stats_request))
        self.assertEqual(int(stats[b"bytes_written"]), len(reply))

    def test_bytes_read_and_written_one_request_a_read(self) -> None:
        """As a lock-step client sends them: each line is seen before."""
        requests = [set_line(b"q", b"hello"), b"get q\r\n"] * 3
        replies = [self.ask(request) for request in requests]
        self.assertEqual(
            replies[-2:], [b"STORED\r\n", value(b"q", b"hello") + b"END\r\n"]
        )
        stats = self.stats()
        self.assertEqual(int(stats["bytes_read"]), sum(map(len, requests)) + 7)
        self.assertEqual(int(stats["bytes_written"]), sum(map(len, replies)))

    def test_connections(self) -> None:
        other = self.connect()
        stats = self.stats(other)
        self.assertEqual(
            (stats["curr_connections"], stats["total_connections"]), ("2", "2")
        )
        other.close()
        self.client.close()
        stats = self.stats()
        self.assertEqual(
            (stats["curr_connections"], stats["total_connections"]), ("1", "3")
        )

    def test_queue_creates_and_deletes(self) -> None:
        self.ask(set_line(b"q", b"a") * 2 + set_line(b"r", b"b") + b"delete q\r\n")
        self.ask(set_line(b"q", b"c"))
        stats = self.stats()
        self.assertEqual((stats["queue_creates"], stats["queue_deletes"]), ("3", "1"))

    def test_server_item_counts(self) -> None:
        self.ask(set_line(b"q", b"abc") * 2 + set_line(b"r", b"de") + b"get q\r\n")
        stats = self.stats()
        self.assertEqual(stats["curr_items"], "2")
        self.assertEqual(stats["total_items"], "3")
        self.assertEqual(stats["bytes"], "5")

    def test_uptime_and_time(self) -> None:
        self.clock.advance(1_700_000_000)
        self.service.startService()
        self.clock.advance(42.5)
        stats = self.stats()
        self.assertEqual(stats["uptime"], "42")
        self.assertEqual(stats["time"], "1700000042")

    def test_queue_counters(self) -> None:
        self.ask(set_line(b"q", b"abc") + set_line(b"q", b"de") + set_line(b"q", b"f"))
        self.clock.advance(1.5)
        self.ask(b"get q/open\r\n")
        stats = self.stats()
        self.assertEqual(stats["queue_q_items"], "2")
        self.assertEqual(stats["queue_q_bytes"], "3")
        self.assertEqual(stats["queue_q_total_items"], "3")
        self.assertEqual(stats["queue_q_age"], "1500")
        self.assertEqual(stats["queue_q_open_transactions"], "1")
        self.assertEqual(stats["queue_q_transactions"], "1")
        self.ask(b"get q/abort\r\n")
        stats = self.stats()
        self.assertEqual(stats["queue_q_open_transactions"], "0")
        self.assertEqual(stats["queue_q_canceled_transactions"], "1")
        self.assertEqual(stats["queue_q_items"], "3")
        self.clock.advance(0.25)
        self.ask(b"get q/open\r\nget q/close/open\r\n")
        stats = self.stats()
        self.assertEqual(stats["queue_q_transactions"], "3")
        self.assertEqual(stats["queue_q_age"], "1750")
        self.ask(b"flush q\r\nflush q\r\n")
        self.assertEqual(self.queue_stat("q", "total_flushes"), 2)

    def test_waiters(self) -> None:
        self.ask(set_line(b"q", b"a") + b"get q\r\n")
        others = [self.connect() for i in range(2)]
        for other in others:
            other.send(b"get q/t=1000\r\n")
        self.assertEqual(self.queue_stat("q", "waiters"), 2)
        others[0].close()
        self.assertEqual(self.queue_stat("q", "waiters"), 1)
        self.clock.advance(1)
        self.assertEqual(self.queue_stat("q", "waiters"), 0)

    def test_expired_items(self) -> None:
        self.ask(set_line(b"q", b"a", exptime=1) + set_line(b"q", b"b", exptime=-1))
        self.clock.advance(2)
        self.ask(b"get q\r\n")
        self.assertEqual(self.queue_stat("q", "expired_items"), 2)


class PipelineTests(ProtocolTestCase):
    def test_one_write_per_read(self) -> None:
        request = b"".join(set_line(b"q", b"%03d" % i) for i in range(200))
        request += b"get q\r\n" * 200 + b"bogus\r\nversion\r\n"
        self.client.send(request)
        self.assertEqual(len(self.client.transport.writes), 1)
        self.assertEqual(
            self.client.take(),
            b"STORED\r\n" * 200
            + b"".join(value(b"q", b"%03d" % i) + b"END\r\n" for i in range(200))
            + b"ERROR\r\nVERSION 1.0.0\r\n",
        )

    def test_many_requests_are_fast(self) -> None:
        count = 20000
        self.client.send(set_line(b"q", b"x") * count + b"get q\r\n" * count)
        self.assertEqual(
            self.client.take(),
            b"STORED\r\n" * count + (value(b"q", b"x") + b"END\r\n") * count,
        )
        self.assertEqual(self.queue("q").total_items, count)
        self.assertEqual(self.queue("q").items, 0)

    def test_waiting_get_holds_later_requests(self) -> None:
        self.client.send(
            b"get q/t=500\r\nversion\r\n" + set_line(b"q", b"x") + b"get q\r\n"
        )
        self.assertEqual(self.client.take(), b"")
        self.assertIsNone(self.service.queue("q"))
        self.clock.advance(0.5)
        self.assertEqual(
            self.client.take(),
            b"END\r\nVERSION 1.0.0\r\nSTORED\r\n" + value(b"q", b"x") + b"END\r\n",
        )

    def test_waiting_get_served_then_later_requests(self) -> None:
        self.client.send(b"get q/t=500\r\nget q/t=500\r\nversion\r\n")
        self.connect().ask(set_line(b"q", b"1") + set_line(b"q", b"2"))
        self.assertEqual(
            self.client.take(),
            value(b"q/t=500", b"1")
            + b"END\r\n"
            + value(b"q/t=500", b"2")
            + b"END\r\nVERSION 1.0.0\r\n",
        )

    def test_requests_arriving_during_a_wait(self) -> None:
        self.client.send(b"get q/t=500\r\n")
        self.client.send(b"version\r\n")
        self.client.send(b"get q/t=100\r\nversion\r\n")
        self.assertEqual(self.client.take(), b"")
        self.clock.advance(0.5)
        self.assertEqual(self.client.take(), b"END\r\nVERSION 1.0.0\r\n")
        self.clock.advance(0.1)
        self.assertEqual(self.client.take(), b"END\r\nVERSION 1.0.0\r\n")

    def journal(self, name: str) -> FakeJournal:
        journal = FakeJournal(durable=True)
        self.service.create_queue(name).journal = journal
        return journal

    def test_durable_set_holds_later_replies(self) -> None:
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a") + b"version\r\n" + set_line(b"r", b"b"))
        self.assertEqual(self.client.take(), b"")
        self.assertEqual(len(journal.pending), 1)
        journal.pending[0].callback(None)
        self.assertEqual(self.client.take(), b"STORED\r\nVERSION 1.0.0\r\nSTORED\r\n")

    def test_a_waiting_get_answered_behind_a_durable_set(self) -> None:
        """A waiting get served while a durable set before it is not yet
        answered waits behind its STORED; served once it is, it leaves at
        once, and alone."""
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a") + b"get r/t=1000\r\n")
        self.connect().ask(set_line(b"r", b"1"))
        self.assertEqual(self.client.take(), b"")
        journal.pending[0].callback(None)
        self.assertEqual(
            self.client.take(), b"STORED\r\n" + value(b"r/t=1000", b"1") + b"END\r\n"
        )
        self.client.send(b"get r/t=1000\r\n")
        self.connect().ask(set_line(b"r", b"2"))
        self.assertEqual(
            self.client.transport.writes[-1:], [value(b"r/t=1000", b"2") + b"END\r\n"]
        )

    def test_durable_sets_in_order(self) -> None:
        journal = self.journal("q")
        # Two different lines: two sets, not a run.
        self.client.send(
            set_line(b"q", b"a") + set_line(b"q", b"b", flags=1) + b"get r\r\n"
        )
        journal.pending[1].callback(None)
        self.assertEqual(self.client.take(), b"")
        journal.pending[0].callback(None)
        self.assertEqual(self.client.take(), b"STORED\r\nSTORED\r\nEND\r\n")
        self.assertEqual(self.ask(b"version\r\n"), b"VERSION 1.0.0\r\n")

    def test_durable_set_failure(self) -> None:
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a") + b"version\r\n")
        journal.pending[0].errback(OSError("disk full"))
        reply = self.client.take()
        self.assertTrue(reply.startswith(b"SERVER_ERROR "), reply)
        self.assertTrue(reply.endswith(b"\r\nVERSION 1.0.0\r\n"), reply)

    def test_durable_sets_of_one_read_leave_in_one_write(self) -> None:
        journal = self.journal("q")
        # Different lines, so that each set is its own.
        self.client.send(
            b"".join(set_line(b"q", b"a", flags=i) for i in range(50)) + b"version\r\n"
        )
        self.client.send(set_line(b"q", b"b") + set_line(b"q", b"c", flags=1))
        self.assertEqual(len(journal.pending), 52)
        for durable in journal.pending[:49]:
            durable.callback(None)
        self.assertEqual(self.client.transport.writes, [])
        journal.pending[51].callback(None)
        journal.pending[50].errback(OSError("disk full"))
        self.assertEqual(self.client.transport.writes, [])
        journal.pending[49].callback(None)
        # The first read's fifty STOREDs and everything ready behind them.
        self.assertEqual(
            self.client.transport.writes,
            [
                b"STORED\r\n" * 50
                + b"VERSION 1.0.0\r\nSERVER_ERROR disk full\r\nSTORED\r\n"
            ],
        )

    def test_durable_set_noreply(self) -> None:
        journal = self.journal("q")
        self.assertEqual(
            self.ask(b"set q 0 0 1 noreply\r\na\r\nversion\r\n"), b"VERSION 1.0.0\r\n"
        )
        journal.pending[0].callback(None)
        self.assertEqual(self.client.take(), b"")

    def test_durable_set_then_quit(self) -> None:
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a") + b"quit\r\n")
        self.assertFalse(self.client.closed)
        journal.pending[0].callback(None)
        self.assertEqual(self.client.take(), b"STORED\r\n")
        self.assertTrue(self.client.closed)

    def test_stored_leaves_before_the_queue_takes_the_item(self) -> None:
        """Nothing between a set's fsync and its reply: the queue takes the
        item after, in the same turn, before any other request is read."""
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a"))
        queue = self.queue("q")
        seen: list[tuple[bytes, float | None]] = []
        journal.pending[0].first.append(
            lambda: seen.append((self.client.take(), queue.oldest_added))
        )
        journal.pending[0].callback(None)
        # Nothing ready to hand out yet when STORED had left.
        self.assertEqual(seen, [(b"STORED\r\n", None)])
        self.assertIsNotNone(queue.oldest_added)
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", b"a") + b"END\r\n")

    def test_reading_held_back_goes_on_once_the_queue_has_the_item(self) -> None:
        """Replies held behind a durable set stopped the reading; its reply
        releases them, but the requests not read yet are read only once
        the queue has the set's item, so a get among them finds it."""
        big = b"x" * (MAX_HELD_OUTPUT // 4)
        self.assertEqual(self.ask(set_line(b"r", big) * 6), b"STORED\r\n" * 6)
        journal = self.journal("q")
        self.client.send(set_line(b"q", b"a") + b"get r\r\n" * 6 + b"get q\r\n")
        self.assertEqual(self.client.take(), b"")
        self.assertEqual(self.client.transport.producerState, "paused")
        journal.pending[0].callback(None)
        self.assertEqual(
            self.client.take(),
            b"STORED\r\n"
            + (value(b"r", big) + b"END\r\n") * 6
            + value(b"q", b"a")
            + b"END\r\n",
        )


class DisconnectTests(ProtocolTestCase):
    def test_disconnect_while_waiting(self) -> None:
        self.ask(set_line(b"q", b"a") + b"get q\r\n")
        self.client.send(b"get q/t=1000\r\n")
        self.assertEqual(self.queue("q").waiters, 1)
        self.client.close()
        self.assertEqual(self.queue("q").waiters, 0)
        self.client.transport.clear()
        self.assertEqual(self.connect().ask(set_line(b"q", b"b")), b"STORED\r\n")
        self.assertEqual(self.client.transport.value(), b"")
        self.assertEqual(self.queue("q").items, 1)
        self.clock.advance(2)
        self.assertEqual(self.client.transport.value(), b"")

    def test_disconnect_while_waiting_for_creation(self) -> None:
        self.client.send(b"get new/t=1000\r\n")
        self.client.close()
        self.assertEqual(self.connect().ask(set_line(b"new", b"b")), b"STORED\r\n")
        self.assertEqual(self.client.transport.value(), b"")
        self.assertEqual(self.queue("new").items, 1)

    def test_open_read_handed_to_a_waiter_on_an_unborn_queue(self) -> None:
        self.client.send(b"get new/t=1000/open\r\n")
        self.connect().ask(set_line(b"new", b"a") + set_line(b"new", b"b"))
        self.assertEqual(
            self.client.take(), value(b"new/t=1000/open", b"a") + b"END\r\n"
        )
        self.assertEqual(self.queue("new").open_items, 1)
        self.client.close()
        self.assertEqual(
            self.connect().ask(b"get new new\r\n"),
            value(b"new", b"a") + value(b"new", b"b") + b"END\r\n",
        )

    def test_disconnect_in_a_several_key_wait(self) -> None:
        """An open read handed out for an earlier key of a get that then
        waits goes back when the connection drops."""
        self.ask(set_line(b"a", b"1"))
        self.client.send(b"get a/open b/t=1000\r\n")
        self.assertEqual(self.queue("a").open_items, 1)
        self.client.close()
        self.assertEqual((self.queue("a").items, self.queue("a").open_items), (1, 0))

    def test_disconnect_during_durable_set(self) -> None:
        journal = FakeJournal(durable=True)
        self.service.create_queue("q").journal = journal
        self.client.send(set_line(b"q", b"a") + b"version\r\n")
        self.client.close()
        journal.pending[0].callback(None)
        self.assertEqual(self.client.transport.value(), b"")
        self.assertEqual(self.queue("q").items, 1)

    def test_disconnect_while_waiting_to_open(self) -> None:
        self.client.send(b"get q/t=1000/open\r\n")
        self.client.close()
        self.connect().ask(set_line(b"q", b"b"))
        queue = self.queue("q")
        self.assertEqual((queue.items, queue.open_items), (1, 0))

    def test_disconnect_with_open_reads_on_several_queues(self) -> None:
        self.ask(
            b"".join(
                set_line(n, b"%s%d" % (n, i)) for n in [b"a", b"b"] for i in range(2)
            )
        )
        self.ask(b"get a/open b/open\r\n")
        self.client.close()
        other = self.connect()
        self.assertEqual(
            other.ask(b"get a a b b\r\n"),
            value(b"a", b"a0")
            + value(b"a", b"a1")
            + value(b"b", b"b0")
            + value(b"b", b"b1")
            + b"END\r\n",
        )

    def test_data_after_close_is_ignored(self) -> None:
        self.ask(b"quit\r\n")
        self.client.transport.clear()
        self.client.send(set_line(b"q", b"a"))
        self.assertEqual(self.client.transport.value(), b"")
        self.assertIsNone(self.service.queue("q"))


class BackpressureTests(ProtocolTestCase):
    def test_registered_as_streaming_producer(self) -> None:
        self.assertIs(self.client.transport.producer, self.client.protocol)
        self.assertTrue(self.client.transport.streaming)

    def test_pause_and_resume(self) -> None:
        transport = self.client.transport
        self.client.protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.ask(set_line(b"q", b"a") + b"version\r\n"), b"")
        self.assertIsNone(self.service.queue("q"))
        self.client.protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.client.take(), b"STORED\r\nVERSION 1.0.0\r\n")

    def test_paused_while_a_get_waits(self) -> None:
        """A reply written after a wait may pause the connection: the
        requests buffered behind the wait stay unhandled until resumed."""
        transport = self.client.transport
        self.client.send(b"get q/t=1000\r\n" + set_line(b"r", b"x") + b"version\r\n")
        transport.pause_after_write = True
        self.connect().ask(set_line(b"q", b"a"))
        self.assertEqual(self.client.take(), value(b"q/t=1000", b"a") + b"END\r\n")
        self.assertEqual(transport.producerState, "paused")
        self.assertIsNone(self.service.queue("r"))
        transport.pause_after_write = False
        self.client.protocol.resumeProducing()
        self.assertEqual(self.client.take(), b"STORED\r\nVERSION 1.0.0\r\n")
        self.assertEqual(transport.producerState, "producing")

    def test_paused_in_the_middle_of_a_batch(self) -> None:
        """A batch whose replies are large is written as it goes; a pause
        that such a write causes stops the batch until resumed."""
        count = 20000
        self.paused_then_resumed(set_line(b"q", b"x") * count, count)

    def test_paused_in_the_middle_of_single_sets(self) -> None:
        """Sets that are not a run (their lines differ) are written as they
        go too, once their replies grow large."""
        count = 20000
        sets = [set_line(b"q", b"x" * (1 + i % 2)) for i in range(count)]
        self.paused_then_resumed(b"".join(sets), count)

    def paused_then_resumed(self, sets: bytes, count: int) -> None:
        """``count`` sets and a version, sent at once to a transport that
        pauses after a write: the sets stop part way, each answered, and
        the rest go on once it resumes."""
        transport = self.client.transport
        transport.pause_after_write = True
        self.client.send(sets + b"version\r\n")
        self.assertEqual(transport.producerState, "paused")
        handled = self.queue("q").total_items
        self.assertLess(handled, count)
        self.assertEqual(self.client.take(), b"STORED\r\n" * handled)
        transport.pause_after_write = False
        self.client.protocol.resumeProducing()
        self.assertEqual(
            self.client.take(), b"STORED\r\n" * (count - handled) + b"VERSION 1.0.0\r\n"
        )
        self.assertEqual(self.queue("q").total_items, count)

    def test_backlog_while_waiting(self) -> None:
        transport = self.client.transport
        self.client.send(b"get q/t=1000\r\n")
        big = b"x" * MAX_BACKLOG
        self.client.send(b"set r 0 0 %d\r\n" % len(big))
        self.assertEqual(transport.producerState, "producing")
        self.client.send(big[: MAX_BACKLOG // 2])
        self.assertEqual(transport.producerState, "producing")
        self.client.send(big[MAX_BACKLOG // 2 :] + b"\r\nversion\r\n")
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(1)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.client.take(), b"END\r\nSTORED\r\nVERSION 1.0.0\r\n")
        self.assertEqual(self.queue("r").queued_bytes, MAX_BACKLOG)

    def test_backlog_without_wait_does_not_stick(self) -> None:
        """Input that arrives while paused for output does not keep the
        connection paused once the client reads again."""
        transport = self.client.transport
        self.client.protocol.pauseProducing()
        self.client.send(set_line(b"q", b"x" * (MAX_BACKLOG + 1)))
        self.client.protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.client.take(), b"STORED\r\n")


class JournalBacklogTests(SynchronousTestCase):
    """A producer faster than the disk: once the journal writer has more
    than its limit still to write, the producer's connection is not read
    until half of it is written; a consumer goes on meanwhile."""

    def setUp(self) -> None:
        held = HandWrittenService(self, "never")
        self.clock, self.pool = held.clock, held.pool
        self.service, self.writer = held.service, held.writer
        self.writer.max_backlog = 1000
        self.factory = QueueFactory(self.service)

    def test_a_producer_waits_for_the_disk(self) -> None:
        producer = Client(self.factory)
        consumer = Client(self.factory)
        # Lines that differ, so that they are stored one by one.
        datas = [b"x" * (100 + i % 2) for i in range(30)]
        producer.send(b"".join(set_line(b"q", data) for data in datas) + b"version\r\n")
        # Past 1000 bytes not yet written: the rest waits.
        self.assertEqual(producer.transport.producerState, "paused")
        handled = self.queue().total_items
        self.assertEqual(handled, 10)
        self.assertEqual(producer.take(), b"STORED\r\n" * handled)
        self.assertEqual(self.writer.backlog, sum(map(len, datas[:handled])))
        self.assertEqual(consumer.ask(b"get q\r\n"), value(b"q", datas[0]) + b"END\r\n")
        # The disk catches up, batch by batch.
        self.run_writer()
        self.assertEqual(producer.transport.producerState, "producing")
        self.assertEqual(
            producer.take(), b"STORED\r\n" * (30 - handled) + b"VERSION 1.0.0\r\n"
        )
        self.assertEqual(self.writer.backlog, 0)
        self.assertEqual(self.queue().items, 29)

    def test_noreply_sets_and_runs_wait_too(self) -> None:
        producer = Client(self.factory)
        data = b"y" * 100
        quiet = b"set q 0 0 100 noreply\r\n" + data + b"\r\n"
        producer.send(quiet * 12 + set_line(b"q", data) * 20 + b"version\r\n")
        self.assertEqual(producer.transport.producerState, "paused")
        self.assertEqual(self.queue().total_items, 11)
        self.assertEqual(producer.take(), b"")
        self.run_writer()
        self.assertEqual(producer.transport.producerState, "producing")
        self.assertEqual(producer.take(), b"STORED\r\n" * 20 + b"VERSION 1.0.0\r\n")
        self.assertEqual(self.queue().items, 32)

    def test_a_connection_that_goes_away_while_paused(self) -> None:
        producer = Client(self.factory)
        # Lines that differ, so that they are stored one by one.
        producer.send(b"".join(set_line(b"q", b"z" * (600 + i)) for i in range(3)))
        self.assertEqual(producer.transport.producerState, "paused")
        producer.close()
        self.run_writer()
        self.assertEqual(self.writer.backlog, 0)
        self.assertEqual(self.queue().items, 2)
        # A new connection is read as usual.
        self.assertEqual(Client(self.factory).ask(b"version\r\n"), b"VERSION 1.0.0\r\n")

    def run_writer(self) -> None:
        ran = 0
        while self.pool.work and ran < 1000:
            self.pool.run_one()
            ran += 1

    def queue(self) -> Queue:
        queue = self.service.queue("q")
        assert queue is not None
        return queue
