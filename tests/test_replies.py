"""Tests for erq.protocol.replies: replies kept in request order, without a
connection or a service."""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from erq.durable import Durable
from erq.protocol.replies import ReplyOrder, SentAtOnce, server_error


class ReplyOrderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ready_calls = 0
        self.early_calls: list[bool] = []
        self.order = ReplyOrder(self.ready)

    def ready(self) -> None:
        self.ready_calls += 1
        self.early_calls.append(self.order.early)

    def test_ready_replies_go_out(self) -> None:
        self.order.add(b"A\r\n")
        self.order.add(b"B\r\n")
        self.assertEqual(self.order.out_size, 6)
        self.assertEqual(self.order.take(), b"A\r\nB\r\n")
        self.assertEqual((self.order.out, self.order.out_size), ([], 0))

    def test_take_nothing(self) -> None:
        self.assertEqual(self.order.take(), b"")

    def test_take_one(self) -> None:
        reply = b"END\r\n"
        self.order.add(reply)
        self.assertIs(self.order.take(), reply)

    def test_slot_holds_back_later_replies(self) -> None:
        self.order.add(b"1\r\n")
        slot = self.order.hold()
        self.order.add(b"3\r\n")
        self.assertEqual(self.order.take(), b"1\r\n")
        self.assertEqual(self.order.held, 3)
        self.order.fill(slot, b"2\r\n")
        self.assertEqual(self.ready_calls, 1)
        self.assertEqual(self.order.take(), b"2\r\n3\r\n")
        self.assertEqual(self.order.held, 0)
        self.assertFalse(self.order.slots)

    def test_slots_fill_out_of_order(self) -> None:
        first = self.order.hold()
        second = self.order.hold()
        self.order.fill(second, b"2\r\n")
        self.assertEqual(self.order.take(), b"")
        self.order.fill(first, b"1\r\n")
        self.assertEqual(self.order.take(), b"1\r\n2\r\n")

    def test_streamed_slot(self) -> None:
        slot = self.order.hold()
        self.order.add(b"after\r\n")
        self.order.fill(slot, b"VALUE a\r\n", done=False)
        self.assertEqual(self.order.take(), b"VALUE a\r\n")
        self.order.fill(slot, b"VALUE b\r\n", done=False)
        self.assertEqual(self.order.take(), b"VALUE b\r\n")
        self.order.fill(slot, b"END\r\n")
        self.assertEqual(self.order.take(), b"END\r\nafter\r\n")

    def test_durable_sets_of_one_read_share_a_slot(self) -> None:
        first: Deferred[bool | None] = Deferred()
        second: Deferred[bool | None] = Deferred()
        self.order.await_stored(first, 1)
        self.order.await_stored(second, 2)
        self.assertEqual(len(self.order.slots), 1)
        second.callback(True)
        self.assertEqual(self.order.take(), b"")
        first.callback(False)
        self.assertEqual(self.ready_calls, 1)
        self.assertEqual(self.order.take(), b"NOT_STORED\r\n" + b"STORED\r\n" * 2)

    def test_next_read_takes_a_new_slot(self) -> None:
        first: Deferred[bool | None] = Deferred()
        second: Deferred[bool | None] = Deferred()
        self.order.await_stored(first, 1)
        self.order.end_read()
        self.order.await_stored(second, 1)
        self.assertEqual(len(self.order.slots), 2)
        first.callback(True)
        self.assertEqual(self.order.take(), b"STORED\r\n")
        second.callback(True)
        self.assertEqual(self.order.take(), b"STORED\r\n")

    def test_reply_between_durable_sets_splits_them(self) -> None:
        first: Deferred[bool | None] = Deferred()
        second: Deferred[bool | None] = Deferred()
        self.order.await_stored(first, 1)
        self.order.add(b"END\r\n")
        self.order.await_stored(second, 1)
        second.callback(True)
        first.callback(True)
        self.assertEqual(self.order.take(), b"STORED\r\nEND\r\nSTORED\r\n")

    def test_failed_journal_write(self) -> None:
        durable: Deferred[bool | None] = Deferred()
        self.order.await_stored(durable, 2)
        durable.errback(Failure(OSError("disk full")))
        self.assertEqual(self.order.take(), b"SERVER_ERROR disk full\r\n" * 2)

    def test_server_error_without_reason(self) -> None:
        self.assertEqual(
            server_error(Failure(OSError())), b"SERVER_ERROR journal failed\r\n"
        )

    def test_durable_sets_answered_before_the_callbacks(self) -> None:
        """A durable add's replies go as soon as it is durable, before the
        queue takes its items; reading may go on only once it has."""
        durable = Durable()
        self.order.await_stored(durable, 2)
        durable.durable()
        self.assertEqual(self.early_calls, [True])
        self.assertEqual(self.order.take(), b"STORED\r\n" * 2)
        self.assertEqual(self.order.early, False)
        durable.callback(None)
        # Told again, now that reading may go on; nothing is answered twice.
        self.assertEqual(self.early_calls, [True, False])
        self.assertEqual(self.order.take(), b"")

    def test_durable_sets_of_one_read_answered_early_in_order(self) -> None:
        first = Durable()
        second = Durable()
        self.order.await_stored(first, 1)
        self.order.await_stored(second, 1)
        self.order.add(b"END\r\n")
        second.durable()
        self.assertEqual(self.order.take(), b"")
        first.callback(None)
        self.assertEqual(self.order.take(), b"STORED\r\nSTORED\r\nEND\r\n")
        second.callback(None)
        self.assertEqual(self.order.take(), b"")

    def test_failed_durable_write(self) -> None:
        durable = Durable()
        self.order.await_stored(durable, 1)
        durable.errback(Failure(OSError("disk full")))
        self.assertEqual(self.order.take(), b"SERVER_ERROR disk full\r\n")
        self.assertEqual(self.early_calls, [False])


