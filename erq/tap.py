"""twistd's way in: command-line options turned into a running server.

Start-up is where an operator learns what is wrong, so every failure there
is one line naming the option and its value, with exit status 1: no
traceback, no usage text, no pid file left behind. twistd runs
``makeService`` before it forks into the background (its parent process
then waits on a status pipe for the daemon to say how its start went), so
everything that can be checked is checked there, in the process the
operator is looking at: the options, the configuration file, the endpoint
description (and the TLS libraries an ``ssl:`` endpoint needs), the data
directory, and the port, which is bound there and held until the queues are
replayed and the server listens on it.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorFromThreads,
)
from twisted.logger import Logger
from twisted.python import usage

from erq import __version__
from erq.config import Config, ConfigError, SyncPolicy, load_config, parse_option
from erq.protocol import QueueFactory
from erq.service import QueueService
from erq.status import ServerStatus

if TYPE_CHECKING:
    from erq.admin import AdminService

DEFAULT_PORT = 22122

#: Where a bare port number, or a tcp:/ssl: description that names no
#: interface, listens: nothing beyond this machine reaches a queue by default.
LOOPBACK = "127.0.0.1"

#: The listen backlog when the description sets none, memcached's: a burst
#: of clients (a fleet of workers restarting) waits in the kernel rather
#: than being dropped and retrying a second later.
BACKLOG = 1024

#: Microseconds twistd's reactor polls before it sleeps, while events come
#: that soon (see "Polling before sleeping" in ``erq.epoll``), and the most
#: ``--idle-poll`` takes.
DEFAULT_IDLE_POLL_US = 100
MAX_IDLE_POLL_US = 10_000


def default_idle_poll_us() -> int:
    """``--idle-poll`` when not given: ``DEFAULT_IDLE_POLL_US`` where the
    journal's C engine is built, else 0.  Without it the journal's thread
    runs Python, and needs the GIL that a polling reactor takes back
    between polls: each batch would wait for the polling to end (lock-step
    durable sets went about 7 % slower, at a third more CPU each)."""
    from erq.journal import engine

    return DEFAULT_IDLE_POLL_US if engine.Engine is not None else 0


#: The mode of a unix: socket whose description sets none (Twisted's own
#: default, 666, lets every local user in).
UNIX_MODE = "600"

#: Each endpoint type's positional arguments, in order (Twisted's parsers).
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": (
        "port",
        "privateKey",
        "certKey",
        "sslmethod",
        "interface",
        "backlog",
        "extraCertChain",
        "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
}

log = Logger()


class StartupError(SystemExit):
    """A server that cannot start: one line for the operator, exit status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(f"erq: {message}")


def _endpoint_arguments(description: str) -> tuple[str, dict[str, str]]:
    """An endpoint description's type and its arguments by name.

    The one use of a private Twisted name outside ``erq.protocol.transport``:
    Twisted's own tokenizer (``endpoints._parse``), so that escapes (``\\:``)
    read exactly as ``serverFromString`` reads them; there is no public
    one.  ``tests/test_tap.py`` (escaped ``tcp6`` interfaces, a trailing
    backslash) fails if a Twisted release changes it."""
    try:
        positional, named = endpoints._parse(description)
    except RuntimeError:
        # Its generator ran out of text after a backslash.
        raise ValueError("the description ends with a lone backslash") from None
    kind = positional[0] if positional else ""
    names = _POSITIONAL.get(kind, ())
    arguments = dict(zip(names, positional[1:], strict=False))
    arguments.update(named)
    return kind, arguments


def endpoint_description(port: str) -> str:
    """The endpoint erq listens on for a ``port`` setting.

    A bare port number listens on loopback only; so does a ``tcp:`` or
    ``ssl:`` description that names no interface (``tcp6:``: ``::1``), so
    that listening beyond this machine is always said in so many words
    (``interface=0.0.0.0``). A description that sets no ``backlog`` gets
    `BACKLOG`, and a ``unix:`` one that sets no ``mode`` gets `UNIX_MODE`.
    """
    if port.isdigit():
        return f"tcp:{port}:interface={LOOPBACK}:backlog={BACKLOG}"
    kind, arguments = _endpoint_arguments(port)
    if kind not in _POSITIONAL:
        return port
    added = []
    if "interface" not in arguments and kind in ("tcp", "ssl"):
        added.append(f"interface={LOOPBACK}")
    if "interface" not in arguments and kind == "tcp6":
        added.append("interface=\\:\\:1")
    if "backlog" not in arguments:
        added.append(f"backlog={BACKLOG}")
    if "mode" not in arguments and kind == "unix":
        added.append(f"mode={UNIX_MODE}")
    return ":".join([port, *added])


