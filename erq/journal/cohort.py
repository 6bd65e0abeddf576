"""Durable sets from connections in lock-step on one queue, gathered into
one fsync.

Why
---
Two producers that each wait for ``STORED`` before their next set take
turns under group commit: while one's set is synced, the other's arrives
and waits for the next batch; when the first is answered, its next set
arrives while the second's batch is synced, and so on.  Each batch then
makes one set durable, and the two together store no more than one
connection alone: one set per fsync.  In step, both sets share each
fsync.

What the writer does
--------------------
A connection is *in lock-step* when its durable set arrives within
``lock_step`` of the answer to its last one, and not before that answer
(a client that pipelines its sets is not): ``Pace``, which the connection
keeps, tells.  Each queue's journal keeps a ``Cohort`` of them: those
whose set waits for its fsync (``answering``), and those answered and
not back yet whose last set came within ``window`` of the answer before
it, each until ``window`` after its answer (``expected``).  A batch that
something waits for then waits, before it leaves:

- while a batch that holds a set in lock-step of one of its queues is on
  the thread: that batch comes back soon, and its connections send their
  next sets a round trip later;
- while a connection expected on one of its queues, answered less than
  ``window`` ago, has not sent its next set: the batch goes at the end
  of the turn in which the last of them does.

A client that pipelines its sets is not in lock-step, but it does send
them in bursts: a producer that writes a hundred sets and then waits for
their answers.  A burst larger than one read of the socket (64 KiB) comes
in two reads or more, and would be synced in as many batches, the client
waiting for each: so when a read that stored durable sets ends inside a
request, its connection is expected too, until its next read (or for
``window`` at most, however many reads it takes: ``Pace.mid_request``).

The batch that carries the sets of a whole cohort, and no other set, is
then synced by the reactor itself, without the two thread wake-ups a
batch costs (see "A lone durable write" in ``erq.journal.engine``):
every connection that stored into it is waiting for it, with nothing
more to send.

Nothing else waits.  A connection answered longer ago than ``window`` is
not waited for; nor is one whose last set came later than ``window``
after the answer before it (a producer that does some work between its
sets: waiting for it would hold every batch back a whole window), though
it is still in lock-step; one that comes back later than ``lock_step``
is not in lock-step (a producer that paces itself, or one that stopped);
a batch of removals alone on the thread holds nothing back; one
connection alone never waits for itself; queues do not wait for each
other's connections, so producers each on a queue of their own go as
they come; and more than ``MOST`` connections in lock-step on one queue
are left to group commit as it is.  At worst a batch waits ``window``
once for a connection that stops or slows down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from erq.durable import Durable

#: How long a batch waits at most for a connection in lock-step to send
#: its next set after its answer: a few round trips on a local network,
#: below an fsync of most disks.
WINDOW = 0.0005
#: How soon after its answer a connection's next durable set must arrive
#: for it to count as in lock-step.  Longer than ``WINDOW``: a client's
#: turnaround (its process woken, the answer read, the next set sent)
#: takes more than a round trip when the machine is busy, its consumers'
#: processes beside it; a producer that takes a millisecond is as much in
#: lock-step as one that takes a tenth, and what its set shares a batch
#: with is still synced by the reactor itself (``whole``), though no batch
#: waits for it (``Pace.prompt``).
LOCK_STEP = 0.002
#: The most connections in lock-step on one queue that a batch waits for.
#: Left to group commit, many of them do not overlap their fsyncs with the
#: reactor's work as they might: a batch's answers go out together, the
#: next sets come back together, and the next batch carries them all,
#: while the reactor waits for the thread.  Gathered, that batch is synced
#: by the reactor itself, without the thread's two wake-ups: with 8 or 16
#: producers in lock-step on one queue, the server spent a third less CPU
#: on each set, and 8, 16 and 32 producers stored more sets a second.
#: With 64 it measured the same either way: the slowest of so many holds
#: every batch back for its ``WINDOW``.
MOST = 32


class Cohort:
    """The connections storing durably in lock-step, and whether a batch
    should wait for them (see the module's docstring)."""

    __slots__ = (
        "seconds",
        "window",
        "lock_step",
        "answering",
        "expected",
        "pending",
        "back",
    )

    def __init__(
        self,
        seconds: Callable[[], float],
        back: Callable[[], object],
        window: float = WINDOW,
        lock_step: float = LOCK_STEP,
    ) -> None:
        #: The reactor's clock.
        self.seconds = seconds
        self.window = window
        self.lock_step = lock_step
        #: Connections in lock-step whose durable set waits for its fsync.
        self.answering: set[object] = set()
        #: Connections in lock-step answered and not back yet, and those
        #: in the middle of sending a request, each with the time until
        #: which a batch waits for it.
        self.expected: dict[object, float] = {}
        #: Sets of ``answering`` not sent to the thread yet.
        self.pending = 0
        #: Called when the last connection expected is back.
        self.back = back

    def arrived(self, who: object, quick: bool) -> None:
        """A durable set of ``who`` waits for its fsync; ``quick`` when it
        came within ``lock_step`` of the answer to ``who``'s last one."""
        expected = self.expected
        if quick:
            self.answering.add(who)
            self.pending += 1
        elif self.answering:
            # Out of step (or its last set failed): not waited for.
            self.answering.discard(who)
        if expected and expected.pop(who, None) is not None and not expected:
            self.back()

    def answered(self, who: object, prompt: bool) -> None:
        """``who``'s set in lock-step is durable and answered; ``prompt``
        when that set came within ``window`` of the answer before it, so
        that a batch waits for ``who``'s next one."""
        self.answering.discard(who)
        if prompt:
            self.expected[who] = self.seconds() + self.window

    def forget(self, who: object) -> None:
        """``who`` is gone."""
        self.answering.discard(who)
        if self.expected.pop(who, None) is not None and not self.expected:
            self.back()

    def sent(self) -> None:
        """What is pending left for the thread."""
        self.pending = 0

    def on_thread(self) -> bool:
        """Whether a set in lock-step is on the thread."""
        return len(self.answering) > self.pending

    def gathers(self) -> bool:
        """Whether a batch waits for connections here: some are in
        lock-step, and no more than ``MOST``."""
        count = len(self.answering) + len(self.expected)
        if count > MOST:
            # Those gone quiet count no more.
            self.wait()
            count = len(self.answering) + len(self.expected)
        return 0 < count <= MOST

    def whole(self, sets: int) -> bool:
        """Whether ``sets`` durable sets pending here are those of every
        connection in lock-step here (no more than ``MOST``), and nothing
        else."""
        answering = len(self.answering)
        return 0 < sets == self.pending == answering <= MOST and not self.expected

    def wait(self) -> float:
        """How long a batch should wait for the connections expected: until
        the last of them is due, or zero if none is."""
        expected = self.expected
        if not expected:
            return 0.0
        now = self.seconds()
        due = 0.0
        for who, until in list(expected.items()):
            if until <= now:
                del expected[who]
            elif until > due:
                due = until
        return due - now if due else 0.0


class Pace:
    """One connection's durable sets as its queue's cohort sees them: when
    each arrives, whether it came within ``lock_step`` of the answer to the
    one before (and not before that answer: a client that pipelines its
    sets is not in lock-step), and when it is answered."""

    __slots__ = (
        "cohort",
        "stored_at",
        "answered_at",
        "quick",
        "prompt",
        "read_stored",
        "mid_until",
    )

    def __init__(self) -> None:
        #: The cohort of the queue this connection last stored to.
        self.cohort: Cohort | None = None
        self.stored_at = float("-inf")
        self.answered_at = float("-inf")
        self.quick = False
        #: Quick, and within the cohort's ``window``: a batch waits for
        #: this connection's next set.
        self.prompt = False
        #: Whether a durable set was stored since the connection's reader
        #: cleared this (as it starts on what it has read).
        self.read_stored = False
        #: Until when a batch waits for the rest of a request this
        #: connection is sending (``mid_request``).
        self.mid_until = float("-inf")

    def stored(self, durable: Durable) -> None:
        """A durable set of this connection waits for its fsync."""
        cohort = durable.cohort
        if cohort is None:
            return
        last = self.cohort
        if last is not cohort:
            if last is not None:
                last.forget(self)
            self.cohort = cohort
        now = cohort.seconds()
        answered = self.answered_at
        self.quick = quick = (
            answered >= self.stored_at and now - answered <= cohort.lock_step
        )
        self.prompt = quick and now - answered <= cohort.window
        self.stored_at = now
        self.read_stored = True
        cohort.arrived(self, quick)
        durable.first.append(self.answered)

    def mid_request(self) -> None:
        """The connection's read stored durable sets and ended inside a
        request: the rest of what the client is sending is on its way, and
        a batch waits for it, so that the sets of one burst share one fsync
        (see the module's docstring).  It waits until ``window`` after the
        first of a run of such reads, not after each: a client that never
        stops sending would otherwise hold its batch back for ever."""
        cohort = self.cohort
        if cohort is None:
            return
        now = cohort.seconds()
        until = self.mid_until
        if until <= now:
            self.mid_until = until = now + cohort.window
        cohort.expected[self] = until

    def answered(self) -> None:
        """The set is durable and answered."""
        cohort = self.cohort
        if cohort is not None:
            self.answered_at = cohort.seconds()
            if self.quick:
                cohort.answered(self, self.prompt)

    def gone(self) -> None:
        """The connection is closed."""
        if self.cohort is not None:
            self.cohort.forget(self)
            self.cohort = None
