"""erq.admin.resources: the admin server's pages over real HTTP, with
Twisted's own client, against an admin port started with the server."""

from __future__ import annotations

import json
import os
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from erq.stats import SERVER_STATS
from erq.status import ServerStatus
from tests.support import (
    AdminServer,
    basic_auth,
    http_request,
    temporary_directory,
    write,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class AdminCase(TestCase):
    timeout = 30

    def serve(self, *arguments: str) -> AdminServer:
        directory = temporary_directory(self)
        return AdminServer(self, "--data-dir", f"{directory}/queues", *arguments)

    async def fill(self, server: AdminServer) -> None:
        """A few queues, one with a name that HTML and JSON must escape."""
        queues = server.queues
        for name, count in [("orders", 3), ("odd<b>&\"'\\name", 2), ("empty", 1)]:
            for i in range(count):
                result = queues.delivery.put(name, b"x" * (10 + i), 0, 0)
                if isinstance(result, Deferred):
                    await result
        taken = queues.get("empty", None, False, False)
        self.assertIsNotNone(taken)


class StatsTests(AdminCase):
    async def test_the_figures_of_stats_and_dump_stats(self) -> None:
        server = self.serve()
        await self.fill(server)
        response = await http_request(server.url("/stats.json"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header("content-type"), "application/json")
        document = json.loads(response.body)
        queues = server.queues
        stats = dict(queues.stats())
        # The clock's figures are whole seconds of the real clock: a second
        # may have turned between the page and these.
        for name in ("uptime", "time"):
            self.assertIn(stats[name] - document["server"][name], (0, 1), name)
        for name, value in document["server"].items():
            if name not in ("uptime", "time"):
                self.assertEqual(stats[name], value, name)
        self.assertEqual(list(document["server"]), list(SERVER_STATS))
        self.assertEqual(sorted(document["queues"]), sorted(queues.queues))
        for name, queue in queues.queues.items():
            self.assertEqual(document["queues"][name], dict(queues.queue_stats(queue)))
        self.assertIsInstance(document["server"]["curr_items"], int)
        self.assertEqual(document["queues"]["orders"]["items"], 3)

    async def test_the_figures_of_each_alias(self) -> None:
        path = os.path.join(temporary_directory(self), "erq.toml")
        with open(path, "w") as f:
            f.write('[aliases.all]\ndestinations = ["a", "b"]\n')
        server = self.serve("--config", path)
        stored = server.queues.delivery.put("all", b"hello", 0, 0)
        if isinstance(stored, Deferred):
            await stored
        document = json.loads((await http_request(server.url("/stats.json"))).body)
        self.assertEqual(
            document["aliases"],
            {"all": {"put_items": 1, "put_bytes": 5, "children": ["a", "b"]}},
        )

    async def test_fanout_children_as_a_list(self) -> None:
        server = self.serve()
        for name in ("news+a", "news+b", "news"):
            server.queues.create_queue(name)
        document = json.loads((await http_request(server.url("/stats.json"))).body)
        self.assertEqual(document["queues"]["news"]["children"], ["news+a", "news+b"])


class MetricsTests(AdminCase):
    async def test_each_queue_and_the_server(self) -> None:
        server = self.serve()
        await self.fill(server)
        response = await http_request(server.url("/metrics"))
        self.assertEqual(response.code, 200)
        self.assertIn("text/plain", response.header("content-type") or "")
        found = samples(response.body.decode())
        queues = server.queues
        for name, queue in queues.queues.items():
            labels = (("queue", name),)
            self.assertEqual(found[("erq_queue_items", labels)], queue.items)
            self.assertEqual(found[("erq_queue_bytes", labels)], queue.queued_bytes)
            self.assertEqual(
                found[("erq_queue_items_added_total", labels)], queue.total_items
            )
            self.assertEqual(
                found[("erq_queue_items_removed_total", labels)], queue.removed_items
            )
            self.assertEqual(found[("erq_queue_waiters", labels)], 0)
            self.assertEqual(found[("erq_queue_open_reads", labels)], 0)
            self.assertGreaterEqual(
                found[("erq_queue_oldest_item_age_seconds", labels)], 0
            )
        self.assertEqual(
            found[("erq_queue_items_removed_total", (("queue", "empty"),))], 1
        )
        self.assertEqual(found[("erq_queues", ())], 3)
        self.assertEqual(found[("erq_commands_total", (("command", "set"),))], 6)
        self.assertEqual(found[("erq_status", (("status", "up"),))], 1)
        self.assertEqual(found[("erq_status", (("status", "quiescent"),))], 0)
        # The journal's batches, as the writer told of them.
        batches = found[("erq_journal_batch_seconds_count", ())]
        self.assertGreater(batches, 0)
        self.assertEqual(found[("erq_journal_batch_bytes_count", ())], batches)
        self.assertGreater(found[("erq_journal_batch_bytes_sum", ())], 6 * 10)
        # The process's own figures.
        self.assertGreater(found[("process_resident_memory_bytes", ())], 0)
        self.assertIn(("python_info", ()), {(k[0], ()) for k in found})

    async def test_openmetrics_when_asked(self) -> None:
        server = self.serve()
        await self.fill(server)
        accept = b"application/openmetrics-text; version=1.0.0"
        response = await http_request(
            server.url("/metrics"), headers={b"accept": [accept]}
        )
        self.assertIn(
            "application/openmetrics-text", response.header("content-type") or ""
        )
        self.assertTrue(response.body.endswith(b"# EOF\n"))

    async def test_a_deleted_queue_is_gone(self) -> None:
        server = self.serve()
        await self.fill(server)
        server.queues.delete("orders")
        found = samples((await http_request(server.url("/metrics"))).body.decode())
        self.assertNotIn(("erq_queue_items", (("queue", "orders"),)), found)
        self.assertIn(("erq_queue_items", (("queue", "empty"),)), found)


class HealthTests(AdminCase):
    async def health(self, server: AdminServer) -> tuple[int, bytes]:
        response = await http_request(server.url("/health"))
        return response.code, response.body

    async def test_by_status(self) -> None:
        server = self.serve()
        queues = server.queues
        self.assertEqual(await self.health(server), (200, b"UP\n"))
        queues.status = ServerStatus.READONLY
        self.assertEqual(await self.health(server), (200, b"READONLY\n"))
        queues.status = ServerStatus.QUIESCENT
        self.assertEqual(await self.health(server), (503, b"QUIESCENT\n"))

    async def test_shutting_down(self) -> None:
        server = self.serve()
        server.queues.shutting_down = True
        self.addCleanup(setattr, server.queues, "shutting_down", False)
        self.assertEqual(await self.health(server), (503, b"STOPPING\n"))

    async def test_head(self) -> None:
        server = self.serve()
        response = await http_request(server.url("/health"), b"HEAD")
        self.assertEqual((response.code, response.body), (200, b""))


class ReadOnlyTests(AdminCase):
    async def test_only_get_and_head(self) -> None:
        server = self.serve()
        for method in (b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"):
            for path in ("/", "/metrics", "/stats.json", "/nothing"):
                response = await http_request(server.url(path), method)
                self.assertEqual(response.code, 405, (method, path))
                self.assertEqual(response.header("allow"), "GET, HEAD")
        self.assertEqual(server.queues.queues, {})

    async def test_an_unknown_page(self) -> None:
        server = self.serve()
        for path in ("/nothing", "/metrics/more", "/health/"):
            self.assertEqual((await http_request(server.url(path))).code, 404, path)


class AuthTests(AdminCase):
    def users(self) -> str:
        path = os.path.join(temporary_directory(self), "users")
        write(path, "alice:wonder land\n")
        return path

    async def test_the_auth_file_s_users(self) -> None:
        server = self.serve("--auth-file", self.users())
        for path in ("/", "/metrics", "/stats.json", "/health", "/admin.js"):
            response = await http_request(server.url(path))
            self.assertEqual(response.code, 401, path)
            self.assertEqual(
                response.header("www-authenticate"),
                'Basic realm="erq", charset="UTF-8"',
            )
        wrong = await http_request(
            server.url("/health"), headers=basic_auth("alice", "wonder")
        )
        self.assertEqual(wrong.code, 401)
        right = await http_request(
            server.url("/health"), headers=basic_auth("alice", "wonder land")
        )
        self.assertEqual((right.code, right.body), (200, b"UP\n"))

    async def test_admin_auth_false(self) -> None:
        config = os.path.join(temporary_directory(self), "erq.toml")
        write(config, "[server]\nadmin_auth = false\n")
        server = self.serve("--auth-file", self.users(), "-c", config)
        self.assertEqual((await http_request(server.url("/health"))).code, 200)

    async def test_a_reload_that_adds_the_file_applies_at_once(self) -> None:
        directory = temporary_directory(self)
        config = os.path.join(directory, "erq.toml")
        write(config, "")
        server = self.serve("-c", config)
        self.assertEqual((await http_request(server.url("/health"))).code, 200)
        write(config, f'[server]\nauth_file = "{self.users()}"\n')
        server.queues.live_config.reload()
        self.assertEqual((await http_request(server.url("/health"))).code, 401)


class PageTests(AdminCase):
    async def test_the_page_and_its_files(self) -> None:
        server = self.serve()
        page = await http_request(server.url("/"))
        self.assertEqual(page.code, 200)
        self.assertEqual(page.header("content-type"), "text/html; charset=utf-8")
        policy = page.header("content-security-policy") or ""
        self.assertIn("script-src 'self'", policy)
        self.assertIn(b'name="viewport"', page.body)
        for path, kind in [
            ("/admin.js", "text/javascript"),
            ("/admin.css", "text/css"),
        ]:
            response = await http_request(server.url(path))
            self.assertEqual(response.code, 200, path)
            self.assertIn(kind, response.header("content-type") or "")
            # Nothing from elsewhere: no URL with a scheme or a host.
            self.assertNotIn(b"//cdn", response.body)
        self.assertNotIn(b"http", page.body.replace(b"http-equiv", b""))

    async def test_page_figures(self) -> None:
        server = self.serve()
        await self.fill(server)
        server.admin.history.sample()
        document: dict[str, Any] = json.loads(
            (await http_request(server.url("/page.json"))).body
        )
        self.assertEqual(document["status"], "UP")
        self.assertEqual(
            [queue["name"] for queue in document["queues"]],
            sorted(server.queues.queues),
        )
        orders = next(q for q in document["queues"] if q["name"] == "orders")
        self.assertEqual((orders["items"], orders["bytes"]), (3, 10 + 11 + 12))
        self.assertEqual(orders["history"], [3])
        self.assertEqual(len(document["times"]), 2)
        empty = next(q for q in document["queues"] if q["name"] == "empty")
        self.assertEqual((empty["items"], empty["oldest"]), (0, None))
