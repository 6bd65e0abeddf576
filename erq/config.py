"""Queue and server settings, and the TOML configuration file that sets them.

Every key is optional; with no file at all every default below applies. The
file, with each key at its default::

    [server]
    port = 22122                  # a port number (listens on 127.0.0.1 only)
                                  # or an endpoint description such as
                                  # "tcp:22122:interface=0.0.0.0",
                                  # "unix:/run/erq.sock", "ssl:..."
    data_dir = "queues"           # where the journals live; a relative path
                                  # is relative to the working directory,
                                  # like the --data-dir option
    max_connections = "unlimited" # or a positive integer
    expiry_sweep = "1s"           # how often expired items are dropped and
                                  # idle queues (max_queue_age) deleted
    allow_shutdown = true         # shutdown obeyed from loopback and Unix
                                  # sockets; "any": from every connection;
                                  # false: never
    max_item_cap = "64MiB"        # the largest <bytes> any set may announce;
                                  # above it: SERVER_ERROR, connection closed
    auth_file = ""                # a file of user:password lines (see
                                  # erq.auth): clients must log in; a
                                  # relative path is relative to the working
                                  # directory; "" for none
    status = "up"                 # "up", "readonly" or "quiescent": the
                                  # status of a server's first start (then
                                  # kept in the data directory)
    admin_port = ""               # the admin HTTP server (stats, metrics,
                                  # health, a status page): a port number
                                  # (127.0.0.1 only) or an endpoint
                                  # description; "" for none
    admin_auth = true             # with an auth_file, the admin server asks
                                  # for the same users (HTTP basic auth)
    max_memory_size = "unlimited" # item bytes all queues together keep in
                                  # memory; beyond it new items live only in
                                  # the journals (erq.memory)

    [defaults]                    # every queue that does not say otherwise
    max_items = "unlimited"       # items held; a non-negative integer
    max_size = "unlimited"        # bytes held; a size
    max_item_size = "unlimited"   # bytes of one item; a size
    max_age = "none"              # a duration capping every item's expiry
    discard_old_when_full = false # true: a full queue drops its oldest items
                                  # to take a new one instead of refusing it
    journal = true                # false: items live in memory only
    sync_journal = "always"       # "always", "never" or a duration ("50ms")
    max_memory_size = "128MiB"    # beyond it items live only in the journal
    expire_to_queue = ""          # a queue name that takes expired items;
                                  # "" for none
    max_open_reads = 1            # open reads per connection per queue, >= 1
    open_timeout = "none"         # a duration after which an open read not
                                  # closed goes back to the head of its queue
    fanout_only = false           # true: keep nothing, only feed children
    max_queue_age = "none"        # a duration after which an empty, untouched
                                  # queue is deleted

    [queues.orders]               # one queue: it differs only in what it names
    max_items = 100000

    [queues."orders+audit"]       # a name that is not a bare TOML key is quoted
    max_age = "7d"

    [aliases.events]              # an alias, no queue: a set to "events"
    destinations = ["log", "mail"] # stores a copy in each destination

Values:

- A *size* is a non-negative integer of bytes or a string of a number and a
  binary unit: ``"512B"``, ``"64KiB"``, ``"128MiB"``, ``"1GiB"``, ``"2TiB"``;
  a fraction is fine when it makes whole bytes (``"1.5KiB"``). ``KB``, ``MB``,
  ``GB`` and ``TB`` are refused: whether they mean 1000 or 1024 is exactly
  the doubt a configuration file must not leave.
- A *duration* is a string of a positive number and a unit: ``"250ms"``,
  ``"30s"``, ``"5m"``, ``"1h"``, ``"7d"``, ``"1.5s"``. A bare number is refused
  (seconds or milliseconds?). One space may part number and unit, in sizes
  too (``"128 MiB"``).
- The limits ``max_items``, ``max_size``, ``max_item_size`` and
  ``max_connections`` also take ``"unlimited"``, and ``max_age``,
  ``open_timeout`` and ``max_queue_age`` take ``"none"``, and
  ``expire_to_queue`` takes ``""``: the default, written out, so that a
  queue's table can lift a limit its parent or ``[defaults]`` sets.
- Booleans are TOML booleans, counts TOML integers.

Inheritance: a queue takes ``[defaults]``; a fanout child ``a+b`` takes
instead the settings of its parent ``a`` (the name up to its first ``+``, so
``a+b+c`` is a child of ``a`` too), except ``fanout_only``, which a child
never inherits. A queue's own ``[queues.<name>]`` table then changes what it names;
it may not send a queue's expired items to the queue itself.

An alias (``[aliases.<name>]``) names one or more queues, its
``destinations``; the alias itself is never a queue. Its name may not also
be a queue's in ``[queues.<name>]``, and a destination may not be an alias:
what a set to an alias does is then always one step, plain to read.

Anything wrong (a TOML syntax error, an unknown table or key, a value of the
wrong type or an impossible one) raises `ConfigError`, naming the file, the
line and the key: ``erq.toml line 12: queues.thumbs.max_items: expected a
non-negative integer, got -5``. A command-line option wins over the file:
`Config.with_overrides`.

Each value is checked by `erq.values`; the line of each key is found by
`erq.tomllines`, since tomllib keeps no positions.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from erq.names import MAX_QUEUE_NAME, fanout_parent, valid_queue_name
from erq.status import ServerStatus
from erq.tomllines import KeyPath, dotted, key_lines
from erq.values import (
    QUEUE_KEYS,
    SERVER_KEYS,
    SyncPolicy,
    parse_duration,
    parse_option,
    parse_size,
    parse_sync_journal,
    positive_count,
    positive_seconds,
    show,
)

if TYPE_CHECKING:
    from erq.auth import Credentials

MiB = 1024 * 1024

_T = TypeVar("_T")


@dataclass(frozen=True)
class QueueSettings:
    """The settings of one queue; ``None`` means unlimited or unset."""

    max_items: int | None = None
    max_size: int | None = None
    max_item_size: int | None = None
    max_age: float | None = None
    discard_old_when_full: bool = False
    journal: bool = True
    sync_journal: SyncPolicy = "always"
    max_memory_size: int = 128 * MiB
    expire_to_queue: str | None = None
    max_open_reads: int = 1
    open_timeout: float | None = None
    fanout_only: bool = False
    max_queue_age: float | None = None

    def item_expiry(self, expiry: float | None, now: float) -> float | None:
        """When an item put at ``now`` to expire at ``expiry`` expires,
        ``max_age`` taken into account."""
        if self.max_age is None:
            return expiry
        limit = now + self.max_age
        return limit if expiry is None else min(expiry, limit)

    def over_limits(self, items: int, size: int) -> bool:
        """Whether ``items`` items of ``size`` bytes in all would break
        ``max_items`` or ``max_size``: the one place they are checked."""
        return (self.max_items is not None and items > self.max_items) or (
            self.max_size is not None and size > self.max_size
        )


@dataclass(frozen=True)
class ServerSettings:
    """The settings of the server as a whole: the ``[server]`` table."""

    #: A port number as digits, or an endpoint description.
    port: str = "22122"
    data_dir: str = "queues"
    #: ``None``: unlimited.
    max_connections: int | None = None
    #: Seconds between sweeps for expired items and idle queues.
    expiry_sweep: float = 1.0
    #: ``True``: from loopback and Unix sockets only; ``"any"``: from every
    #: connection; ``False``: never.
    allow_shutdown: bool | Literal["any"] = True
    #: The largest item a ``set`` may announce, in bytes.
    max_item_cap: int = 64 * MiB
    #: The file of ``user:password`` lines clients log in with (an absolute
    #: path when read from a file or the command line); ``None``: no login.
    auth_file: str | None = None
    #: The status of the server's first start; after it, the status kept in
    #: the data directory wins (see ``erq.status``), unless ``--status``
    #: names one.
    status: ServerStatus = ServerStatus.UP
    #: Where the admin HTTP server listens, as ``port``; ``None``: nowhere.
    admin_port: str | None = None
    #: Whether the admin server asks for the users of ``auth_file``.
    admin_auth: bool = True
    #: Item bytes all queues together hold in memory; ``None``: unlimited.
    max_memory_size: int | None = None


class ConfigError(ValueError):
    """A configuration that does not parse or validate.

    ``source`` is the file (or ``"<string>"``, or ``"command line"``),
    ``line`` the line of ``key`` in it when known, ``key`` the dotted path of
    the key at fault (``queues."orders+audit".max_items``) when there is one,
    and ``reason`` what is wrong. ``str()`` gives them in one line, fit for a
    log or a ``SERVER_ERROR`` reply.
    """

    def __init__(
        self,
        reason: str,
        source: str = "<string>",
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.key = key
        where = source if line is None else f"{source} line {line}"
        what = reason if key is None else f"{key}: {reason}"
        super().__init__(f"{where}: {what}")


def _inherited(
    defaults: QueueSettings, queues: Mapping[str, QueueSettings], name: str
) -> QueueSettings:
    """What ``name`` gets before its own table: its nearest ancestor's
    settings (without ``fanout_only``), or the defaults."""
    parent = fanout_parent(name)
    if parent is None:
        return defaults
    settings = defaults
    while parent is not None:
        if parent in queues:
            settings = queues[parent]
            break
        parent = fanout_parent(parent)
    return replace(settings, fanout_only=False) if settings.fanout_only else settings


def _resolve(
    defaults: QueueSettings,
    tables: Mapping[str, Mapping[str, Any]],
    fixed: Mapping[str, QueueSettings],
) -> dict[str, QueueSettings]:
    resolved = dict(fixed)
    # An ancestor's name is a prefix of its child's: shorter names first.
    for name in sorted(tables, key=len):
        base = _inherited(defaults, resolved, name)
        resolved[name] = replace(base, **tables[name])
    return resolved


@dataclass(frozen=True)
class Config:
    """A whole configuration: the server's settings and every queue's.

    ``queues`` holds, for each ``[queues.<name>]`` table, that queue's
    settings with inheritance already applied; `settings_for` answers for
    any queue name.
    """

    server: ServerSettings = field(default_factory=ServerSettings)
    defaults: QueueSettings = field(default_factory=QueueSettings)
    queues: dict[str, QueueSettings] = field(default_factory=dict)
    # What each table names, parsed: to resolve again after an override.
    _tables: dict[str, dict[str, Any]] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: The users of ``server.auth_file``, read when the configuration is
    #: made (so that a configuration naming an auth file always has them),
    #: or ``None`` without one.
    credentials: Credentials | None = field(default=None, repr=False, compare=False)
    #: Each alias and its destinations, in the order the file names them.
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        path = self.server.auth_file
        credentials = self.credentials
        if path is None:
            credentials = None
        elif credentials is None or credentials.path != path:
            from erq.auth import load_credentials

            credentials = load_credentials(path)
        object.__setattr__(self, "credentials", credentials)

    def with_credentials_read_again(self) -> Config:
        """This configuration with its auth file read again; `ConfigError`
        when it can no longer be read or is wrong."""
        return replace(self, credentials=None)

    def settings_for(self, name: str) -> QueueSettings:
        """The settings of the queue ``name``, table or not."""
        if name in self.queues:
            return self.queues[name]
        return _inherited(self.defaults, self.queues, name)

    def _server_overrides(self, **values: object) -> ServerSettings:
        """The server's settings with the command line's ``values`` that are
        not ``None``, each checked as the file's would be."""
        checks: dict[str, Callable[[Any], object]] = {
            **SERVER_KEYS,
            "expiry_sweep": positive_seconds,
            "max_item_cap": positive_count,
        }
        changes: dict[str, Any] = {
            key: _checked("command line", key, value, checks[key])
            for key, value in values.items()
            if value is not None
        }
        return replace(self.server, **changes)

    def with_overrides(
        self,
        *,
        port: str | int | None = None,
        data_dir: str | None = None,
        max_connections: int | Literal["unlimited"] | None = None,
        expiry_sweep: float | None = None,
        allow_shutdown: bool | Literal["any"] | None = None,
        max_item_cap: int | None = None,
        sync_journal: SyncPolicy | None = None,
        max_memory_size: int | None = None,
        auth_file: str | None = None,
        status: ServerStatus | None = None,
        admin_port: str | int | None = None,
    ) -> Config:
        """This configuration with command-line options applied; ``None``
        leaves a setting as the file has it.

        ``sync_journal`` and ``max_memory_size`` are set in the defaults, and
        so in every queue whose table (or whose ancestors' tables) does not
        set its own. ``max_connections="unlimited"`` lifts the file's limit.
        Impossible values raise `ConfigError`.
        """
        server = self._server_overrides(
            port=port,
            data_dir=data_dir,
            max_connections=max_connections,
            expiry_sweep=expiry_sweep,
            allow_shutdown=allow_shutdown,
            max_item_cap=max_item_cap,
            auth_file=auth_file,
            status=status,
            admin_port=admin_port,
        )
        queue_changes = _queue_overrides(sync_journal, max_memory_size)
        if not queue_changes:
            return replace(self, server=server)
        defaults = replace(self.defaults, **queue_changes)
        fixed = {
            name: settings
            for name, settings in self.queues.items()
            if name not in self._tables
        }
        resolved = _resolve(defaults, self._tables, fixed)
        queues = {name: resolved[name] for name in self.queues}
        return Config(
            server,
            defaults,
            queues,
            self._tables,
            self.credentials,
            aliases=self.aliases,
        )


