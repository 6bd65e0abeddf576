"""The journal writer's thread (``erq.journal.thread``): a thread of its own
that runs jobs in order, or a pool's, and the reactor's wait for it at
shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from erq.journal.thread import SHUTDOWN_TIMEOUT, _WriterThread
from tests.support import ManualPool

#: A system event trigger as it was added: phase, event, callable, arguments.
Trigger = tuple[str, str, Callable[..., object], tuple[object, ...]]


def stop_and_join(thread: _WriterThread) -> None:
    own = thread.own
    thread.stop()
    if own is not None:
        own.join(10)


class TriggersReactor(MemoryReactorClock):
    """A memory reactor whose system event triggers can be taken away."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[Trigger] = []
        self.removed: list[object] = []

    def addSystemEventTrigger(  # type: ignore[override]
        self, phase: str, event: str, f: Callable[..., object], *args: object
    ) -> object:
        self.added.append((phase, event, f, args))
        return len(self.added)

    def removeSystemEventTrigger(self, trigger: object) -> None:
        self.removed.append(trigger)


class OwnThreadTests(SynchronousTestCase):
    def test_jobs_run_in_order_each_reported_on_the_thread(self) -> None:
        thread = _WriterThread(object(), None)
        thread.start(None, Deferred)
        own = thread.own
        assert own is not None
        seen: list[tuple[str, bool, object, bool]] = []

        def report(name: str) -> Callable[[bool, object], None]:
            def on_result(ok: bool, result: object) -> None:
                on_thread = threading.current_thread() is own
                seen.append((name, ok, result, on_thread))

            return on_result

        def fail() -> None:
            raise ValueError("no")

        thread.run(report("a"), lambda: 1)
        thread.run(report("b"), fail)
        thread.run(report("c"), lambda x: x * 2, 21)
        self.assertTrue(thread.stop())
        own.join(10)
        self.assertFalse(own.is_alive())
        self.assertIsNone(thread.own)
        self.assertEqual(
            [(name, ok, on) for name, ok, _, on in seen],
            [
                ("a", True, True),
                ("b", False, True),
                ("c", True, True),
            ],
        )
        self.assertEqual((seen[0][2], seen[2][2]), (1, 42))

    def test_a_pool_runs_the_jobs_and_there_is_no_thread_to_stop(self) -> None:
        pool = ManualPool()
        thread = _WriterThread(object(), pool)  # type: ignore[arg-type]
        results: list[object] = []
        thread.run(lambda ok, result: results.append((ok, result)), lambda: "done")
        self.assertEqual(results, [])
        pool.run_all()
        self.assertEqual(results, [(True, "done")])
        self.assertFalse(thread.stop())


class ShutdownTests(SynchronousTestCase):
    def test_the_reactor_waits_for_the_thread_while_it_runs(self) -> None:
        reactor = TriggersReactor()
        thread = _WriterThread(reactor, None)
        thread.start(None, Deferred)
        self.assertEqual(
            [(phase, event) for phase, event, _, _ in reactor.added],
            [("before", "shutdown")],
        )
        trigger = thread.shutdown_trigger
        own = thread.own
        assert own is not None
        thread.stop()
        own.join(10)
        self.assertEqual(reactor.removed, [trigger])
        self.assertIsNone(thread.shutdown_trigger)

    def test_shutdown_stops_the_writer_and_gives_up_after_the_timeout(self) -> None:
        reactor = TriggersReactor()
        thread = _WriterThread(reactor, None)
        stops: list[Deferred[None]] = []

        def stop() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            stops.append(d)
            return d

        thread.start(None, stop)
        self.addCleanup(stop_and_join, thread)
        _, _, shutdown, args = reactor.added[0]
        waited = shutdown(*args)
        assert isinstance(waited, Deferred)
        fired: list[object] = []
        waited.addBoth(fired.append)
        self.assertEqual((len(stops), fired), (1, []))
        # The trigger is spent: stopping the thread does not take it away.
        self.assertIsNone(thread.shutdown_trigger)
        reactor.advance(SHUTDOWN_TIMEOUT)
        self.assertEqual(fired, [None])