def _whole(text: str, most: int) -> bool:
    """Whether ``text`` is a whole number from 0 to ``most`` in ASCII
    digits (``str.isdigit`` alone lets other scripts' digits through)."""
    return text.isascii() and text.isdigit() and int(text) <= most


def _check_endpoint(description: str) -> None:
    """What Twisted would report as a traceback, said in one line instead;
    `ValueError` with the reason."""
    kind, arguments = _endpoint_arguments(description)
    if kind not in _POSITIONAL:
        known = {*_POSITIONAL, *(parser.prefix for parser in _endpoint_parsers())}
        if kind not in known:
            raise ValueError(
                f"unknown endpoint type {kind!r}; known: {', '.join(sorted(known))}"
            )
    if kind in ("tcp", "tcp6", "ssl"):
        port = arguments.get("port", "")
        if not _whole(port, 65535):
            raise ValueError(
                f"expected a port number from 0 to 65535 after {kind}:, got {port!r}"
            )
    if kind == "ssl":
        try:
            importlib.import_module("OpenSSL")
        except ImportError:
            raise ValueError(
                "ssl: needs the TLS libraries (pyOpenSSL, service_identity):"
                " pip install 'erq[tls]'"
            ) from None
    if kind == "unix":
        directory = os.path.dirname(arguments.get("address", "")) or "."
        if not os.path.isdir(directory):
            raise ValueError(f"no directory {directory} for the socket")


def _shown(value: str) -> str:
    """An option's value in a message: as typed, quoted if it would not
    read as one word."""
    if value and value.isprintable() and not any(c.isspace() for c in value):
        return value
    return json.dumps(value)


def _endpoint_parsers() -> list[Any]:
    """The endpoint types that plugins add to Twisted's own."""
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return list(getPlugins(IStreamServerEndpointStringParser))


def _reason(error: BaseException) -> str:
    """An exception as the rest of a one-line message."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _check_data_dir(path: str) -> None:
    """A data directory that exists and can be written, or that can be
    made; `ValueError` otherwise."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError("not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError("the directory is not writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot make it: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot make it: {parent} is not writable")


