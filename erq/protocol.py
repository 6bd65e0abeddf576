"""The memcache text protocol of erq: framing, replies in order, open reads."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IPushProducer, ITCPTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from erq import __version__
from erq.config import ConfigError
from erq.queue import Item, Queue
from erq.service import QueueService

#: Longest request line, not counting its line end.
MAX_LINE = 2048
#: Unread input held while a blocking get waits, before reading pauses.
MAX_BACKLOG = 1024 * 1024
#: The whole reply to a get of one key that found an item.
_ONE_VALUE = b"VALUE %s %d %d\r\n%s\r\nEND\r\n"
#: At most this many repeated requests are answered as one run ...
MAX_RUN = 1000
#: ... and a run of sets stops once it holds this much data.
MAX_RUN_BYTES = 1024 * 1024
#: Replies held while one batch of requests is handled: beyond this they are
#: written at once, so that a client that does not read its replies makes
#: the transport pause us, and a few bytes of pipelined requests cannot make
#: the server buffer megabytes of replies.
MAX_HELD_OUTPUT = 64 * 1024
MAX_FLAGS = 2**32 - 1
MAX_NAME = 250
#: The largest data block read from a client that has not logged in: a
#: login is a user name and a password, and a stranger may not make the
#: server hold more.
MAX_LOGIN = 4096


class ClientError(Exception):
    """The client sent something wrong: ``CLIENT_ERROR <reason>``."""


class _Slot:
    """A reply that is not ready yet, holding back the replies after it.

    Its parts leave as soon as every reply before it has left, so a reply
    that streams (``monitor``) is written as it grows."""

    __slots__ = ("parts", "done")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done = False


class _Stores(_Slot):
    """The replies of the durable sets of one read, in order: they are
    usually made durable by one journal batch, and leave in one write
    instead of one each."""

    __slots__ = ("replies", "waiting")

    def __init__(self) -> None:
        super().__init__()
        self.replies: list[bytes] = []
        self.waiting = 0


def valid_name(name: bytes) -> bool:
    """Whether ``name`` may name a queue (and so a directory on disk)."""
    if not 0 < len(name) <= MAX_NAME or name.startswith(b"."):
        return False
    return all(0x21 <= byte <= 0x7E and byte != 0x2F for byte in name)


#: Parsed keys and names, by their bytes: clients use a handful of queues,
#: so each is checked once, not once per request.  Bounded by clearing.
_known_names: dict[bytes, str] = {}
_known_keys: dict[bytes, GetRequest] = {}
KNOWN_LIMIT = 10_000


class _SetLine:
    """A ``set`` line seen before, checked and parsed."""

    __slots__ = ("storing", "length")

    def __init__(self, storing: _Storing, length: int) -> None:
        self.storing = storing
        self.length = length


#: What a set line says: queue name, flags, exptime, noreply, and the
#: error to answer instead (then the rest is not to be used).
_Storing = tuple[str, int, int, bool, bytes | None]

#: Whole request lines seen before: a client repeats the same few (``get q``,
#: ``set q 0 0 64``), and each is split and checked once.
_known_lines: dict[bytes, GetRequest | _SetLine] = {}


def queue_name(word: bytes) -> str:
    """The queue name ``word`` stands for, or ``ClientError``."""
    name = _known_names.get(word)
    if name is None:
        if not valid_name(word):
            raise ClientError("bad queue name")
        if len(_known_names) >= KNOWN_LIMIT:
            _known_names.clear()
        name = _known_names[word] = word.decode("ascii")
    return name


def get_request(key: bytes) -> GetRequest:
    """The parsed ``get`` key, or ``ClientError``."""
    request = _known_keys.get(key)
    if request is None:
        request = GetRequest(key)
        if len(_known_keys) >= KNOWN_LIMIT:
            _known_keys.clear()
        _known_keys[key] = request
    return request


class GetRequest:
    """One key of a ``get``: the queue name and its options."""

    __slots__ = (
        "key",
        "name",
        "timeout",
        "open",
        "close",
        "abort",
        "peek",
        "simple",
        "takes",
    )

    def __init__(self, key: bytes) -> None:
        name, *options = key.split(b"/")
        self.key = key
        self.name = queue_name(name)
        self.timeout: float | None = None
        self.open = self.close = self.abort = self.peek = False
        for option in options:
            if option.startswith(b"t="):
                value = option[2:]
                if not value.isdigit():
                    raise ClientError("bad timeout")
                self.timeout = int(value) / 1000.0
            elif option == b"open":
                self.open = True
            elif option == b"close":
                self.close = True
            elif option == b"abort":
                self.abort = True
            elif option == b"peek":
                self.peek = True
        if (self.peek and (self.open or self.close or self.abort)) or (
            self.abort and (self.open or self.close)
        ):
            raise ClientError("bad option combination")
        #: A plain get or peek: no open-read rule to check.
        self.simple = not (self.open or self.close or self.abort)
        #: A plain get that does not wait: it takes an item or answers END.
        self.takes = self.simple and not self.peek and self.timeout is None


@implementer(IPushProducer)
class QueueProtocol(LineReceiver):
    """One client connection.

    Input is parsed here, many pipelined requests per read, and the replies
    of one read leave in one write.  A request whose reply is not ready (a
    durable set, a waiting get) holds a slot in the reply order; a waiting
    get also holds back the requests after it, which stay buffered.
    """

    def __init__(self, service: QueueService) -> None:
        self.service = service
        self.counters = service.counters
        self._input = bytearray()
        # Bytes of a data block (with its line end) still to come.
        self._want = 0
        self._storage: Callable[[bytes], None] | None = None
        self._storing: _Storing = ("", 0, 0, False, None)
        self._out: list[bytes] = []
        self._slots: deque[_Slot | bytes] = deque()
        # The durable sets of the read being handled share one slot.
        self._stores: _Stores | None = None
        # Bytes of replies ready but held in ``_slots`` behind one that is not.
        self._held_in_slots = 0
        # Bytes in ``_out``, written once a batch of replies grows large.
        self._out_size = 0
        self._direct = False
        self._waiting: Deferred[Item | None] | None = None
        # The reply slot of the get or monitor that waits, and the parts of
        # its reply gathered so far.
        self._waiting_reply: tuple[_Slot, list[bytes]] = (_Slot(), [])
        self._paused_for: set[str] = set()
        self._running = False
        self._closing = False
        self._gone = False
        # Requests are refused until a login (the server has an auth file).
        self._locked = False
        self._logged_in = False
        self._login_noreply = False
        #: This connection's open reads, oldest first, by queue.
        self.open_reads: dict[Queue, deque[Item]] = {}

    # -- connection ------------------------------------------------------

    @property
    def _transport(self) -> Any:
        return self.transport

    @property
    def peer(self) -> IAddress:
        """Where the client is."""
        address: IAddress = self._transport.getPeer()
        return address

    def connectionMade(self) -> None:
        if not self.service.connection_made(self):
            self._gone = True
            self._transport.write(b"SERVER_ERROR too many connections\r\n")
            self._transport.loseConnection()
            return
        self._locked = self.service.config.credentials is not None
        self._transport.registerProducer(self, True)
        # A plain TCP connection of the reactor's: replies may skip its
        # write buffer when it is empty (see _send).
        self._direct = type(self.transport) is tcp.Server
        if ITCPTransport.providedBy(self.transport):
            # Replies often leave in pieces (a durable set's STORED when its
            # fsync is done); Nagle would hold each piece back until the
            # client's delayed ACK of the one before.
            self._transport.setTcpNoDelay(True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        self.service.connection_lost(self)
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
        if not self._gone:
            self._transport.abortConnection()

    def _end_wait(self) -> None:
        """Stop waiting, and answer the get or monitor that waited with
        the items it had gathered."""
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return
        slot, parts = self._waiting_reply
        waiting.cancel()
        self._fill(slot, b"".join(parts) + b"END\r\n")

    def login_required(self, required: bool) -> None:
        """The server now has an auth file (``required``) or none: a
        connection that has logged in stays so, the others must now log in,
        or no longer."""
        self._locked = required and not self._logged_in

    def pauseProducing(self) -> None:
        """The client does not read its replies: stop reading its requests."""
        self._pause("output")

    def resumeProducing(self) -> None:
        self._resume("output")
        self._run()

    def stopProducing(self) -> None:
        pass

    def _pause(self, reason: str) -> None:
        if not self._paused_for and self.transport is not None:
            self._transport.pauseProducing()
        self._paused_for.add(reason)

    def _resume(self, reason: str) -> None:
        if reason in self._paused_for:
            self._paused_for.discard(reason)
            if not self._paused_for and not self._gone:
                self._transport.resumeProducing()

    # -- input -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.counters.bytes_read += len(data)
        if self._closing:
            return
        self._input += data
        if self._waiting is not None or self._paused_for:
            # Only the end of a wait resumes a backlog pause.
            waiting = self._waiting is not None
            if waiting and len(self._input) - self._want > MAX_BACKLOG:
                self._pause("backlog")
            return
        self._run()

    def _run(self) -> None:
        """Handle every whole request in the buffer, unless held back."""
        if self._running or self._gone:
            return
        self._running = True
        buffer = self._input
        position = 0
        try:
            while self._waiting is None and not self._closing and not self._paused_for:
                if self._out_size >= MAX_HELD_OUTPUT:
                    # Written now, so that a client that does not read makes
                    # the transport pause us.
                    self._flush()
                    continue
                if self._held_in_slots >= MAX_HELD_OUTPUT:
                    # Until the reply holding them back is ready.
                    self._pause("held")
                    continue
                want = self._want
                if want:
                    if len(buffer) - position < want:
                        break
                    end = position + want
                    block = bytes(buffer[position:end])
                    position = end
                    self._want = 0
                    storage, self._storage = self._storage, None
                    assert storage is not None
                    storage(block)
                    continue
                newline = buffer.find(b"\n", position)
                if newline < 0:
                    if len(buffer) - position > MAX_LINE + 1:
                        self._fatal(b"CLIENT_ERROR line too long")
                    break
                end = newline
                if end > position and buffer[end - 1] == 13:
                    end -= 1
                if end - position > MAX_LINE:
                    self._fatal(b"CLIENT_ERROR line too long")
                    break
                line = bytes(buffer[position:end])
                start = position
                position = newline + 1
                known = None if self._locked else _known_lines.get(line)
                # Bytes after this line: a run needs at least one more.
                more = len(buffer) - position
                if known.__class__ is GetRequest and more >= position - start:
                    after = self._get_run(
                        cast(GetRequest, known), buffer, start, position
                    )
                    if after >= 0:
                        position = after
                        continue
                elif (
                    known.__class__ is _SetLine
                    and more > cast(_SetLine, known).length + 2
                ):
                    after = self._set_run(
                        cast(_SetLine, known), buffer, start, position
                    )
                    if after >= 0:
                        position = after
                        continue
                self._line(line, known)
        finally:
            del buffer[:position]
            self._running = False
            self._stores = None
        self._flush()

    def lineReceived(self, line: bytes) -> None:
        self._line(line, _known_lines.get(line))

    def _line(self, line: bytes, known: GetRequest | _SetLine | None) -> None:
        if self._locked:
            self._before_login(line)
            return
        if known is not None:
            if known.__class__ is _SetLine:
                known_set = cast(_SetLine, known)
                if known_set.length <= self.service.max_item_cap:
                    self._want = known_set.length + 2
                    self._storage = self._store
                    self._storing = known_set.storing
                    return
            elif not self.open_reads:
                self._get_one(cast(GetRequest, known))
                return
        # Only spaces separate: bytes.split() would split on tabs too.
        words = line.split(b" ")
        if b"" in words:
            words = [word for word in words if word]
            if not words:
                self._refuse(b"ERROR", "empty line")
                return
        command = words[0].lower()
        handler = self._commands.get(command)
        if handler is None:
            self._refuse(b"ERROR", "unknown command")
            return
        try:
            handler(self, words[1:])
        except ClientError as error:
            self._refuse(b"CLIENT_ERROR " + str(error).encode("ascii"))
            return
        if command == b"set":
            if self._want and self._storing[4] is None:
                self._remember(line, _SetLine(self._storing, self._want - 2))
        elif command == b"get" and len(words) == 2:
            request = _known_keys.get(words[1])
            if request is not None and request.simple:
                self._remember(line, request)

    @staticmethod
    def _remember(line: bytes, parsed: GetRequest | _SetLine) -> None:
        if len(_known_lines) >= KNOWN_LIMIT:
            _known_lines.clear()
        _known_lines[line] = parsed

    # -- login -----------------------------------------------------------

    def _before_login(self, line: bytes) -> None:
        """A request before this connection has logged in: only a login
        (a ``set``) or ``quit`` is obeyed."""
        words = [word for word in line.split(b" ") if word]
        command = words[0].lower() if words else b""
        if command == b"quit":
            self._close()
        elif command == b"set":
            self._login(words[1:])
        elif command in _OTHER_STORAGE:
            # Its data block is read and dropped, to keep in step.
            self._read_block(words[1:], self._drop_unauthenticated, MAX_LOGIN)
        else:
            self._refuse(b"CLIENT_ERROR unauthenticated")

    def _drop_unauthenticated(self, block: bytes) -> None:
        if block[-2:] != b"\r\n":
            self._fatal(b"CLIENT_ERROR bad data chunk")
        else:
            self._refuse(b"CLIENT_ERROR unauthenticated")

    def _login(self, words: list[bytes]) -> None:
        """``set <any key> <flags> <exptime> <bytes> [noreply]`` whose data
        is ``<user> <password>``."""
        if len(words) >= 4 and words[3].isdigit() and int(words[3]) > MAX_LOGIN:
            # Not read: too long to be a login.
            self.counters.auth_cmds += 1
            self.counters.auth_errors += 1
            self._fatal(b"CLIENT_ERROR authentication failure")
            return
        if self._read_block(words, self._check_login, MAX_LOGIN):
            self._login_noreply = len(words) == 5 and words[4] == b"noreply"

    def _check_login(self, block: bytes) -> None:
        if block[-2:] != b"\r\n":
            self._fatal(b"CLIENT_ERROR bad data chunk")
            return
        self.counters.auth_cmds += 1
        user, space, password = block[:-2].partition(b" ")
        credentials = self.service.config.credentials
        if credentials is None or (space and credentials.check(user, password)):
            self._locked = False
            self._logged_in = True
            if not self._login_noreply:
                self._reply(b"STORED")
        else:
            self.counters.auth_errors += 1
            self._refuse(
                b"CLIENT_ERROR authentication failure", quiet=self._login_noreply
            )

    # -- output ----------------------------------------------------------

    def _refuse(
        self,
        reply: bytes,
        why: str | None = None,
        *,
        close: bool = False,
        quiet: bool = False,
    ) -> None:
        """The client did something wrong, as ``reply`` tells it (unless
        ``quiet``: a noreply request).  Counted and logged, as ``reply``
        and ``why`` say, never with what the client sent; ``close``: the
        stream cannot be trusted any more."""
        kind = reply.decode("ascii", "replace")
        self.service.client_error(kind if why is None else f"{kind} ({why})", self.peer)
        if not quiet:
            self._reply(reply)
        if close:
            self._close()

    def _reply(self, data: bytes) -> None:
        """Queue one reply (without its line end) in request order."""
        self._reply_raw(data + b"\r\n")

    def _reply_raw(self, data: bytes) -> None:
        if self._slots:
            self._slots.append(data)
            self._held_in_slots += len(data)
        else:
            self._out.append(data)
            self._out_size += len(data)

    def _hold(self) -> _Slot:
        """Hold a place in the reply order for a reply that comes later."""
        slot = _Slot()
        self._slots.append(slot)
        return slot

    def _fill(self, slot: _Slot, data: bytes, done: bool = True) -> None:
        slot.parts.append(data)
        slot.done = done
        slots = self._slots
        out = self._out
        while slots:
            head = slots[0]
            if isinstance(head, bytes):
                out.append(head)
                self._held_in_slots -= len(head)
                self._out_size += len(head)
            else:
                out.extend(head.parts)
                self._out_size += sum(len(part) for part in head.parts)
                head.parts.clear()
                if not head.done:
                    break
            slots.popleft()
        if not self._running:
            self._flush()
            if "held" in self._paused_for and self._held_in_slots < MAX_HELD_OUTPUT:
                self._resume("held")
                self._run()

    def _flush(self) -> None:
        out = self._out
        if out and not self._gone:
            data = b"".join(out) if len(out) > 1 else out[0]
            self.counters.bytes_written += len(data)
            self._send(data)
        out.clear()
        self._out_size = 0
        if self._closing and not self._slots and not self._gone:
            self._transport.loseConnection()

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if (
            self._direct
            and not transport._tempDataLen
            and len(transport.dataBuffer) == transport.offset
        ):
            # Nothing queued in the transport: send now.  Its write would
            # wait for the next turn of the reactor and register the socket
            # for writing and unregister it again, three system calls and a
            # loop turn per reply, which is most of a lock-step request.
            try:
                sent = transport.socket.send(data)
            except OSError:
                # Would block, or the connection broke: the transport finds
                # out and tells us in its own way.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def _fatal(self, data: bytes, why: str | None = None) -> None:
        """Refuse, then close: the stream cannot be trusted any more."""
        self._refuse(data, why, close=True)

    def _close(self) -> None:
        self._closing = True
        self._input.clear()
        self._want = 0

    # -- storage commands ------------------------------------------------

    def _read_block(
        self,
        words: list[bytes],
        reply_to: Callable[[bytes], None],
        cap: int | None = None,
    ) -> bool:
        """Check a storage command's ``<bytes>`` and arrange for its data
        block to reach ``reply_to``; ``False`` when the connection closes.
        ``cap`` is the largest block read, the server's item cap unless
        given."""
        if len(words) < 4 or not words[3].isdigit():
            self._fatal(b"CLIENT_ERROR bad data chunk length")
            return False
        length = int(words[3])
        if length > (self.service.max_item_cap if cap is None else cap):
            self._fatal(b"SERVER_ERROR object too large")
            return False
        self._want = length + 2
        self._storage = reply_to
        return True

    def _set(self, words: list[bytes]) -> None:
        if not self._read_block(words, self._store):
            return
        noreply = len(words) == 5 and words[4] == b"noreply"
        error = _check_set(words, noreply)
        if error is not None:
            self._storing = ("", 0, 0, noreply, error)
        else:
            self._storing = (
                queue_name(words[0]),
                int(words[1]),
                int(words[2]),
                noreply,
                None,
            )

    def _store(self, block: bytes) -> None:
        name, flags, exptime, noreply, error = self._storing
        if block[-2:] != b"\r\n":
            self._fatal(b"CLIENT_ERROR bad data chunk")
            return
        if error is not None:
            self._refuse(b"CLIENT_ERROR " + error, quiet=noreply)
            return
        result = self.service.put(name, block[:-2], flags, exptime)
        self._check_backlog()
        if noreply:
            if isinstance(result, Deferred):
                result.addErrback(self._ignore)
        elif result is True:
            self._reply(b"STORED")
        elif result is False:
            self._reply(b"NOT_STORED")
        else:
            self._await_stored(result, 1)

    def _await_stored(self, durable: Deferred[Any], count: int) -> None:
        """``count`` sets are stored once ``durable`` fires: their replies
        join the durable sets of this read in one slot."""
        stores = self._stores
        if stores is None or not self._slots or self._slots[-1] is not stores:
            stores = self._stores = _Stores()
            self._slots.append(stores)
        index = len(stores.replies)
        stores.replies.append(b"")
        stores.waiting += 1
        durable.addCallbacks(
            self._stored,
            self._store_failed,
            callbackArgs=(stores, index, count),
            errbackArgs=(stores, index, count),
        )

    def _set_run(
        self, known: _SetLine, buffer: bytearray, start: int, position: int
    ) -> int:
        """The same set line again and again with every data block already
        read, as a producer sending a batch writes it: stored together and
        journaled as one.  Returns where the run ends, or -1 where the sets
        go one by one."""
        name, flags, exptime, noreply, error = known.storing
        length = known.length
        if error is not None or noreply or length > self.service.max_item_cap:
            return -1
        raw = bytes(buffer[start:position])
        total = len(buffer)
        blocks: list[bytes] = []
        after = -1
        at = position
        taken = 0
        while len(blocks) < MAX_RUN and taken < MAX_RUN_BYTES:
            end = at + length
            if end + 2 > total or not buffer.startswith(b"\r\n", end):
                break
            blocks.append(bytes(buffer[at:end]))
            taken += length
            after = end + 2
            if not buffer.startswith(raw, after):
                break
            at = after + len(raw)
        if len(blocks) < 2:
            return -1
        result = self.service.put_many(name, blocks, flags, exptime)
        if result is None:
            return -1
        self._check_backlog()
        count, durable = result
        if durable is None:
            self._reply_raw(b"STORED\r\n" * count)
        else:
            self._await_stored(durable, count)
        return after

    def _check_backlog(self) -> None:
        """After a set: if the journal writer has more than it should still
        to write, read no more of this connection until it has caught up.
        (Connections that only get go on: they drain the queues.)"""
        writer = self.service.writer
        if (
            writer is not None
            and writer.backlog > writer.max_backlog
            and "journal" not in self._paused_for
        ):
            self._pause("journal")
            writer.when_drained(self._journal_drained)

    def _journal_drained(self) -> None:
        if "journal" in self._paused_for and not self._gone:
            self._resume("journal")
            self._run()

    def _stored(self, ok: bool | None, stores: _Stores, index: int, count: int) -> None:
        reply = b"NOT_STORED\r\n" if ok is False else b"STORED\r\n"
        stores.replies[index] = reply * count
        stores.waiting -= 1
        if not stores.waiting:
            self._stores_ready(stores)

    def _store_failed(
        self, failure: Failure, stores: _Stores, index: int, count: int
    ) -> None:
        stores.replies[index] = _server_error(failure) * count
        stores.waiting -= 1
        if not stores.waiting:
            self._stores_ready(stores)

    def _stores_ready(self, stores: _Stores) -> None:
        if self._stores is stores:
            self._stores = None
        self._fill(stores, b"".join(stores.replies))

    def _unsupported(self, words: list[bytes]) -> None:
        def dropped(block: bytes) -> None:
            if block[-2:] != b"\r\n":
                self._fatal(b"CLIENT_ERROR bad data chunk")
            else:
                self._refuse(b"CLIENT_ERROR not supported by a queue")

        self._read_block(words, dropped)

    # -- get -------------------------------------------------------------

    def _get(self, words: list[bytes]) -> None:
        if len(words) == 1 and not self.open_reads:
            request = get_request(words[0])
            if request.simple:
                self._get_one(request)
                return
        if not words:
            self._refuse(b"ERROR", "get without a key")
            return
        requests = [get_request(key) for key in words]
        if (
            self.open_reads or not all(request.simple for request in requests)
        ) and self._breaks_open_rules(requests):
            self._fatal(b"ERROR", "open reads beyond the rules")
            return
        self._get_from(requests, 0, [])

    def _get_run(
        self, request: GetRequest, buffer: bytearray, start: int, position: int
    ) -> int:
        """The same plain get again and again, as a consumer taking a batch
        sends it: as many as can be answered now are answered together.
        Returns where the answered ones end, or -1 where the gets go one by
        one."""
        if not request.takes or self.open_reads:
            return -1
        raw = bytes(buffer[start:position])
        count = 1
        while count < MAX_RUN and buffer.startswith(raw, position):
            position += len(raw)
            count += 1
        if count < 2:
            return -1
        items, rest_empty = self.service.take_many(request.name, count, MAX_HELD_OUTPUT)
        hits = len(items)
        served = count if rest_empty else hits
        if not served:
            return -1
        counters = self.counters
        counters.cmd_get += served
        counters.get_hits += hits
        counters.get_misses += served - hits
        key = request.key
        parts = [
            _ONE_VALUE % (key, item.flags, len(item.data), item.data) for item in items
        ]
        if served > hits:
            parts.append(b"END\r\n" * (served - hits))
        self._reply_raw(b"".join(parts))
        return start + served * len(raw)

    def _get_one(self, request: GetRequest) -> None:
        """``_get_from`` for the most common request, a get or peek of one
        key on a connection without open reads: no rule to check, no list
        of parts."""
        counters = self.counters
        counters.cmd_get += 1
        if request.peek:
            counters.cmd_peek += 1
        result = self.service.get(request.name, request.timeout, False, request.peek)
        if result is None:
            counters.get_misses += 1
            self._reply_raw(b"END\r\n")
        elif result.__class__ is Item:
            counters.get_hits += 1
            item: Any = result
            data = item.data
            self._reply_raw(_ONE_VALUE % (request.key, item.flags, len(data), data))
        else:
            self._waiting = waiting = cast(Deferred, result)
            slot = self._hold()
            parts: list[bytes] = []
            self._waiting_reply = (slot, parts)
            waiting.addCallbacks(
                self._got,
                self._wait_failed,
                callbackArgs=([request], 0, parts, slot),
            )

    def _breaks_open_rules(self, requests: list[GetRequest]) -> bool:
        """Whether these keys, in turn, would open more reads than a queue
        allows, or read plainly from a queue with an open read here."""
        counts: dict[str, int] = {}
        for request in requests:
            name = request.name
            if name not in counts:
                queue = self.service.queue(name)
                counts[name] = len(self.open_reads.get(queue, ())) if queue else 0
            if request.close or request.abort:
                counts[name] = max(counts[name] - 1, 0)
            if request.open:
                if counts[name] >= self.service.settings_for(name).max_open_reads:
                    return True
                counts[name] += 1
            elif not (request.peek or request.close or request.abort):
                if counts[name]:
                    return True
        return False

    def _get_from(
        self,
        requests: list[GetRequest],
        index: int,
        parts: list[bytes],
        slot: _Slot | None = None,
    ) -> None:
        """Answer the keys from ``index`` on, waiting where a key waits."""
        counters = self.counters
        service = self.service
        for position in range(index, len(requests)):
            request = requests[position]
            counters.cmd_get += 1
            if request.close or request.abort:
                self._end_open_read(request)
                if not request.open:
                    continue
            if request.peek:
                counters.cmd_peek += 1
            result = service.get(
                request.name, request.timeout, request.open, request.peek
            )
            if result is not None and result.__class__ is not Item:
                # A Deferred (checked this way: Deferred's isinstance is slow).
                if slot is None:
                    slot = self._hold()
                self._waiting = waiting = cast(Deferred, result)
                self._waiting_reply = (slot, parts)
                waiting.addCallbacks(
                    self._got,
                    self._wait_failed,
                    callbackArgs=(requests, position, parts, slot),
                )
                return
            self._answer(request, cast(Item | None, result), parts)
        parts.append(b"END\r\n")
        data = b"".join(parts)
        if slot is None:
            self._reply_raw(data)
        else:
            self._fill(slot, data)

    def _got(
        self,
        item: Item | None,
        requests: list[GetRequest],
        index: int,
        parts: list[bytes],
        slot: _Slot,
    ) -> None:
        self._waiting = None
        self._answer(requests[index], item, parts)
        self._get_from(requests, index + 1, parts, slot)
        if self._waiting is None:
            self._resume("backlog")
            self._run()

    def _wait_failed(self, failure: Failure) -> None:
        # Cancelled because the connection went away: nothing to answer.
        failure.trap(CancelledError)

    def _answer(
        self, request: GetRequest, item: Item | None, parts: list[bytes]
    ) -> None:
        if item is None:
            self.counters.get_misses += 1
            return
        self.counters.get_hits += 1
        if request.open:
            self._opened(request.name, item)
        data = item.data
        parts.append(b"VALUE %s %d %d\r\n" % (request.key, item.flags, len(data)))
        parts.append(data)
        parts.append(b"\r\n")

    def _end_open_read(self, request: GetRequest) -> None:
        """``/close`` or ``/abort`` the oldest open read on that queue."""
        queue = self.service.queue(request.name)
        if queue is None:
            return
        items = self.open_reads.get(queue)
        if not items:
            return
        item = items.popleft()
        if not items:
            del self.open_reads[queue]
        if request.close:
            queue.confirm(item)
        else:
            queue.abort([item])

    # -- monitor and confirm ---------------------------------------------

    def _monitor(self, words: list[bytes]) -> None:
        if not 2 <= len(words) <= 3 or not all(word.isdigit() for word in words[1:]):
            raise ClientError("bad command line format")
        name = queue_name(words[0])
        limit = int(words[2]) if len(words) == 3 else 100
        deadline = self.service.clock.seconds() + int(words[1])
        self._monitor_from(words[0], name, deadline, limit, self._hold())

    def _monitor_from(
        self, key: bytes, name: str, deadline: float, left: int, slot: _Slot
    ) -> None:
        """Hand out items as open reads until time or count runs out."""
        service = self.service
        while left > 0:
            timeout = deadline - service.clock.seconds()
            result = service.get(name, timeout if timeout > 0 else None, True, False)
            if isinstance(result, Deferred):
                self._waiting = result
                self._waiting_reply = (slot, [])
                result.addCallbacks(
                    self._monitored,
                    self._wait_failed,
                    callbackArgs=(key, name, deadline, left, slot),
                )
                return
            if result is None:
                break
            self._hand_monitored(key, name, result, slot)
            left -= 1
        self._fill(slot, b"END\r\n")

    def _monitored(
        self,
        item: Item | None,
        key: bytes,
        name: str,
        deadline: float,
        left: int,
        slot: _Slot,
    ) -> None:
        self._waiting = None
        if item is None:
            self._fill(slot, b"END\r\n")
        else:
            self._hand_monitored(key, name, item, slot)
            self._monitor_from(key, name, deadline, left - 1, slot)
        if self._waiting is None:
            self._resume("backlog")
            self._run()

    def _hand_monitored(self, key: bytes, name: str, item: Item, slot: _Slot) -> None:
        self._opened(name, item)
        self.counters.get_hits += 1
        data = item.data
        self._fill(
            slot,
            b"VALUE %s %d %d\r\n%s\r\n" % (key, item.flags, len(data), data),
            done=False,
        )

    def _confirm(self, words: list[bytes]) -> None:
        if len(words) != 2 or not words[1].isdigit():
            raise ClientError("bad command line format")
        count = int(words[1])
        queue = self.service.queue(queue_name(words[0]))
        items = self.open_reads.get(queue) if queue is not None else None
        if count and (queue is None or items is None or len(items) < count):
            self._refuse(b"ERROR", "confirm of reads not open")
            return
        if queue is not None and items is not None:
            for _ in range(count):
                queue.confirm(items.popleft())
            if not items:
                del self.open_reads[queue]
        self._reply(b"END")

    def _opened(self, name: str, item: Item) -> None:
        """Keep an item handed out as an open read of this connection."""
        queue = self.service.queue(name)
        assert queue is not None
        self.open_reads.setdefault(queue, deque()).append(item)

    # -- other commands --------------------------------------------------

    def _delete(self, words: list[bytes]) -> None:
        noreply = bool(words) and words[-1] == b"noreply"
        if noreply:
            words = words[:-1]
        if not words or len(words) > 2 or (len(words) == 2 and words[1] != b"0"):
            raise ClientError("bad command line format")
        name = queue_name(words[0])
        deleted = self.service.delete(name)
        if not noreply:
            self._reply(b"DELETED" if deleted else b"NOT_FOUND")

    def _flush_queue(self, words: list[bytes]) -> None:
        if len(words) != 1:
            raise ClientError("bad command line format")
        self.service.flush(queue_name(words[0]))
        self._reply(b"END")

    def _flush_all(self, words: list[bytes]) -> None:
        self.service.flush_all()
        self._reply(b"Flushed all queues.")

    def _flush_expired(self, words: list[bytes]) -> None:
        if len(words) != 1:
            raise ClientError("bad command line format")
        count = self.service.flush_expired(queue_name(words[0]))
        self._reply(b"%d" % count)

    def _flush_all_expired(self, words: list[bytes]) -> None:
        self._reply(b"%d" % self.service.flush_all_expired())

    def _stats(self, words: list[bytes]) -> None:
        lines = [
            b"STAT %s %s\r\n" % (name.encode(), str(value).encode())
            for name, value in self.service.stats()
        ]
        lines.append(b"END\r\n")
        self._reply_raw(b"".join(lines))

    def _dump_stats(self, words: list[bytes]) -> None:
        service = self.service
        if words:
            names = [queue_name(word) for word in words]
            queues = [service.queues[name] for name in names if name in service.queues]
        else:
            queues = list(service.queues.values())
        lines = []
        for queue in queues:
            lines.append(b"queue '%s' {\r\n" % queue.name.encode())
            for name, value in service.queue_stats(queue):
                lines.append(b"  %s=%s\r\n" % (name.encode(), str(value).encode()))
            lines.append(b"}\r\n")
        lines.append(b"END\r\n")
        self._reply_raw(b"".join(lines))

    def _version(self, words: list[bytes]) -> None:
        self._reply(b"VERSION " + __version__.encode())

    def _shutdown(self, words: list[bytes]) -> None:
        refused = self.service.shutdown_refused(self.peer)
        if refused is not None:
            raise ClientError(refused)
        # Every connection, this one too, closes once the replies to the
        # requests it has read have left.
        self.service.shutdown()

    def _reload(self, words: list[bytes]) -> None:
        try:
            self.service.reload_logged("the reload command", reraise=True)
        except ConfigError as error:
            self._reply(b"SERVER_ERROR " + str(error).encode("ascii", "replace"))
        else:
            self._reply(b"Reloaded config.")

    def _quit(self, words: list[bytes]) -> None:
        self._close()

    def _ignore(self, failure: Failure) -> None:
        pass

    _commands: dict[bytes, Callable[[QueueProtocol, list[bytes]], None]] = {
        b"set": _set,
        b"get": _get,
        b"gets": _get,
        b"delete": _delete,
        b"flush": _flush_queue,
        b"flush_all": _flush_all,
        b"flush_expired": _flush_expired,
        b"flush_all_expired": _flush_all_expired,
        b"stats": _stats,
        b"dump_stats": _dump_stats,
        b"version": _version,
        b"shutdown": _shutdown,
        b"quit": _quit,
        b"monitor": _monitor,
        b"reload": _reload,
        b"confirm": _confirm,
        b"add": _unsupported,
        b"replace": _unsupported,
        b"append": _unsupported,
        b"prepend": _unsupported,
        b"cas": _unsupported,
    }


#: Commands with a data block that erq does not support.
_OTHER_STORAGE = frozenset((b"add", b"replace", b"append", b"prepend", b"cas"))


def _check_set(words: list[bytes], noreply: bool) -> bytes | None:
    """What is wrong with a set line whose data block is still read."""
    if len(words) > 5 or (len(words) == 5 and not noreply):
        return b"bad command line format"
    if words[0] not in _known_names and not valid_name(words[0]):
        return b"bad queue name"
    if not words[1].isdigit() or int(words[1]) > MAX_FLAGS:
        return b"bad flags"
    exptime = words[2]
    if not (exptime[1:] if exptime.startswith(b"-") else exptime).isdigit():
        return b"bad exptime"
    return None


def _server_error(failure: Failure) -> bytes:
    reason = str(failure.value) or "journal failed"
    return b"SERVER_ERROR " + reason.encode("ascii", "replace") + b"\r\n"


class QueueFactory(ServerFactory):
    """Makes a ``QueueProtocol`` for each connection to a ``QueueService``."""

    def __init__(self, service: QueueService) -> None:
        self.service = service

    def buildProtocol(self, addr: object) -> QueueProtocol:
        protocol = QueueProtocol(self.service)
        protocol.factory = self
        return protocol
