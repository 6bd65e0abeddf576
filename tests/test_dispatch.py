"""The hand-off of the journal writer's batches (``erq.journal.dispatch``):
what the writer is told, and in which order, as batches come back from the
thread's Python loop.  (The engine's side, and every interleaving with the
writer, are in ``tests/test_writer.py``.)"""

from __future__ import annotations

from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from erq.journal import FileOps
from erq.journal.dispatch import _Dispatch, _Runner
from erq.journal.files import _Chunk
from erq.journal.loop import _Done
from erq.journal.thread import _WriterThread
from tests.support import ManualPool, SyncPool, ThreadCallsReactor


class NoJournal:
    """Enough of a journal for a chunk with no steps."""

    directory = "nowhere"


def batch() -> list[_Chunk]:
    return [_Chunk(NoJournal())]  # type: ignore[arg-type]


class DispatchCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadCallsReactor()
        self.pool = self.make_pool()
        self.told: list[tuple[object, ...]] = []
        #: What ``batches_done`` says: whether the writer has more to do.
        self.more = True
        #: Run inside ``batches_done``, once.
        self.during: Callable[[], object] | None = None
        ops = FileOps()
        self.dispatch = _Dispatch(
            self.reactor,
            _WriterThread(self.reactor, self.pool),  # type: ignore[arg-type]
            lambda: ops,
            (self.send_first, self.batches_done, self.go_on),
        )

    def make_pool(self) -> ManualPool | SyncPool:
        return ManualPool()

    def run_pool(self) -> None:
        assert isinstance(self.pool, ManualPool)
        self.pool.run_all()

    def send_first(self, runner: _Runner, done: list[_Done]) -> None:
        self.told.append(("send_first", runner, [b for b, _ in done]))

    def batches_done(self, done: list[_Done]) -> bool:
        self.told.append(
            ("batches_done", [b for b, _ in done], self.dispatch.completing)
        )
        during, self.during = self.during, None
        if during is not None:
            during()
        return self.more

    def go_on(self) -> None:
        self.told.append(("go_on",))


class LoopTests(DispatchCase):
    def test_the_writer_is_told_in_order(self) -> None:
        sent = batch()
        self.dispatch.send(sent, alone=False, report=False, hurry=True)
        self.assertEqual(self.dispatch.on_thread, 1)
        self.run_pool()
        self.assertEqual(self.told, [])
        self.reactor.run_calls()
        loop = self.dispatch.loop
        self.assertEqual(
            self.told,
            [("send_first", loop, [sent]), ("batches_done", [sent], True), ("go_on",)],
        )
        self.assertFalse(self.dispatch.completing)
        self.assertEqual(self.dispatch.on_thread, 0)

    def test_the_writer_goes_on_only_when_it_has_more_to_do(self) -> None:
        self.more = False
        self.dispatch.send(batch(), alone=False, report=False, hurry=True)
        self.run_pool()
        self.reactor.run_calls()
        self.assertEqual([t[0] for t in self.told], ["send_first", "batches_done"])

    def test_what_is_pending_waits_for_the_loop(self) -> None:
        """While a batch is on the Python loop, nothing else goes, and the
        thread is asked to wake the reactor when it is done, even though
        nothing in the batch asked for that."""
        self.dispatch.send(batch(), alone=False, report=False, hurry=False)
        self.assertTrue(self.dispatch.holds(batch()))
        self.run_pool()
        self.reactor.run_calls()
        self.assertEqual(
            [t[0] for t in self.told], ["send_first", "batches_done", "go_on"]
        )
        self.assertFalse(self.dispatch.holds(batch()))

    def test_a_finished_batch_waits_to_be_taken_back(self) -> None:
        """A batch that nothing waits for comes back when the reactor next
        looks, not by a wake-up of its own."""
        self.dispatch.send(batch(), alone=False, report=False, hurry=False)
        self.run_pool()
        self.reactor.run_calls()
        self.assertEqual(self.told, [])
        self.dispatch.land()
        self.assertEqual(len(self.told), 3)


class CompletingTests(DispatchCase):
    def make_pool(self) -> ManualPool | SyncPool:
        # The batch runs as it is sent, and is taken back at once.
        return SyncPool()

    def test_nothing_comes_back_while_completions_run(self) -> None:
        """A batch that finishes during another's completions comes back
        once they are over, before the writer goes on."""
        first, second = batch(), batch()
        taken: list[bool] = []

        def send_second() -> None:
            self.dispatch.send(second, alone=False, report=False, hurry=True)
            taken.append(self.dispatch.take_back(self.dispatch.loop, wake=False))

        self.during = send_second
        self.dispatch.send(first, alone=False, report=False, hurry=True)
        loop = self.dispatch.loop
        self.assertEqual(taken, [False])
        self.assertEqual(
            self.told,
            [
                ("send_first", loop, [first]),
                ("batches_done", [first], True),
                ("send_first", loop, [second]),
                ("batches_done", [second], True),
                ("go_on",),
            ],
        )