def _reserve(description: str) -> socket.socket | None:
    """Bind, without listening, the address a tcp:/tcp6:/ssl: description
    listens on: a port in use fails here, before twistd forks, and nothing
    else takes the port while the queues are replayed. A client that comes
    meanwhile is refused, not left waiting. `OSError` when it cannot bind."""
    kind, arguments = _endpoint_arguments(description)
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    port = int(arguments["port"])
    if port == 0:
        return None
    interface = arguments.get("interface", "")
    ipv6 = kind == "tcp6" or isIPv6Address(interface)
    reserved = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET)
    try:
        # As Twisted binds: a restart does not wait for old connections.
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.bind((interface, port))
    except OSError as error:
        reserved.close()
        shown = f"[{interface}]" if ":" in interface else interface or "*"
        raise OSError(f"cannot listen on {shown}:{port}: {_reason(error)}") from None
    except BaseException:
        reserved.close()
        raise
    return reserved


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
        [
            "auth-file",
            None,
            None,
            "File of user:password lines: clients must log in first.",
        ],
        [
            "status",
            None,
            None,
            "Start up, readonly or quiescent, whatever status the data "
            "directory kept. [default: the status kept, else up]",
        ],
        [
            "admin-port",
            None,
            None,
            "Where the admin HTTP server (stats, metrics, health, a status "
            "page) listens: a port number (127.0.0.1 only) or an endpoint "
            "description, as for --port. [default: none]",
        ],
        [
            "idle-poll",
            None,
            None,
            "Microseconds the reactor polls for events before it sleeps, "
            "while they come that soon (see erq/epoll.py); 0: it sleeps at "
            f"once. [default: {DEFAULT_IDLE_POLL_US}, 0 without the journal's "
            "C extension]",
        ],
    ]
    optFlags = [
        ["no-shutdown", None, "Refuse the shutdown command."],
        [
            "plain-reactor",
            None,
            "Run Twisted's epoll reactor as it is, without erq's cheaper "
            "dispatch of reads (see erq/epoll.py).",
        ],
    ]

    #: Each option that sets a setting, and the setting's name.
    settings = {
        "port": "port",
        "data-dir": "data_dir",
        "sync": "sync_journal",
        "max-memory-size": "max_memory_size",
        "max-connections": "max_connections",
        "auth-file": "auth_file",
        "status": "status",
        "admin-port": "admin_port",
    }

    def opt_version(self) -> None:
        """Display erq's version (and Twisted's) and exit."""
        from twisted import __version__ as twisted_version

        print(f"erq {__version__} (Twisted {twisted_version})")
        sys.exit(0)

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
        self.idle_poll = self._idle_poll()
        path = self["config"]
        try:
            config = load_config(path) if path else Config()
            self.config = config.with_overrides(**overrides)
        except ConfigError as error:
            text = str(error)
            users = overrides.get("auth_file")
            if users is not None and text.startswith(f"{users}:"):
                # The auth file the command line named: say so.
                text = f"--auth-file {text}"
            raise StartupError(text) from None
        self.overrides = overrides

    def _idle_poll(self) -> float:
        """Seconds from ``--idle-poll``, checked."""
        text = self["idle-poll"]
        if text is None:
            return default_idle_poll_us() / 1e6
        if not _whole(text, MAX_IDLE_POLL_US):
            raise StartupError(
                f"--idle-poll {_shown(text)}: expected whole microseconds,"
                f" 0 to {MAX_IDLE_POLL_US}"
            )
        if self["plain-reactor"] and int(text):
            raise StartupError(
                f"--idle-poll {text}: only erq's dispatch polls; --plain-reactor"
                " runs Twisted's reactor as it is"
            )
        return int(text) / 1e6

    def named(self, key: str, value: object) -> str:
        """The setting ``key`` with ``value`` as the operator gave it: the
        option, or the key in the configuration file."""
        option = next(name for name, setting in self.settings.items() if setting == key)
        if self[option] is None and self["config"]:
            return f"server.{key} {json.dumps(value)} in {self['config']}"
        return f"--{option} {_shown(str(value))}"


def _address(kind: str, port: IListeningPort) -> tuple[str, bool]:
    """How a listening port is named in the log, and whether only this
    machine can reach it."""
    address: Any = port.getHost()
    if isinstance(address, UNIXAddress):
        name = address.name
        path = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        return f"unix {path}", True
    host = address.host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    shown = f"[{host}]" if ":" in host else host
    return f"{'tls' if kind == 'ssl' else 'tcp'} {shown}:{address.port}", loopback


class ListeningService(StreamServerEndpointService):
    """A listening port whose failure to bind stops twistd with a message
    rather than a server that runs and serves nothing.

    ``reservation`` is the address already bound by `makeService`, closed
    just before the endpoint binds it again. Should binding fail after all
    (another process took the port in between), twistd in the background
    must hear of it through its status pipe, which only an ``Exception``
    reaches (``daemon``); in the foreground the message is enough, and the
    ``pidfile`` that twistd wrote is removed.
    """

    def __init__(
        self, reactor: IReactorCore, description: str, factory: IProtocolFactory
    ) -> None:
        super().__init__(serverFromString(reactor, description), factory)
        self.description = description
        self.kind = _endpoint_arguments(description)[0]
        self._raiseSynchronously = True
        self.reservation: socket.socket | None = None
        self.daemon = False
        self.pidfile: str | None = None
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        if self.reservation is not None:
            self.reservation.close()
            self.reservation = None
        try:
            super().privilegedStartService()
        except Exception as error:
            message = f"erq: cannot listen on {self.description}: {_reason(error)}"
            log.error("{message}", message=message)
            if self.daemon:
                raise RuntimeError(message) from None
            if self.pidfile:
                try:
                    os.unlink(self.pidfile)
                except OSError:
                    pass
            raise SystemExit(message) from None
        waiting = self._waitingForPort
        assert waiting is not None
        waiting.addCallback(self._bound)

    def _bound(self, port: IListeningPort | None) -> IListeningPort | None:
        self.port = port
        return port

    def address(self) -> tuple[str, bool] | None:
        """The address listened on, and whether it is loopback only."""
        if self.port is None:
            return None
        return _address(self.kind, self.port)

    def stopService(self) -> Deferred[None]:
        def forget(result: object) -> None:
            # So that a start after this stop listens again.
            self._waitingForPort = None
            self.port = None

        return super().stopService().addBoth(forget)


