"""Tests for erq.epoll: a read goes straight to ``doRead``; everything else,
and whatever goes wrong, is handled as Twisted's epoll reactor handles it.
A failure of ``TwistedNamesTests`` after a Twisted upgrade means what
``erq.epoll`` relies on has changed."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import error, main
from twisted.internet.interfaces import IReadDescriptor
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

try:
    import select

    from twisted.internet import epollreactor

    from erq import epoll
except ImportError:
    NO_EPOLL: str | None = "no epoll on this system"
else:
    NO_EPOLL = None


@implementer(IReadDescriptor)
class Reader:
    """One end of a socket pair, registered with a reactor."""

    def __init__(self, sock: socket.socket, prefix: str = "reader") -> None:
        self.sock = sock
        self.prefix = prefix
        self.reads = 0
        self.lost: list[Failure] = []
        #: Raised by ``doRead``, if set.
        self.fails: BaseException | None = None
        #: Called by ``doRead``, if set.
        self.during: Any = None
        #: Whether ``fileno`` says the descriptor is gone.
        self.gone = False
        #: What ``doRead`` returns after reading something.
        self.says: object = None

    def fileno(self) -> int:
        return -1 if self.gone else self.sock.fileno()

    def doRead(self) -> Any:
        self.reads += 1
        if self.during is not None:
            self.during()
        if self.fails is not None:
            raise self.fails
        if not self.sock.recv(100):
            return main.CONNECTION_DONE
        return self.says

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)

    def logPrefix(self) -> str:
        return self.prefix


class Case(SynchronousTestCase):
    skip = NO_EPOLL

    def reactor(self, kind: type | None = None) -> Any:
        """A reactor of its own (never run): ``erq.epoll``'s, or ``kind``."""
        reactor = (kind or epoll.EPollReactor)()

        def close() -> None:
            for reader in list(reactor._internalReaders):
                reactor.removeReader(reader)
                reader.connectionLost(None)
            reactor.removeAll()
            reactor._poller.close()

        self.addCleanup(close)
        return reactor

    def reader(
        self, reactor: Any, prefix: str = "reader"
    ) -> tuple[Reader, socket.socket]:
        """A registered reader and the other end of its socket."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reader = Reader(ours, prefix)
        reactor.addReader(reader)
        # Before its socket closes.
        self.addCleanup(reactor.removeReader, reader)
        return reader, theirs

    def contexts(self) -> list[object]:
        """Every selectable that ``log.callWithLogger`` is asked to call for,
        from now on."""
        called: list[object] = []
        original = log.callWithLogger

        def recording(logger: object, *rest: Any, **named: Any) -> object:
            called.append(logger)
            return original(logger, *rest, **named)

        self.patch(log, "callWithLogger", recording)
        return called


class ReadTests(Case):
    def test_a_read_goes_straight_to_doRead(self) -> None:
        reactor = self.reactor()
        contexts = self.contexts()
        reader, other = self.reader(reactor)
        other.sendall(b"x")
        reactor.doIteration(0)
        self.assertEqual((reader.reads, reader.lost, contexts), (1, [], []))

    def test_twisteds_reactor_sets_a_log_context_for_it(self) -> None:
        """What erq's reactor saves: the same read, on Twisted's reactor."""
        reactor = self.reactor(epollreactor.EPollReactor)
        contexts = self.contexts()
        reader, other = self.reader(reactor)
        other.sendall(b"x")
        reactor.doIteration(0)
        self.assertEqual((reader.reads, contexts), (1, [reader]))

    def test_nothing_to_read_reads_nothing(self) -> None:
        reactor = self.reactor()
        reader, _ = self.reader(reactor)
        reactor.doIteration(0)
        self.assertEqual(reader.reads, 0)

    def test_a_failed_read_is_logged_under_its_prefix_and_disconnects(self) -> None:
        reactor = self.reactor()
        reader, other = self.reader(reactor, "QueueProtocol,7,127.0.0.1")
        reader.fails = ZeroDivisionError("boom")
        events: list[dict[str, Any]] = []
        log.addObserver(events.append)
        self.addCleanup(log.removeObserver, events.append)
        other.sendall(b"x")
        reactor.doIteration(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        errors = [event for event in events if event.get("isError")]
        self.assertEqual(
            [event["system"] for event in errors], ["QueueProtocol,7,127.0.0.1"]
        )
        self.assertEqual(len(reader.lost), 1)
        self.assertTrue(reader.lost[0].check(ZeroDivisionError))
        self.assertNotIn(reader, reactor.getReaders())

    def test_a_read_that_says_done_disconnects(self) -> None:
        reactor = self.reactor()
        reader, other = self.reader(reactor)
        reader.says = main.CONNECTION_DONE
        other.sendall(b"x")
        reactor.doIteration(0)
        self.assertEqual(len(reader.lost), 1)
        self.assertTrue(reader.lost[0].check(error.ConnectionDone))
        self.assertNotIn(reader, reactor.getReaders())

    def test_a_hang_up_goes_to_twisted(self) -> None:
        """The other end closed: not a plain read, so Twisted's own
        handling (with its log context) reads the end and disconnects."""
        reactor = self.reactor()
        contexts = self.contexts()
        reader, other = self.reader(reactor)
        other.close()
        reactor.doIteration(0)
        self.assertEqual(contexts, [reader])
        self.assertEqual(reader.reads, 1)
        self.assertEqual(len(reader.lost), 1)
        self.assertTrue(reader.lost[0].check(error.ConnectionDone))

    def test_a_descriptor_gone_goes_to_twisted(self) -> None:
        reactor = self.reactor()
        reader, other = self.reader(reactor)
        other.sendall(b"x")
        reader.gone = True
        reactor.doIteration(0)
        self.assertEqual(reader.reads, 0)
        self.assertEqual(len(reader.lost), 1)
        self.assertTrue(reader.lost[0].check(error.ConnectionFdescWentAway))

    def test_a_reader_removed_by_an_earlier_read_is_not_read(self) -> None:
        reactor = self.reactor()
        first, one = self.reader(reactor, "first")
        second, two = self.reader(reactor, "second")
        first.during = lambda: reactor.removeReader(second)
        second.during = lambda: reactor.removeReader(first)
        one.sendall(b"x")
        two.sendall(b"x")
        reactor.doIteration(0)
        # Whichever came first removed the other.
        self.assertEqual(first.reads + second.reads, 1)


class ReadFasterTests(Case):
    def test_twisteds_epoll_reactor_reads_faster(self) -> None:
        reactor = self.reactor(epollreactor.EPollReactor)
        reader, other = self.reader(reactor)
        self.assertTrue(epoll.read_faster(reactor))
        self.assertIs(type(reactor), epoll.EPollReactor)
        # The same reactor, with what it held.
        self.assertIn(reader, reactor.getReaders())
        contexts = self.contexts()
        other.sendall(b"x")
        reactor.doIteration(0)
        self.assertEqual((reader.reads, contexts), (1, []))

    def test_again_changes_nothing(self) -> None:
        reactor = self.reactor()
        self.assertTrue(epoll.read_faster(reactor))
        self.assertIs(type(reactor), epoll.EPollReactor)

    def test_any_other_reactor_is_left_as_it_is(self) -> None:
        class Other(epollreactor.EPollReactor):
            pass

        reactor = self.reactor(Other)
        self.assertFalse(epoll.read_faster(reactor))
        self.assertIs(type(reactor), Other)
        thing = object()
        self.assertFalse(epoll.read_faster(thing))


class TwistedNamesTests(Case):
    """What ``erq.epoll`` takes from Twisted's epoll reactor."""

    def test_its_loop_calls_doPoll(self) -> None:
        self.assertIs(
            epollreactor.EPollReactor.doIteration, epollreactor.EPollReactor.doPoll
        )
        self.assertIs(epoll.EPollReactor.doIteration, epoll.EPollReactor.doPoll)

    def test_its_private_names(self) -> None:
        reactor = self.reactor(epollreactor.EPollReactor)
        self.assertEqual(reactor._POLL_IN, select.EPOLLIN)
        self.assertIsInstance(reactor._selectables, dict)
        self.assertTrue(callable(reactor._poller.poll))
        self.assertTrue(callable(reactor._doReadOrWrite))
        self.assertTrue(callable(reactor._disconnectSelectable))
