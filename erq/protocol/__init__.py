"""The memcache text protocol of erq: framing, replies in order, open reads.

One module per role, re-exported here as one face:

- ``requests``: request lines into checked requests, and the errors a
  request can cause, each an exception class that knows its reply word;
- ``replies``: the replies of one connection, kept in request order and
  gathered into one write;
- ``flow``: when a connection's requests stop being read, and resume;
- ``commands``: one handler per command, found in ``COMMANDS``;
- ``login``: what a connection may do before it has logged in;
- ``transport``: writing replies, at once when nothing is queued;
- ``framing``: the bytes a connection reads cut into requests, a lock-step
  client's read handled as it comes;
- ``connection``: ``QueueProtocol``, the ``LineReceiver`` that wires the
  others together, and ``QueueFactory``.
"""

from erq.protocol.commands import COMMANDS, MAX_RUN, MAX_RUN_BYTES
from erq.protocol.connection import QueueFactory, QueueProtocol
from erq.protocol.flow import MAX_BACKLOG, FlowControl
from erq.protocol.login import MAX_LOGIN
from erq.protocol.replies import MAX_HELD_OUTPUT, ReplyOrder
from erq.protocol.requests import (
    KNOWN_LIMIT,
    MAX_FLAGS,
    MAX_LINE,
    BrokenRules,
    BrokenStream,
    ClientError,
    CommandError,
    GetRequest,
    RequestError,
    TooLarge,
    get_request,
    queue_name,
)

__all__ = [
    "COMMANDS",
    "KNOWN_LIMIT",
    "MAX_BACKLOG",
    "MAX_FLAGS",
    "MAX_HELD_OUTPUT",
    "MAX_LINE",
    "MAX_LOGIN",
    "MAX_RUN",
    "MAX_RUN_BYTES",
    "BrokenRules",
    "BrokenStream",
    "ClientError",
    "CommandError",
    "FlowControl",
    "GetRequest",
    "QueueFactory",
    "QueueProtocol",
    "ReplyOrder",
    "RequestError",
    "TooLarge",
    "get_request",
    "queue_name",
]
