"""The protocol of one client connection: the wiring of the framing, the
reply order, flow control, the login gate and the handlers.

``QueueProtocol`` is a ``LineReceiver``: its ``delimiter`` (a bare ``\\n``;
a ``\\r`` before it is dropped), ``MAX_LENGTH``, ``lineLengthExceeded``,
``lineReceived`` and raw mode for a data block (``setRawMode`` until
``rawDataReceived`` has the whole block) mean what they mean there.  It
frames its input itself, though: ``Framing`` (``erq.protocol.framing``)
cuts what is read into requests, straight from a lock-step client's read
or from the input buffer, and hands them to the handlers here.  The
replies of one read leave in one write (``ReplyOrder``), through
``transport.sender``.  A request the server refuses raises a
``RequestError``, which ``_refused`` alone turns into its reply, a count
and a log line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, IPushProducer, ITCPTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from erq.journal.cohort import Pace
from erq.protocol.commands import (
    COMMANDS,
    AdminCommands,
    Cancellable,
    ReadCommands,
    StoreCommands,
)
from erq.protocol.flow import FlowControl
from erq.protocol.framing import Framing
from erq.protocol.login import LoginGate
from erq.protocol.replies import MAX_HELD_OUTPUT, ReplyOrder, Slot
from erq.protocol.requests import (
    MAX_LINE,
    BrokenStream,
    CommandError,
    GetRequest,
    RequestError,
    SetLine,
    Storing,
    block_length,
    known_get_request,
    known_lines,
    remember,
    split_line,
)
from erq.protocol.transport import pending, plain, sender
from erq.queue import Item, Queue
from erq.service import QueueService


@implementer(IPushProducer)
class QueueProtocol(
    LoginGate, StoreCommands, ReadCommands, AdminCommands, LineReceiver
):
    """One client connection.

    Its ``Framing`` cuts input into requests, many pipelined ones per read,
    which are handled here, and the replies of one read leave in one write.
    A request whose reply is not ready (a durable set, a waiting get) holds
    a slot in the reply order; a waiting get also holds back the requests
    after it, which stay buffered.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, service: QueueService) -> None:
        self.service = service
        self.counters = service.counters
        self._input = bytearray()
        # Bytes of a data block (with its line end) still to come.
        self._want = 0
        self._storage: Callable[[bytes], None] | None = None
        self._storing: Storing = ("", 0, 0, False, None)
        self._replies = replies = ReplyOrder(self._replies_ready)
        # The reply order's own methods, as the handlers' hot paths call
        # them: no call in between.
        self._reply_raw = replies.add
        self._hold = replies.hold
        self._fill = replies.fill
        # Its ways in are called through it (``self._framing.lock_step``):
        # on CPython that costs less than calling a bound method kept here.
        self._framing = framing = Framing(self)
        self._flow = flow = FlowControl(framing.run)
        # The same set as flow's, read on every request.
        self._paused_for = flow.reasons
        self._send: Callable[[bytes], None] = self._write
        self._waiting: Cancellable | None = None
        # This connection's durable sets, as its queue's cohort sees them.
        self._pace = Pace()
        # The reply slot of the get or monitor that waits, and the parts of
        # its reply gathered so far.
        self._waiting_reply: tuple[Slot | None, list[bytes]] = (None, [])
        # The keys of the get that waits, and which of them waits; or the
        # one key of a get that waits on its own.
        self._waiting_get: tuple[list[GetRequest], int] = ([], 0)
        self._waiting_key = b""
        self._running = False
        # The socket's descriptor, on a plain TCP connection.
        self._fileno = -1
        #: This connection's open reads, oldest first, by queue.
        self.open_reads: dict[Queue, deque[Item]] = {}

    _commands = COMMANDS

    # -- connection ------------------------------------------------------

    @property
    def _transport(self) -> Any:
        return self.transport

    @property
    def peer(self) -> IAddress:
        """Where the client is."""
        address: IAddress = self._transport.getPeer()
        return address

    def _write(self, data: bytes) -> None:
        self._transport.write(data)

    def connectionMade(self) -> None:
        self._flow.attach(self.transport)
        if not self.service.connection_made(self):
            self._flow.gone = True
            self._transport.write(b"SERVER_ERROR too many connections\r\n")
            self._transport.loseConnection()
            return
        self._locked = self.service.config.credentials is not None
        self._transport.registerProducer(self, True)
        self._send = sender(self.transport)
        if plain(self.transport):
            # The reply to a durable set may be sent by the journal the
            # moment the set is durable (see ``erq.durable``).
            self._fileno = self._transport.getHandle().fileno()
            self._replies.direct = self
        if ITCPTransport.providedBy(self.transport):
            # Replies often leave in pieces (a durable set's STORED when its
            # fsync is done); Nagle would hold each piece back until the
            # client's delayed ACK of the one before.
            self._transport.setTcpNoDelay(True)

    def fileno_now(self) -> int:
        """The socket's descriptor, while a reply may be sent to it ahead
        of the transport: the connection is open and nothing waits in the
        transport to be sent; -1 otherwise."""
        flow = self._flow
        transport = self._transport
        if flow.gone or flow.closing or transport.disconnecting or pending(transport):
            return -1
        return self._fileno

    def wrote(self, count: int) -> None:
        """Bytes sent to the socket by the journal (see ``fileno_now``)."""
        self.counters.bytes_written += count

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._flow.gone = True
        self.service.connection_lost(self)
        self._pace.gone()
        self._input.clear()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        self._give_back()

    def _give_back(self) -> None:
        """Open reads go back to the head of their queues, in order."""
        open_reads, self.open_reads = self.open_reads, {}
        for queue, items in open_reads.items():
            if not queue.deleted:
                queue.abort(list(items))

    def disconnect(self) -> None:
        """The server is stopping: read no more requests, and close once the
        replies to those read so far have left, a durable set's when its
        journal write is done.  A waiting get is answered with what it has;
        open reads go back now, while their journals still take records."""
        self._close()
        self._end_wait()
        self._give_back()
        if not self._running:
            self._flush()

    def abort(self) -> None:
        """Close now, whatever is still to be answered."""
        self._close()
        if not self._flow.gone:
            self._transport.abortConnection()

    def _end_wait(self) -> None:
        """Stop waiting, and answer the get or monitor that waited with
        the items it had gathered."""
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return
        slot, parts = self._waiting_reply
        waiting.cancel()
        reply = b"".join(parts) + b"END\r\n"
        if slot is None:
            # A get of one key that needed no place in the order.
            self._reply_raw(reply)
            self._replies_ready()
        else:
            self._fill(slot, reply)

    def stop_waiting(self) -> None:
        """The server hands out nothing more (it went quiescent): a waiting
        get or monitor is answered now with what it has, and the requests
        behind it go on."""
        if self._waiting is not None:
            self._end_wait()
            self._flow.wait_ended()

    def pauseProducing(self) -> None:
        """The client does not read its replies: stop reading its requests."""
        self._flow.pause("output")

    def resumeProducing(self) -> None:
        self._flow.resume("output")
        self._framing.run()

    def stopProducing(self) -> None:
        pass

    def _close(self) -> None:
        self._flow.closing = True
        self._input.clear()
        self._want = 0
        self.setLineMode()

    # -- input -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.counters.bytes_read += len(data)
        flow = self._flow
        if flow.closing:
            return
        buffer = self._input
        if (
            not buffer
            and not self._want
            and self._waiting is None
            and not self._paused_for
            and self._framing.lock_step(data)
        ):
            return
        buffer += data
        if self._waiting is not None:
            # Only the end of a wait resumes a backlog pause.
            flow.input_waits(len(buffer) - self._want)
            return
        if self._paused_for:
            return
        self._framing.run()

    def lineReceived(self, line: bytes) -> None:
        self._line(line, known_lines.get(line))

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refused(BrokenStream("line too long"))

    def rawDataReceived(self, data: bytes) -> None:
        """The whole data block (with its line end) of a storage command:
        back to line mode, and the block to what asked for it."""
        self._want = 0
        self.setLineMode()
        storage, self._storage = self._storage, None
        assert storage is not None
        try:
            storage(data)
        except RequestError as error:
            self._refused(error)

    def _line(self, line: bytes, known: GetRequest | SetLine | None) -> None:
        try:
            if self._locked:
                self._before_login(line)
                return
            if known is not None:
                # Narrowed by its class, not by ``typing.cast``: that is a
                # call, and this is every pipelined request that is not a run.
                parsed: Any = known
                if parsed.__class__ is SetLine:
                    if parsed.length <= self.service.config.server.max_item_cap:
                        self._want = parsed.length + 2
                        self._storage = self._store
                        self._storing = parsed.storing
                        self.setRawMode()
                        return
                elif not self.open_reads:
                    self._get_one(parsed)
                    return
            words = split_line(line)
            command = words[0].lower()
            handler = self._commands.get(command)
            if handler is None:
                raise CommandError("unknown command")
            handler(self, words[1:])
        except RequestError as error:
            self._refused(error)
            return
        if command == b"set":
            if self._want and self._storing[4] is None:
                remember(line, SetLine(self._storing, self._want - 2))
        elif command == b"get" and len(words) == 2:
            request = known_get_request(words[1])
            if request is not None and request.simple:
                remember(line, request)

    def _read_block(
        self,
        words: list[bytes],
        reply_to: Callable[[bytes], None],
        cap: int | None = None,
    ) -> None:
        """Check a storage command's ``<bytes>`` and arrange for its data
        block to reach ``reply_to``.  ``cap`` is the largest block read, the
        server's item cap unless given."""
        length = block_length(words, self.service.max_item_cap if cap is None else cap)
        self._want = length + 2
        self._storage = reply_to
        self.setRawMode()

    # -- output ----------------------------------------------------------

    def _refused(self, error: RequestError) -> None:
        """The server refuses a request, as ``error`` says: the one place
        where that becomes a reply (unless the request said noreply); when
        the client did something wrong, a count and a log line, never with
        what the client sent; and a close, when the stream cannot be
        trusted any more."""
        reply = error.reply
        if error.client_fault:
            kind = reply.decode("ascii", "replace")
            why = error.why
            self.service.client_error(
                kind if why is None else f"{kind} ({why})", self.peer
            )
        if not error.noreply:
            self._reply(reply)
        if error.fatal:
            self._close()

    def _reply(self, data: bytes) -> None:
        """Queue one reply (without its line end) in request order."""
        self._reply_raw(data + b"\r\n")

    def _replies_ready(self) -> None:
        """A slot was filled: write, unless a read is being handled (it
        writes at its end), and read again if held replies held us back."""
        if not self._running:
            self._flush()
            if (
                "held" in self._paused_for
                and self._replies.held < MAX_HELD_OUTPUT
                and not self._replies.early
            ):
                self._flow.resume("held")
                self._framing.run()

    def _flush(self) -> None:
        replies = self._replies
        flow = self._flow
        out = replies.out
        if out:
            # ReplyOrder.take, inlined: this is every read.
            if not flow.gone:
                data = b"".join(out) if len(out) > 1 else out[0]
                self.counters.bytes_written += len(data)
                self._send(data)
            out.clear()
            replies.out_size = 0
        if flow.closing and not replies.slots and not flow.gone:
            self._transport.loseConnection()


class QueueFactory(ServerFactory):
    """Makes a ``QueueProtocol`` for each connection to a ``QueueService``."""

    def __init__(self, service: QueueService) -> None:
        self.service = service

    def buildProtocol(self, addr: object) -> QueueProtocol:
        protocol = QueueProtocol(self.service)
        protocol.factory = self
        return protocol
