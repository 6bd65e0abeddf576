"""The server's status (erq.status) as clients see it: the ``status``
command, and what a read-only or quiescent server refuses and still does."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from erq.config import QueueSettings
from erq.status import ServerStatus
from erq.values import parse_status
from tests.support import ProtocolTestCase, set_line, value

READONLY = b"SERVER_ERROR server is read-only\r\n"
QUIESCENT = b"SERVER_ERROR server is quiescent\r\n"


class ServerStatusTests(SynchronousTestCase):
    def test_what_each_status_allows(self) -> None:
        self.assertEqual(
            [
                (status.changes_queues, status.hands_out, status.reason)
                for status in ServerStatus
            ],
            [
                (True, True, ""),
                (False, True, "server is read-only"),
                (False, False, "server is quiescent"),
            ],
        )

    def test_named_in_any_case(self) -> None:
        for text, status in (
            ("up", ServerStatus.UP),
            ("ReadOnly", ServerStatus.READONLY),
            ("QUIESCENT", ServerStatus.QUIESCENT),
        ):
            self.assertIs(parse_status(text), status)
        self.assertIs(parse_status(ServerStatus.READONLY), ServerStatus.READONLY)

    def test_anything_else_says_what_is_expected(self) -> None:
        for bad in ("down", "", 1, True):
            with self.assertRaises(ValueError) as raised:
                parse_status(bad)
            self.assertIn(
                'expected "up", "readonly" or "quiescent", got', str(raised.exception)
            )


class StatusCommandTests(ProtocolTestCase):
    def test_answers_the_status(self) -> None:
        self.assertEqual(self.ask(b"status\r\n"), b"UP\r\n")
        self.assertEqual(self.ask(b"status readonly\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"status\r\n"), b"READONLY\r\n")
        self.assertIs(self.service.status, ServerStatus.READONLY)
        self.assertEqual(self.ask(b"STATUS Quiescent\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"status\r\n"), b"QUIESCENT\r\n")
        self.assertEqual(self.ask(b"status UP\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"status\r\n"), b"UP\r\n")

    def test_anything_else_is_a_client_error(self) -> None:
        for line in (b"status down", b"status up now", b"status \xff", b"status 1"):
            self.assertEqual(self.ask(line + b"\r\n"), b"CLIENT_ERROR bad status\r\n")
        self.assertFalse(self.client.closed)
        self.assertIs(self.service.status, ServerStatus.UP)
        self.assertEqual(self.stats()["client_errors"], "4")

    def test_stats_show_it(self) -> None:
        self.assertEqual(self.stats()["server_status"], "UP")
        self.ask(b"status quiescent\r\n")
        self.assertEqual(self.stats()["server_status"], "QUIESCENT")

    def test_each_change_is_logged_with_who_asked(self) -> None:
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        other = self.connect(IPv4Address("TCP", "10.0.0.7", 5000))
        other.ask(b"status readonly\r\n")
        # Asking for the status it has already changes nothing.
        self.ask(b"status readonly\r\n")
        lines = [
            formatEvent(event)
            for event in events
            if event.get("log_level") == LogLevel.info
        ]
        self.assertEqual(
            lines, ["Server status READONLY (was UP), as 10.0.0.7:5000 asked"]
        )


class LoggedInStatusTests(ProtocolTestCase):
    users = b"admin:s3cret\n"

    def test_changing_it_needs_a_login(self) -> None:
        self.assertEqual(
            self.ask(b"status readonly\r\n"), b"CLIENT_ERROR unauthenticated\r\n"
        )
        self.assertEqual(self.ask(b"status\r\n"), b"CLIENT_ERROR unauthenticated\r\n")
        self.assertIs(self.service.status, ServerStatus.UP)
        self.assertEqual(self.ask(set_line(b"login", b"admin s3cret")), b"STORED\r\n")
        self.assertEqual(self.ask(b"status readonly\r\n"), b"END\r\n")
        self.assertIs(self.service.status, ServerStatus.READONLY)


class ReadOnlyTests(ProtocolTestCase):
    defaults = QueueSettings(max_open_reads=2)

    def setUp(self) -> None:
        super().setUp()
        self.ask(set_line(b"q", b"one") + set_line(b"q", b"two"))
        self.assertEqual(self.ask(b"status readonly\r\n"), b"END\r\n")

    def test_set_is_refused_after_its_data_is_read(self) -> None:
        self.assertEqual(self.ask(set_line(b"q", b"three")), READONLY)
        self.assertEqual(self.ask(set_line(b"new", b"x")), READONLY)
        # The stream is still in step, and nothing was stored.
        self.assertEqual(self.ask(b"version\r\n")[:8], b"VERSION ")
        self.assertFalse(self.client.closed)
        self.assertEqual(self.queue_stat("q", "items"), 2)
        self.assertIsNone(self.service.queue("new"))
        # Not the client's mistake; counted as a set that was refused.
        stats = self.stats()
        self.assertEqual(stats["client_errors"], "0")
        self.assertEqual(stats["cmd_set"], "4")

    def test_a_set_line_seen_before_is_refused_too(self) -> None:
        """The line was remembered while the server was up, and a batch of
        it in one read would be stored as one run."""
        self.ask(b"status up\r\n")
        self.assertEqual(self.ask(set_line(b"q", b"abc")), b"STORED\r\n")
        self.ask(b"status readonly\r\n")
        self.assertEqual(self.ask(set_line(b"q", b"xyz") * 3), READONLY * 3)
        self.assertEqual(self.queue_stat("q", "items"), 3)

    def test_noreply_sets_are_dropped_without_a_word(self) -> None:
        line = b"set q 0 0 3 noreply\r\nabc\r\n"
        self.assertEqual(
            self.ask(line * 2 + b"get q\r\n"), value(b"q", b"one") + b"END\r\n"
        )
        self.assertEqual(self.queue_stat("q", "items"), 1)

    def test_delete_and_flushes_are_refused(self) -> None:
        self.assertEqual(self.ask(b"delete q\r\n"), READONLY)
        self.assertEqual(self.ask(b"delete q noreply\r\n"), b"")
        self.assertEqual(self.ask(b"flush q\r\n"), READONLY)
        self.assertEqual(self.ask(b"flush_all\r\n"), READONLY)
        self.assertEqual(self.queue_stat("q", "items"), 2)
        # A mistake on the line is still the client's.
        self.assertEqual(self.ask(b"delete .q\r\n"), b"CLIENT_ERROR bad queue name\r\n")

    def test_consumers_drain_the_server(self) -> None:
        self.assertEqual(
            self.ask(b"get q/peek\r\n"), value(b"q/peek", b"one") + b"END\r\n"
        )
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"one") + b"END\r\n"
        )
        self.assertEqual(self.ask(b"get q/abort\r\n"), b"END\r\n")
        self.assertEqual(
            self.ask(b"get q/open\r\nget q/close/open\r\n"),
            value(b"q/open", b"one")
            + b"END\r\n"
            + value(b"q/close/open", b"two")
            + b"END\r\n",
        )
        self.assertEqual(self.ask(b"confirm q 1\r\n"), b"END\r\n")
        self.assertEqual(self.queue_stat("q", "items"), 0)
        self.assertEqual(self.queue_stat("q", "open_transactions"), 0)

    def test_plain_gets_and_monitor(self) -> None:
        self.assertEqual(
            self.ask(b"get q\r\nget q\r\nget q\r\n"),
            value(b"q", b"one") + b"END\r\n" + value(b"q", b"two") + b"END\r\nEND\r\n",
        )
        self.ask(b"status up\r\n" + set_line(b"q", b"three"))
        self.ask(b"status readonly\r\n")
        self.assertEqual(
            self.ask(b"monitor q 1 1\r\n"), value(b"q", b"three") + b"END\r\n"
        )
        self.assertEqual(self.ask(b"confirm q 1\r\n"), b"END\r\n")

    def test_waiting_gets_go_on_waiting(self) -> None:
        self.ask(b"get q\r\nget q\r\n")
        self.assertEqual(self.ask(b"get q/t=1000\r\n"), b"")
        self.clock.advance(0.5)
        self.assertEqual(self.client.take(), b"")
        self.clock.advance(0.5)
        self.assertEqual(self.client.take(), b"END\r\n")

    def test_the_admin_commands_work(self) -> None:
        reply = self.ask(b"stats\r\n")
        self.assertIn(b"STAT server_status READONLY\r\n", reply)
        self.assertTrue(self.ask(b"dump_stats\r\n").startswith(b"queue 'q' {"))
        self.assertEqual(self.ask(b"flush_expired q\r\n"), b"0\r\n")
        self.assertEqual(self.ask(b"flush_all_expired\r\n"), b"0\r\n")
        self.assertEqual(self.ask(b"shutdown\r\n"), b"")
        self.clock.advance(0)
        self.assertEqual(self.stops, [None])

    def test_up_again_stores_again(self) -> None:
        self.assertEqual(self.ask(b"status up\r\n"), b"END\r\n")
        self.assertEqual(self.ask(set_line(b"q", b"three")), b"STORED\r\n")
        self.assertEqual(self.ask(b"flush q\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"delete q\r\n"), b"DELETED\r\n")


class QuiescentTests(ProtocolTestCase):
    defaults = QueueSettings(max_open_reads=2)

    def setUp(self) -> None:
        super().setUp()
        self.ask(set_line(b"q", b"one") + set_line(b"q", b"two"))
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"one") + b"END\r\n"
        )

    def quiesce(self) -> None:
        self.assertEqual(self.connect().ask(b"status quiescent\r\n"), b"END\r\n")

    def test_sets_deletes_and_flushes_are_refused(self) -> None:
        self.quiesce()
        self.assertEqual(self.ask(set_line(b"q", b"three")), QUIESCENT)
        self.assertEqual(self.ask(b"delete q\r\n"), QUIESCENT)
        self.assertEqual(self.ask(b"flush q\r\n"), QUIESCENT)
        self.assertEqual(self.ask(b"flush_all\r\n"), QUIESCENT)
        self.assertEqual(self.queue_stat("q", "items"), 1)

    def test_every_get_that_takes_or_waits_is_refused(self) -> None:
        other = self.connect()
        self.quiesce()
        for line in (
            b"get q",
            b"gets q",
            b"get q/t=500",
            b"get q/peek",
            b"get q/peek/t=500",
            b"get nothing/t=500",
            b"get q/open",
            b"monitor q 5",
        ):
            self.assertEqual(other.ask(line + b"\r\n"), QUIESCENT, line)
        # Repeated plain gets in one read, which are answered as one run.
        self.assertEqual(other.ask(b"get q\r\n" * 3), QUIESCENT * 3)
        self.assertFalse(other.closed)
        self.assertEqual(self.queue_stat("q", "items"), 1)
        self.assertEqual(self.stats()["client_errors"], "0")

    def test_close_open_is_a_take_and_changes_nothing(self) -> None:
        self.quiesce()
        self.assertEqual(self.ask(b"get q/close/open\r\n"), QUIESCENT)
        self.assertEqual(self.ask(b"get x/close q\r\n"), QUIESCENT)
        self.assertEqual(self.queue_stat("q", "open_transactions"), 1)
        self.assertEqual(self.queue_stat("q", "items"), 1)

    def test_reads_already_open_finish(self) -> None:
        self.assertEqual(
            self.ask(b"get q/open\r\n"), value(b"q/open", b"two") + b"END\r\n"
        )
        self.quiesce()
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"get q/abort\r\n"), b"END\r\n")
        self.assertEqual(self.queue_stat("q", "open_transactions"), 0)
        self.assertEqual(self.queue_stat("q", "items"), 1)
        self.ask(b"status up\r\n")
        self.ask(b"get q/open\r\n")
        self.quiesce()
        self.assertEqual(self.ask(b"confirm q 1\r\n"), b"END\r\n")
        self.assertEqual(self.queue_stat("q", "items"), 0)

    def test_the_admin_commands_work(self) -> None:
        reload_up = self.ask(b"reload\r\n")
        self.quiesce()
        self.assertIn(b"STAT server_status QUIESCENT\r\n", self.ask(b"stats\r\n"))
        self.assertTrue(self.ask(b"dump_stats q\r\n").startswith(b"queue 'q' {"))
        self.assertEqual(self.ask(b"version\r\n")[:8], b"VERSION ")
        self.assertEqual(self.ask(b"status\r\n"), b"QUIESCENT\r\n")
        self.assertEqual(self.ask(b"reload\r\n"), reload_up)
        self.assertEqual(self.ask(b"shutdown\r\n"), b"")
        self.clock.advance(0)
        self.assertEqual(self.stops, [None])

    def test_quit_closes_and_gives_open_reads_back(self) -> None:
        self.quiesce()
        self.assertEqual(self.ask(b"quit\r\n"), b"")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.queue_stat("q", "items"), 2)

    def test_waiting_gets_are_answered_end(self) -> None:
        waiting = self.connect()
        self.assertEqual(waiting.ask(b"get empty/t=5000\r\n"), b"")
        peeking = self.connect()
        self.assertEqual(peeking.ask(b"get never/peek/t=5000\r\n"), b"")
        monitoring = self.connect()
        self.assertEqual(monitoring.ask(b"monitor empty 60\r\n"), b"")
        self.quiesce()
        # At once: the clock has not moved.
        self.assertEqual(waiting.take(), b"END\r\n")
        self.assertEqual(peeking.take(), b"END\r\n")
        self.assertEqual(monitoring.take(), b"END\r\n")
        self.assertEqual(self.queue_stat("q", "waiters"), 0)
        self.assertEqual(self.service.queue("empty"), None)

    def test_a_waiting_get_keeps_what_it_took_and_what_follows_goes_on(self) -> None:
        waiting = self.connect()
        self.assertEqual(
            waiting.ask(b"get q empty/t=5000\r\nget q\r\nversion\r\n"), b""
        )
        self.quiesce()
        reply = waiting.take()
        self.assertEqual(
            reply[: -len(b"VERSION 1.0.0\r\n")],
            value(b"q", b"two") + b"END\r\n" + QUIESCENT,
        )
        self.assertTrue(reply.endswith(b"\r\n") and b"VERSION " in reply)
        self.assertFalse(waiting.closed)

    def test_read_only_does_not_end_waits(self) -> None:
        waiting = self.connect()
        self.assertEqual(waiting.ask(b"get empty/t=5000\r\n"), b"")
        self.assertEqual(self.ask(b"status readonly\r\n"), b"END\r\n")
        self.assertEqual(waiting.take(), b"")
        self.clock.advance(5)
        self.assertEqual(waiting.take(), b"END\r\n")

    def test_up_again_hands_out_again(self) -> None:
        self.quiesce()
        self.assertEqual(self.ask(b"status up\r\n"), b"END\r\n")
        self.assertEqual(
            self.ask(b"get q/close/open\r\n"),
            value(b"q/close/open", b"two") + b"END\r\n",
        )
