"""Request parsing: request lines into checked requests, and the errors a
client's request can cause.

A client repeats the same few lines (``get q``, ``set q 0 0 64``) and uses a
handful of queue names, so every line, key and name is checked once and the
result kept by its bytes (``known_lines``, and the caches behind
``get_request`` and ``queue_name``); the caches are bounded by clearing.
Nothing here needs a transport or a service: the protocol hands lines in
and gets requests, or a ``RequestError``, back.

What is wrong with a request is an exception class, and ``RequestError``
holds, in one place, the reply word it becomes (``reply``), what the log
says beside it (``why``) and whether the stream can still be trusted
(``fatal``: the connection closes after the reply).
"""

from __future__ import annotations

from erq.names import valid_queue_name

#: Longest request line, not counting its line end.
MAX_LINE = 2048
MAX_FLAGS = 2**32 - 1
#: Entries each cache of parsed lines, keys and names holds before clearing.
KNOWN_LIMIT = 10_000


class RequestError(Exception):
    """A request the server refuses, and the reply that says so."""

    #: The reply word, followed by the reason where it has one.
    word = b"ERROR"
    #: Whether the connection closes after the reply.
    fatal = False
    #: Whether the client is at fault (counted and logged as its mistake).
    client_fault = True

    def __init__(
        self, reason: str = "", why: str | None = None, *, noreply: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        #: What the log adds to the reply, never what the client sent.
        self.why = why
        #: The request asked for no reply: the refusal is only counted and
        #: logged.
        self.noreply = noreply

    @property
    def reply(self) -> bytes:
        """The whole reply line, without its line end."""
        if not self.reason:
            return self.word
        return self.word + b" " + self.reason.encode("ascii", "replace")


class CommandError(RequestError):
    """No such command, or one used against the rules: ``ERROR``."""

    def __init__(self, why: str) -> None:
        super().__init__("", why)


class BrokenRules(CommandError):
    """``ERROR``, then the connection closes: a request that breaks the
    rules of open reads leaves this connection's reads in doubt."""

    fatal = True


class ClientError(RequestError):
    """The client sent something wrong: ``CLIENT_ERROR <reason>``."""

    word = b"CLIENT_ERROR"


class BrokenStream(ClientError):
    """``CLIENT_ERROR <reason>``, then the connection closes: what follows
    in the stream can no longer be framed."""

    fatal = True


class TooLarge(RequestError):
    """A data block larger than the server takes: ``SERVER_ERROR object too
    large``, then the connection closes rather than read it."""

    word = b"SERVER_ERROR"
    fatal = True

    def __init__(self) -> None:
        super().__init__("object too large")


class Unavailable(RequestError):
    """The server's status forbids the request just now: ``SERVER_ERROR
    <reason>``; the connection stays open, and the request changed
    nothing."""

    word = b"SERVER_ERROR"
    client_fault = False


#: Parsed keys and names, by their bytes: clients use a handful of queues,
#: so each is checked once, not once per request.  Bounded by clearing.
_known_names: dict[bytes, str] = {}
_known_keys: dict[bytes, GetRequest] = {}


def queue_name(word: bytes) -> str:
    """The queue name ``word`` stands for, or ``ClientError``."""
    name = _known_names.get(word)
    if name is None:
        if not valid_queue_name(word):
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


def known_get_request(key: bytes) -> GetRequest | None:
    """The parsed ``get`` key, if it was parsed before."""
    return _known_keys.get(key)


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


#: What a set line says: queue name, flags, exptime, noreply, and the
#: error to answer instead (then the rest is not to be used).
Storing = tuple[str, int, int, bool, bytes | None]


class SetLine:
    """A ``set`` line seen before, checked and parsed."""

    __slots__ = ("storing", "length")

    def __init__(self, storing: Storing, length: int) -> None:
        self.storing = storing
        self.length = length


#: Whole request lines seen before: a client repeats the same few (``get q``,
#: ``set q 0 0 64``), and each is split and checked once.
known_lines: dict[bytes, GetRequest | SetLine] = {}


def remember(line: bytes, parsed: GetRequest | SetLine) -> None:
    """Keep what ``line`` was parsed into, for the next time it comes."""
    if len(known_lines) >= KNOWN_LIMIT:
        known_lines.clear()
    known_lines[line] = parsed


def split_line(line: bytes) -> list[bytes]:
    """The words of a request line: the command, then its arguments."""
    # Only spaces separate: bytes.split() would split on tabs too.
    words = line.split(b" ")
    if b"" in words:
        words = [word for word in words if word]
        if not words:
            raise CommandError("empty line")
    return words


def block_length(words: list[bytes], cap: int) -> int:
    """The ``<bytes>`` of a storage command's arguments, at most ``cap``."""
    if len(words) < 4 or not words[3].isdigit():
        raise BrokenStream("bad data chunk length")
    length = int(words[3])
    if length > cap:
        raise TooLarge()
    return length


def check_block(block: bytes) -> bytes:
    """A data block without its line end, which must be there."""
    if block[-2:] != b"\r\n":
        raise BrokenStream("bad data chunk")
    return block[:-2]


#: Commands with a data block that erq does not support.
OTHER_STORAGE = frozenset((b"add", b"replace", b"append", b"prepend", b"cas"))


def check_set(words: list[bytes], noreply: bool) -> bytes | None:
    """What is wrong with a set line whose data block is still read."""
    if len(words) > 5 or (len(words) == 5 and not noreply):
        return b"bad command line format"
    if words[0] not in _known_names and not valid_queue_name(words[0]):
        return b"bad queue name"
    if not words[1].isdigit() or int(words[1]) > MAX_FLAGS:
        return b"bad flags"
    exptime = words[2]
    if not (exptime[1:] if exptime.startswith(b"-") else exptime).isdigit():
        return b"bad exptime"
    return None


def parse_set(words: list[bytes]) -> Storing:
    """What the arguments of a ``set`` whose ``<bytes>`` is good say."""
    noreply = len(words) == 5 and words[4] == b"noreply"
    error = check_set(words, noreply)
    if error is not None:
        return ("", 0, 0, noreply, error)
    return (queue_name(words[0]), int(words[1]), int(words[2]), noreply, None)
