"""The Deferred of a durable add, and the replies that go before its
callbacks.

A set under ``sync_journal always`` is answered once its record is durable.
The journal's Deferred for the add fires then, and its callbacks do the
queue's part first: the item leaves the arrivals and joins the queue, a
waiting reader is served.  A client over the wire cannot tell whether its
``STORED`` left before or after that: no other request is read until the
callbacks have run, on the same turn of the reactor.  So the reply need not
wait for them.  ``Durable.first`` holds what answers the wire; it runs as
soon as the writer knows the record is durable, before anything else the
writer does with the batch, and the reply leaves with nothing between the
fsync and it but the wake-up.

Where the reply can go straight to its client's socket (a plain TCP
connection, open, with nothing before the reply in its order and nothing
waiting in its transport), the connection hands it over as well, as
``Durable.direct``; whoever makes the record durable on the reactor's
thread (the reactor's own run of a lone durable write, see "A lone durable
write" in ``erq.journal.engine``) then sends it from C the moment the
fsync returns, before any Python runs, and tells it how much of it went
(``DirectReply.sent``); ``first`` then finds the set answered.  So does
the reactor as it takes back a batch that the engine's thread made
durable ("Replies of batches taken back" there).  The socket's descriptor
is asked for just before the fsync (or the take-back), on the reactor's
thread, which closes sockets: it cannot be another by the time the reply
is sent.

Whatever runs first only writes replies: it must not read requests (a get
read then would not find the item that is about to join its queue), nor
call back into the journal, whose writer is in the middle of taking a batch
back.

The queue and the wire listen with ``then``, not ``addCallbacks``:
each durable set has two such listeners (the queue's arrivals, the
connection's reply order), and a Deferred's chain costs more than the two
of them together.  Listeners run in the order they were added, after
``first`` and before every callback of the Deferred, and pass the result
on as callbacks do: what one returns (a ``Failure`` once it raises) is
what the next one is given, and what the last one returns, never a
Deferred, is the result the Deferred's own callbacks start from.  Callers
that are not the wire (``await`` on ``QueueService.put``) so see the item
in its queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from erq.journal.cohort import Cohort

_log = Logger()


class DirectReply(Protocol):
    """A durable add's reply that may be sent the moment the add is
    durable, by whoever made it so, without Python in between."""

    #: The reply, whole.
    reply: bytes

    def socket(self) -> int:
        """The descriptor of the socket to send ``reply`` to now, or -1
        where it must go the usual way."""
        ...

    def sent(self, count: int) -> None:
        """The add is durable and ``count`` bytes of ``reply`` were sent
        (the rest, if any, goes the usual way)."""
        ...


class Durable(Deferred[None]):
    """Fires with ``None`` once the add's record is durable; ``first``
    runs just before, or earlier, as soon as the writer knows."""

    #: Its reply, where it may go straight to the client's socket.
    direct: DirectReply | None = None

    def __init__(self) -> None:
        super().__init__()
        #: Replies to run once the record is durable, before the callbacks.
        self.first: list[Callable[[], object]] = []
        #: Its journal's connections in lock-step, which the store joins.
        self.cohort: Cohort | None = None
        #: ``then``'s listeners, until it fires.
        self._listeners: list[_Listener] = []

    def then(
        self,
        stored: Callable[..., object],
        failed: Callable[..., object],
        *args: object,
    ) -> None:
        """Like ``addCallbacks(stored, failed, callbackArgs=args,
        errbackArgs=args)``, but run before the Deferred's callbacks,
        without a Deferred's chain; once fired, it is ``addCallbacks``."""
        if self.called:
            self.addCallbacks(stored, failed, callbackArgs=args, errbackArgs=args)
        else:
            self._listeners.append((stored, failed, args))

    def durable(self) -> None:
        """The record is durable: run ``first`` (once)."""
        first = self.first
        if first:
            self.first = []
            for reply in first:
                try:
                    reply()
                except Exception:
                    _log.failure("reply to a durable set failed")

    def callback(self, result: Any = None) -> None:
        self.durable()
        self._fire(result)

    def errback(self, fail: Failure | BaseException | None = None) -> None:
        # What ``Deferred.errback`` makes of ``fail``.
        if fail is None:
            fail = Failure(captureVars=self.debug)
        elif not isinstance(fail, Failure):
            fail = Failure(fail)
        self._fire(fail)

    def _fire(self, result: Any) -> None:
        listeners = self._listeners
        if listeners:
            self._listeners = []
            for stored, failed, args in listeners:
                try:
                    if isinstance(result, Failure):
                        result = failed(result, *args)
                    else:
                        result = stored(result, *args)
                except BaseException:
                    result = Failure(captureVars=self.debug)
        if isinstance(result, Failure):
            super().errback(result)
        else:
            super().callback(result)


_Listener = tuple[Callable[..., object], Callable[..., object], tuple[object, ...]]


def listen(
    deferred: Deferred[Any],
    stored: Callable[..., object],
    failed: Callable[..., object],
    *args: object,
) -> None:
    """``then`` where ``deferred`` is a ``Durable``, else ``addCallbacks``
    with ``args`` for both: the queue and the reply order take either kind
    of add, and listen to both alike."""
    if type(deferred) is Durable:
        deferred.then(stored, failed, *args)
    else:
        deferred.addCallbacks(stored, failed, callbackArgs=args, errbackArgs=args)
