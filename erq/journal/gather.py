"""Whether the writer's pending batch waits for the connections in
lock-step on its queues, and the timer that sends it once it has waited
(see ``erq.journal.cohort`` for why, and for the cohorts it asks).

The writer asks ``holds`` before a batch that something waits for
leaves, and ``expecting`` before it sends what is pending early, while
batches come back; ``leaving`` as the batch goes, which also says
whether the reactor may sync it itself.  Each queue's cohort calls
``back`` when the last connection it expected has sent its next set.
Everything here runs on the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall

from erq.journal.dispatch import _Dispatch
from erq.journal.files import _Chunk, _Write


class _Clock(Protocol):
    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object
    ) -> IDelayedCall: ...


class Gathering:
    """The writer's wait for connections in lock-step: ``go`` is called,
    at the end of a turn, when what is pending may leave."""

    __slots__ = ("_clock", "_dispatch", "_go", "call", "waited")

    def __init__(
        self, clock: _Clock, dispatch: _Dispatch, go: Callable[[], object]
    ) -> None:
        self._clock = clock
        self._dispatch = dispatch
        self._go = go
        #: The timer that sends what is pending once it has waited (or at
        #: the end of the turn, once those it waited for are back).
        self.call: IDelayedCall | None = None
        #: What is pending waited its full time: it goes.
        self.waited = False

    def holds(self, pending: list[_Chunk]) -> bool:
        """Whether ``pending`` waits for connections in lock-step on its
        queues; if so, ``go`` is called when they are back, or when it
        waited long enough, or taking back the batch on the thread sends
        it."""
        if self.waited:
            return False
        wait = 0.0
        for chunk in pending:
            cohort = chunk.journal.cohort
            if not cohort.gathers():
                continue
            if cohort.on_thread():
                dispatch = self._dispatch
                if dispatch.busy() is not None:
                    # Taking that batch back sends what is pending.
                    dispatch.land()
                    return True
            due = cohort.wait()
            if due > wait:
                wait = due
        if wait <= 0:
            return False
        if self.call is None:
            self.call = self._clock.callLater(wait, self._over, True)
        return True

    def expecting(self, pending: list[_Chunk]) -> bool:
        """Whether a queue with sets in ``pending`` has connections in
        lock-step on the thread, or answered and not back."""
        for chunk in pending:
            cohort = chunk.journal.cohort
            if (cohort.expected or cohort.on_thread()) and cohort.gathers():
                return True
        return False

    def leaving(self, batch: list[_Chunk], alone: bool) -> bool:
        """``batch`` leaves: its cohorts' sets are no longer pending, and
        nothing waits.  Whether, with ``alone``, every connection in
        lock-step on its one queue waits for it, and nothing else does:
        blocking the reactor while it is synced then delays none of them
        (see "A lone durable write" in ``erq.journal.engine``)."""
        self.waited = False
        self.cancel()
        whole = False
        if alone and len(batch) == 1:
            chunk = batch[0]
            sets = sum(len(s.waiters) for s in chunk.steps if type(s) is _Write)
            whole = chunk.journal.cohort.whole(sets)
        for chunk in batch:
            chunk.journal.cohort.sent()
        return whole

    def back(self) -> None:
        """The last connection in lock-step a queue expected is back: what
        is pending need not wait for it past this turn (others may still
        be expected)."""
        if self.call is not None:
            self.call.cancel()
            self.call = self._clock.callLater(0, self._over, False)

    def cancel(self) -> None:
        call = self.call
        if call is not None:
            if call.active():
                call.cancel()
            self.call = None

    def _over(self, waited: bool) -> None:
        self.call = None
        self.waited = waited
        self._go()
