"""Aliases at work: a set to an alias stores a copy in each of its
destinations; the alias itself is never a queue.  On a fake clock with
in-memory connections, then through a real journal and a real client."""

from __future__ import annotations

import errno
import os
import threading
from typing import Any, cast

from pymemcache.client.base import Client
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.trial.unittest import TestCase

from erq.config import parse_config
from erq.journal import FileOps, JournalError, JournalWriter, queue_dir
from erq.protocol import QueueFactory
from erq.service import QueueService
from erq.stats import ALIAS_STATS
from tests.support import (
    CLIENT_TIMEOUT,
    DEADLINE,
    LOCALHOST,
    DurabilityCase,
    FakeJournal,
    FlagsSerde,
    ProtocolTestCase,
    poll_until,
    reactor,
    set_line,
    start_server,
    toml,
    value,
    write,
)


class AliasCase(ProtocolTestCase):
    """A started service configured by ``config`` (a TOML document, as a
    test writes it indented), on a fake clock, and a first client."""

    config = """
        [queues.small]
        max_items = 1

        [queues.log]
        max_item_size = 5

        [aliases.events]
        destinations = ["log", "mail"]

        [aliases.both]
        destinations = ["mail", "small"]
        """

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

    def contents(self, name: str) -> list[bytes]:
        """What a queue holds, head first, without taking it."""
        queue = self.service.queue(name)
        return [] if queue is None else [item.data for item in queue._items]

    def journal(self, name: str) -> FakeJournal:
        """Give the queue ``name`` a journal whose writes the test makes
        durable, by firing its ``pending`` Deferreds."""
        journal = FakeJournal(durable=True)
        self.service.create_queue(name).journal = journal
        return journal


class SetTests(AliasCase):
    def test_a_copy_in_each_destination(self) -> None:
        self.assertEqual(self.ask(set_line(b"events", b"hello", 7)), b"STORED\r\n")
        self.assertEqual(self.contents("log"), [b"hello"])
        self.assertEqual(self.contents("mail"), [b"hello"])
        self.assertEqual(
            self.ask(b"get mail\r\n"), value(b"mail", b"hello", 7) + b"END\r\n"
        )
        self.assertEqual(
            self.ask(b"get log\r\n"), value(b"log", b"hello", 7) + b"END\r\n"
        )
        self.assertIsNone(self.service.queue("events"))

    def test_pipelined_sets_each_reach_every_destination(self) -> None:
        """A run of the same set line, which a queue stores as one batch,
        goes one by one through an alias."""
        reply = self.ask(b"".join(set_line(b"events", b"%d" % i) for i in range(5)))
        self.assertEqual(reply, b"STORED\r\n" * 5)
        expected = [b"%d" % i for i in range(5)]
        self.assertEqual(self.contents("log"), expected)
        self.assertEqual(self.contents("mail"), expected)
        self.assertIsNone(self.service.queue("events"))

    def test_noreply(self) -> None:
        self.client.send(b"set events 0 0 1 noreply\r\nx\r\n")
        self.assertEqual(self.ask(b"version\r\n")[:8], b"VERSION ")
        self.assertEqual(self.contents("mail"), [b"x"])

    def test_each_destination_under_its_own_limits(self) -> None:
        # log takes at most 5 bytes an item; mail has no limit.
        self.assertEqual(self.ask(set_line(b"events", b"toolong")), b"NOT_STORED\r\n")
        self.assertEqual(self.contents("log"), [])
        # The destination that accepted keeps its copy.
        self.assertEqual(self.contents("mail"), [b"toolong"])

    def test_not_stored_when_one_destination_is_full(self) -> None:
        self.assertEqual(self.ask(set_line(b"both", b"1")), b"STORED\r\n")
        self.assertEqual(self.ask(set_line(b"both", b"2")), b"NOT_STORED\r\n")
        self.assertEqual(self.contents("small"), [b"1"])
        self.assertEqual(self.contents("mail"), [b"1", b"2"])
        self.assertEqual(self.queue_stat("small", "discarded"), 0)

    def test_waiting_get_on_a_destination_is_served(self) -> None:
        consumer = self.connect()
        consumer.send(b"get mail/t=1000\r\n")
        self.assertEqual(consumer.take(), b"")
        self.ask(set_line(b"events", b"now"))
        self.assertEqual(consumer.take(), value(b"mail/t=1000", b"now") + b"END\r\n")

    def test_a_destination_feeds_its_fanout_children(self) -> None:
        self.assertEqual(self.ask(b"get mail+audit\r\n"), b"END\r\n")
        self.ask(set_line(b"events", b"x"))
        self.assertEqual(self.contents("mail+audit"), [b"x"])

    def test_expiry_times_reach_the_copies(self) -> None:
        self.ask(set_line(b"events", b"x", exptime=10))
        self.clock.advance(11)
        self.assertEqual(self.ask(b"get log mail\r\n"), b"END\r\n")
        self.assertEqual(self.queue_stat("log", "expired_items"), 1)
        self.assertEqual(self.queue_stat("mail", "expired_items"), 1)

    def test_refused_while_shutting_down(self) -> None:
        self.service.shutting_down = True
        self.assertEqual(self.ask(set_line(b"events", b"x")), b"NOT_STORED\r\n")
        self.assertIsNone(self.service.queue("log"))


