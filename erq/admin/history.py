"""The recent past of every queue, for the status page: its depth and its
items in and out, sampled every few seconds over the last minutes.

A page opened now shows a chart and rates at once, not after it has
watched for a while.  Memory is bounded: one ring of ``size`` samples for
all the queues' times, three rings of integers for each queue (a few
kilobytes), at most ``max_queues`` queues (the page of a server with more
shows the rest without a chart), and a queue deleted drops out at the
next sample.  Sampling reads each queue's counters and nothing else, so a
request pays nothing for it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from erq.queue import Queue

#: Seconds between samples.
INTERVAL = 5.0
#: Samples kept: ten minutes of them.
SIZE = 120
#: Most queues with a history.
MAX_QUEUES = 1000


class _Track:
    """One queue's rings: depth, items added so far, items removed so far."""

    __slots__ = ("queue", "first", "depth", "added", "removed")

    def __init__(self, queue: Queue, first: int, size: int) -> None:
        self.queue = queue
        #: The number of the first sample taken of it.
        self.first = first
        self.depth = array("q", bytes(8 * size))
        self.added = array("q", bytes(8 * size))
        self.removed = array("q", bytes(8 * size))


class History:
    """Samples of the queues that ``queues()`` gives, every ``interval``
    seconds of ``clock``, the last ``size`` of them."""

    def __init__(
        self,
        queues: Callable[[], Mapping[str, Queue]],
        clock: IReactorTime,
        interval: float = INTERVAL,
        size: int = SIZE,
        max_queues: int = MAX_QUEUES,
    ) -> None:
        self._queues = queues
        self._clock = clock
        self.interval = interval
        self.size = size
        self.max_queues = max_queues
        self._times = array("d", bytes(8 * size))
        # Samples taken so far; the next goes to ``taken % size``.
        self._taken = 0
        self._tracks: dict[str, _Track] = {}
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        """Sample now, then every ``interval`` seconds."""
        self.stop()
        loop = self._loop = LoopingCall(self.sample)
        loop.clock = self._clock
        loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def sample(self) -> None:
        queues = self._queues()
        tracks = self._tracks
        for name in [
            name for name, t in tracks.items() if queues.get(name) is not t.queue
        ]:
            # Deleted, or deleted and made again: its counters began again.
            del tracks[name]
        taken = self._taken
        at = taken % self.size
        self._times[at] = self._clock.seconds()
        for name, queue in queues.items():
            track = tracks.get(name)
            if track is None:
                if len(tracks) >= self.max_queues:
                    continue
                track = tracks[name] = _Track(queue, taken, self.size)
            track.depth[at] = queue.items
            track.added[at] = queue.total_items
            track.removed[at] = queue.removed_items
        self._taken = taken + 1

    def times(self) -> list[float]:
        """When the samples kept were taken, oldest first."""
        size = self.size
        return [
            self._times[number % size]
            for number in range(max(0, self._taken - size), self._taken)
        ]

    def series(self, name: str) -> list[tuple[float, int, int, int]] | None:
        """The samples of the queue ``name``, oldest first: (time, depth,
        items added so far, items removed so far); ``None`` when it has no
        history.  They are the last of `times`."""
        track = self._tracks.get(name)
        if track is None or self._queues().get(name) is not track.queue:
            return None
        size = self.size
        times = self._times
        depth, added, removed = track.depth, track.added, track.removed
        return [
            (times[at], depth[at], added[at], removed[at])
            for at in (
                number % size
                for number in range(max(track.first, self._taken - size), self._taken)
            )
        ]

    def _ordered(self, ring: array[int]) -> array[int]:
        """A ring's samples kept, oldest first."""
        taken, size = self._taken, self.size
        if taken <= size:
            return ring[:taken]
        at = taken % size
        return ring[at:] + ring[:at]

    def view(
        self, window: float = 60.0
    ) -> dict[str, tuple[list[int], tuple[float, float] | None]]:
        """For each queue with a history: its depths at the last of
        `times`, and its items in and out per second over the last
        ``window`` seconds (or as much of it as was sampled) up to now, or
        ``None`` when there is no sample to measure from.  Slices, not
        loops: a page asks for every queue every few seconds."""
        queues = self._queues()
        times = self.times()
        kept = len(times)
        now = self._clock.seconds()
        # The newest sample at or before the window's start, or the oldest.
        newest_before = max(bisect_right(times, now - window) - 1, 0)
        result = {}
        for name, track in self._tracks.items():
            queue = queues.get(name)
            if queue is not track.queue:
                continue
            own = max(track.first - (self._taken - kept), 0)
            depths = self._ordered(track.depth)[own:].tolist()
            start = max(newest_before, own)
            rates = None
            if start < kept and now > times[start]:
                elapsed = now - times[start]
                added = self._ordered(track.added)[start]
                removed = self._ordered(track.removed)[start]
                rates = (
                    max(queue.total_items - added, 0) / elapsed,
                    max(queue.removed_items - removed, 0) / elapsed,
                )
            result[name] = (depths, rates)
        return result

    def rates(self, name: str, window: float = 60.0) -> tuple[float, float] | None:
        """One queue's rates, as `view` gives them."""
        found = self.view(window).get(name)
        return None if found is None else found[1]
