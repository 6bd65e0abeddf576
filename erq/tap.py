"""twistd's way in: command-line options turned into a running server.

Start-up is where an operator learns what is wrong, so a bad option or
configuration file is one line naming the option (or the file's key) and
its value, with exit status 1 (`StartupError`): twistd would print a usage
error after the whole usage text, where it is easily missed.
"""

from __future__ import annotations

import json
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

from erq.config import Config, ConfigError, load_config, parse_option
from erq.protocol import QueueFactory
from erq.service import QueueService

DEFAULT_PORT = 22122


def endpoint_description(port: str) -> str:
    """A bare port number listens on loopback only: safe by default."""
    if port.isdigit():
        return f"tcp:{port}:interface=127.0.0.1"
    return port


class StartupError(SystemExit):
    """A server that cannot start: one line for the operator, exit status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(f"erq: {message}")


def _shown(value: str) -> str:
    """An option's value in a message: as typed, quoted if it would not
    read as one word."""
    if value and value.isprintable() and not any(c.isspace() for c in value):
        return value
    return json.dumps(value)


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
            "description such as tcp:22122:interface=0.0.0.0, "
            "ssl:22122:privateKey=key.pem:certKey=cert.pem or "
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
            "back from the journal: 134217728 or 128MiB.",
        ],
        [
            "max-connections",
            None,
            None,
            "Most client connections at once, or unlimited.",
        ],
    ]
    optFlags = [["no-shutdown", None, "Refuse the shutdown command."]]

    #: Each option that sets a setting, and the setting's name.
    settings = {
        "port": "port",
        "data-dir": "data_dir",
        "sync": "sync_journal",
        "max-memory-size": "max_memory_size",
        "max-connections": "max_connections",
    }

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Options parsed, or `StartupError`: twistd would print a usage
        error after the whole usage text, where it is easily missed."""
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            raise StartupError(
                f"{error} (twistd erq --help lists the options)"
            ) from None

    def postOptions(self) -> None:
        overrides: dict[str, Any] = {}
        for option, key in self.settings.items():
            text = self[option]
            if text is None:
                continue
            try:
                value = parse_option(key, text)
            except ValueError as error:
                raise StartupError(f"--{option} {_shown(text)}: {error}") from None
            if key == "max_connections" and value is None:
                value = "unlimited"
            overrides[key] = value
        if self["no-shutdown"]:
            overrides["allow_shutdown"] = False
        path = self["config"]
        try:
            config = load_config(path) if path else Config()
            self.config = config.with_overrides(**overrides)
        except ConfigError as error:
            raise StartupError(str(error)) from None
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


__all__ = ["Options", "StartupError", "makeService"]
