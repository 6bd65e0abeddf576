"""Reading a running server's configuration again (``reload``, SIGHUP),
and applying it.

What can change while the server runs changes: queue settings, limits, the
auth file's users, the expiry sweep.  What cannot (the port is bound, the
journals are open in the data directory) keeps its running value until a
restart, and the log says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from erq.config import Config, ConfigError, fanout_parent, load_config

if TYPE_CHECKING:
    from erq.queue import Queue
    from erq.service import QueueService


class NoConfigurationFile(ConfigError):
    """A reload of a server started without a configuration file: nothing
    is read, so nothing may be said to be reloaded."""

    def __init__(self) -> None:
        super().__init__("no configuration file")
        self.args = (self.reason,)


def read_again(
    running: Config, path: str | None, overrides: Mapping[str, Any], log: Logger
) -> Config:
    """The configuration to run with from now on: ``path`` read again with
    the command line's ``overrides`` on top, the port and data directory of
    ``running`` kept.  Raises `ConfigError`, when the file does not parse or
    validate, and `NoConfigurationFile` when there is nothing to read
    again."""
    if path is None:
        if running.server.auth_file is None:
            raise NoConfigurationFile()
        # The auth file is read again even so.
        return running.with_credentials_read_again()
    config = load_config(path).with_overrides(**overrides)
    server = running.server
    if (config.server.port, config.server.data_dir) != (server.port, server.data_dir):
        # The port is bound and the journals are open: the file's new values
        # wait for a restart, and the settings say what is in use.
        log.warn(
            "Port and data directory stay {port} and {data_dir} until "
            "the server restarts",
            port=server.port,
            data_dir=server.data_dir,
        )
        config = replace(
            config,
            server=replace(config.server, port=server.port, data_dir=server.data_dir),
        )
    return config


class LiveConfig:
    """The configuration of a running service: read again from its file,
    and applied to the service's live queues, connections and limits.  The
    configuration in use is the service's ``config``."""

    def __init__(
        self,
        service: QueueService,
        path: str | None,
        overrides: Mapping[str, Any] | None,
    ) -> None:
        self._service = service
        #: The file that ``reload`` reads again (``None``: none was given).
        self.path = path
        #: The command line's settings (``Config.with_overrides``
        #: keywords), applied on top of the file each time it is read.
        self.overrides = dict(overrides or {})

    def reload(self) -> None:
        """Read the configuration file again and apply it to live queues.

        Raises `ConfigError`, changing nothing, when the file does not parse
        or validate, and `NoConfigurationFile` when there is nothing to read
        again.  The port and the data directory stay as they are.
        """
        service = self._service
        self.apply(read_again(service.config, self.path, self.overrides, service.log))

    def reload_logged(self, by: str = "SIGHUP", *, reraise: bool = False) -> None:
        """``reload``, telling the log how it went and what asked for it
        (``by``); a `ConfigError` is raised again if ``reraise``."""
        log = self._service.log
        try:
            self.reload()
        except ConfigError as error:
            log.error(
                "Configuration not reloaded on {by}: {why}", by=by, why=str(error)
            )
            if reraise:
                raise
        else:
            log.info(
                "Reloaded configuration from {path} on {by}", path=self.path, by=by
            )

    def apply(self, config: Config) -> None:
        """Use ``config`` from now on, for live queues too."""
        service = self._service
        old = service.config
        sweep_changed = config.server.expiry_sweep != old.server.expiry_sweep
        required = config.credentials is not None
        login_changed = required != (old.credentials is not None)
        service.config = config
        service.memory.set_cap(config.server.max_memory_size)
        if login_changed:
            # Logged-in connections stay so; the others may now need to.
            for connection in service.connections:
                connection.login_required(required)
        service.delivery.configure(config)
        for queue in service.queues.values():
            self.configure(queue)
        if service.running:
            self.take_effect()
            if sweep_changed:
                service.start_sweeper()

    def configure(self, queue: Queue) -> None:
        """Give ``queue`` its settings, and its journal its sync policy."""
        settings = self._service.settings_for(queue.name)
        queue.settings = settings
        if queue.journal is not None:
            queue.journal.sync = settings.sync_journal
        target = settings.expire_to_queue
        queue.expiry.sink = (
            None
            if target is None
            else self._service.delivery.expire_into(queue.name, target)
        )

    def take_effect(self) -> None:
        """What the configuration asks of the queues of a running server,
        as it starts and at each change: a fanout child with its own table
        exists from the start, and an alias that hides a queue is logged."""
        service = self._service
        for name in service.config.queues:
            if fanout_parent(name) is not None:
                service.create_queue(name)
        self._warn_hidden()

    def _warn_hidden(self) -> None:
        """An alias named as a queue that exists (from before the alias, or
        from its journal) leaves that queue as it is, out of every command's
        reach but ``stats`` until the alias goes: the log says so, since its
        items are not lost but cannot be taken."""
        service = self._service
        for name in service.config.aliases:
            queue = service.queues.get(name)
            if queue is not None:
                service.log.warn(
                    "The alias {name} hides the queue {name} (items: {items})"
                    " until the alias is removed",
                    name=name,
                    items=queue.items,
                )
