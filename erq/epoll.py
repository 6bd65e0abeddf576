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
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.internet import epollreactor
from twisted.python import log


class EPollReactor(epollreactor.EPollReactor):
    """The epoll reactor, its reads handed to ``doRead`` without a log
    context (see the module's docstring)."""

    def doPoll(self, timeout: float | None) -> None:
        """Poll for events and handle them, as Twisted's ``doPoll`` does."""
        if timeout is None:
            timeout = -1
        selectables = self._selectables
        try:
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


def read_faster(reactor: Any) -> bool:
    """Have ``reactor`` dispatch reads as ``EPollReactor`` does, if it is
    Twisted's epoll reactor and nothing else (a subclass, or any other
    reactor, is left as it is); whether it does now.  The reactor object
    stays the one every module imported: only its class changes, to a
    subclass that adds no state."""
    if type(reactor) is EPollReactor:
        return True
    if type(reactor) is not epollreactor.EPollReactor:
        return False
    reactor.__class__ = EPollReactor
    return True
