"""Where the journal writer's batches run: the thread's Python loop or the C
engine, which of the two takes the next batch, and the batches taken back
from them in the order they were sent.

The hand-off
------------
A batch is in one of three places: pending on the reactor (the writer's),
on the thread's Python loop (at most one), or in the C engine (any number,
oldest first).  Both of the last two are `_Runner`s, held by one
``_Dispatch``; which of them may take the next batch is decided in one
place (``holds``, then ``send``):

- while a batch is on the Python loop, nothing else goes anywhere;
- while the engine has batches, only a batch the engine can run joins
  them; anything else waits until the engine's batches are back;
- otherwise the batch goes to the engine if it can run it, else to the
  Python loop.

Finished batches come back in the order they were sent, one at a time:
while one batch's completions run (``completing``), no other batch is
taken back and nothing is sent (what the completions journal joins the
next batch).  The one exception is decided before the completions run:
when something waits in what is pending, the writer sends it first, so
that the thread writes it while the reactor answers the batch that came
back.  After the completions, whatever finished meanwhile is taken back,
then the writer goes on (sends what is pending).  A batch is so never
forgotten: it leaves a runner only in ``take_back``, which runs its
completions.

The replies to the durable adds of a batch that comes back run first,
with nothing between the fsync and them (see ``erq.durable``); then the
writer completes each batch, and retries what failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Protocol, cast

from twisted.internet.interfaces import IReactorFDSet
from twisted.python.failure import Failure

from erq.journal.engine import (
    Engine,
    _Engine,
    _engine_steps,
    _EngineDone,
    _EngineRunner,
    shared_device,
)
from erq.journal.files import FileOps, _Chunk, _Write
from erq.journal.loop import _Done, _PythonLoop, _ThreadCalls
from erq.journal.thread import _WriterThread


class _Runner(Protocol):
    """One of the two ways the writer's thread runs a batch: the Python
    loop (any step, one batch at a time) or the C engine (appends and
    fsyncs only, any number of batches).  ``_Dispatch`` decides which takes
    a batch and takes batches back from either the same way."""

    def busy(self) -> bool:
        """Whether batches sent to it are not taken back yet."""

    def can_run(self, batch: list[_Chunk]) -> bool:
        """Whether it can run this batch at all."""

    def submit(self, batch: list[_Chunk], hurry: bool) -> None:
        """Run the batch; when done, wake the reactor if something waits
        for the batch, or if ``hurry``."""

    def take_back(self, wake: bool) -> list[_Done]:
        """The batches it has finished, oldest first; with ``wake``, have
        the reactor woken when it finishes the next."""


class _Reactor(_ThreadCalls, Protocol):
    """What a dispatch needs of its reactor."""

    def seconds(self) -> float: ...


def _written(batch: list[_Chunk]) -> int:
    """Bytes a batch taken back wrote: the thread (or the engine's
    submit) joined each write's buffers into one, so this costs a step,
    not a record."""
    return sum(
        sum(map(len, step.bufs))
        for chunk in batch
        for step in chunk.steps
        if step.done and isinstance(step, _Write)
    )


class _Dispatch:
    """The writer's two runners, the batches on them, and taking those
    back (see "The hand-off").  The writer hands it each batch it sends,
    and is told of each batch that comes back through three of its own
    methods (``writer``), bound once:

    - ``send_first(runner, done)``, as batches come back, before their
      completions: send what waits in what is pending, if it may go;
    - ``batches_done(done)``, their completions, in order; it says
      whether the writer has more to do once they are over;
    - ``go_on()``, then: send what is pending, go on stopping, let paused
      producers go.
    """

    def __init__(
        self,
        reactor: _Reactor,
        thread: _WriterThread,
        file_ops: Callable[[], FileOps],
        writer: tuple[
            Callable[[_Runner, list[_Done]], object],
            Callable[[list[_Done]], bool],
            Callable[[], object],
        ],
        engine: _Engine | None = None,
        data_dir: str | None = None,
        shared_flushes: bool | None = None,
    ) -> None:
        self._reactor = reactor
        self._send_first, self._batches_done, self._go_on = writer
        # The thread wakes the reactor into ``take_back`` itself: no call
        # between.
        self.loop = _PythonLoop(
            reactor,
            thread.run,
            thread.files,
            file_ops,
            partial(self.take_back, wake=False),
        )
        #: The C engine, while the thread serves it (or one passed in).
        self.engine: _EngineRunner | None = None
        if engine is not None:
            self.engine = _EngineRunner(engine, bool(shared_flushes))
        self._engine_done: _EngineDone | None = None
        # Where the journals are: its file system says whether the files
        # of a batch may share one cache flush (see "Shared flushes" in
        # ``erq.journal.engine``), unless ``shared_flushes`` says.
        self._data_dir = data_dir
        self._shared_flushes = shared_flushes
        #: A batch's completions are running (see "The hand-off").
        self.completing = False
        #: Told of each batch taken back: the seconds since it left for the
        #: thread (its writes and fsyncs, and its wait to be taken back),
        #: and the bytes it wrote.  For the admin server's histograms.
        self.on_batch: Callable[[float, int], object] | None = None
        #: When each batch in flight left, while ``on_batch`` is set.
        self.sent_at: dict[int, float] = {}

    # -- the engine --------------------------------------------------------

    def start_engine(self, file_ops: FileOps) -> None:
        """Have the thread serve the C engine, if it can: asked once, as
        the writer's own thread starts."""
        # Only with the real file operations (tests that fake them see every
        # step) and a reactor that can watch the eventfd.
        if (
            Engine is None
            or type(file_ops) is not FileOps
            or not IReactorFDSet.providedBy(self._reactor)
        ):
            return
        device = shared_device(self._data_dir, self._shared_flushes)
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        engine = self.engine = _EngineRunner(
            Engine(fd, shared_device=device), device is not None, device
        )
        # The eventfd takes the engine's batches back itself: no call between.
        self._engine_done = _EngineDone(partial(self.take_back, engine, False), fd)
        cast(IReactorFDSet, self._reactor).addReader(self._engine_done)

    def stop_engine(self) -> None:
        """The thread serves the engine no more."""
        done = self._engine_done
        if self.engine is None or done is None:
            return
        self.engine.engine.interrupt()
        self.engine = self._engine_done = None
        cast(IReactorFDSet, self._reactor).removeReader(done)
        os.close(done.fd)

    @property
    def uses_engine(self) -> bool:
        """Whether appends and fsyncs run in the C engine."""
        return self.engine is not None

    @property
    def shares_flushes(self) -> bool:
        """Whether the files of a batch may share one cache flush (see
        "Shared flushes" in ``erq.journal.engine``)."""
        engine = self.engine
        return engine is not None and engine.shares

    @property
    def engine_batches(self) -> int:
        """Batches the engine ran."""
        engine = self.engine
        return 0 if engine is None else engine.count

    @property
    def inline_batches(self) -> int:
        """Batches the reactor ran itself, on the engine (see "A lone
        durable write" in ``erq.journal.engine``)."""
        engine = self.engine
        return 0 if engine is None else engine.inline

    @property
    def on_thread(self) -> int:
        """Batches sent to the thread and not taken back yet."""
        engine = 0 if self.engine is None else len(self.engine.batches)
        return int(self.loop.busy()) + engine

    # -- sending -------------------------------------------------------------

    def busy(self) -> _Runner | None:
        """The runner that has batches on the thread (never both)."""
        loop = self.loop
        if loop.in_flight is not None:
            return loop
        engine = self.engine
        if engine is not None and engine.batches:
            return engine
        return None

    def holds(self, pending: list[_Chunk]) -> bool:
        """Whether what is pending must wait for the batches on the thread
        (see "The hand-off"); those finished are taken back (which sends
        what is pending), and the thread wakes the reactor for the rest."""
        # Each runner's ``busy``, read from its fields: this runs once a
        # batch.
        loop = self.loop
        if loop.in_flight is not None:
            self.take_back(loop, wake=True)
            return True
        engine = self.engine
        if engine is not None and engine.batches:
            # Batches the engine finished go back first, in order.
            if self.take_back(engine, wake=False):
                return True
            if not engine.can_run(pending):
                # Only the Python loop can run this, after the engine.
                self.take_back(engine, wake=True)
                return True
        return False

    def send(
        self,
        batch: list[_Chunk],
        alone: bool,
        report: bool,
        hurry: bool,
        whole: bool = False,
    ) -> None:
        """Hand ``batch`` to the runner that takes it, once ``holds`` has
        said that it may go.  With ``alone``, a batch that is one durable
        set and nothing else runs on the reactor's own thread, if the
        engine is idle (see "A lone durable write" in
        ``erq.journal.engine``); with ``report``, the Python loop runs it
        (a journal that failed says when it writes again); ``hurry`` has
        the thread wake the reactor when it is done."""
        if self.on_batch is not None:
            self.sent_at[id(batch)] = self._reactor.seconds()
        engine = self.engine
        if engine is not None and not report:
            # ``lone`` asks, of a lone set, all that ``can_run`` would.
            if alone and engine.lone(batch, whole):
                done = engine.run_now(batch)
                if done:
                    if self.on_batch is not None:
                        self._observe(done)
                    self._complete(done)
                return
            if _engine_steps(batch):
                engine.submit(batch, hurry)
                return
        loop = self.loop
        loop.submit(batch, report or hurry)
        if loop.finished is not None:
            # A pool that ran the batch at once.
            self.take_back(loop, wake=False)

    # -- taking batches back -------------------------------------------------

    def land(self) -> None:
        """With batches on the thread: take back those it has finished (which
        sends what is pending); have it wake the reactor for the rest."""
        busy = self.busy()
        if busy is not None:
            self.take_back(busy, wake=True)

    def take_back(self, runner: _Runner, wake: bool) -> bool:
        """On the reactor: take back the batches ``runner`` has finished and
        run their completions; with ``wake``, have the reactor woken when it
        finishes the next.  Whether any came back."""
        if self.completing:
            # After the completions running now (``_complete`` looks again).
            return False
        done = runner.take_back(wake)
        if not done:
            return False
        if self.on_batch is not None:
            self._observe(done)
        self._send_first(runner, done)
        self._complete(done)
        return True

    def _observe(self, done: list[_Done]) -> None:
        now = self._reactor.seconds()
        for batch, _ in done:
            sent = self.sent_at.pop(id(batch), None)
            if sent is not None and self.on_batch is not None:
                self.on_batch(now - sent, _written(batch))

    def _complete(self, done: list[tuple[list[_Chunk], Failure | None]]) -> None:
        """Run the completions of batches taken back, in order; then take
        back what finished meanwhile, or let the writer go on."""
        self.completing = True
        try:
            engine = self.engine
            if engine is not None and engine.durables:
                # Their replies first, with nothing between the fsync and
                # them (see ``erq.durable``).
                durables = engine.durables
                engine.durables = []
                for durable in durables:
                    durable.durable()
            more = self._batches_done(done)
        finally:
            self.completing = False
        # What finished meanwhile goes back first, in order (each runner's
        # ``busy``, read from its fields: this runs once a batch, even a lone
        # durable set's).
        loop = self.loop
        if loop.in_flight is not None:
            if self.take_back(loop, wake=False):
                return
        else:
            engine = self.engine
            if (
                engine is not None
                and engine.batches
                and self.take_back(engine, wake=False)
            ):
                return
        if more:
            self._go_on()
