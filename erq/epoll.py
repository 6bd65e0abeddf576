"""Twisted's epoll reactor with a cheaper read: what ``twistd erq`` runs on.

Each event the epoll reactor takes from the kernel it hands on through
``log.callWithLogger``, which sets the selectable's log prefix as the
legacy log's context for the call: a ``logPrefix()`` call, a context
dictionary copied, pushed and popped, four Python frames.  That is most of
what the reactor itself spends on a lock-step request: a server's
instructions per lock-step ``set`` (valgrind, memory only) go from about
64,500 to 46,800 without it.

``EPollReactor`` here takes the commonest event, a socket with data to read
and nothing else, straight to its ``doRead``, with no log context around
it.  Everything else (a hang-up, an error, a write, a descriptor already
closed) goes to Twisted's own ``_doReadOrWrite`` as before.  What goes
wrong in a ``doRead`` is handled as Twisted handles it: the exception is
logged with the selectable's log prefix, and the selectable disconnected,
in that prefix's context.  What erq logs during a read goes through
``twisted.logger``, which does not read the legacy context; only a legacy
``log.msg`` made during a read shows ``-`` instead of the connection as
its system.

It relies on four names of ``twisted.internet.epollreactor`` and
``posixbase`` that are not public (``_poller``, ``_selectables``,
``_doReadOrWrite``, ``_disconnectSelectable``); ``tests/test_epoll.py``
fails if a Twisted release changes them.  ``twistd erq --plain-reactor``
runs Twisted's epoll reactor as it is, and ``twistd -r`` with any other
reactor leaves erq's dispatch out.

Polling before sleeping
-----------------------
A reactor with nothing to do sleeps in ``epoll_wait``, and its CPU goes
idle.  On a virtual machine an idle CPU halts, and waking it again (a
client's request arriving, the journal's engine saying a batch is done)
takes the host tens of microseconds: a lock-step client pays that on
every request, more than erq's own work on it.  So ``idle_poll`` seconds
(``twistd erq --idle-poll``, in microseconds) the reactor first polls
without blocking, and sleeps only if nothing came meanwhile.  It does so
only while events come that soon: a wait that ends by sleeping stops the
polling, and the next wait that ends within ``idle_poll`` starts it again.
A server whose requests come further apart than that never polls, and an
idle one never does; one whose requests come closer spends the gaps
between them on its CPU instead of halting it: more CPU at a rate it kept
up with anyway, a higher rate where the halts held it back (figures under
Performance in the README).  A wait for a timer due sooner than
``idle_poll`` polls until the timer is due.
"""

from __future__ import annotations

import errno
import sys
from time import monotonic
from typing import Any

from twisted.internet import epollreactor
from twisted.python import log


class EPollReactor(epollreactor.EPollReactor):
    """The epoll reactor, its reads handed to ``doRead`` without a log
    context, and polling ``idle_poll`` seconds before it sleeps (see the
    module's docstring)."""

    #: How long a wait polls before it sleeps, in seconds; 0: it sleeps at
    #: once, as Twisted's reactor does.
    idle_poll = 0.0
    #: Whether the next wait polls first: the last one ended within
    #: ``idle_poll``.
    _polling = False
    #: The clock that times the waits.
    _now = staticmethod(monotonic)

    def doPoll(self, timeout: float | None) -> None:
        """Poll for events and handle them, as Twisted's ``doPoll`` does."""
        if timeout is None:
            timeout = -1
        selectables = self._selectables
        try:
            if self.idle_poll and timeout:
                events = self._wait(timeout, len(selectables))
            else:
                events = self._poller.poll(timeout, len(selectables))
        except OSError as error:
            if error.errno == errno.EINTR:
                return
            raise
        handle = self._doReadOrWrite
        readable = self._POLL_IN
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event != readable:
                log.callWithLogger(selectable, handle, selectable, fd, event)
                continue
            # _doReadOrWrite's commonest case, without the log context.
            try:
                if selectable.fileno() == -1:
                    log.callWithLogger(selectable, handle, selectable, fd, event)
                    continue
                why = selectable.doRead()
            except BaseException:
                why = sys.exc_info()[1]
                log.callWithLogger(selectable, log.err)
            if why:
                log.callWithLogger(
                    selectable, self._disconnectSelectable, selectable, why, True
                )

    doIteration = doPoll

    def _wait(self, timeout: float, most: int) -> list[tuple[int, int]]:
        """Events, waiting for them at most ``timeout`` seconds (-1: until
        there are some): polled for first, while the waits end soon (see
        "Polling before sleeping")."""
        poll = self._poller.poll
        now = self._now
        window = self.idle_poll
        start = now()
        if not self._polling:
            events = poll(timeout, most)
            if events:
                # Woken by an event, not by a timer falling due.
                self._polling = now() - start <= window
            return events
        timer_first = 0 <= timeout < window
        limit = timeout if timer_first else window
        while True:
            events = poll(0, most)
            if events:
                return events
            waited = now() - start
            if waited >= limit:
                break
        if timer_first:
            # The timer is due: the reactor runs it, and comes back.
            return []
        self._polling = False
        return poll(-1 if timeout < 0 else max(0.0, timeout - waited), most)


def read_faster(reactor: Any, idle_poll: float = 0.0) -> bool:
    """Have ``reactor`` dispatch reads as ``EPollReactor`` does, polling
    ``idle_poll`` seconds before it sleeps, if it is Twisted's epoll
    reactor and nothing else (a subclass, or any other reactor, is left as
    it is); whether it does now.  The reactor object stays the one every
    module imported: only its class changes, to a subclass whose own state
    starts as its class attributes say."""
    if type(reactor) is not EPollReactor:
        if type(reactor) is not epollreactor.EPollReactor:
            return False
        reactor.__class__ = EPollReactor
    reactor.idle_poll = idle_poll
    reactor._polling = False
    return True
