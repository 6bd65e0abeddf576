"""Queues waited on before they exist.

A get that waits (``/t=``) on a queue nobody has set to yet waits for its
first item, and so do the gets that waited on a queue when it was deleted.
The queue itself is not made for them (it would be journaled, counted and
shown by ``stats``): an unborn `Queue`, without a journal, holds the
waiters only, until the queue of that name is created and takes them
over, or until its last waiter leaves, when it is forgotten.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from erq.config import QueueSettings
from erq.queue import Queue
from erq.waiters import Deadlines


class UnbornQueues:
    """The unborn queues of one server, by name: their waiters time out on
    the server's ``clock`` and ``deadlines``, under the settings of their
    name (``settings_for``)."""

    def __init__(
        self,
        clock: IReactorTime,
        deadlines: Deadlines,
        settings_for: Callable[[str], QueueSettings],
    ) -> None:
        self._clock = clock
        self._deadlines = deadlines
        self._settings_for = settings_for
        #: Each name waited on, and the queue that holds its waiters.
        self.queues: dict[str, Queue] = {}

    def waiting_on(self, name: str) -> Queue:
        """The unborn queue a get that waits on ``name`` waits in."""
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = self._unborn(name)
        return queue

    def born(self, queue: Queue) -> None:
        """``queue`` was just created: it takes over the waiters on its name."""
        unborn = self.queues.pop(queue.name, None)
        if unborn is not None:
            unborn.on_no_waiters = None
            queue.adopt_waiters(unborn)

    def left_behind(self, queue: Queue) -> None:
        """``queue`` was deleted with waiters: they wait on for a queue of
        that name to be created again."""
        unborn = self.queues[queue.name] = self._unborn(queue.name)
        unborn.adopt_waiters(queue)

    def _unborn(self, name: str) -> Queue:
        queue = Queue(
            name, self._clock, self._settings_for(name), deadlines=self._deadlines
        )
        queue.on_no_waiters = self._forget
        return queue

    def _forget(self, queue: Queue) -> None:
        if self.queues.get(queue.name) is queue:
            del self.queues[queue.name]
