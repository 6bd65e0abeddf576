"""Where each queue's journal lives: queue names mapped to directory names
and back, and the queues of a data directory.

Each queue has its own directory under the data directory (named by
``queue_dir_name``).  It holds segment files ``00000001.seg``,
``00000002.seg``, ... numbered in the order they were started, and, when the
queue's name was given, a ``name`` file holding the queue's real name (the
only way back from a hashed directory name).  Nothing else in the directory
is read by the server.
"""

from __future__ import annotations

import hashlib
import os

from erq.names import valid_queue_name

# Characters that stand for themselves in a directory name: none of them
# changes under case folding, none of them is special to a filesystem.
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.+")
_HEX = frozenset("0123456789abcdef")
_MAX_PLAIN = 250
_HASHED_PREFIX = 150
NAME_FILE = "name"


def _check_queue_name(name: str) -> None:
    if not valid_queue_name(name):
        raise ValueError(f"bad queue name {name!r}")


def queue_dir_name(name: str) -> str:
    """The directory name of a queue, safe on any filesystem.

    ``[a-z0-9_.+-]`` stand for themselves, an uppercase letter becomes ``^``
    and its lowercase, anything else ``%`` and two lowercase hex digits.  The
    result is lowercase, so two names never share a directory on a
    case-insensitive filesystem, and it cannot start with ``.`` or hold a
    ``/``.  A name whose encoding would pass 250 bytes is cut to a readable
    prefix plus ``~`` and 32 hex digits of its SHA-256 (``~`` never occurs
    otherwise); only the ``name`` file in the directory gives it back.
    Raises ValueError for a name that is not a valid queue name.
    """
    _check_queue_name(name)
    parts = [
        c if c in _KEEP else "^" + c.lower() if "A" <= c <= "Z" else f"%{ord(c):02x}"
        for c in name
    ]
    encoded = "".join(parts)
    if len(encoded) <= _MAX_PLAIN:
        return encoded
    prefix: list[str] = []
    length = 0
    for part in parts:
        if length + len(part) > _HASHED_PREFIX:
            break
        prefix.append(part)
        length += len(part)
    digest = hashlib.sha256(name.encode("ascii")).hexdigest()[:32]
    return "".join(prefix) + "~" + digest


def queue_name_from_dir(dir_name: str) -> str | None:
    """The queue name a directory name stands for, or ``None`` when it is
    hashed (see ``queue_dir_name``) or not a queue directory at all."""
    if "~" in dir_name:
        return None
    out: list[str] = []
    i = 0
    length = len(dir_name)
    while i < length:
        c = dir_name[i]
        if c == "^":
            if i + 1 >= length or not "a" <= dir_name[i + 1] <= "z":
                return None
            out.append(dir_name[i + 1].upper())
            i += 2
        elif c == "%":
            digits = dir_name[i + 1 : i + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                return None
            out.append(chr(int(digits, 16)))
            i += 3
        elif c in _KEEP:
            out.append(c)
            i += 1
        else:
            return None
    name = "".join(out)
    try:
        canonical = queue_dir_name(name)
    except ValueError:
        return None
    return name if canonical == dir_name else None


def queue_dir(data_dir: str, name: str) -> str:
    """The directory of queue ``name`` under ``data_dir``."""
    return os.path.join(data_dir, queue_dir_name(name))


def _read_name_file(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, NAME_FILE), "rb") as f:
            raw = f.read(1024)
    except OSError:
        return None
    try:
        return raw.decode("ascii").rstrip("\n")
    except UnicodeDecodeError:
        return None


def list_queue_dirs(data_dir: str) -> dict[str, str]:
    """Every queue in ``data_dir``: its real name and its directory."""
    found: dict[str, str] = {}
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        name = _read_name_file(entry.path)
        if name is not None:
            try:
                if queue_dir_name(name) != entry.name:
                    name = None
            except ValueError:
                name = None
        if name is None:
            name = queue_name_from_dir(entry.name)
        if name is not None:
            found[name] = entry.path
    return found