class DurableSetTests(AliasCase):
    def test_stored_once_every_copy_is_durable(self) -> None:
        log, mail = self.journal("log"), self.journal("mail")
        self.client.send(set_line(b"events", b"x") + b"version\r\n")
        self.assertEqual(len(log.pending), 1)
        self.assertEqual(len(mail.pending), 1)
        log.pending.pop().callback(None)
        # One copy is durable, the other not yet: no reply, nor to what
        # came after.
        self.assertEqual(self.client.take(), b"")
        mail.pending.pop().callback(None)
        reply = self.client.take()
        self.assertTrue(reply.startswith(b"STORED\r\nVERSION "), reply)

    def test_not_stored_waits_for_the_copies_that_were_taken(self) -> None:
        mail = self.journal("mail")
        self.assertEqual(self.ask(set_line(b"both", b"1")), b"")
        mail.pending.pop().callback(None)
        self.assertEqual(self.client.take(), b"STORED\r\n")
        # small is full now: refused at once, mail's copy still durable.
        self.assertEqual(self.ask(set_line(b"both", b"2")), b"")
        mail.pending.pop().callback(None)
        self.assertEqual(self.client.take(), b"NOT_STORED\r\n")
        self.assertEqual(self.contents("mail"), [b"1", b"2"])

    def test_a_failed_journal_fails_the_set(self) -> None:
        log, mail = self.journal("log"), self.journal("mail")
        self.client.send(set_line(b"events", b"x"))
        log.pending.pop().callback(None)
        mail.pending.pop().errback(JournalError("no space left on device"))
        self.assertEqual(
            self.client.take(), b"SERVER_ERROR no space left on device\r\n"
        )
        self.assertFalse(self.client.closed)


