"""Tests for erq.epoll: a read goes straight to ``doRead``; everything else,
and whatever goes wrong, is handled as Twisted's epoll reactor handles it.
A failure of ``TwistedNamesTests`` after a Twisted upgrade means what
``erq.epoll`` relies on has changed."""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

from twisted.internet import error, main, task
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


#: The idle poll of these tests, and what a poll without waiting takes.
WINDOW = 100e-6
STEP = 10e-6
#: An event for a descriptor no reactor has: the reactor skips it.
EVENT = [(1 << 20, 1)]


class Poller:
    """Stands for the reactor's epoll object: each call to ``poll`` takes
    the next answer, ``(seconds it takes, events)``, and moves ``clock`` on
    by those seconds; with none left, a poll without waiting finds
    nothing after ``STEP``."""

    def __init__(self, clock: task.Clock, answers: list[tuple[float, Any]]) -> None:
        self.clock = clock
        self.answers = deque(answers)
        #: The timeout of each call.
        self.calls: list[float] = []

    def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
        self.calls.append(timeout)
        if self.answers:
            took, events = self.answers.popleft()
        elif timeout == 0:
            took, events = STEP, []
        else:
            raise AssertionError(f"a wait of {timeout} s not scripted")
        self.clock.advance(took)
        return list(events)

    def waits(self) -> list[float]:
        """The timeouts asked for since the last call, each rounded."""
        calls = [round(timeout, 9) for timeout in self.calls]
        self.calls = []
        return calls


class IdlePollTests(Case):
    """A wait polls without blocking for ``idle_poll`` seconds before it
    sleeps, while the waits end that soon ("Polling before sleeping" in
    ``erq.epoll``); the poller and the clock are stand-ins."""

    def polling(
        self, answers: list[tuple[float, Any]], window: float = WINDOW
    ) -> tuple[Any, Poller]:
        reactor = self.reactor()
        clock = task.Clock()
        poller = Poller(clock, answers)
        real = reactor._poller
        self.addCleanup(setattr, reactor, "_poller", real)
        reactor._poller = poller
        reactor._now = clock.seconds
        self.assertTrue(epoll.read_faster(reactor, window))
        return reactor, poller

    def test_without_it_a_wait_sleeps_at_once(self) -> None:
        reactor, poller = self.polling([(STEP, EVENT)] * 3, window=0.0)
        reactor.doIteration(None)
        reactor.doIteration(None)
        reactor.doIteration(1.5)
        self.assertEqual(poller.waits(), [-1, -1, 1.5])

    def test_the_first_wait_sleeps(self) -> None:
        reactor, poller = self.polling([(5.0, EVENT)])
        reactor.doIteration(None)
        self.assertEqual(poller.waits(), [-1])
        self.assertFalse(reactor._polling)

    def test_an_event_within_the_window_starts_polling(self) -> None:
        # Woken after 60 us: the next wait polls, four times, until the
        # event that comes 40 us into it.
        reactor, poller = self.polling(
            [(60e-6, EVENT)] + [(STEP, [])] * 3 + [(STEP, EVENT)]
        )
        reactor.doIteration(None)
        self.assertTrue(reactor._polling)
        poller.waits()
        reactor.doIteration(None)
        self.assertEqual(poller.waits(), [0, 0, 0, 0])
        self.assertTrue(reactor._polling)

    def test_an_event_later_than_the_window_does_not(self) -> None:
        reactor, poller = self.polling([(150e-6, EVENT), (150e-6, EVENT)])
        reactor.doIteration(None)
        reactor.doIteration(None)
        self.assertEqual(poller.waits(), [-1, -1])
        self.assertFalse(reactor._polling)

    def test_a_timer_waking_it_does_not(self) -> None:
        reactor, poller = self.polling([(50e-6, []), (STEP, EVENT)])
        reactor.doIteration(50e-6)
        reactor.doIteration(None)
        self.assertEqual(poller.waits(), [50e-6, -1])

    def test_nothing_within_the_window_sleeps_and_stops_polling(self) -> None:
        # Ten polls find nothing in the 100 us; then it sleeps as long as
        # the timer due in 1 s leaves, and the next wait sleeps at once.
        reactor, poller = self.polling(
            [(STEP, EVENT)] + [(STEP, [])] * 10 + [(0.5, EVENT), (STEP, EVENT)]
        )
        reactor.doIteration(None)
        poller.waits()
        reactor.doIteration(1.0)
        self.assertEqual(poller.waits(), [0] * 10 + [round(1.0 - 10 * STEP, 9)])
        self.assertFalse(reactor._polling)
        reactor.doIteration(None)
        self.assertEqual(poller.waits(), [-1])

    def test_without_a_timer_it_then_sleeps_until_an_event(self) -> None:
        reactor, poller = self.polling(
            [(STEP, EVENT)] + [(STEP, [])] * 10 + [(3.0, EVENT)]
        )
        reactor.doIteration(None)
        poller.waits()
        reactor.doIteration(None)
        self.assertEqual(poller.waits(), [0] * 10 + [-1])

    def test_a_timer_due_within_the_window_is_polled_up_to(self) -> None:
        # The timer is due in 30 us: three polls, then back to the reactor
        # to run it, without sleeping; the polling goes on.
        reactor, poller = self.polling([(STEP, EVENT)])
        reactor.doIteration(None)
        poller.waits()
        reactor.doIteration(30e-6)
        self.assertEqual(poller.waits(), [0, 0, 0])
        self.assertTrue(reactor._polling)

    def test_a_turn_with_work_waiting_does_not_wait(self) -> None:
        reactor, poller = self.polling([(STEP, EVENT), (STEP, [])])
        reactor.doIteration(None)
        poller.waits()
        reactor.doIteration(0)
        self.assertEqual(poller.waits(), [0])

    def test_a_read_found_by_polling_is_read(self) -> None:
        reactor = self.reactor()
        reader, other = self.reader(reactor)
        self.assertTrue(epoll.read_faster(reactor, WINDOW))
        reactor._polling = True
        other.sendall(b"x")
        reactor.doIteration(None)
        self.assertEqual((reader.reads, reader.lost), (1, []))

    def test_read_faster_sets_the_window_again(self) -> None:
        reactor = self.reactor()
        self.assertTrue(epoll.read_faster(reactor, WINDOW))
        reactor._polling = True
        self.assertTrue(epoll.read_faster(reactor, 0.0))
        self.assertEqual((reactor.idle_poll, reactor._polling), (0.0, False))


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