def reactor_text(reactor: object) -> str:
    """Which reactor the server runs on, for the log."""
    kind = type(reactor)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if kind.__module__ == "erq.epoll":
        idle_poll: float = getattr(reactor, "idle_poll", 0.0)
        polls = (
            f"polling {round(idle_poll * 1e6)} microseconds before it sleeps"
            if idle_poll
            else "sleeping at once when idle"
        )
        return f"{name} (Twisted's epoll reactor, its reads dispatched by erq, {polls})"
    return name


def sync_policy_text(policy: SyncPolicy) -> str:
    """A sync policy as the log says it: always, never, every 50ms."""
    if isinstance(policy, str):
        return policy
    return f"every {policy * 1000:g}ms"


class Announcement(Service):
    """The log's first word on a started server: what it is, where it
    listens, where its queues live, and what it was told."""

    def __init__(
        self,
        queues: QueueService,
        listening: list[ListeningService],
        config_path: str | None,
        admin: ListeningService | None = None,
        reactor: object = None,
    ) -> None:
        self.queues = queues
        self.listening = listening
        self.config_path = config_path
        self.admin = admin
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        config = self.queues.config
        addresses = [listening.address() for listening in self.listening]
        shown = [address for address in addresses if address is not None]
        data_dir = self.queues.data_dir
        log.info(
            "erq {version} listening on {addresses}; data directory {data_dir};"
            " configuration {config}; sync {sync}",
            version=__version__,
            addresses=", ".join(name for name, _ in shown) or "nothing",
            data_dir=os.path.abspath(data_dir) if data_dir else "none (in memory)",
            config=self.config_path or "none (defaults)",
            sync=sync_policy_text(config.defaults.sync_journal),
        )
        if self.reactor is not None:
            log.info("erq runs on {reactor}", reactor=reactor_text(self.reactor))
        status = self.queues.status
        if status is not ServerStatus.UP:
            log.warn(
                "erq starts {status}: {reason} until the status command (or"
                " --status) says otherwise",
                status=status.name,
                reason=status.reason,
            )
        auth_file = getattr(config.server, "auth_file", None)
        for name, loopback in shown:
            if not loopback and not auth_file:
                log.warn(
                    "erq listens beyond loopback on {address} and no auth_file"
                    " is set: anyone who can reach it can read, write and"
                    " flush every queue",
                    address=name,
                )
        admin = None if self.admin is None else self.admin.address()
        if admin is not None:
            name, loopback = admin
            log.info("erq admin HTTP server on {address}", address=name)
            if not loopback and not (auth_file and config.server.admin_auth):
                log.warn(
                    "erq's admin HTTP server listens beyond loopback on"
                    " {address} without auth: anyone who can reach it can read"
                    " every queue's name and figures",
                    address=name,
                )


class SignalHandlers(Service):
    """SIGTERM stops the server as ``shutdown`` does, and twistd exits 0;
    SIGHUP reloads the configuration file, as ``reload`` does.

    Twisted's own SIGTERM handler stops the reactor too, but then makes
    twistd kill itself with the signal, which reads as a crash."""

    def __init__(self, reactor: IReactorCore, queues: QueueService) -> None:
        self.reactor = reactor
        self.queues = queues

    def startService(self) -> None:
        super().startService()
        # After the reactor installs its handlers, which would replace ours.
        self.reactor.addSystemEventTrigger("after", "startup", self._install)

    def _install(self) -> None:
        if self.running:
            signal.signal(signal.SIGTERM, self._terminated)
            signal.signal(signal.SIGHUP, self._hung_up)

    def _terminated(self, number: int, frame: FrameType | None) -> None:
        Logger().info("Received SIGTERM, shutting down.")
        IReactorFromThreads(self.reactor).callFromThread(self.reactor.stop)

    def _hung_up(self, number: int, frame: FrameType | None) -> None:
        IReactorFromThreads(self.reactor).callFromThread(
            self.queues.live_config.reload_logged
        )