class NotAQueueTests(AliasCase):
    def test_get_is_always_empty_at_once(self) -> None:
        self.ask(set_line(b"events", b"x"))
        for key in [
            b"events",
            b"events/t=500",
            b"events/open",
            b"events/peek",
            b"events/t=500/peek",
            b"events/close",
            b"events/close/open",
            b"events/abort",
        ]:
            self.assertEqual(self.ask(b"get %s\r\n" % key), b"END\r\n", key)
            self.assertEqual(self.ask(b"gets %s\r\n" % key), b"END\r\n", key)
        # Without the clock moving: nothing waited.
        self.assertEqual(self.service.queue("log").waiters, 0)  # type: ignore[union-attr]
        self.assertFalse(self.client.closed)
        self.assertEqual(self.service.queue("events"), None)

    def test_among_other_keys(self) -> None:
        self.ask(set_line(b"events", b"x"))
        self.assertEqual(
            self.ask(b"get events log events/t=10 mail\r\n"),
            value(b"log", b"x") + value(b"mail", b"x") + b"END\r\n",
        )

    def test_pipelined_gets(self) -> None:
        self.assertEqual(self.ask(b"get events\r\n" * 4), b"END\r\n" * 4)
        self.assertEqual(self.stats()["get_misses"], "4")

    def test_monitor_and_confirm(self) -> None:
        self.ask(set_line(b"events", b"x"))
        self.assertEqual(self.ask(b"monitor events 10\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"confirm events 0\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"confirm events 1\r\n"), b"ERROR\r\n")

    def test_delete_changes_nothing(self) -> None:
        self.ask(set_line(b"events", b"x"))
        self.assertEqual(self.ask(b"delete events\r\n"), b"NOT_FOUND\r\n")
        self.assertEqual(self.ask(set_line(b"events", b"y")), b"STORED\r\n")
        self.assertEqual(self.contents("mail"), [b"x", b"y"])

    def test_flush_changes_nothing(self) -> None:
        self.ask(set_line(b"events", b"x"))
        self.assertEqual(self.ask(b"flush events\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"flush_expired events\r\n"), b"0\r\n")
        self.assertEqual(self.contents("log"), [b"x"])
        self.assertEqual(self.contents("mail"), [b"x"])

    def test_not_a_queue_in_stats(self) -> None:
        self.ask(set_line(b"events", b"x") + b"get events/t=5\r\n")
        stats = self.stats()
        self.assertEqual(
            [name for name in stats if name.startswith("queue_events")], []
        )
        self.assertEqual(self.ask(b"dump_stats events\r\n"), b"END\r\n")
        self.assertEqual(stats["queue_creates"], "2")

    def test_expire_to_an_alias(self) -> None:
        """An alias takes expired items as a queue would: in each of its
        destinations."""
        self.service.live_config.apply(
            parse_config(
                toml(
                    """
                    [queues.work]
                    expire_to_queue = "events"
                    [aliases.events]
                    destinations = ["log", "mail"]
                    """
                )
            )
        )
        self.ask(set_line(b"work", b"late", exptime=5))
        self.clock.advance(6)
        self.service.sweep()
        self.assertEqual(self.contents("log"), [b"late"])
        self.assertEqual(self.contents("mail"), [b"late"])
        self.assertIsNone(self.service.queue("events"))


class HiddenQueueTests(AliasCase):
    """A queue that exists under a name that then becomes an alias (set to
    before the alias was configured, or brought back from its journal)."""

    config = ""

    def test_hidden_until_the_alias_goes(self) -> None:
        events: list[dict[str, Any]] = []
        self.service.log = Logger(observer=cast(ILogObserver, events.append))
        self.ask(set_line(b"events", b"old") + set_line(b"events", b"stale", 0, 5))
        alias = parse_config('[aliases.events]\ndestinations = ["log"]\n')
        self.service.live_config.apply(alias)
        self.clock.advance(6)
        warnings = [
            formatEvent(event)
            for event in events
            if event["log_level"] == LogLevel.warn
        ]
        self.assertEqual(
            warnings,
            [
                "The alias events hides the queue events (items: 2) until the"
                " alias is removed"
            ],
        )
        self.assertEqual(self.ask(set_line(b"events", b"new")), b"STORED\r\n")
        self.assertEqual(self.ask(b"get events\r\n"), b"END\r\n")
        self.assertEqual(self.ask(b"get events\r\n" * 3), b"END\r\n" * 3)
        self.assertEqual(self.ask(b"flush_expired events\r\n"), b"0\r\n")
        self.assertEqual(self.ask(b"delete events\r\n"), b"NOT_FOUND\r\n")
        self.ask(b"flush events\r\n")
        # Left as it was, and shown.
        self.assertEqual(self.contents("events"), [b"old", b"stale"])
        self.assertEqual(self.contents("log"), [b"new"])
        self.assertEqual(self.queue_stat("events", "items"), 2)

        self.service.live_config.apply(parse_config(""))
        self.assertEqual(
            self.ask(b"get events\r\n"), value(b"events", b"old") + b"END\r\n"
        )


class StatsTests(AliasCase):
    def test_figures(self) -> None:
        self.ask(set_line(b"events", b"abc") + set_line(b"events", b"toolong"))
        self.ask(set_line(b"both", b"1") + set_line(b"both", b"22"))
        stats = self.stats()
        self.assertEqual(stats["alias_events_put_items"], "2")
        self.assertEqual(stats["alias_events_put_bytes"], "10")
        self.assertEqual(stats["alias_events_children"], "log,mail")
        # Refused sets are counted too, as Kestrel counts them.
        self.assertEqual(stats["alias_both_put_items"], "2")
        self.assertEqual(stats["alias_both_put_bytes"], "3")
        self.assertEqual(stats["alias_both_children"], "mail,small")
        # One set each, whatever the destinations.
        self.assertEqual(stats["cmd_set"], "4")

    def test_order_and_place(self) -> None:
        self.ask(set_line(b"events", b"abc"))
        names = list(self.stats())
        aliases = [name for name in names if name.startswith("alias_")]
        self.assertEqual(
            aliases,
            [
                f"alias_{alias}_{figure}"
                for alias in ("events", "both")
                for figure in ALIAS_STATS
            ],
        )
        # After every queue's.
        self.assertGreater(names.index(aliases[0]), names.index("queue_mail_items"))


class ReloadTests(AliasCase):
    config = """
        [aliases.events]
        destinations = ["log", "mail"]
        """

    def setUp(self) -> None:
        super().setUp()
        self.config_path = os.path.abspath(self.mktemp())
        write(self.config_path, self.config)
        self.service.live_config.path = self.config_path

    def reload(self, text: str) -> None:
        write(self.config_path, text)
        self.assertEqual(self.ask(b"reload\r\n"), b"Reloaded config.\r\n")

    def test_adds_changes_and_removes(self) -> None:
        self.ask(set_line(b"events", b"1"))
        self.reload(
            """
            [aliases.events]
            destinations = ["mail", "sms"]

            [aliases.news]
            destinations = ["log"]
            """
        )
        self.ask(set_line(b"events", b"2") + set_line(b"news", b"3"))
        self.assertEqual(self.contents("log"), [b"1", b"3"])
        self.assertEqual(self.contents("mail"), [b"1", b"2"])
        self.assertEqual(self.contents("sms"), [b"2"])
        self.assertIsNone(self.service.queue("news"))
        stats = self.stats()
        self.assertEqual(stats["alias_events_children"], "mail,sms")
        # Kept through the reload.
        self.assertEqual(stats["alias_events_put_items"], "2")
        self.assertEqual(stats["alias_news_put_items"], "1")

        self.reload("")
        self.assertNotIn("alias_events_put_items", self.stats())
        # The name is free again: a set makes it a queue.
        self.ask(set_line(b"events", b"4"))
        self.assertEqual(self.contents("events"), [b"4"])
        self.assertEqual(self.contents("mail"), [b"1", b"2"])

    def test_counters_start_again_for_an_alias_removed_and_added(self) -> None:
        self.ask(set_line(b"events", b"1"))
        self.reload("")
        self.reload(self.config)
        self.assertEqual(self.stats()["alias_events_put_items"], "0")

    def test_bad_alias_changes_nothing(self) -> None:
        write(
            self.config_path,
            """
            [queues.events]

            [aliases.events]
            destinations = ["log"]
            """,
        )
        reply = self.ask(b"reload\r\n")
        self.assertEqual(
            reply,
            b'SERVER_ERROR %s line 3: aliases.events: "events" is also a queue,'
            b" in [queues.events]; a name is either an alias or a queue\r\n"
            % self.config_path.encode(),
        )
        self.ask(set_line(b"events", b"1"))
        self.assertEqual(self.contents("mail"), [b"1"])


# -- through the journal ---------------------------------------------------------


class HeldSyncs(FileOps):
    """fsyncs wait for ``gate``; writes fail while ``disk_full``.  Runs on
    the journal thread."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.syncs_entered = 0
        self.disk_full = False

    def write(self, fd: int, data: bytes) -> None:
        if self.disk_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self.syncs_entered += 1
        self.gate.wait(DEADLINE)
        super().fsync(fd)


ALIAS_CONFIG = '[aliases.events]\ndestinations = ["log", "mail"]\n'


class JournaledTests(DurabilityCase):
    async def test_stored_once_durable_and_back_after_a_restart(self) -> None:
        ops = HeldSyncs()
        ops.gate.clear()
        self.addCleanup(ops.gate.set)
        config = parse_config(ALIAS_CONFIG)
        server = self.serve(config, writer=JournalWriter(reactor, file_ops=ops))
        client = self.client(server)
        client.send(set_line(b"events", b"kept"))
        await poll_until(lambda: ops.syncs_entered >= 1)
        service = server.service
        await poll_until(lambda: service.counters.cmd_set == 1)
        # Both copies are queued, neither is fsynced: no reply yet.
        self.assertTrue(client.nothing_yet())
        ops.gate.set()
        self.assertEqual(await deferToThread(client.line), b"STORED")

        server = await self.restart(server, config=config)
        client = self.client(server)
        for name in ("log", "mail"):
            self.assertEqual(await deferToThread(client.drain, name), [b"kept"])
        self.assertTrue(os.path.isdir(queue_dir(self.data_dir, "log")))
        self.assertFalse(os.path.exists(queue_dir(self.data_dir, "events")))
        self.assertIsNone(server.service.queue("events"))

    async def test_a_queue_of_the_same_name_is_named_in_the_log(self) -> None:
        server = self.serve()
        client = self.client(server)
        self.assertEqual(
            await deferToThread(client.store, "events", [b"old"]), [b"STORED"]
        )
        server = await self.restart(server, config=parse_config(ALIAS_CONFIG))
        self.assertIn(
            "The alias events hides the queue events (items: 1) until the"
            " alias is removed",
            self.logged(LogLevel.warn),
        )
        self.assertEqual(server.service.queue("events").items, 1)  # type: ignore[union-attr]

    async def test_a_full_disk_answers_server_error(self) -> None:
        ops = HeldSyncs()
        config = parse_config(ALIAS_CONFIG)
        writer = JournalWriter(reactor, file_ops=ops, retry_delay=0.05)
        server = self.serve(config, writer=writer)
        client = self.client(server)
        ops.disk_full = True
        reply = await deferToThread(client.call, set_line(b"events", b"lost"))
        self.assertEqual(reply, b"SERVER_ERROR no space left on device")


# -- a real client ---------------------------------------------------------------


class EndToEndTests(TestCase):
    timeout = 30

    async def test_pymemcache(self) -> None:
        server = start_server(self, config=parse_config(ALIAS_CONFIG))

        def talk() -> dict[str, Any]:
            client = Client(
                (LOCALHOST, server.port),
                timeout=CLIENT_TIMEOUT,
                connect_timeout=CLIENT_TIMEOUT,
                serde=FlagsSerde(),
            )
            try:
                return {
                    "set": client.set("events", (b"hello", 3), noreply=False),
                    "alias": client.get("events"),
                    "log": client.get("log"),
                    "mail": client.get("mail"),
                    "delete": client.delete("events", noreply=False),
                    "stats": client.stats(),
                }
            finally:
                client.close()

        got = await deferToThread(talk)
        self.assertTrue(got["set"])
        self.assertIsNone(got["alias"])
        self.assertEqual(got["log"], (b"hello", 3))
        self.assertEqual(got["mail"], (b"hello", 3))
        self.assertFalse(got["delete"])
        stats = got["stats"]
        self.assertEqual(stats[b"alias_events_put_items"], 1)
        self.assertEqual(stats[b"alias_events_put_bytes"], 5)
        self.assertEqual(stats[b"alias_events_children"], b"log,mail")