def _queue_overrides(
    sync_journal: SyncPolicy | None, max_memory_size: int | None
) -> dict[str, Any]:
    """The command line's changes to every queue's defaults, checked."""
    changes: dict[str, Any] = {}
    if sync_journal is not None:
        policy = sync_journal
        if policy != "always" and policy != "never":
            policy = _checked("command line", "sync_journal", policy, positive_seconds)
        changes["sync_journal"] = policy
    if max_memory_size is not None:
        changes["max_memory_size"] = _checked(
            "command line", "max_memory_size", max_memory_size, positive_count
        )
    return changes


def load_config(path: str | os.PathLike[str]) -> Config:
    """The configuration in the TOML file at ``path``."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError("not UTF-8 text", source, line) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """The configuration in ``text``, a TOML document; ``source`` names it
    in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"at line (\d+)", message)
        if found is not None:
            line: int | None = int(found.group(1))
        elif "end of document" in message:
            line = text.count("\n", 0, len(text.rstrip("\r\n"))) + 1
        else:
            line = None
        raise ConfigError(message, source, line) from None
    return _Reader(text, source).read(document)


def _checked(source: str, key: str, value: object, check: Callable[[Any], _T]) -> _T:
    try:
        return check(value)
    except ValueError as error:
        raise ConfigError(str(error), source, key=key) from None


