"""Who may use the server: the auth file, and checking a client's login.

The file follows memcached's (1.5.15 and later) so that the same file and
the same clients work with both: one ``user:password`` line per user. The
user name ends at the first ``:``; the password is the rest of the line, and
may hold ``:`` and spaces, but not begin or end with a space or tab (a
password that differs from what the file seems to say would lock its user
out with no clue why). Blank lines and lines whose first non-blank character
is ``#`` are ignored. A line that breaks these rules, a second line for one
user, and a file without any user are refused as a `ConfigError` naming the
file and the line, never what the line holds.

A client logs in with ``set <any key> <flags> <exptime> <bytes>`` whose data
is ``<user> <password>`` (split at the first space). `Credentials.check`
compares what it sends with every line, each in constant time and all of
them whatever matches, so how long a check takes says nothing about which
user exists or how much of a password was right.
"""

from __future__ import annotations

import hashlib
import hmac

from erq.config import ConfigError

_BLANKS = b" \t"


def _digest(secret: bytes) -> bytes:
    # Digests of one length: compare_digest would tell lengths apart.
    return hashlib.sha256(secret).digest()


class Credentials:
    """The users of one auth file.  Holds digests, not the passwords, and
    shows neither: not in ``repr``, not in errors."""

    def __init__(self, path: str, users: list[tuple[bytes, bytes]]) -> None:
        #: The file they were read from.
        self.path = path
        self._digests = [(_digest(user), _digest(password)) for user, password in users]

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"<Credentials of {len(self)} users from {self.path!r}>"

    def check(self, user: bytes, password: bytes) -> bool:
        """Whether ``user`` and ``password`` are those of a line of the file."""
        user_digest = _digest(user)
        password_digest = _digest(password)
        found = False
        for known_user, known_password in self._digests:
            # ``&`` and ``|``, not ``and`` and ``or``: every comparison runs.
            found |= hmac.compare_digest(known_user, user_digest) & (
                hmac.compare_digest(known_password, password_digest)
            )
        return found


def parse_credentials(data: bytes, path: str) -> Credentials:
    """The users in ``data``, the text of the auth file at ``path``."""
    users: list[tuple[bytes, bytes]] = []
    seen: dict[bytes, int] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.removesuffix(b"\r")
        stripped = line.strip(_BLANKS)
        if not stripped or stripped.startswith(b"#"):
            continue
        user, colon, password = line.partition(b":")
        if not colon:
            reason = "expected user:password"
        elif not user:
            reason = "empty user name"
        elif any(blank in user for blank in _BLANKS):
            reason = "a user name cannot hold a space or tab"
        elif not password:
            reason = "empty password"
        elif password != password.strip(_BLANKS):
            reason = "a password cannot begin or end with a space or tab"
        elif user in seen:
            reason = f"a second line for the user of line {seen[user]}"
        else:
            seen[user] = number
            users.append((user, password))
            continue
        raise ConfigError(reason, path, number)
    if not users:
        raise ConfigError("no user:password line", path)
    return Credentials(path, users)


def load_credentials(path: str) -> Credentials:
    """The users in the auth file at ``path``; `ConfigError` when it cannot
    be read or is wrong."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", path) from None
    return parse_credentials(data, path)


__all__ = ["Credentials", "load_credentials", "parse_credentials"]
