"""The memcache text protocol as the load generator speaks it: requests built
ahead of time, replies checked straight off one receive buffer."""

from __future__ import annotations

import socket
from dataclasses import dataclass

HOST = "127.0.0.1"

STORED = b"STORED\r\n"
END = b"END\r\n"

#: What item payloads are made of: printable, no spaces, never ``\r\n``.
_FILL = bytes(range(0x30, 0x7B)) * 64


class Misbehaved(Exception):
    """The server answered something other than what the workload expects,
    closed the connection, or went silent."""


def item(tag: bytes, index: int, size: int) -> bytes:
    """Item ``index`` of a workload: unique, ``size`` bytes, checkable."""
    stamp = b"%s:%010d:" % (tag, index)
    if len(stamp) >= size:
        return stamp[:size]
    return stamp + _FILL[: size - len(stamp)]


def filler(size: int) -> bytes:
    """``size`` payload bytes without a stamp."""
    return _FILL[:size]


@dataclass(frozen=True)
class Dialect:
    """How one workload's items map onto a server.

    erq gets one queue; memcached gets one distinct key per item
    (``set k1..kN`` then ``get k1..kN``), so the same items move. The queue
    name is padded to the length of the keys so that every request and reply
    has the same length on both servers.
    """

    queue: bool
    prefix: bytes

    @property
    def queue_name(self) -> bytes:
        return self.prefix + b"Q" * 8

    def key(self, index: int) -> bytes:
        if self.queue:
            return self.queue_name
        return b"%s%08d" % (self.prefix, index)

    def set_request(self, index: int, data: bytes) -> bytes:
        return b"set %s 0 0 %d\r\n%s\r\n" % (self.key(index), len(data), data)

    def get_request(self, index: int) -> bytes:
        return b"get %s\r\n" % self.key(index)

    def hit_reply(self, index: int, data: bytes) -> bytes:
        return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (self.key(index), len(data), data)


class Connection:
    """One client socket with one reusable receive buffer."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(1 << 16)
        self.view = memoryview(self.buffer)

    def close(self) -> None:
        self.sock.close()

    def reserve(self, size: int) -> None:
        """Make the buffer hold at least ``size`` bytes plus slack."""
        if len(self.buffer) < size + 4096:
            self.view.release()
            self.buffer = bytearray(size + 65536)
            self.view = memoryview(self.buffer)

    def finish(self, total: int, value_len: int | None) -> int:
        """Read on until the buffer holds one whole reply; its length.

        ``total`` bytes are already in. A reply is one line, or, when
        ``value_len`` is given, a ``VALUE`` block of exactly that many bytes
        (every item of a workload has one length).
        """
        buffer = self.buffer
        while True:
            if value_len is not None and buffer.startswith(b"VALUE"):
                if total >= value_len:
                    return total
            elif total >= 2 and buffer[total - 2] == 13 and buffer[total - 1] == 10:
                return total
            if total >= len(buffer) - 1:
                raise Misbehaved(f"reply longer than {total} bytes: {self.show(total)}")
            try:
                got = self.sock.recv_into(self.view[total:])
            except TimeoutError:
                raise Misbehaved(
                    f"no whole reply after the timeout; got {self.show(total)}"
                ) from None
            if not got:
                raise Misbehaved(f"connection closed; got {self.show(total)}")
            total += got

    def expect(self, expected: bytes) -> None:
        """Read exactly ``expected`` (a batch of replies), or explain how the
        server's answer differs from it."""
        want = len(expected)
        self.reserve(want)
        view = self.view
        recv_into = self.sock.recv_into
        total = 0
        try:
            while total < want:
                got = recv_into(view[total:])
                if not got:
                    raise Misbehaved(
                        "connection closed mid-batch: " + _diff(expected, view, total)
                    )
                total += got
        except TimeoutError:
            raise Misbehaved(
                "server went silent mid-batch: " + _diff(expected, view, total)
            ) from None
        # A copy then memcmp is far faster than comparing a memoryview.
        if total != want or bytes(view[:want]) != expected:
            raise Misbehaved(_diff(expected, view, total))

    def show(self, total: int) -> str:
        return _show(bytes(self.view[:total]))


def _show(data: bytes, limit: int = 80) -> str:
    text = repr(data[:limit])
    return text + ("..." if len(data) > limit else "")


def split_replies(data: bytes) -> list[bytes]:
    """Cut a stream of replies into one entry per reply (a ``VALUE`` block
    with its ``END``, or one line); a torn tail is the last entry."""
    replies: list[bytes] = []
    position = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline < 0:
            replies.append(data[position:])
            break
        line_end = newline + 1
        if data.startswith(b"VALUE ", position):
            words = data[position:newline].split()
            try:
                length = int(words[-1])
            except (ValueError, IndexError):
                length = 0
            block_end = line_end + length + 2
            end = data.find(b"\n", block_end)
            line_end = len(data) if end < 0 else end + 1
        replies.append(data[position:line_end])
        position = line_end
    return replies


def _diff(expected: bytes, view: memoryview, total: int) -> str:
    got = split_replies(bytes(view[:total]))
    want = split_replies(expected)
    for index, (mine, theirs) in enumerate(zip(want, got, strict=False)):
        if mine != theirs:
            return (
                f"reply {index + 1} of {len(want)}: expected {_show(mine)}, "
                f"got {_show(theirs)}"
            )
    if len(got) < len(want):
        return f"{len(got)} of {len(want)} replies, then nothing"
    return f"{len(got) - len(want)} replies more than the {len(want)} expected"
