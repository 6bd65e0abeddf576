"""Tests for erq.protocol.framing: the bytes a connection reads cut into
requests, a lock-step client's read handled as it comes, and input split
anywhere handled as if it came whole."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.protocol import MAX_HELD_OUTPUT, QueueFactory
from erq.protocol.framing import Framing
from erq.protocol.requests import known_lines
from tests.support import (
    Client,
    HandWrittenService,
    ProtocolTestCase,
    set_line,
    value,
)


class LockStepReadTests(ProtocolTestCase):
    """``Framing.lock_step`` alone: a read that is one whole request of a
    line seen before is handled and answered at once; anything else is
    left to the run, with nothing done."""

    def setUp(self) -> None:
        super().setUp()
        self.framing = Framing(self.client.protocol)

    def test_a_known_set_is_stored_and_answered_in_one_write(self) -> None:
        self.assertEqual(self.ask(set_line(b"step-a", b"a")), b"STORED\r\n")
        writes = self.client.transport.writes
        del writes[:]
        self.assertTrue(self.framing.lock_step(set_line(b"step-a", b"b")))
        self.assertEqual(writes, [b"STORED\r\n"])
        self.assertEqual(self.queue("step-a").items, 2)

    def test_a_known_get_is_answered_in_one_write(self) -> None:
        self.ask(set_line(b"step-b", b"a") + b"get step-b\r\n")
        self.ask(set_line(b"step-b", b"b"))
        writes = self.client.transport.writes
        del writes[:]
        self.assertTrue(self.framing.lock_step(b"get step-b\r\n"))
        self.assertEqual(writes, [value(b"step-b", b"b") + b"END\r\n"])

    def test_a_line_not_seen_before_is_left_to_the_run(self) -> None:
        known_lines.pop(b"set step-c 0 0 1", None)
        self.assertFalse(self.framing.lock_step(set_line(b"step-c", b"a")))
        self.assertEqual(self.client.take(), b"")
        self.assertIsNone(self.service.queue("step-c"))

    def test_a_set_with_less_or_more_than_its_block_is_left_to_the_run(self) -> None:
        self.ask(set_line(b"step-d", b"abc"))
        line = b"set step-d 0 0 3\r\n"
        self.assertFalse(self.framing.lock_step(line + b"ab"))
        self.assertFalse(self.framing.lock_step(line + b"abc\r\nget step-d\r\n"))
        self.assertEqual(self.client.take(), b"")
        self.assertEqual(self.queue("step-d").items, 1)

    def test_a_get_with_more_behind_it_is_left_to_the_run(self) -> None:
        self.ask(set_line(b"step-e", b"a") + b"get step-e\r\n")
        self.ask(set_line(b"step-e", b"b"))
        self.assertFalse(self.framing.lock_step(b"get step-e\r\nversion\r\n"))
        self.assertEqual(self.client.take(), b"")
        self.assertEqual(self.queue("step-e").items, 1)

    def test_a_get_with_open_reads_is_left_to_the_run(self) -> None:
        self.ask(set_line(b"step-f", b"a") * 2 + b"get step-f\r\n")
        self.ask(set_line(b"step-f", b"b") + b"get step-f/open\r\n")
        self.assertFalse(self.framing.lock_step(b"get step-f\r\n"))
        self.assertEqual(self.client.take(), b"")


class SplitInputTests(ProtocolTestCase):
    conversation = (
        b"set q 7 0 5\r\nhello\r\n"
        b"set q 0 0 4 noreply\r\na\r\nb\r\n"
        b"set r 0 0 3\nxyz\r\n"
        b"get q r\r\n"
        b"get q/open\r\n"
        b"get q/close\n"
        b"version\r\n"
    )
    expected = (
        b"STORED\r\nSTORED\r\n"
        + value(b"q", b"hello", 7)
        + value(b"r", b"xyz")
        + b"END\r\n"
        + value(b"q/open", b"a\r\nb")
        + b"END\r\nEND\r\n"
        + b"VERSION 1.0.0\r\n"
    )

    def test_all_at_once(self) -> None:
        self.assertEqual(self.ask(self.conversation), self.expected)

    def test_one_byte_at_a_time(self) -> None:
        for byte in self.conversation:
            self.client.send(bytes([byte]))
        self.assertEqual(self.client.take(), self.expected)

    def test_every_split_point(self) -> None:
        for at in range(1, len(self.conversation)):
            self.setUp()
            self.client.send(self.conversation[:at])
            self.client.send(self.conversation[at:])
            self.assertEqual(self.client.take(), self.expected, at)

    def test_between_cr_and_lf(self) -> None:
        self.assertEqual(self.ask(b"set q 0 0 2\r"), b"")
        self.assertEqual(self.ask(b"\nab\r"), b"")
        self.assertEqual(self.ask(b"\nget q\r"), b"STORED\r\n")
        self.assertEqual(self.ask(b"\n"), value(b"q", b"ab") + b"END\r\n")

    def test_inside_data_block(self) -> None:
        self.assertEqual(self.ask(b"set q 0 0 11\r\nhel"), b"")
        self.assertEqual(self.ask(b"lo\r\nwor"), b"")
        self.assertEqual(
            self.ask(b"l\r\nget q\r\n"),
            b"STORED\r\n" + value(b"q", b"hello\r\nworl") + b"END\r\n",
        )


class RepeatedLineTests(ProtocolTestCase):
    """A line seen before is parsed once, and still checked as carefully."""

    def test_repeated_set_line_checks_each_block(self) -> None:
        line = b"set repeat-a 3 0 2\r\n"
        self.assertEqual(
            self.ask(line + b"ab\r\n" + line + b"cd\r\n"), b"STORED\r\n" * 2
        )
        self.assertEqual(
            self.ask(b"get repeat-a\r\nget repeat-a\r\n"),
            b"VALUE repeat-a 3 2\r\nab\r\nEND\r\nVALUE repeat-a 3 2\r\ncd\r\nEND\r\n",
        )
        reply = self.ask(line + b"abc\r\n")
        self.assertEqual(reply, b"CLIENT_ERROR bad data chunk\r\n")
        self.assertTrue(self.client.closed)

    def test_repeated_set_line_sees_a_lower_item_cap(self) -> None:
        line = set_line(b"repeat-b", b"x" * 20)
        self.assertEqual(self.ask(line), b"STORED\r\n")
        self.service.config = self.service.config.with_overrides(max_item_cap=10)
        self.assertEqual(self.ask(line), b"SERVER_ERROR object too large\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.queue("repeat-b").items, 1)

    def test_repeated_bad_set_line_is_refused_each_time(self) -> None:
        line = b"set repeat-c 99999999999 0 1\r\nx\r\n"
        self.assertEqual(self.ask(line * 2), b"CLIENT_ERROR bad flags\r\n" * 2)

    def test_repeated_get_line_keeps_the_open_read_rules(self) -> None:
        self.ask(set_line(b"repeat-d", b"a") + set_line(b"repeat-d", b"b"))
        self.assertEqual(
            self.ask(b"get repeat-d\r\n"), value(b"repeat-d", b"a") + b"END\r\n"
        )
        other = self.connect()
        self.assertEqual(
            other.ask(b"get repeat-d/open\r\n"),
            value(b"repeat-d/open", b"b") + b"END\r\n",
        )
        # A plain get where this connection has an open read is refused.
        self.assertEqual(other.ask(b"get repeat-d\r\n"), b"ERROR\r\n")
        self.assertTrue(other.closed)
        self.assertEqual(self.queue("repeat-d").items, 1)


class LockStepTests(SynchronousTestCase):
    """A read that holds one whole request, as a lock-step client sends it,
    is handled as any other: its reply keeps its place behind a durable
    set's, and replies held back stop the reading."""

    def setUp(self) -> None:
        held = HandWrittenService(self, "always")
        self.clock, self.pool = held.clock, held.pool
        self.service, self.writer = held.service, held.writer
        self.client = Client(QueueFactory(self.service))

    def hand_over(self) -> None:
        """The writer hands what is pending to its thread."""
        self.clock.advance(0)
        self.assertEqual(len(self.pool.work), 1)

    def settle(self) -> None:
        """The writer writes everything pending."""
        for _ in range(100):
            self.clock.advance(0)
            if not self.pool.run_next():
                break

    def test_each_read_of_durable_sets_is_answered_alone(self) -> None:
        line = set_line(b"q", b"a")
        self.client.send(line)
        self.settle()
        self.assertEqual(self.client.take(), b"STORED\r\n")
        # The line is known now: each of these reads is handled at once.
        self.assertEqual(self.client.ask(line), b"")
        self.hand_over()
        self.assertEqual(self.client.ask(line), b"")
        self.pool.run_one()
        # The first read's set is durable: its reply does not wait for the
        # second's.
        self.assertEqual(self.client.take(), b"STORED\r\n")
        self.hand_over()
        self.pool.run_one()
        self.assertEqual(self.client.take(), b"STORED\r\n")

    def test_replies_held_behind_a_durable_set_stop_the_reading(self) -> None:
        big = b"x" * (MAX_HELD_OUTPUT // 4)
        self.client.send(set_line(b"r", big) * 10)
        self.settle()
        self.assertEqual(self.client.take(), b"STORED\r\n" * 10)
        self.assertEqual(self.client.ask(set_line(b"q", b"a")), b"")
        transport = self.client.transport
        reads = 0
        while transport.producerState == "producing" and reads < 10:
            self.assertEqual(self.client.ask(b"get r\r\n"), b"")
            reads += 1
        # Four replies of a quarter each are held: reading stops.
        self.assertEqual(reads, 4)
        queue = self.service.queue("r")
        assert queue is not None
        self.assertEqual(queue.items, 6)
        self.settle()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(
            self.client.take(), b"STORED\r\n" + (value(b"r", big) + b"END\r\n") * 4
        )
