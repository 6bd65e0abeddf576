"""The server's memory: the cap on item bytes all queues hold together.

Each queue keeps items in memory up to its own ``max_memory_size``; the
server's ``max_memory_size`` caps them all together.  Every queue counts
its bytes in memory in one shared `MemoryUse`, and a journaled queue keeps
a new item in memory only while the total, with it, stays under the cap
(or as the only item it holds in memory, so that it always has a head to
hand out); past it, the item is left to the journal and read back as the
queue drains.  A queue without a journal has nowhere else to keep its
items: they are held and counted all the same.
"""

from __future__ import annotations


class MemoryUse:
    """The item bytes held in memory by every queue of a server, and the
    cap on them (``None``: none).  Queues add and take away their bytes in
    ``held``; ``peak`` is the most held since memory was last given back."""

    __slots__ = ("held", "peak", "cap")

    def __init__(self, cap: int | None = None) -> None:
        self.held = 0
        self.peak = 0
        self.cap = cap

    def set_cap(self, cap: int | None) -> None:
        """Use ``cap`` (``None``: unlimited) from now on; items already in
        memory stay there, and only new ones go to the journals."""
        self.cap = cap


__all__ = ["MemoryUse"]