# -- the document ----------------------------------------------------------

_TABLES = ("server", "defaults", "queues", "aliases")

#: The keys of an alias's table.
_ALIAS_KEYS = ("destinations",)


class _Reader:
    """Turns a parsed TOML document into a `Config`, or the first thing
    wrong with it into a `ConfigError`."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._lines: dict[KeyPath, int] | None = None

    def error(self, path: KeyPath, reason: str) -> ConfigError:
        if self._lines is None:
            self._lines = key_lines(self.text)
        line = None
        # A key tomllib made up (a table implied by a dotted key) is found
        # through the nearest key the text spells out.
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                break
        return ConfigError(reason, self.source, line, dotted(path))

    def read(self, document: dict[str, Any]) -> Config:
        server = ServerSettings()
        defaults = QueueSettings()
        tables: dict[str, dict[str, Any]] = {}
        aliases: dict[str, tuple[str, ...]] = {}
        for key, value in document.items():
            if key == "server":
                server = ServerSettings(**self.table((key,), value, SERVER_KEYS))
            elif key == "defaults":
                defaults = QueueSettings(**self.table((key,), value, QUEUE_KEYS))
            elif key == "queues":
                tables = self.queues(value)
            elif key == "aliases":
                aliases = self.aliases(value)
            else:
                raise self.unknown((key,), value, _TABLES)
        for name in aliases:
            if name in tables:
                raise self.error(
                    ("aliases", name),
                    f"{show(name)} is also a queue, in [queues.{dotted((name,))}];"
                    " a name is either an alias or a queue",
                )
        queues = _resolve(defaults, tables, {})
        credentials = None
        if server.auth_file is not None:
            from erq.auth import load_credentials

            try:
                credentials = load_credentials(server.auth_file)
            except ConfigError as error:
                if error.line is not None:
                    raise
                # The file itself cannot be read: say where it was named.
                raise self.error(
                    ("server", "auth_file"), f"{error.source}: {error.reason}"
                ) from None
        return Config(
            server,
            defaults,
            {name: queues[name] for name in tables},
            tables,
            credentials,
            aliases=aliases,
        )

    def table(
        self, path: KeyPath, value: object, keys: dict[str, Callable[[Any], object]]
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a table, got {show(value)}")
        parsed: dict[str, Any] = {}
        for key, raw in value.items():
            parser = keys.get(key)
            if parser is None:
                raise self.unknown(path + (key,), raw, keys)
            try:
                parsed[key] = parser(raw)
            except ValueError as error:
                raise self.error(path + (key,), str(error)) from None
        return parsed

    def queues(self, value: object) -> dict[str, dict[str, Any]]:
        if not isinstance(value, dict):
            raise self.error(
                ("queues",),
                f"expected tables such as [queues.orders], got {show(value)}",
            )
        tables: dict[str, dict[str, Any]] = {}
        for name, table in value.items():
            path = ("queues", name)
            if not isinstance(table, dict):
                hint = ""
                if name in QUEUE_KEYS:
                    hint = "; a setting for every queue belongs in [defaults]"
                raise self.error(
                    path,
                    f"expected a table of queue settings, got {show(table)}{hint}",
                )
            if not valid_queue_name(name):
                raise self.error(
                    path,
                    f"bad queue name {show(name)}: a queue name is 1 to 250"
                    " printable ASCII characters, no space or '/', not"
                    " starting with '.'",
                )
            overrides = self.table(path, table, QUEUE_KEYS)
            if overrides.get("expire_to_queue") == name:
                raise self.error(
                    path + ("expire_to_queue",),
                    f"a queue cannot expire to itself, got {show(name)}",
                )
            tables[name] = overrides
        return tables

    def aliases(self, value: object) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, dict):
            raise self.error(
                ("aliases",),
                f"expected tables such as [aliases.events], got {show(value)}",
            )
        aliases: dict[str, tuple[str, ...]] = {}
        for name, table in value.items():
            path = ("aliases", name)
            if not isinstance(table, dict):
                raise self.error(
                    path,
                    f"expected a table with destinations = [...], got {show(table)}",
                )
            if not valid_queue_name(name):
                raise self.error(
                    path,
                    f"bad alias name {show(name)}: an alias is named as a queue"
                    " is, 1 to 250 printable ASCII characters, no space or '/',"
                    " not starting with '.'",
                )
            for key, raw in table.items():
                if key not in _ALIAS_KEYS:
                    raise self.unknown(path + (key,), raw, _ALIAS_KEYS)
            if "destinations" not in table:
                raise self.error(
                    path, 'no destinations: write destinations = ["<queue>", ...]'
                )
            aliases[name] = self.destinations(path + ("destinations",), table)
        for name, destinations in aliases.items():
            for destination in destinations:
                if destination in aliases:
                    raise self.error(
                        ("aliases", name, "destinations"),
                        f"{show(destination)} is an alias; the destinations of"
                        " an alias are queues",
                    )
        return aliases

    def destinations(self, path: KeyPath, table: dict[str, Any]) -> tuple[str, ...]:
        value = table["destinations"]
        if not isinstance(value, list):
            raise self.error(
                path, f"expected an array of queue names, got {show(value)}"
            )
        if not value:
            raise self.error(path, "expected at least one queue name, got []")
        seen: list[str] = []
        for destination in value:
            if not isinstance(destination, str) or not valid_queue_name(destination):
                raise self.error(
                    path, f"expected a queue name, got {show(destination)}"
                )
            if destination in seen:
                raise self.error(path, f"{show(destination)} is named twice")
            seen.append(destination)
        return tuple(seen)

    def unknown(
        self,
        path: KeyPath,
        value: object,
        known: Mapping[str, object] | tuple[str, ...],
    ) -> ConfigError:
        key = path[-1]
        reason = "unknown table" if isinstance(value, dict) else "unknown key"
        if len(path) == 1 and key in SERVER_KEYS and key in QUEUE_KEYS:
            hint = (
                "it belongs in [server] (all queues together),"
                " or in [defaults] or [queues.<name>] (each queue)"
            )
        elif len(path) == 1 and key in SERVER_KEYS:
            hint = "it belongs in [server]"
        elif len(path) == 1 and key in QUEUE_KEYS:
            hint = "it belongs in [defaults] or [queues.<name>]"
        elif path[0] == "queues" and len(path) == 3 and isinstance(value, dict):
            hint = (
                "a queue name with a dot is quoted:"
                f" [queues.{json.dumps(path[1] + '.' + key)}]"
            )
        elif close := difflib.get_close_matches(key, list(known), n=1):
            hint = f"did you mean {close[0]}?"
        elif len(path) == 1:
            hint = (
                "the file holds [server], [defaults], [queues.<name>]"
                " and [aliases.<name>]"
            )
        else:
            hint = "known: " + ", ".join(known)
        return self.error(path, f"{reason}; {hint}")


__all__ = [
    "MAX_QUEUE_NAME",
    "Config",
    "ConfigError",
    "MiB",
    "QueueSettings",
    "ServerSettings",
    "SyncPolicy",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_option",
    "parse_size",
    "parse_sync_journal",
    "fanout_parent",
    "valid_queue_name",
]
