"""The authentication gate: what a connection may do before it has logged
in, and the login itself.

When the server has an auth file, a new connection is locked: of its
requests only a login and ``quit`` are obeyed, everything else is answered
``CLIENT_ERROR unauthenticated``.  A login is a ``set`` (of any key) whose
data block is ``<user> <password>``, the way memcache clients without SASL
send credentials; the block is read only up to ``MAX_LOGIN`` bytes, so a
stranger cannot make the server hold more.  The other storage commands
have their data block read and dropped, to keep the stream in step.  A
connection that has logged in stays so when the auth file is reloaded;
the others follow it (``login_required``).  The protocol asks the gate
only while ``_locked``: a connection that is open costs the gate nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from erq.protocol.requests import (
    OTHER_STORAGE,
    BrokenStream,
    ClientError,
    check_block,
)

if TYPE_CHECKING:
    from erq.service import Counters, QueueService

#: The largest data block read from a client that has not logged in: a
#: login is a user name and a password, and a stranger may not make the
#: server hold more.
MAX_LOGIN = 4096


class LoginGate:
    """The requests of a connection that has not logged in (a mixin of
    ``QueueProtocol``)."""

    if TYPE_CHECKING:
        service: QueueService
        counters: Counters

        def _reply(self, data: bytes) -> None: ...
        def _close(self) -> None: ...
        def _read_block(
            self,
            words: list[bytes],
            reply_to: Callable[[bytes], None],
            cap: int | None = None,
        ) -> None: ...

    # Requests are refused until a login (the server has an auth file).
    _locked = False
    _logged_in = False
    _login_noreply = False

    def login_required(self, required: bool) -> None:
        """The server now has an auth file (``required``) or none: a
        connection that has logged in stays so, the others must now log in,
        or no longer."""
        self._locked = required and not self._logged_in

    def _before_login(self, line: bytes) -> None:
        """A request before this connection has logged in: only a login
        (a ``set``) or ``quit`` is obeyed."""
        words = [word for word in line.split(b" ") if word]
        command = words[0].lower() if words else b""
        if command == b"quit":
            self._close()
        elif command == b"set":
            self._login(words[1:])
        elif command in OTHER_STORAGE:
            # Its data block is read and dropped, to keep in step.
            self._read_block(words[1:], self._drop_unauthenticated, MAX_LOGIN)
        else:
            raise ClientError("unauthenticated")

    def _drop_unauthenticated(self, block: bytes) -> None:
        check_block(block)
        raise ClientError("unauthenticated")

    def _login(self, words: list[bytes]) -> None:
        """``set <any key> <flags> <exptime> <bytes> [noreply]`` whose data
        is ``<user> <password>``."""
        if len(words) >= 4 and words[3].isdigit() and int(words[3]) > MAX_LOGIN:
            # Not read: too long to be a login.
            self.counters.auth_cmds += 1
            self.counters.auth_errors += 1
            raise BrokenStream("authentication failure")
        self._read_block(words, self._check_login, MAX_LOGIN)
        self._login_noreply = len(words) == 5 and words[4] == b"noreply"

    def _check_login(self, block: bytes) -> None:
        user, space, password = check_block(block).partition(b" ")
        self.counters.auth_cmds += 1
        credentials = self.service.config.credentials
        if credentials is None or (space and credentials.check(user, password)):
            self._locked = False
            self._logged_in = True
            if not self._login_noreply:
                self._reply(b"STORED")
        else:
            self.counters.auth_errors += 1
            raise ClientError("authentication failure", noreply=self._login_noreply)