def makeService(options: Any, reactor: Any = None) -> MultiService:
    """The server: a ``QueueService`` and the port that serves it, on
    ``reactor`` (by default the one twistd installed).

    Under twistd (``options.parent`` is twistd's own options) this runs
    before the process forks into the background: every check that can fail
    is made here, as a `StartupError`.
    """
    if reactor is None:
        # twistd has installed the reactor it was asked for by now; this is
        # the one place that takes it.
        from twisted.internet import reactor
    config: Config = options.config
    twistd: Mapping[str, Any] | None = getattr(options, "parent", None)
    server = config.server

    data_dir = server.data_dir
    # twistd changes to its --rundir only after this.
    rundir = twistd.get("rundir", ".") if twistd is not None else "."
    try:
        _check_data_dir(os.path.join(rundir or ".", data_dir))
    except ValueError as error:
        raise StartupError(f"{options.named('data_dir', data_dir)}: {error}") from None

    top = MultiService()
    queues = QueueService(
        config,
        reactor=reactor,
        data_dir=data_dir,
        config_path=options["config"],
        overrides=options.overrides,
    )
    queues.setServiceParent(top)
    if twistd is not None:
        # Before the fork: a directory in use is one line, and the lock
        # (held by an open file) goes on with the daemon.
        try:
            queues.hold_data_dir(os.path.join(rundir or ".", data_dir))
            queues.kept_status.load(os.path.join(rundir or ".", data_dir))
        except ConfigError as error:
            raise StartupError(str(error)) from None

    named = options.named("port", server.port)
    listening = _listening(reactor, named, server.port, QueueFactory(queues), twistd)
    listening.setServiceParent(top)
    admin = _admin(reactor, options, queues, twistd)
    if admin is not None:
        admin[0].setServiceParent(top)

    Announcement(
        queues,
        [listening],
        options["config"],
        None if admin is None else admin[1],
        reactor,
    ).setServiceParent(top)
    SignalHandlers(reactor, queues).setServiceParent(top)
    return top


def _listening(
    reactor: Any,
    named: str,
    port: str,
    factory: Any,
    twistd: Mapping[str, Any] | None,
) -> ListeningService:
    """A port for ``factory``, checked; under twistd also bound now, before
    it forks, so that a port in use is a one-line error ``named`` names."""
    try:
        description = endpoint_description(port)
        _check_endpoint(description)
        listening = ListeningService(reactor, description, factory)
    except Exception as error:
        raise StartupError(f"{named}: {_reason(error)}") from None
    if twistd is not None:
        try:
            listening.reservation = _reserve(description)
        except OSError as error:
            raise StartupError(f"{named}: {error}") from None
        listening.daemon = not twistd.get("nodaemon", True)
        listening.pidfile = twistd.get("pidfile") or None
    return listening


def _admin(
    reactor: Any,
    options: Any,
    queues: QueueService,
    twistd: Mapping[str, Any] | None,
) -> tuple[AdminService, ListeningService] | None:
    """The admin HTTP server, when ``admin_port`` names one, and its port,
    checked, and bound before twistd forks, as the queues' port is."""
    port = options.config.server.admin_port
    if port is None:
        return None
    # Imported only here: twisted.web and prometheus_client are a good part
    # of a start's time, and a server without an admin port needs neither.
    from erq.admin import AdminService

    named = options.named("admin_port", port)
    admin = AdminService(queues)
    listening = _listening(reactor, named, port, admin.site, twistd)
    listening.setServiceParent(admin)
    admin.listening = listening
    return admin, listening


__all__ = ["Options", "StartupError", "endpoint_description", "makeService"]
