"""twistd's way in: command-line options turned into a running server."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger
from twisted.python import usage

from erq.config import (
    Config,
    ConfigError,
    load_config,
    parse_size,
    parse_sync_journal,
)
from erq.protocol import QueueFactory
from erq.service import QueueService

DEFAULT_PORT = 22122


def endpoint_description(port: str) -> str:
    """A bare port number listens on loopback only: safe by default."""
    if port.isdigit():
        return f"tcp:{port}:interface=127.0.0.1"
    return port


def _integer_or_text(value: str) -> int | str:
    """An option's integer, or its text for the setting's check to name."""
    try:
        return int(value)
    except ValueError:
        return value


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run erq, a durable message queue server that speaks the memcache "
        "protocol as Kestrel does. An option given here wins over the "
        "configuration file."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (see erq.toml)."],
        [
            "port",
            "p",
            None,
            "Port number to listen on (127.0.0.1 only), or an endpoint "
            "description such as tcp:22122:interface=0.0.0.0 or "
            f"unix:/run/erq.sock. [default: {DEFAULT_PORT}]",
        ],
        [
            "data-dir",
            "d",
            None,
            "Directory holding the queues' journals. [default: ./queues]",
        ],
        [
            "sync",
            None,
            None,
            "When STORED is sent: always (after fsync, the default), never, "
            "or a duration such as 50ms (fsync that often).",
        ],
        [
            "max-memory-size",
            None,
            None,
            "Bytes of a queue kept in memory, beyond which items are read "
            "back from the journal (e.g. 128MiB).",
        ],
        ["max-connections", None, None, "Most client connections at once."],
        [
            "auth-file",
            None,
            None,
            "File of user:password lines: clients must log in first.",
        ],
    ]
    optFlags = [["no-shutdown", None, "Refuse the shutdown command."]]

    def postOptions(self) -> None:
        if self["port"] == "":
            raise usage.UsageError("--port must not be empty")
        overrides: dict[str, Any] = {
            "port": self["port"],
            "data_dir": self["data-dir"],
            "allow_shutdown": False if self["no-shutdown"] else None,
            "auth_file": self["auth-file"],
        }
        try:
            if self["sync"] is not None:
                overrides["sync_journal"] = parse_sync_journal(self["sync"])
            if self["max-memory-size"] is not None:
                overrides["max_memory_size"] = parse_size(self["max-memory-size"])
            connections = self["max-connections"]
            if connections is not None:
                overrides["max_connections"] = _integer_or_text(connections)
            overrides = {k: v for k, v in overrides.items() if v is not None}
            path = self["config"]
            config = load_config(path) if path else Config()
            self.config = config.with_overrides(**overrides)
        except (ConfigError, ValueError) as error:
            raise usage.UsageError(str(error)) from None
        self.overrides = overrides


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

    def stopService(self) -> Deferred[None]:
        def forget(result: object) -> None:
            # So that a start after this stop listens again.
            self._waitingForPort = None

        return super().stopService().addBoth(forget)


class SignalHandlers(Service):
    """SIGTERM stops the server as ``shutdown`` does, and twistd exits 0;
    SIGHUP reloads the configuration file, as ``reload`` does.

    Twisted's own SIGTERM handler stops the reactor too, but then makes
    twistd kill itself with the signal, which reads as a crash."""

    def __init__(self, queues: QueueService) -> None:
        self.queues = queues

    def startService(self) -> None:
        from twisted.internet import reactor

        super().startService()
        # After the reactor installs its handlers, which would replace ours.
        reactor.addSystemEventTrigger("after", "startup", self._install)

    def _install(self) -> None:
        if self.running:
            signal.signal(signal.SIGTERM, self._terminated)
            signal.signal(signal.SIGHUP, self._hung_up)

    def _terminated(self, number: int, frame: FrameType | None) -> None:
        from twisted.internet import reactor

        Logger().info("Received SIGTERM, shutting down.")
        IReactorFromThreads(reactor).callFromThread(IReactorCore(reactor).stop)

    def _hung_up(self, number: int, frame: FrameType | None) -> None:
        from twisted.internet import reactor

        IReactorFromThreads(reactor).callFromThread(self.queues.reload_logged)


def makeService(options: Any) -> MultiService:
    """The server: a ``QueueService`` and the port that serves it."""
    config: Config = options.config
    top = MultiService()
    queues = QueueService(
        config,
        data_dir=config.server.data_dir,
        config_path=options["config"],
        overrides=options.overrides,
    )
    queues.setServiceParent(top)
    listening = ListeningService(
        endpoint_description(config.server.port), QueueFactory(queues)
    )
    listening.setServiceParent(top)
    SignalHandlers(queues).setServiceParent(top)
    return top


__all__ = ["Options", "makeService"]
