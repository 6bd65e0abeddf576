"""Queue and server settings at work: limits, expiry, fanout, the sweep,
reload, monitor and confirm, on a fake clock with in-memory connections."""

from __future__ import annotations

import os
import re
from dataclasses import fields
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from erq import service as service_module
from erq.config import (
    Config,
    MiB,
    QueueSettings,
    ServerSettings,
    load_config,
    parse_config,
)
from erq.journal import engine
from erq.protocol import QueueFactory
from erq.service import QueueService
from erq.tap import (
    DEFAULT_IDLE_POLL_US,
    MAX_IDLE_POLL_US,
    Options,
    StartupError,
    default_idle_poll_us,
    makeService,
)
from tests.support import (
    REPOSITORY,
    SAMPLE,
    ProtocolTestCase,
    set_line,
    toml,
    value,
    write,
)

README = os.path.join(REPOSITORY, "README.rst")


class SettingsCase(ProtocolTestCase):
    """A started service configured by ``config`` (a TOML document, as a
    test writes it indented), on a fake clock, and a first client."""

    config = ""

    def setUp(self) -> None:
        self.clock = Clock()
        self.stops: list[None] = []
        self.service = QueueService(
            parse_config(toml(self.config)),
            reactor=self.clock,
            stop_server=lambda: self.stops.append(None),
        )
        self.service.startService()
        self.addCleanup(self.stop_service)
        self.factory = QueueFactory(self.service)
        self.client = self.connect()

    def stop_service(self) -> None:
        if self.service.running:
            self.service.stopService()

    def put(self, name: str, *items: bytes, exptime: int = 0) -> None:
        """Set items from a connection of their own; each must be stored."""
        request = b"".join(
            set_line(name.encode(), item, exptime=exptime) for item in items
        )
        self.assertEqual(self.connect().ask(request), b"STORED\r\n" * len(items))

    def contents(self, name: str) -> list[bytes]:
        """What a queue holds, head first, without taking it."""
        queue = self.service.queue(name)
        return [] if queue is None else [item.data for item in queue._items]


# -- limits ------------------------------------------------------------------


class LimitTests(SettingsCase):
    config = """
        [queues.small]
        max_items = 2

        [queues.narrow]
        max_size = "5B"

        [queues.thin]
        max_item_size = "1KiB"

        [queues.ring]
        max_items = 2
        discard_old_when_full = true

        [queues.ringbytes]
        max_size = 4
        discard_old_when_full = true

        [queues.aged]
        max_age = "10s"
        """

    def test_max_items(self) -> None:
        reply = self.ask(set_line(b"small", b"a") * 3 + set_line(b"other", b"a") * 3)
        self.assertEqual(
            reply, b"STORED\r\n" * 2 + b"NOT_STORED\r\n" + b"STORED\r\n" * 3
        )
        self.assertEqual(self.ask(b"get small\r\n"), value(b"small", b"a") + b"END\r\n")
        self.assertEqual(self.ask(set_line(b"small", b"b")), b"STORED\r\n")
        self.assertEqual(self.queue_stat("small", "items"), 2)

    def test_max_size(self) -> None:
        reply = self.ask(
            set_line(b"narrow", b"abc")
            + set_line(b"narrow", b"def")
            + set_line(b"narrow", b"de")
            + set_line(b"narrow", b"")
        )
        self.assertEqual(reply, b"STORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\n")
        self.assertEqual(self.queue_stat("narrow", "bytes"), 5)

    def test_max_item_size(self) -> None:
        reply = self.ask(
            set_line(b"thin", b"x" * 1025)
            + set_line(b"thin", b"x" * 1024)
            + set_line(b"other", b"x" * 1025)
        )
        self.assertEqual(reply, b"NOT_STORED\r\nSTORED\r\nSTORED\r\n")
        self.assertFalse(self.client.closed)

    def test_discard_old_when_full(self) -> None:
        reply = self.ask(
            b"".join(set_line(b"ring", data) for data in (b"a", b"b", b"c"))
        )
        self.assertEqual(reply, b"STORED\r\n" * 3)
        self.assertEqual(self.contents("ring"), [b"b", b"c"])
        self.assertEqual(self.queue_stat("ring", "discarded"), 1)
        self.assertEqual(self.queue_stat("ring", "items"), 2)

    def test_discard_old_by_size(self) -> None:
        self.put("ringbytes", b"ab", b"cd")
        self.assertEqual(self.ask(set_line(b"ringbytes", b"efg")), b"STORED\r\n")
        self.assertEqual(self.contents("ringbytes"), [b"efg"])
        self.assertEqual(self.queue_stat("ringbytes", "discarded"), 2)

    def test_discard_nothing_for_an_item_that_cannot_fit(self) -> None:
        """An item larger than max_size would not fit in the empty queue:
        it is refused, and the items already there stay."""
        self.put("ringbytes", b"ab", b"cd")
        self.assertEqual(self.ask(set_line(b"ringbytes", b"abcde")), b"NOT_STORED\r\n")
        self.assertEqual(self.contents("ringbytes"), [b"ab", b"cd"])
        self.assertEqual(self.queue_stat("ringbytes", "discarded"), 0)

    def test_max_age_caps_exptime(self) -> None:
        self.put("aged", b"never")
        self.put("aged", b"late", exptime=100)
        self.put("aged", b"soon", exptime=5)
        self.put("other", b"never")
        expiries = [item.expiry for item in self.queue("aged")._items]
        self.assertEqual(expiries, [10.0, 10.0, 5.0])
        self.clock.advance(9.5)
        self.assertEqual(
            self.ask(b"get aged\r\n"), value(b"aged", b"never") + b"END\r\n"
        )
        self.clock.advance(1)
        self.assertEqual(
            self.ask(b"get aged\r\nget other\r\n"),
            b"END\r\n" + value(b"other", b"never") + b"END\r\n",
        )
        self.assertEqual(self.queue_stat("aged", "expired_items"), 2)


