"""erq.admin.site: the admin server started and stopped with the queue
server, and its status page as a real browser (headless Chromium) shows
it, at a laptop's width and at a phone's."""

from __future__ import annotations

import json
import socket
from html.parser import HTMLParser
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.support import (
    CLIENT_TIMEOUT,
    LOCALHOST,
    AdminServer,
    http_request,
    require_browser,
    run_browser,
    temporary_directory,
)

#: Names a page must show as they are: markup, quotes, an ampersand.
ODD_NAMES = ("<b>bold", "a&amp;b\"c'd", "<script>alert(1)")

#: Window sizes: a laptop's, a phone's.
LAPTOP = (1280, 800)
PHONE = (390, 844)


class Rows(HTMLParser):
    """The status page's queue rows, as a browser left its DOM: each
    row's queue name and its cells' text; and any element in the table
    body that should not be there."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.in_body = False
        self.cell: str | None = None
        self.elements: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "tbody" and attributes.get("id") == "queues":
            self.in_body = True
        elif not self.in_body:
            return
        self.elements.append(tag)
        if tag == "tr" and "data-queue" in attributes:
            self.rows.append({"queue": attributes["data-queue"], "cells": {}})
        elif tag in ("th", "td") and self.rows:
            self.cell = attributes.get("data-label") or "name"
            self.rows[-1]["cells"][self.cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        if tag in ("th", "td"):
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.in_body and self.cell is not None and self.rows:
            self.rows[-1]["cells"][self.cell] += data


class SiteCase(TestCase):
    timeout = 120

    def serve(self) -> AdminServer:
        directory = temporary_directory(self)
        return AdminServer(self, "--data-dir", f"{directory}/queues")

    async def fill(self, server: AdminServer) -> dict[str, int]:
        """Queues with items and traffic; their depths."""
        queues = server.queues
        wanted = {"orders": 40, "emails": 3, "idle": 0, **dict.fromkeys(ODD_NAMES, 2)}
        for name, count in wanted.items():
            queues.create_queue(name)
            for i in range(count + 2):
                result = queues.delivery.put(name, b"x" * (100 + i), 0, 0)
                if isinstance(result, Deferred):
                    await result
            for _ in range(2):
                self.assertIsNotNone(queues.get(name, None, False, False))
        server.admin.history.sample()
        return {name: queue.items for name, queue in queues.queues.items()}


class LifeTests(SiteCase):
    async def test_starts_and_stops_with_the_server(self) -> None:
        server = self.serve()
        self.assertTrue(server.admin.running)
        self.assertEqual((await http_request(server.url("/health"))).code, 200)
        port = server.admin_port
        storage = server.queues.storage
        assert storage is not None
        self.assertEqual(storage.on_batch, server.admin.batches.observe)
        stopping = server.stop()
        assert stopping is not None
        await stopping
        self.assertFalse(server.admin.running)
        self.assertIsNone(storage.on_batch)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((LOCALHOST, port), timeout=CLIENT_TIMEOUT).close()


class BrowserTests(SiteCase):
    def setUp(self) -> None:
        require_browser()

    async def rendered(self, server: AdminServer, size: tuple[int, int]) -> Rows:
        out, _ = await run_browser(
            self,
            f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            server.url("/"),
        )
        rows = Rows()
        rows.feed(out.decode())
        return rows

    async def test_every_queue_at_both_widths(self) -> None:
        server = self.serve()
        depths = await self.fill(server)
        for size in (LAPTOP, PHONE):
            rows = await self.rendered(server, size)
            self.assertEqual([row["queue"] for row in rows.rows], sorted(depths), size)
            for row in rows.rows:
                cells = row["cells"]
                name = row["queue"]
                self.assertEqual(cells["name"], name)
                self.assertEqual(cells["Depth"], f"{depths[name]:,}", name)
                self.assertTrue(cells["Bytes"].endswith("B"), cells)
                self.assertEqual(cells["Waiters"], "0")
                self.assertEqual(cells["Open"], "0")
            # Names are text: no element came from a queue's name.
            self.assertEqual(
                set(rows.elements),
                {"tbody", "tr", "th", "td", "svg", "polygon", "polyline", "title"},
            )

    async def test_fits_a_laptop_and_a_phone(self) -> None:
        """Laid out by the browser at each width: nothing wider than the
        window, a table on the laptop, a card per queue on the phone."""
        server = self.serve()
        await self.fill(server)
        server.admin.resource.putChild(b"probe.html", Probe())
        for size, table in ((LAPTOP, True), (PHONE, False)):
            out, _ = await run_browser(
                self,
                f"--window-size={size[0]},{size[1]}",
                "--virtual-time-budget=8000",
                "--dump-dom",
                server.url(f"/probe.html?width={size[0]}"),
            )
            text = out.decode()
            start = text.index('<pre id="result">') + len('<pre id="result">')
            result = json.loads(text[start : text.index("</pre>", start)])
            self.assertEqual(result["rows"], len(server.queues.queues), size)
            self.assertEqual(result["viewport"], size[0])
            self.assertLessEqual(result["scrollWidth"], result["width"], size)
            self.assertLessEqual(result["widest"], result["width"], size)
            self.assertEqual(result["table"], table, size)


class Probe(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PROBE


#: A page of the test's own, beside the status page (same origin), that
#: loads it in a frame of the width asked for and measures its layout.
#: (A headless browser's window is never narrower than 500 pixels; a
#: frame's width is its page's viewport, media queries included.)
PROBE = b"""<!doctype html>
<html><head><meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{margin:0} iframe{border:0;height:100vh}</style></head>
<body><iframe id="page" src="/"></iframe><pre id="result">waiting</pre>
<script>
const frame = document.getElementById("page");
frame.style.width = new URLSearchParams(location.search).get("width") + "px";
let tries = 0;
const timer = setInterval(() => {
  tries += 1;
  const doc = frame.contentDocument;
  const rows = doc ? doc.querySelectorAll("#queues tr[data-queue]") : [];
  if (rows.length === 0 && tries < 60) return;
  clearInterval(timer);
  const root = doc.documentElement;
  let widest = 0;
  for (const row of rows) {
    for (const part of row.querySelectorAll("th, td, svg")) {
      widest = Math.max(widest, part.getBoundingClientRect().right);
    }
  }
  const head = doc.querySelector("thead");
  document.getElementById("result").textContent = JSON.stringify({
    rows: rows.length,
    viewport: frame.contentWindow.innerWidth,
    width: root.clientWidth,
    scrollWidth: root.scrollWidth,
    widest: Math.ceil(widest),
    table: frame.contentWindow.getComputedStyle(head).display !== "none",
  });
}, 100);
</script></body></html>
"""
