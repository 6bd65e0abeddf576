"""What ``twistd erq`` runs (the plugin in ``twisted/plugins/erq_plugin.py``
names this module): ``erq.tap``'s options and service, on a reactor that
reads the cheaper way.

The process is erq's alone, so unless ``--plain-reactor`` says otherwise
its reactor, if it is Twisted's epoll reactor, dispatches reads as
``erq.epoll`` does, and polls ``--idle-poll`` microseconds before it
sleeps.  An application that embeds erq, and a test that
builds the service with ``erq.tap.makeService``, keeps its reactor as it
is.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from erq import tap
from erq.tap import Options

__all__ = ["Options", "makeService"]


def makeService(options: Any) -> MultiService:
    """``erq.tap.makeService`` on twistd's reactor, made to read the cheaper
    way first (unless ``--plain-reactor``)."""
    from twisted.internet import reactor

    if not options["plain-reactor"]:
        read_faster(reactor, options.idle_poll)
    return tap.makeService(options, reactor)


def read_faster(reactor: object, idle_poll: float = 0.0) -> bool:
    """Have ``reactor`` dispatch reads as ``erq.epoll`` does, polling
    ``idle_poll`` seconds before it sleeps, if it is Twisted's epoll
    reactor; whether it does now."""
    try:
        from erq import epoll
    except ImportError:
        # No epoll here (not Linux): twistd's reactor is another one.
        return False
    return epoll.read_faster(reactor, idle_poll)