class MaxOpenReadsTests(SettingsCase):
    config = """
        [queues.two]
        max_open_reads = 2
        """

    def test_two_opens_then_error(self) -> None:
        self.put("two", b"a", b"b", b"c")
        self.assertEqual(
            self.ask(b"get two/open\r\n"), value(b"two/open", b"a") + b"END\r\n"
        )
        self.assertEqual(
            self.ask(b"get two/open\r\n"), value(b"two/open", b"b") + b"END\r\n"
        )
        self.assertEqual(self.ask(b"get two/open\r\nversion\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)
        # Both open reads went back, in order.
        self.assertEqual(self.contents("two"), [b"a", b"b", b"c"])

    def test_other_queues_keep_one(self) -> None:
        self.put("one", b"a", b"b")
        self.ask(b"get one/open\r\n")
        self.assertEqual(self.ask(b"get one/open\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)

    def test_close_makes_room(self) -> None:
        self.put("two", b"a", b"b", b"c")
        self.ask(b"get two/open two/open\r\n")
        self.assertEqual(
            self.ask(b"get two/close/open\r\n"),
            value(b"two/close/open", b"c") + b"END\r\n",
        )
        self.assertFalse(self.client.closed)


# -- expiry ------------------------------------------------------------------


class ExpireToQueueTests(SettingsCase):
    config = """
        [server]
        expiry_sweep = "1m"

        [queues.work]
        expire_to_queue = "dead"

        [queues.brief]
        expire_to_queue = "morgue"

        [queues.morgue]
        max_age = "1h"
        """

    def test_moved_when_it_reaches_the_head(self) -> None:
        self.put("work", b"late", exptime=5)
        self.clock.advance(6)
        self.assertEqual(self.ask(b"get work\r\n"), b"END\r\n")
        self.assertEqual(self.contents("dead"), [b"late"])
        self.assertIsNone(self.queue("dead")._items[0].expiry)
        # The moved item no longer expires.
        self.clock.advance(86400 * 365)
        self.assertEqual(
            self.ask(b"get dead\r\n"), value(b"dead", b"late") + b"END\r\n"
        )
        self.assertEqual(self.queue_stat("work", "expired_items"), 1)

    def test_moved_by_the_sweep(self) -> None:
        self.put("work", b"late", exptime=5)
        self.clock.advance(59)
        self.assertIsNone(self.service.queue("dead"))
        self.clock.advance(1)
        self.assertEqual(self.contents("dead"), [b"late"])
        self.assertEqual(self.contents("work"), [])

    def test_moved_by_flush_expired(self) -> None:
        self.put("work", b"a", exptime=5)
        self.put("work", b"b")
        self.put("work", b"c", exptime=5)
        self.clock.advance(5)
        self.assertEqual(self.ask(b"flush_expired work\r\n"), b"2\r\n")
        self.assertEqual(self.contents("dead"), [b"a", b"c"])
        self.assertEqual(self.contents("work"), [b"b"])

    def test_set_already_expired_is_moved(self) -> None:
        self.put("work", b"gone", exptime=-1)
        self.assertEqual(self.contents("dead"), [b"gone"])

    def test_the_target_queue_max_age_applies(self) -> None:
        """A moved item is set anew, without an exptime: the target's
        max_age caps it as it caps any set."""
        self.put("brief", b"late", exptime=5)
        self.clock.advance(6)
        self.assertEqual(self.ask(b"flush_expired brief\r\n"), b"1\r\n")
        self.assertEqual(self.queue("morgue")._items[0].expiry, 6 + 3600)

    def test_other_queues_just_drop(self) -> None:
        self.put("other", b"late", exptime=5)
        self.clock.advance(6)
        self.assertEqual(self.ask(b"get other\r\n"), b"END\r\n")
        self.assertIsNone(self.service.queue("dead"))


class SweepTests(SettingsCase):
    config = """
        [server]
        expiry_sweep = "5s"
        """

    def test_expired_head_dropped_by_the_sweep(self) -> None:
        self.put("q", b"a", b"b", exptime=2)
        self.put("q", b"kept")
        self.clock.advance(4.9)
        self.assertEqual(self.queue_stat("q", "items"), 3)
        self.clock.advance(0.1)
        self.assertEqual(self.queue_stat("q", "items"), 1)
        self.assertEqual(self.queue_stat("q", "expired_items"), 2)
        self.assertEqual(self.contents("q"), [b"kept"])

    def test_again_and_again(self) -> None:
        self.put("q", b"a", exptime=7)
        self.clock.advance(5)
        self.assertEqual(self.queue_stat("q", "items"), 1)
        self.clock.advance(5)
        self.assertEqual(self.queue_stat("q", "items"), 0)

    def test_budget_across_queues(self) -> None:
        self.put("a", b"1", b"2", b"3", exptime=1)
        self.put("b", b"1", b"2", b"3", exptime=1)
        self.clock.advance(2)
        self.service.sweep(4)
        self.assertEqual(len(self.contents("a")) + len(self.contents("b")), 2)
        self.service.sweep(4)
        self.assertEqual(self.contents("a") + self.contents("b"), [])

    def test_periodic_sweep_is_bounded(self) -> None:
        """One sweep drops at most SWEEP_BUDGET items; the next goes on."""
        budget = service_module.SWEEP_BUDGET
        for _ in range(budget + 5):
            self.service.delivery.put("q", b"x", 0, 1)
        self.clock.advance(5)
        self.assertEqual(self.queue("q").items, 5)
        self.clock.advance(5)
        self.assertEqual(self.queue("q").items, 0)
        self.assertEqual(self.queue("q").expired_items, budget + 5)

    def test_stopped_service_does_not_sweep(self) -> None:
        self.put("q", b"a", exptime=1)
        self.service.stopService()
        self.clock.advance(10)
        self.assertEqual(self.queue("q").items, 1)


class MaxQueueAgeTests(SettingsCase):
    config = """
        [defaults]
        max_queue_age = "10s"

        [queues.forever]
        max_queue_age = "none"
        """

    def exists(self, name: str) -> bool:
        return self.service.queue(name) is not None

    def test_idle_empty_queue_deleted(self) -> None:
        self.put("q", b"a")
        self.put("forever", b"a")
        self.ask(b"get q\r\nget forever\r\n")
        self.clock.advance(9)
        self.assertTrue(self.exists("q"))
        self.clock.advance(1)
        self.assertFalse(self.exists("q"))
        self.assertTrue(self.exists("forever"))
        stats = self.stats()
        self.assertEqual(stats["queue_expires"], "1")
        self.assertEqual(stats["queue_deletes"], "1")
        self.assertNotIn("queue_q_items", stats)

    def test_each_command_restarts_the_clock(self) -> None:
        self.put("q", b"a")
        self.clock.advance(8)
        self.ask(b"get q\r\n")
        self.clock.advance(8)
        self.ask(b"get q/peek\r\n")
        self.clock.advance(9)
        self.assertTrue(self.exists("q"))
        self.clock.advance(1)
        self.assertFalse(self.exists("q"))

    def test_queue_with_items_kept(self) -> None:
        self.put("q", b"a")
        self.clock.advance(60)
        self.assertTrue(self.exists("q"))
        self.assertEqual(self.stats()["queue_expires"], "0")

    def test_queue_with_waiter_kept(self) -> None:
        self.put("q", b"a")
        self.ask(b"get q\r\n")
        self.client.send(b"get q/t=60000\r\n")
        self.clock.advance(30)
        self.assertTrue(self.exists("q"))
        self.put("q", b"b")
        self.assertEqual(self.client.take(), value(b"q/t=60000", b"b") + b"END\r\n")

    def test_queue_with_open_read_kept(self) -> None:
        """An open read keeps its queue; its confirmation touches it."""
        self.put("q", b"a")
        self.ask(b"get q/open\r\n")
        self.clock.advance(30)
        self.assertTrue(self.exists("q"))
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.clock.advance(9)
        self.assertTrue(self.exists("q"))
        self.clock.advance(1)
        self.assertFalse(self.exists("q"))

    def test_deleted_queue_comes_back_with_a_set(self) -> None:
        self.put("q", b"a")
        self.ask(b"get q\r\n")
        self.clock.advance(11)
        self.assertFalse(self.exists("q"))
        self.put("q", b"b")
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", b"b") + b"END\r\n")


# -- fanout ------------------------------------------------------------------


class FanoutTests(SettingsCase):
    config = """
        [queues.orders]
        max_items = 2

        [queues."orders+audit"]
        max_items = 5

        [queues.news]
        fanout_only = true
        """

    def test_child_table_creates_it_at_start(self) -> None:
        self.assertIsNotNone(self.service.queue("orders+audit"))
        self.assertIsNone(self.service.queue("orders"))
        self.assertEqual(self.stats()["queue_creates"], "1")
        self.put("orders", b"1")
        self.assertEqual(self.contents("orders+audit"), [b"1"])

    def test_set_copies_to_every_existing_child(self) -> None:
        self.put("orders+billing", b"own")
        self.assertEqual(self.ask(b"get orders+mail\r\n"), b"END\r\n")
        self.put("orders", b"1")
        self.assertEqual(self.contents("orders"), [b"1"])
        self.assertEqual(self.contents("orders+billing"), [b"own", b"1"])
        self.assertEqual(self.contents("orders+mail"), [b"1"])
        self.assertEqual(self.contents("orders+audit"), [b"1"])
        self.put("orders", b"2")
        self.assertEqual(self.contents("orders+mail"), [b"1", b"2"])
        self.assertEqual(self.contents("orders+audit"), [b"1", b"2"])
        # The parent's limit is the parent's: orders+billing is full.
        self.assertEqual(self.contents("orders+billing"), [b"own", b"1"])
        # Not a child: no copy.
        self.assertIsNone(self.service.queue("ordersx"))

    def test_items_already_in_the_parent_not_copied(self) -> None:
        self.put("orders", b"old")
        self.assertEqual(self.ask(b"get orders+late\r\n"), b"END\r\n")
        self.assertEqual(
            self.ask(b"get orders\r\n"), value(b"orders", b"old") + b"END\r\n"
        )
        self.put("orders", b"new")
        self.assertEqual(self.contents("orders+late"), [b"new"])

    def test_get_creates_a_child(self) -> None:
        self.assertEqual(self.ask(b"get orders+new\r\n"), b"END\r\n")
        self.assertIsNotNone(self.service.queue("orders+new"))
        # A plain queue is not created by a get.
        self.assertEqual(self.ask(b"get plain\r\n"), b"END\r\n")
        self.assertIsNone(self.service.queue("plain"))

    def test_waiting_get_on_a_child_receives_copies(self) -> None:
        self.client.send(b"get orders+wait/t=1000\r\n")
        self.put("orders", b"1")
        self.assertEqual(
            self.client.take(), value(b"orders+wait/t=1000", b"1") + b"END\r\n"
        )

    def test_deleting_the_child_stops_the_copies(self) -> None:
        self.put("orders", b"1")
        self.assertEqual(self.ask(b"delete orders+audit\r\n"), b"DELETED\r\n")
        self.put("orders", b"2")
        self.assertIsNone(self.service.queue("orders+audit"))
        self.assertNotIn("queue_orders_children", self.stats())

    def test_children_stat(self) -> None:
        self.put("orders+b", b"x")
        self.put("orders", b"1")
        self.assertEqual(self.stats()["queue_orders_children"], "orders+audit,orders+b")
        self.assertIn(
            b"  children=orders+audit,orders+b\r\n", self.ask(b"dump_stats orders\r\n")
        )
        self.assertNotIn("queue_orders+b_children", self.stats())

    def test_child_takes_the_parents_settings(self) -> None:
        self.assertEqual(self.service.settings_for("orders+new").max_items, 2)
        reply = self.ask(set_line(b"orders+new", b"x") * 3)
        self.assertEqual(reply, b"STORED\r\nSTORED\r\nNOT_STORED\r\n")
        # Its own table wins: orders+audit takes 5.
        self.assertEqual(
            self.ask(set_line(b"orders+audit", b"x") * 5), b"STORED\r\n" * 5
        )

    def test_full_child_misses_a_copy(self) -> None:
        self.put("orders+small", b"a", b"b")
        self.put("orders", b"1")
        self.assertEqual(self.contents("orders+small"), [b"a", b"b"])
        self.assertEqual(self.contents("orders"), [b"1"])

    def test_fanout_only_parent_keeps_nothing(self) -> None:
        self.assertEqual(self.ask(b"get news+a news+b\r\n"), b"END\r\n")
        self.put("news", b"1", b"2")
        self.assertEqual(self.contents("news"), [])
        self.assertEqual(self.contents("news+a"), [b"1", b"2"])
        self.assertEqual(self.contents("news+b"), [b"1", b"2"])
        self.assertEqual(self.ask(b"get news\r\n"), b"END\r\n")
        self.assertEqual(self.stats()["queue_news_children"], "news+a,news+b")

    def test_fanout_only_parent_without_children(self) -> None:
        self.put("news", b"1")
        self.assertEqual(self.contents("news"), [])
        self.assertEqual(self.queue_stat("news", "items"), 0)

    def test_fanout_only_is_not_inherited(self) -> None:
        self.assertFalse(self.service.settings_for("news+a").fanout_only)
        self.put("news+a", b"own")
        self.assertEqual(self.contents("news+a"), [b"own"])


# -- server settings ---------------------------------------------------------


class ServerSettingsTests(SettingsCase):
    config = """
        [server]
        max_connections = 2
        allow_shutdown = false
        max_item_cap = "1KiB"
        """

    def test_max_connections(self) -> None:
        second = self.connect()
        third = self.connect()
        self.assertEqual(third.take(), b"SERVER_ERROR too many connections\r\n")
        self.assertTrue(third.closed)
        self.assertEqual(third.ask(b"version\r\n"), b"")
        self.assertEqual(self.stats(second)["curr_connections"], "2")
        self.assertFalse(second.closed)
        second.close()
        fourth = self.connect()
        self.assertEqual(fourth.take(), b"")
        self.assertEqual(fourth.ask(b"version\r\n")[:8], b"VERSION ")

    def test_shutdown_refused(self) -> None:
        reply = self.ask(b"shutdown\r\nversion\r\n")
        self.assertTrue(reply.startswith(b"CLIENT_ERROR shutdown disabled\r\nVERSION "))
        self.clock.advance(1)
        self.assertEqual(self.stops, [])
        self.assertFalse(self.client.closed)
        self.assertEqual(self.ask(set_line(b"q", b"x")), b"STORED\r\n")

    def test_max_item_cap(self) -> None:
        self.assertEqual(self.ask(set_line(b"q", b"x" * 1024)), b"STORED\r\n")
        reply = self.ask(set_line(b"q", b"x" * 1025) + b"version\r\n")
        self.assertEqual(reply, b"SERVER_ERROR object too large\r\n")
        self.assertTrue(self.client.closed)


# -- reload ------------------------------------------------------------------


class ReloadTests(SettingsCase):
    def setUp(self) -> None:
        super().setUp()
        self.config_path = os.path.abspath(self.mktemp())
        self.write_config(
            """
            [queues.q]
            max_items = 3
            """
        )
        self.service.live_config.path = self.config_path
        self.service.live_config.reload()

    def write_config(self, text: str) -> None:
        write(self.config_path, text)

    def test_changes_a_limit_on_a_live_queue(self) -> None:
        self.put("q", b"1", b"2")
        self.write_config(
            """
            [queues.q]
            max_items = 2
            """
        )
        self.assertEqual(self.ask(b"reload\r\n"), b"Reloaded config.\r\n")
        self.assertEqual(self.ask(set_line(b"q", b"3")), b"NOT_STORED\r\n")
        self.write_config("")
        self.assertEqual(self.ask(b"reload\r\n"), b"Reloaded config.\r\n")
        self.assertEqual(self.ask(set_line(b"q", b"3") * 5), b"STORED\r\n" * 5)

    def test_port_and_data_dir_wait_for_a_restart(self) -> None:
        events: list[dict[str, Any]] = []
        self.service.log = Logger(observer=cast(ILogObserver, events.append))
        before = self.service.config.server
        self.write_config(
            """
            [server]
            port = 9999
            data_dir = "elsewhere"
            max_connections = 5

            [queues.q]
            max_items = 3
            """
        )
        self.assertEqual(self.ask(b"reload\r\n"), b"Reloaded config.\r\n")
        server = self.service.config.server
        self.assertEqual((server.port, server.data_dir), (before.port, before.data_dir))
        # The rest of the table is applied.
        self.assertEqual(server.max_connections, 5)
        warnings = [
            formatEvent(event)
            for event in events
            if event["log_level"] == LogLevel.warn
        ]
        self.assertEqual(
            warnings,
            [
                f"Port and data directory stay {before.port} and {before.data_dir} "
                "until the server restarts"
            ],
        )

    def test_bad_file_keeps_the_old_settings(self) -> None:
        self.put("q", b"1", b"2")
        self.write_config(
            """
            [server]
            max_connections = 1

            [queues.q]
            max_items = -5
            """
        )
        reply = self.ask(b"reload\r\n")
        self.assertEqual(
            reply,
            b"SERVER_ERROR %s line 5: queues.q.max_items: expected a"
            b" non-negative integer, got -5\r\n" % self.config_path.encode(),
        )
        self.assertFalse(self.client.closed)
        self.assertEqual(
            self.ask(set_line(b"q", b"3") * 2), b"STORED\r\nNOT_STORED\r\n"
        )
        self.assertIsNone(self.service.max_connections)

    def test_syntax_error(self) -> None:
        self.write_config(
            """
            [queues.q]
            max_items = = 1
            """
        )
        reply = self.ask(b"reload\r\n")
        self.assertTrue(reply.startswith(b"SERVER_ERROR "), reply)
        self.assertIn(b"line 2", reply)
        self.assertEqual(self.service.settings_for("q").max_items, 3)

    def test_missing_file(self) -> None:
        os.remove(self.config_path)
        reply = self.ask(b"reload\r\n")
        self.assertRegex(reply, rb"^SERVER_ERROR .*: cannot read: .*\r\n$")
        self.assertEqual(self.service.settings_for("q").max_items, 3)

    def test_unknown_key(self) -> None:
        self.write_config(
            """
            [defaults]
            max_itmes = 1
            """
        )
        reply = self.ask(b"reload\r\n")
        self.assertIn(b"line 2: defaults.max_itmes: unknown key; did you mean", reply)

    def test_child_inherits_the_new_parent_settings(self) -> None:
        self.assertEqual(self.ask(b"get q+child\r\n"), b"END\r\n")
        self.assertEqual(self.queue("q+child").settings.max_items, 3)
        self.write_config(
            """
            [queues.q]
            max_items = 1
            """
        )
        self.ask(b"reload\r\n")
        self.assertEqual(self.queue("q+child").settings.max_items, 1)

    def test_new_child_table_creates_the_child(self) -> None:
        self.write_config(
            """
            [queues."q+audit"]
            max_age = "1h"
            """
        )
        self.ask(b"reload\r\n")
        self.assertIsNotNone(self.service.queue("q+audit"))
        self.put("q", b"1")
        self.assertEqual(self.contents("q+audit"), [b"1"])

    def test_server_settings(self) -> None:
        self.write_config(
            """
            [server]
            max_connections = 1
            allow_shutdown = false
            max_item_cap = 4
            """
        )
        self.ask(b"reload\r\n")
        self.assertEqual(
            self.connect().take(), b"SERVER_ERROR too many connections\r\n"
        )
        self.assertEqual(
            self.ask(b"shutdown\r\n"), b"CLIENT_ERROR shutdown disabled\r\n"
        )
        self.assertEqual(
            self.ask(set_line(b"q", b"12345")), b"SERVER_ERROR object too large\r\n"
        )

    def test_new_sweep_interval(self) -> None:
        self.put("q", b"a", exptime=1)
        self.write_config(
            """
            [server]
            expiry_sweep = "10s"
            """
        )
        self.ask(b"reload\r\n")
        self.clock.advance(9.9)
        self.assertEqual(self.queue("q").items, 1)
        self.clock.advance(0.1)
        self.assertEqual(self.queue("q").items, 0)

    def test_port_and_data_dir_stay(self) -> None:
        self.write_config(
            """
            [server]
            port = 1
            data_dir = "elsewhere"
            """
        )
        data_dir = self.service.data_dir
        self.assertEqual(self.ask(b"reload\r\n"), b"Reloaded config.\r\n")
        self.assertEqual(self.service.data_dir, data_dir)


class ReloadWithoutFileTests(SettingsCase):
    config = """
        [queues.q]
        max_items = 1
        """

    def test_keeps_the_settings_it_was_given(self) -> None:
        """With no file to read again, nothing changes, and the reply does
        not pretend that something was read."""
        self.assertEqual(
            self.ask(b"reload\r\n"), b"SERVER_ERROR no configuration file\r\n"
        )
        self.assertEqual(
            self.ask(set_line(b"q", b"x") * 2), b"STORED\r\nNOT_STORED\r\n"
        )


class CommandLineTests(SynchronousTestCase):
    """twistd's options reach the queues, and win over the file at every
    reload."""

    def make(self, *arguments: str) -> QueueService:
        options = Options()
        options.parseOptions(list(arguments))
        queues = makeService(options).getServiceNamed("erq")
        assert isinstance(queues, QueueService)
        return queues

    def test_overrides_reach_the_queues_and_survive_a_reload(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(
            path,
            """
            [server]
            max_connections = 100
            allow_shutdown = true

            [defaults]
            sync_journal = "never"
            max_memory_size = "1GiB"
            max_items = 7
            """,
        )
        queues = self.make(
            "--config",
            path,
            "--sync",
            "50ms",
            "--max-memory-size",
            "1MiB",
            "--max-connections",
            "3",
            "--no-shutdown",
        )

        def check(max_items: int) -> None:
            settings = queues.create_queue("q").settings
            self.assertEqual(settings.sync_journal, 0.05)
            self.assertEqual(settings.max_memory_size, MiB)
            self.assertEqual(settings.max_items, max_items)
            self.assertEqual(queues.max_connections, 3)
            self.assertFalse(queues.allow_shutdown)

        check(7)
        write(
            path,
            """
            [defaults]
            sync_journal = "always"
            max_memory_size = "2MiB"
            max_items = 8
            """,
        )
        queues.live_config.reload()
        check(8)

    def test_a_queue_table_keeps_its_own_sync(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(
            path,
            """
            [queues.careful]
            sync_journal = "always"
            """,
        )
        queues = self.make("--config", path, "--sync", "never")
        self.assertEqual(queues.create_queue("careful").settings.sync_journal, "always")
        self.assertEqual(queues.create_queue("other").settings.sync_journal, "never")

    def test_bad_config_is_a_start_up_error(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, "[defaults]\nmax_open_reads = 0\n")
        error = self.assertRaises(
            StartupError, Options().parseOptions, ["--config", path]
        )
        self.assertIn("line 2: defaults.max_open_reads", str(error))

    def test_idle_poll_is_microseconds(self) -> None:
        def idle_poll(*arguments: str) -> float:
            options = Options()
            options.parseOptions(list(arguments))
            seconds: float = options.idle_poll
            return seconds

        self.assertEqual(idle_poll(), default_idle_poll_us() / 1e6)
        self.assertEqual(idle_poll("--idle-poll", "250"), 250e-6)
        self.assertEqual(idle_poll("--idle-poll", "0"), 0.0)
        self.assertEqual(idle_poll("--idle-poll", "0", "--plain-reactor"), 0.0)

    def test_idle_poll_is_off_by_default_without_the_c_engine(self) -> None:
        self.patch(engine, "Engine", None)
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.idle_poll, 0.0)
        self.patch(engine, "Engine", object)
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.idle_poll, DEFAULT_IDLE_POLL_US / 1e6)

    def test_a_bad_idle_poll_is_a_start_up_error(self) -> None:
        too_many = str(MAX_IDLE_POLL_US + 1)
        for text, shown in [
            ("-5", "-5"),
            ("1.5", "1.5"),
            ("100us", "100us"),
            # A digit to str.isdigit, not to int().
            ("\u00b2", "\u00b2"),
            ("", '""'),
            (too_many, too_many),
        ]:
            error = self.assertRaises(
                StartupError, Options().parseOptions, ["--idle-poll", text]
            )
            self.assertEqual(
                str(error),
                f"erq: --idle-poll {shown}: expected whole microseconds, 0 to"
                f" {MAX_IDLE_POLL_US}",
            )

    def test_idle_poll_needs_erqs_reactor(self) -> None:
        error = self.assertRaises(
            StartupError,
            Options().parseOptions,
            ["--idle-poll", "50", "--plain-reactor"],
        )
        self.assertIn("--plain-reactor", str(error))


# -- monitor and confirm -----------------------------------------------------


class MonitorTests(SettingsCase):
    config = """
        [queues.three]
        max_open_reads = 3
        """

    def test_items_as_they_arrive_until_time_runs_out(self) -> None:
        self.put("q", b"a")
        self.assertEqual(self.ask(b"monitor q 10 5\r\nversion\r\n"), value(b"q", b"a"))
        self.clock.advance(1)
        self.put("q", b"b")
        self.assertEqual(self.client.take(), value(b"q", b"b"))
        self.clock.advance(8.999)
        self.assertEqual(self.client.take(), b"")
        self.clock.advance(0.002)
        reply = self.client.take()
        self.assertTrue(reply.startswith(b"END\r\nVERSION "), reply)
        self.assertEqual(self.queue("q").open_items, 2)

    def test_until_max_items(self) -> None:
        self.put("q", b"a", b"b", b"c")
        self.assertEqual(
            self.ask(b"monitor q 10 2\r\n"),
            value(b"q", b"a") + value(b"q", b"b") + b"END\r\n",
        )
        self.client.send(b"monitor q 10 2\r\n")
        self.assertEqual(self.client.take(), value(b"q", b"c"))
        self.put("q", b"d")
        self.assertEqual(self.client.take(), value(b"q", b"d") + b"END\r\n")

    def test_default_max_is_100(self) -> None:
        for _ in range(101):
            self.service.delivery.put("q", b"x", 0, 0)
        self.assertEqual(
            self.ask(b"monitor q 0\r\n"), value(b"q", b"x") * 100 + b"END\r\n"
        )
        self.assertEqual(self.queue("q").items, 1)

    def test_not_capped_by_max_open_reads(self) -> None:
        self.put("q", b"a", b"b", b"c")
        reply = self.ask(b"monitor q 0 3\r\n")
        self.assertEqual(reply.count(b"VALUE "), 3)
        self.assertEqual(self.queue("q").open_items, 3)

    def test_open_reads_count_toward_max_open_reads(self) -> None:
        self.put("q", b"a", b"b")
        self.ask(b"monitor q 0 1\r\n")
        self.assertEqual(self.ask(b"get q/open\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)
        self.assertEqual(self.contents("q"), [b"a", b"b"])

    def test_open_reads_count_toward_a_larger_max(self) -> None:
        self.put("three", b"a", b"b", b"c", b"d")
        self.ask(b"monitor three 0 2\r\n")
        self.assertEqual(
            self.ask(b"get three/open\r\n"), value(b"three/open", b"c") + b"END\r\n"
        )
        self.assertEqual(self.ask(b"get three/open\r\n"), b"ERROR\r\n")
        self.assertTrue(self.client.closed)

    def test_close_confirms_the_oldest_monitored(self) -> None:
        self.put("q", b"a", b"b")
        self.ask(b"monitor q 0 2\r\n")
        self.assertEqual(self.ask(b"get q/close\r\n"), b"END\r\n")
        self.client.close()
        self.assertEqual(self.contents("q"), [b"b"])

    def test_disconnect_returns_its_open_reads(self) -> None:
        self.put("q", b"a", b"b", b"c")
        self.assertEqual(
            self.ask(b"monitor q 10 5\r\n"),
            value(b"q", b"a") + value(b"q", b"b") + value(b"q", b"c"),
        )
        self.assertEqual(self.queue("q").waiters, 1)
        self.client.close()
        self.assertEqual(self.queue("q").waiters, 0)
        self.assertEqual(self.queue("q").open_items, 0)
        self.assertEqual(self.contents("q"), [b"a", b"b", b"c"])
        self.put("q", b"d")
        self.assertEqual(self.contents("q"), [b"a", b"b", b"c", b"d"])

    def test_queue_created_while_monitoring(self) -> None:
        self.client.send(b"monitor new 10 1\r\n")
        self.assertIsNone(self.service.queue("new"))
        self.put("new", b"a")
        self.assertEqual(self.client.take(), value(b"new", b"a") + b"END\r\n")
        self.assertEqual(self.queue("new").open_items, 1)

    def test_empty_queue_no_wait(self) -> None:
        self.assertEqual(self.ask(b"monitor q 0\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"monitor q 5 0\r\n"), b"END\r\n")

    def test_bad_lines(self) -> None:
        for line in (b"monitor", b"monitor q", b"monitor q x", b"monitor q 1 2 3"):
            self.assertEqual(
                self.ask(line + b"\r\n"), b"CLIENT_ERROR bad command line format\r\n"
            )
        self.assertEqual(
            self.ask(b"monitor .q 1\r\n"), b"CLIENT_ERROR bad queue name\r\n"
        )
        self.assertFalse(self.client.closed)


class ConfirmTests(SettingsCase):
    def monitor(self, count: int) -> None:
        self.put("q", *[b"%d" % i for i in range(count)])
        reply = self.ask(b"monitor q 0 %d\r\n" % count)
        self.assertEqual(reply.count(b"VALUE "), count)

    def test_confirms_the_oldest(self) -> None:
        self.monitor(3)
        self.assertEqual(self.ask(b"confirm q 2\r\n"), b"END\r\n")
        self.assertEqual(self.queue("q").open_items, 1)
        self.client.close()
        self.assertEqual(self.contents("q"), [b"2"])

    def test_all(self) -> None:
        self.monitor(3)
        self.assertEqual(self.ask(b"confirm q 3\r\n"), b"END\r\n")
        self.client.close()
        self.assertEqual(self.contents("q"), [])
        self.assertEqual(self.queue("q").open_items, 0)

    def test_fewer_open_than_asked(self) -> None:
        self.monitor(3)
        self.assertEqual(self.ask(b"confirm q 4\r\n"), b"ERROR\r\n")
        self.assertFalse(self.client.closed)
        self.assertEqual(self.queue("q").open_items, 3)
        self.assertEqual(self.ask(b"version\r\n")[:8], b"VERSION ")
        self.client.close()
        self.assertEqual(self.contents("q"), [b"0", b"1", b"2"])

    def test_nothing_open(self) -> None:
        self.put("q", b"a")
        self.assertEqual(self.ask(b"confirm q 1\r\n"), b"ERROR\r\n")
        self.assertEqual(self.ask(b"confirm nosuch 1\r\n"), b"ERROR\r\n")
        self.assertEqual(self.ask(b"confirm q 0\r\n"), b"END\r\n")
        self.assertFalse(self.client.closed)
        self.assertEqual(self.contents("q"), [b"a"])

    def test_open_reads_of_other_connections_are_theirs(self) -> None:
        self.monitor(1)
        other = self.connect()
        self.assertEqual(other.ask(b"confirm q 1\r\n"), b"ERROR\r\n")
        self.assertEqual(self.queue("q").open_items, 1)

    def test_confirms_get_open_reads_too(self) -> None:
        self.put("q", b"a", b"b")
        self.ask(b"get q/open\r\n")
        self.assertEqual(self.ask(b"confirm q 1\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"get q\r\n"), value(b"q", b"b") + b"END\r\n")

    def test_bad_lines(self) -> None:
        for line in (b"confirm", b"confirm q", b"confirm q x", b"confirm q 1 2"):
            self.assertEqual(
                self.ask(line + b"\r\n"), b"CLIENT_ERROR bad command line format\r\n"
            )
        self.assertFalse(self.client.closed)


# -- the sample file and the README ------------------------------------------


def readme_section(title: str) -> str:
    """One section of README.rst, its title underlined with ``-``."""
    with open(README, encoding="utf-8") as file:
        text = file.read()
    found = re.search(
        rf"^{re.escape(title)}\n-+\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)",
        text,
        re.MULTILINE | re.DOTALL,
    )
    assert found is not None, f"no {title!r} section in README.rst"
    return found.group(1)


class SampleFileTests(SynchronousTestCase):
    def sample(self) -> str:
        with open(SAMPLE, encoding="utf-8") as file:
            return file.read()

    def test_loads_with_every_default(self) -> None:
        config = load_config(SAMPLE)
        self.assertEqual(config.server, ServerSettings())
        self.assertEqual(config.defaults, QueueSettings())
        self.assertEqual(config, Config())

    def test_names_every_key(self) -> None:
        keys = [
            field.name
            for cls in (ServerSettings, QueueSettings)
            for field in fields(cls)
        ]
        text = self.sample()
        for key in keys:
            self.assertRegex(text, rf"(?m)^{key} = ", key)

    def test_examples_load_when_uncommented(self) -> None:
        """The commented-out queue tables are right, once uncommented."""
        lines = self.sample().splitlines()
        start = lines.index("# [queues.orders]")
        example = "\n".join(line.removeprefix("# ") for line in lines[start:])
        config = parse_config(example)
        self.assertEqual(
            config.settings_for("orders+audit"),
            QueueSettings(
                discard_old_when_full=True,
                expire_to_queue="orders_expired",
                max_age=7 * 86400,
            ),
        )
        self.assertEqual(config.queues["orders"].max_items, 100_000)
        self.assertTrue(config.queues["news"].fanout_only)
        self.assertEqual(config.aliases, {"events": ("orders", "billing")})

    def test_in_the_readme(self) -> None:
        section = readme_section("Configuration")
        indented = "".join(
            f"    {line}\n" if line else "\n" for line in self.sample().splitlines()
        )
        self.assertIn(indented, section)

    def test_readme_documents_every_setting_and_option(self) -> None:
        section = readme_section("Configuration")
        for cls in (ServerSettings, QueueSettings):
            for field in fields(cls):
                self.assertIn(f"``{field.name}``", section)
        options: list[Any] = Options.optParameters + Options.optFlags
        for option in options:
            self.assertIn(f"``--{option[0]}", section)
        for word in ("``reload``", "SIGHUP"):
            self.assertIn(word, section)
