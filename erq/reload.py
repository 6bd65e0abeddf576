"""Reading a running server's configuration again (``reload``, SIGHUP).

What can change while the server runs changes: queue settings, limits, the
auth file's users, the expiry sweep.  What cannot (the port is bound, the
journals are open in the data directory) keeps its running value until a
restart, and the log says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from twisted.logger import Logger

from erq.config import Config, ConfigError, load_config


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