class Socket:
    """The connection's socket, as a reply sent at once sees it."""

    def __init__(self) -> None:
        self.fd = 5
        self.written = 0

    def fileno_now(self) -> int:
        return self.fd

    def wrote(self, count: int) -> None:
        self.written += count


class SentAtOnceTests(SynchronousTestCase):
    """The reply to a durable set that nothing comes before may be sent to
    the socket by the journal itself, the moment the set is durable (see
    ``Durable.direct`` in ``erq.durable``)."""

    def setUp(self) -> None:
        self.ready_calls = 0
        self.early_calls: list[bool] = []
        self.order = ReplyOrder(self.ready)
        self.socket = Socket()
        self.order.direct = self.socket

    def ready(self) -> None:
        self.ready_calls += 1
        self.early_calls.append(self.order.early)

    def direct(self, durable: Durable) -> SentAtOnce:
        direct = durable.direct
        assert isinstance(direct, SentAtOnce)
        return direct

    def test_a_set_alone_is_sent_at_once(self) -> None:
        durable = Durable()
        self.order.await_stored(durable, 1)
        direct = self.direct(durable)
        self.assertEqual((direct.socket(), direct.reply), (5, b"STORED\r\n"))
        direct.sent(8)
        self.assertEqual((self.socket.written, self.order.slots), (8, deque()))
        # Nothing left to write, nor to tell yet.
        self.assertEqual((self.order.take(), self.ready_calls), (b"", 0))
        durable.durable()
        self.assertEqual((self.order.take(), self.ready_calls), (b"", 0))
        # The queue has the item: reading may go on.
        durable.callback(None)
        self.assertEqual(self.early_calls, [False])
        self.assertEqual(self.order.take(), b"")
        # The next read's replies go as ever.
        self.order.end_read()
        self.order.add(b"END\r\n")
        self.assertEqual(self.order.take(), b"END\r\n")

    def test_the_rest_of_a_reply_goes_the_usual_way(self) -> None:
        durable = Durable()
        self.order.await_stored(durable, 3)
        direct = self.direct(durable)
        self.assertEqual(direct.socket(), 5)
        direct.sent(5)
        self.assertEqual(self.socket.written, 5)
        self.assertEqual(self.early_calls, [True])
        self.assertEqual(self.order.take(), (b"STORED\r\n" * 3)[5:])
        durable.durable()
        durable.callback(None)
        self.assertEqual(self.order.take(), b"")

    def test_not_with_replies_behind_it(self) -> None:
        durable = Durable()
        self.order.await_stored(durable, 1)
        self.order.add(b"END\r\n")
        self.assertEqual(self.direct(durable).socket(), -1)

    def test_not_behind_a_reply_still_to_write(self) -> None:
        self.order.add(b"END\r\n")
        durable = Durable()
        self.order.await_stored(durable, 1)
        self.assertEqual(self.direct(durable).socket(), -1)

    def test_not_behind_a_slot(self) -> None:
        self.order.hold()
        durable = Durable()
        self.order.await_stored(durable, 1)
        self.assertEqual(self.direct(durable).socket(), -1)

    def test_not_beside_another_set_of_its_read(self) -> None:
        first = Durable()
        second = Durable()
        self.order.await_stored(first, 1)
        self.order.await_stored(second, 1)
        self.assertIsNone(second.direct)
        self.assertEqual(self.direct(first).socket(), -1)

    def test_not_where_the_socket_says_no(self) -> None:
        durable = Durable()
        self.order.await_stored(durable, 1)
        self.socket.fd = -1
        self.assertEqual(self.direct(durable).socket(), -1)

    def test_not_without_a_socket(self) -> None:
        self.order.direct = None
        durable = Durable()
        self.order.await_stored(durable, 1)
        self.assertIsNone(durable.direct)
