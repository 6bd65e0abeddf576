"""Flow control: when one connection's requests stop being read, and when
reading resumes.

Reading pauses for named reasons, any number at once, and resumes when the
last one is gone: ``output`` (the client does not read its replies, and the
transport paused us), ``held`` (replies pile up behind one that is not
ready), ``backlog`` (a get waits, and the requests pipelined behind it pass
``MAX_BACKLOG``; only the end of the wait lifts it), and ``journal`` (the
journal writer has more than its ``max_backlog`` still to write: producers
cannot outrun the disk, so a storing connection waits until the writer has
caught up, while connections that only get go on and drain the queues).
A connection that is closing reads nothing more; one that is gone resumes
nothing.  The transport is paused only on the first reason and resumed
only after the last, so the reasons never fight over it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Unread input held while a blocking get waits, before reading pauses.
MAX_BACKLOG = 1024 * 1024


class FlowControl:
    """Why reading of one connection is paused, and the transport paused
    and resumed accordingly."""

    __slots__ = ("reasons", "closing", "gone", "_transport", "_go_on")

    def __init__(self, go_on: Callable[[], None]) -> None:
        #: Why reading is paused: empty while it is not.
        self.reasons: set[str] = set()
        #: No more requests are read: the connection closes once answered.
        self.closing = False
        #: The connection is lost: nothing is resumed any more.
        self.gone = False
        self._transport: Any = None
        #: Handles the requests read so far, once reading resumes.
        self._go_on = go_on

    def attach(self, transport: Any) -> None:
        """Pause and resume ``transport`` (an ``IPushProducer``)."""
        self._transport = transport

    def pause(self, reason: str) -> None:
        if not self.reasons and self._transport is not None:
            self._transport.pauseProducing()
        self.reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self.reasons:
            self.reasons.discard(reason)
            if not self.reasons and not self.gone:
                self._transport.resumeProducing()

    def input_waits(self, unread: int) -> None:
        """A get waits with ``unread`` bytes of requests behind it."""
        if unread > MAX_BACKLOG:
            self.pause("backlog")

    def wait_ended(self) -> None:
        """The get that waited is answered: the requests behind it go on."""
        self.resume("backlog")
        self._go_on()

    def check_journal(self, writer: Any) -> None:
        """After a set: if the journal ``writer`` has more than it should
        still to write, read no more until it has caught up."""
        if (
            writer is not None
            and writer.backlog > writer.max_backlog
            and "journal" not in self.reasons
        ):
            self.pause("journal")
            writer.when_drained(self._journal_drained)

    def _journal_drained(self) -> None:
        if "journal" in self.reasons and not self.gone:
            self.resume("journal")
            self._go_on()
