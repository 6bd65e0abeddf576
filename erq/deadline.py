"""One delayed call set for a deadline: the timer that the waiting gets of
a server, and the open reads of a queue, each share.

It is set by the clock's time at which it is due, not by a delay, and is
moved (``DelayedCall.reset``) rather than cancelled and made again as
deadlines come and go.  Set from any moment, it fires when the clock
reaches the deadline exactly, never a hair before: ``deadline - now``,
added back to the clock's time by the reactor, could round to a hair less
or more (where the clock's time is small beside the delay), so the delay
is stepped a unit in the last place at a time until it lands.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


def delay_to(deadline: float, now: float) -> float:
    """The delay a clock turns back into ``deadline`` exactly (a delayed
    call is due at ``now + delay``): ``deadline - now`` may round to a
    hair less, and then a timer would fire before it is due, or a hair
    more, and miss a clock that stops on the deadline itself."""
    if deadline <= now:
        return 0.0
    delay = deadline - now
    # Each step moves the sum by at most one unit of the deadline's last
    # place (the delay is the smaller), so a few steps reach it.
    for _ in range(8):
        if now + delay < deadline:
            delay = math.nextafter(delay, math.inf)
        elif delay > 0 and now + math.nextafter(delay, 0.0) >= deadline:
            delay = math.nextafter(delay, 0.0)
        else:
            break
    return delay


class DeadlineTimer:
    """A timer on ``clock`` that calls ``fire`` with the deadline it was
    set for, once, when that deadline comes (unset by then)."""

    __slots__ = ("_clock", "_fire", "call", "at")

    def __init__(self, clock: IReactorTime, fire: Callable[[float], None]) -> None:
        self._clock = clock
        self._fire = fire
        #: The delayed call, while set.
        self.call: IDelayedCall | None = None
        #: The deadline it is set for (infinity: not set).
        self.at = math.inf

    @property
    def deadline(self) -> float | None:
        """When it fires next, if it is set."""
        return None if self.call is None else self.at

    def set(self, deadline: float) -> None:
        """Fire at ``deadline`` instead of when it was set for."""
        delay = delay_to(deadline, self._clock.seconds())
        call = self.call
        if call is None:
            self.call = self._clock.callLater(delay, self._fired)
        else:
            call.reset(delay)
        self.at = deadline

    def cancel(self) -> None:
        call, self.call = self.call, None
        self.at = math.inf
        if call is not None:
            call.cancel()

    def _fired(self) -> None:
        at = self.at
        self.call = None
        self.at = math.inf
        self._fire(at)
