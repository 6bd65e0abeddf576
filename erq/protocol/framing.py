"""Framing: how the bytes one connection reads become requests, in order.

Many pipelined requests arrive in one read.  ``run`` cuts the connection's
input buffer into request lines and data blocks itself, rather than leave
that to ``LineReceiver``'s own loop: a run of the same request (a batch of
sets or gets) is spotted in the buffer and handled as one, and a get that
waits holds back the requests after it in the buffer, which that loop
cannot do.  A read that is one whole request of a line seen before, with
nothing buffered (a lock-step client's set or get), is handled straight
from the bytes read by ``lock_step``, with the same checks and reply order
as ``run``, and its one reply written at once.

The state framed (the input buffer, the bytes of a data block still to
come, whether a read is being handled) is the connection's, which its
handlers share; ``Framing`` is the part that reads it.  Both of its ways
in are every request's path, so a lock-step read makes no call but those
of the handler it hands its request to; only the run's steps away from
that path (a set line seen before with its block in the buffer, replies
piling up) are methods of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from erq.protocol.replies import MAX_HELD_OUTPUT
from erq.protocol.requests import (
    MAX_LINE,
    GetRequest,
    RequestError,
    SetLine,
    known_lines,
)

if TYPE_CHECKING:
    from erq.protocol.connection import QueueProtocol


class Framing:
    """The requests in what one connection reads, found and handed to its
    handlers in order, unless something holds them back."""

    __slots__ = ("_connection",)

    def __init__(self, connection: QueueProtocol) -> None:
        self._connection = connection

    def lock_step(self, data: bytes) -> bool:
        """A lock-step client's read: ``data`` is one whole request, a set
        (with its data block) or a plain get, of a line seen before.  It is
        handled as ``run`` would handle it, without a copy into the input
        buffer, and ``True`` returned; anything else is left to ``run``
        (``False``, nothing done)."""
        connection = self._connection
        if connection._running or connection._locked or connection._flow.gone:
            return False
        newline = data.find(b"\n")
        if newline < 0:
            return False
        end = newline - 1 if newline and data[newline - 1] == 13 else newline
        known: Any = known_lines.get(data[:end])
        if known is None:
            return False
        after = newline + 1
        storing = known.__class__ is SetLine
        if storing:
            length = known.length
            if (
                len(data) - after != length + 2
                or length > connection.service.config.server.max_item_cap
            ):
                return False
        elif after != len(data) or connection.open_reads:
            return False
        replies = connection._replies
        connection._running = True
        try:
            if storing:
                connection._storing = known.storing
                connection._store(data[after:])
            else:
                connection._get_one(known)
        except RequestError as error:
            connection._refused(error)
        finally:
            connection._running = False
            # The read is handled: durable sets of the next take a new slot.
            replies.stores = None
        if replies.held >= MAX_HELD_OUTPUT:
            # As ``run`` does before its next request.
            self._hold_back()
        flow = connection._flow
        out = replies.out
        if len(out) == 1 and not flow.gone and not flow.closing:
            # The connection's _flush, inlined: a lock-step read's one reply.
            data = out[0]
            connection.counters.bytes_written += len(data)
            connection._send(data)
            out.clear()
            replies.out_size = 0
        else:
            connection._flush()
        return True

    def run(self) -> None:
        """Handle every whole request in the buffer, unless held back."""
        connection = self._connection
        flow = connection._flow
        if connection._running or flow.gone:
            return
        connection._running = True
        paused = connection._paused_for
        replies = connection._replies
        buffer = connection._input
        position = 0
        pace = connection._pace
        pace.read_stored = False
        # Whether what was read ends inside a request, its rest to come.
        inside = False
        try:
            while connection._waiting is None and not flow.closing and not paused:
                if (
                    replies.out_size >= MAX_HELD_OUTPUT
                    or replies.held >= MAX_HELD_OUTPUT
                ):
                    self._make_room()
                    continue
                want = connection._want
                if want:
                    if len(buffer) - position < want:
                        inside = True
                        break
                    block = bytes(buffer[position : position + want])
                    position += want
                    connection.rawDataReceived(block)
                    continue
                newline = buffer.find(b"\n", position)
                if newline < 0:
                    if len(buffer) - position > MAX_LINE + 1:
                        connection.lineLengthExceeded(bytes(buffer[position:]))
                    else:
                        inside = position < len(buffer)
                    break
                end = newline
                if end > position and buffer[end - 1] == 13:
                    end -= 1
                if end - position > MAX_LINE:
                    connection.lineLengthExceeded(bytes(buffer[position:end]))
                    break
                line = bytes(buffer[position:end])
                start = position
                position = newline + 1
                known: Any = None if connection._locked else known_lines.get(line)
                if known.__class__ is GetRequest:
                    if len(buffer) - position >= position - start:  # room for a run
                        after = connection._get_run(known, buffer, start, position)
                        if after >= 0:
                            position = after
                            continue
                elif known.__class__ is SetLine:
                    after = self._store_known(known, buffer, start, position)
                    if after >= 0:
                        position = after
                        continue
                connection._line(line, known)
        finally:
            del buffer[:position]
            connection._running = False
            replies.stores = None  # the next read's durable sets take a new slot
        if inside and pace.read_stored:
            # A burst of sets larger than a read: its batch waits for the
            # rest (see ``erq.journal.cohort``).
            pace.mid_request()
        connection._flush()

    def _store_known(
        self, known: SetLine, buffer: bytearray, start: int, position: int
    ) -> int:
        """A set line seen before, from ``start``, its data block from
        ``position`` on: stored with the same sets behind it as one run, or
        alone once its whole block is here.  Returns where what was stored
        ends, or -1 where the line is left to the connection's ``_line``
        (its block still to come, or too large)."""
        connection = self._connection
        length = known.length + 2
        more = len(buffer) - position
        if more > length:
            after = connection._set_run(known, buffer, start, position)
            if after >= 0:
                return after
        server = connection.service.config.server
        if more < length or known.length > server.max_item_cap:
            return -1
        # The line and its whole block came together, as a lock-step set
        # sends them: stored now, without a turn through raw mode.
        connection._storing = known.storing
        try:
            connection._store(bytes(buffer[position : position + length]))
        except RequestError as error:
            connection._refused(error)
        return position + length

    def _make_room(self) -> None:
        """Too many replies wait: those ready are written now, so that a
        client that does not read makes the transport pause us; those held
        behind a reply not ready yet stop reading until it is."""
        connection = self._connection
        if connection._replies.out_size >= MAX_HELD_OUTPUT:
            connection._flush()
        else:
            self._hold_back()

    def _hold_back(self) -> None:
        """Replies pile up behind one that is not ready yet: read no more
        requests until it is."""
        connection = self._connection
        flow = connection._flow
        if (
            connection._waiting is None
            and not flow.closing
            and not connection._paused_for
        ):
            flow.pause("held")
