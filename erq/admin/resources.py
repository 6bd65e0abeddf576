"""The admin server's pages, as twisted.web resources.

Everything here only reads the service.  The root resource is the gate:
a method other than GET or HEAD gets 405 whatever the path, and with an
auth file (and ``admin_auth``) a request without one of its users gets
401 with a basic-auth challenge, before any page is looked up.  Both are
decided at each request from the service's configuration as it is then,
so a ``reload`` that adds or drops the auth file applies at once.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from erq.admin.figures import health, page_document, stats_document
from erq.connections import describe_peer

if TYPE_CHECKING:
    from erq.admin.history import History
    from erq.service import QueueService

#: What the status page may load: its own script and style, from here.
PAGE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; "
    b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'self'; "
    b"base-uri 'none'; form-action 'none'"
)

#: The page's files (package data), and their content types.
ASSETS = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"admin.js": ("admin.js", b"text/javascript; charset=utf-8"),
    b"admin.css": ("admin.css", b"text/css; charset=utf-8"),
}


def _common(request: Request, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")


class _Leaf(Resource):
    isLeaf = True


class NotAllowed(_Leaf):
    """Every page is read-only."""

    def render(self, request: Request) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"allow", b"GET, HEAD")
        _common(request, b"text/plain; charset=utf-8")
        return b"405 method not allowed: the admin server is read-only\n"


class Unauthorized(_Leaf):
    def render(self, request: Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Basic realm="erq", charset="UTF-8"')
        _common(request, b"text/plain; charset=utf-8")
        return b"401 unauthorized: log in as a user of the server's auth file\n"


class Asset(_Leaf):
    """A file of the status page, read once from the package."""

    def __init__(self, name: str, content_type: bytes) -> None:
        super().__init__()
        self.data = resources.files(__package__).joinpath("static", name).read_bytes()
        self.content_type = content_type

    def render_GET(self, request: Request) -> bytes:
        _common(request, self.content_type)
        if self.content_type.startswith(b"text/html"):
            request.setHeader(b"content-security-policy", PAGE_POLICY)
            request.setHeader(b"referrer-policy", b"no-referrer")
        return self.data


class Stats(_Leaf):
    """``/stats.json``: what ``stats`` and ``dump_stats`` report."""

    def __init__(self, service: QueueService) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        _common(request, b"application/json")
        return json.dumps(stats_document(self.service)).encode()


class PageFigures(_Leaf):
    """``/page.json``: what the status page shows."""

    def __init__(self, service: QueueService, history: History) -> None:
        super().__init__()
        self.service = service
        self.history = history

    def render_GET(self, request: Request) -> bytes:
        _common(request, b"application/json")
        return json.dumps(page_document(self.service, self.history)).encode()


class Metrics(_Leaf):
    """``/metrics``: for Prometheus, in the format its ``Accept`` asks for
    (its text format, or OpenMetrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(
            accept.decode("latin-1") if accept else ""
        )
        _common(request, content_type.encode())
        return encoder(self.registry)


class Health(_Leaf):
    """``/health``: 200 and the status for a server that should get
    traffic, 503 for one that should not (for load balancers)."""

    def __init__(self, service: QueueService) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        healthy, name = health(self.service)
        request.setResponseCode(200 if healthy else 503)
        _common(request, b"text/plain; charset=utf-8")
        return name.encode() + b"\n"


class AdminRoot(Resource):
    """The admin server's root: the gate, then the pages."""

    def __init__(
        self, service: QueueService, history: History, registry: CollectorRegistry
    ) -> None:
        super().__init__()
        self.service = service
        for path, (name, content_type) in ASSETS.items():
            self.putChild(path, Asset(name, content_type))
        self.putChild(b"stats.json", Stats(service))
        self.putChild(b"page.json", PageFigures(service, history))
        self.putChild(b"metrics", Metrics(registry))
        self.putChild(b"health", Health(service))

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if request.method not in (b"GET", b"HEAD"):
            return NotAllowed()
        if not self.authorized(request):
            return Unauthorized()
        child = self.children.get(path)
        if child is None or request.postpath:
            return notFound()
        return child

    def authorized(self, request: Request) -> bool:
        """Whether the request may read: with no auth file, or
        ``admin_auth = false``, anyone; else a user of the file."""
        config = self.service.config
        credentials = config.credentials
        if credentials is None or not config.server.admin_auth:
            return True
        if credentials.check(request.getUser(), request.getPassword()):
            return True
        if request.getHeader(b"authorization") is not None:
            self.service.warn_limited(
                "admin login failure",
                "Refused an admin request from {peer}: wrong user or password",
                peer=describe_peer(request.getClientAddress()),
            )
        return False
