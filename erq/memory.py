"""The server's memory: the cap on item bytes all queues hold together, and
memory given back to the system once items are gone.

The cap
-------
Each queue keeps items in memory up to its own ``max_memory_size``; the
server's ``max_memory_size`` caps them all together.  Every queue counts
its bytes in memory in one shared `MemoryUse`, and a journaled queue keeps
a new item in memory only while the total, with it, stays under the cap
(or as the only item it holds in memory, so that it always has a head to
hand out); past it, the item is left to the journal and read back as the
queue drains.  A queue without a journal has nowhere else to keep its
items: they are held and counted all the same.

Giving memory back
------------------
Items are many small allocations.  When a deep queue drains, CPython frees
them, but glibc's allocator keeps the freed pages for later unless they lie
at the very top of its heap, and a few live objects allocated late pin
that top: a server that held a gigabyte keeps it for good.  `GiveBack`
watches the shared count: once it has fallen well below its peak, it asks
the allocator to hand free pages back (glibc's ``malloc_trim``), and once
more a little later for what replies and read buffers were still holding.
Where the C library is not glibc, there is nothing to ask and it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

#: Seconds between two looks at how much was freed.
GIVE_BACK_EVERY = 0.5

#: Bytes of items freed since the peak before memory is given back: a trim
#: costs about a millisecond per 10 MiB it returns.
GIVE_BACK_AFTER = 8 * 1024 * 1024


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


def _malloc_function(name: str) -> Callable[..., int] | None:
    """A function of glibc's allocator, or ``None`` where the C library is
    not glibc (musl, macOS, Windows)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    return function


_malloc_trim = _malloc_function("malloc_trim")


def give_back() -> bool:
    """Hand the allocator's free pages back to the system; whether any
    were (always ``False`` where that cannot be asked)."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))


class GiveBack:
    """Gives memory back to the system once items worth ``after`` bytes
    were freed since the peak of ``memory``, looking every ``every``
    seconds on ``clock``; ``trim`` is what gives it back (`give_back`)."""

    def __init__(
        self,
        memory: MemoryUse,
        clock: IReactorTime,
        trim: Callable[[], object] = give_back,
        every: float = GIVE_BACK_EVERY,
        after: int = GIVE_BACK_AFTER,
    ) -> None:
        self.memory = memory
        self._trim = trim
        self._after = after
        # One more trim at the next look: what replies being written and
        # read buffers held at the last one is freed by then.
        self._again = False
        #: How many times memory was given back.
        self.times = 0
        self._loop = LoopingCall(self.look)
        self._loop.clock = clock
        self._every = every

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self._every, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def look(self) -> None:
        memory = self.memory
        held = memory.held
        if memory.peak - held >= self._after:
            memory.peak = held
            self._again = True
            self._give_back()
        elif self._again:
            self._again = False
            self._give_back()

    def _give_back(self) -> None:
        self.times += 1
        self._trim()


__all__ = [
    "GIVE_BACK_AFTER",
    "GIVE_BACK_EVERY",
    "GiveBack",
    "MemoryUse",
    "give_back",
]
