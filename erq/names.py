"""Queue names: which names may name a queue, and fanout.

A queue name is 1 to ``MAX_QUEUE_NAME`` printable ASCII characters (``!``
to ``~``: no space, no control character), with no ``/`` and not starting
with ``.``, so that it is safe as a directory name and as one word of a
request line.  The rule is the same for a name from the wire (bytes) and
from the settings (str), and is written here only.
"""

from __future__ import annotations

MAX_QUEUE_NAME = 250

#: Every byte a queue name may hold: printable ASCII but ``/``.
_NAME_BYTES = bytes(byte for byte in range(0x21, 0x7F) if byte != 0x2F)


def valid_queue_name(name: str | bytes) -> bool:
    """Whether ``name`` may name a queue: 1 to 250 printable ASCII
    characters, no space, no ``/``, not starting with ``.``."""
    if isinstance(name, str):
        if not name.isascii():
            return False
        name = name.encode("ascii")
    if not 0 < len(name) <= MAX_QUEUE_NAME or name.startswith(b"."):
        return False
    # Deleting every allowed byte leaves nothing from a good name.
    return not name.translate(None, _NAME_BYTES)


def fanout_parent(name: str) -> str | None:
    """``orders`` for a fanout child ``orders+audit`` (or ``orders+a+b``: a
    set to ``orders`` feeds every ``orders+<anything>``), else ``None``."""
    head, plus, _ = name.partition("+")
    return head if plus and head else None
