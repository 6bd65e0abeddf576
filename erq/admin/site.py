"""The admin server as a service: its site, the sampling of the queues'
history, and the journal's batch histograms, started and stopped with the
queue server it reads."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.web.http import Request
from twisted.web.server import Site

from erq.admin.history import History
from erq.admin.metrics import registry_for
from erq.admin.resources import AdminRoot
from erq.service import QueueService


class AdminSite(Site):
    """The admin server's site: quiet in the log (a scraper polls it every
    few seconds, and ``Starting factory`` lines say nothing), and never a
    traceback to a client."""

    noisy = False
    displayTracebacks = False

    def log(self, request: Request) -> None:
        pass


class AdminService(MultiService):
    """Reads ``queues`` for the admin server's pages; the listening port
    that serves ``site`` is added as a child (``erq.tap`` does)."""

    name = "erq-admin"

    def __init__(self, queues: QueueService) -> None:
        super().__init__()
        self.queues = queues
        self.history = History(lambda: queues.queues, queues.clock)
        self.registry, self.batches = registry_for(queues)
        self.resource = AdminRoot(queues, self.history, self.registry)
        self.site = AdminSite(self.resource)
        # The listening port that serves ``site``, once ``erq.tap`` adds it.
        self.listening: object | None = None

    def startService(self) -> None:
        super().startService()
        self.history.start()
        self._observe_batches(self.batches.observe)

    def stopService(self) -> Deferred[None] | None:
        self.history.stop()
        self._observe_batches(None)
        return super().stopService()

    def _observe_batches(self, observer: Callable[[float, int], None] | None) -> None:
        """Have the journal writer, now or once it is made, tell
        ``observer`` of its batches."""
        storage = self.queues.storage
        if storage is None:
            return
        storage.on_batch = observer
        if storage.writer is not None:
            storage.writer.on_batch = observer
