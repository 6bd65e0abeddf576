"""The server's status as its data directory keeps it across restarts.

A server taken out of rotation (``READONLY``, ``QUIESCENT``; see
``erq.status``) must stay out when it restarts, or a crash would put it
back in.  So the status is decided once, as the server starts: ``--status``
when given (then the status kept is not even read, so that it replaces one
that cannot be), else the status kept in the data directory, else
``status`` in ``[server]`` (a first start); and each change is kept there
again.  A status that cannot be kept stops a start, but not a change: the
server goes on in the new status until a restart, and says so.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress

from erq.config import ConfigError
from erq.connections import describe_peer
from erq.status import ServerStatus
from erq.storage import STATUS_FILE

if TYPE_CHECKING:
    from erq.service import QueueService


class KeptStatus:
    """Decides the status of the service it is given, and keeps it in the
    service's data directory (if it has one) as it changes.  The status
    itself is the service's ``status``, which the protocol reads on every
    request."""

    def __init__(self, service: QueueService) -> None:
        self._service = service
        self._loaded = False

    def load(self, path: str | None = None) -> None:
        """Decide the status the server starts in, once, and keep it.
        Raises `ConfigError`, naming the file, when the status kept there
        cannot be read or is wrong, or the status cannot be kept.  ``path``
        names the data directory as ``QueueService.hold_data_dir`` does."""
        if self._loaded:
            return
        service = self._service
        storage = service.storage
        explicit = service.live_config.overrides.get("status")
        stored = None
        if storage is not None and explicit is None:
            try:
                stored = storage.read_status(path)
            except ConfigError as error:
                # Nothing started: the directory is free for another try.
                storage.release()
                raise ConfigError(
                    f"{error.reason}; --status replaces it", error.source
                ) from None
        status = explicit or stored or service.config.server.status
        if storage is not None and status is not stored:
            try:
                storage.save_status(status, path)
            except OSError as error:
                storage.release()
                file = os.path.join(path or storage.data_dir, STATUS_FILE)
                raise ConfigError(
                    f"cannot write: {error.strerror}",
                    f"status file {os.path.abspath(file)}",
                ) from None
        service.status = status
        self._loaded = True

    def set(self, status: ServerStatus, by: IAddress | str) -> str | None:
        """What the server serves from now on, as ``by`` asked (a client's
        address, or words that say who); a change is logged.  Going
        quiescent answers every waiting get at once.  Returns why the
        status could not be kept in the data directory (it holds from now
        on all the same, until a restart), or ``None``."""
        service = self._service
        old, service.status = service.status, status
        if status is old:
            return None
        log = service.log
        log.info(
            "Server status {status} (was {old}), as {peer} asked",
            status=status.name,
            old=old.name,
            peer=by if isinstance(by, str) else describe_peer(by),
        )
        if not status.hands_out:
            for connection in service.connections:
                connection.stop_waiting()
        if service.storage is None:
            return None
        try:
            service.storage.save_status(status)
        except OSError as error:
            why = f"status not kept for a restart: {error.strerror}"
            log.error("Server status {status}: {why}", status=status.name, why=why)
            return why
        return None
