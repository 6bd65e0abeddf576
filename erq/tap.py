"""twistd's way in: command-line options turned into a running server."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger
from twisted.python import usage

from erq.config import MiB
from erq.protocol import QueueFactory
from erq.service import QueueService

DEFAULT_PORT = 22122


def endpoint_description(port: str) -> str:
    """A bare port number listens on loopback only: safe by default."""
    if port.isdigit():
        return f"tcp:{port}:interface=127.0.0.1"
    return port


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run erq, a durable message queue server that speaks the memcache "
        "protocol as Kestrel does."
    )
    optParameters = [
        [
            "port",
            "p",
            str(DEFAULT_PORT),
            "Port number to listen on (127.0.0.1 only), or an endpoint "
            "description such as tcp:22122:interface=0.0.0.0 or "
            "unix:/run/erq.sock.",
        ],
        ["data-dir", "d", "queues", "Directory holding the queues' journals."],
    ]
    optFlags = [["no-shutdown", None, "Refuse the shutdown command."]]

    def postOptions(self) -> None:
        port = self["port"]
        if not port:
            raise usage.UsageError("--port must not be empty")


class ListeningService(StreamServerEndpointService):
    """A listening port whose failure to bind stops twistd with a message
    rather than a server that runs and serves nothing."""

    def __init__(self, description: str, factory: QueueFactory) -> None:
        from twisted.internet import reactor

        super().__init__(serverFromString(reactor, description), factory)
        self.description = description
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as error:
            raise SystemExit(
                f"erq: cannot listen on {self.description}: {error}"
            ) from None


class CleanExitOnSigterm(Service):
    """SIGTERM stops the server as ``shutdown`` does, and twistd exits 0.

    Twisted's own SIGTERM handler stops the reactor too, but then makes
    twistd kill itself with the signal, which reads as a crash."""

    def startService(self) -> None:
        from twisted.internet import reactor

        super().startService()
        # After the reactor installs its handlers, which would replace ours.
        reactor.addSystemEventTrigger("after", "startup", self._install)

    def _install(self) -> None:
        if self.running:
            signal.signal(signal.SIGTERM, self._terminated)

    def _terminated(self, number: int, frame: FrameType | None) -> None:
        from twisted.internet import reactor

        Logger().info("Received SIGTERM, shutting down.")
        IReactorFromThreads(reactor).callFromThread(IReactorCore(reactor).stop)


def makeService(options: Any) -> MultiService:
    """The server: a ``QueueService`` and the port that serves it."""
    top = MultiService()
    queues = QueueService(allow_shutdown=not options["no-shutdown"])
    queues.setServiceParent(top)
    listening = ListeningService(
        endpoint_description(options["port"]), QueueFactory(queues)
    )
    listening.setServiceParent(top)
    CleanExitOnSigterm().setServiceParent(top)
    return top


__all__ = ["MiB", "Options", "makeService"]
