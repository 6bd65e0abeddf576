"""Settings over real sockets: monitor and confirm with a real client,
reload of a real file, and twistd with --config and SIGHUP."""

from __future__ import annotations

import os
import signal
import socket
import time

from pymemcache.exceptions import MemcacheServerError
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from erq.config import load_config, parse_config
from erq.service import QueueService
from tests.support import (
    DEADLINE,
    LOCALHOST,
    SAMPLE,
    EndToEndCase,
    TwistdCase,
    TwistdProcess,
    command,
    connect,
    free_port,
    poll_until,
    reactor,
    recv_exactly,
    recv_until,
    start_server,
    toml,
    write,
)


def replies(port: int, request: bytes, count: int) -> bytes:
    """Send ``request`` on a new connection; its first ``count`` reply lines."""
    with connect(port) as sock:
        sock.sendall(request)
        reply = recv_until(sock, b"\r\n")
        while reply.count(b"\r\n") < count:
            reply += recv_until(sock, b"\r\n")
        return reply


def closed_after(sock: socket.socket, expected: bytes) -> bytes:
    """Read ``expected``, then what comes before the server closes."""
    reply = recv_exactly(sock, len(expected))
    rest = bytearray()
    while chunk := sock.recv(65536):
        rest += chunk
    return reply + bytes(rest)


class ConfiguredCase(EndToEndCase):
    """A server configured by ``config`` (TOML, written indented)."""

    config = ""

    def setUp(self) -> None:
        service = QueueService(parse_config(toml(self.config)), reactor=reactor)
        self.server = start_server(self, service)
        self.port = self.server.port

    @property
    def service(self) -> QueueService:
        return self.server.service


class MonitorConfirmTests(ConfiguredCase):
    config = """
        [queues.three]
        max_open_reads = 3
        """

    async def fill(self, name: str, *items: bytes) -> None:
        client = self.pymemcache(raw=True)
        for item in items:
            self.assertTrue(await deferToThread(client.set, name, item, noreply=False))

    async def test_monitor_then_confirm(self) -> None:
        await self.fill("q", b"a", b"b", b"c")
        client = self.pymemcache(raw=True)

        def talk() -> None:
            monitored = client.raw_command("monitor q 0 2", "END\r\n")
            self.assertEqual(monitored, b"VALUE q 0 1\r\na\r\nVALUE q 0 1\r\nb\r\n")
            self.assertEqual(client.raw_command("confirm q 1"), b"END")
            self.assertEqual(client.raw_command("confirm q 1"), b"END")
            self.assertEqual(client.get("q"), b"c")

        await deferToThread(talk)
        self.assertEqual(self.stat("queue_q_open_transactions"), "0")
        self.assertEqual(self.stat("queue_q_items"), "0")

    async def test_confirm_more_than_open(self) -> None:
        """pymemcache drops its connection on ERROR (and so its open
        reads): a raw socket shows the connection stays open."""
        await self.fill("q", b"a", b"b", b"c")

        def talk() -> bytes:
            with connect(self.port) as sock:
                sock.sendall(b"monitor q 0 2\r\n")
                recv_until(sock, b"END\r\n")
                sock.sendall(b"confirm q 3\r\nversion\r\nconfirm q 2\r\n")
                return recv_until(sock, b"END\r\n")

        reply = await deferToThread(talk)
        self.assertRegex(reply, rb"^ERROR\r\nVERSION [0-9.]+\r\nEND\r\n$")
        got = await deferToThread(command, self.port, b"get q q\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE q 0 1\r\nc\r\nEND\r\n")

    async def test_monitor_hands_out_items_as_they_arrive(self) -> None:
        await self.fill("q", b"a")
        got = await deferToThread(command, self.port, b"get q\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE q 0 1\r\na\r\nEND\r\n")
        queue = self.service.queue("q")
        assert queue is not None
        sock = await deferToThread(connect, self.port)
        self.addCleanup(sock.close)
        await deferToThread(sock.sendall, b"monitor q 10 2\r\n")
        await poll_until(lambda: queue.waiters == 1)
        await self.fill("q", b"late")
        # It comes at once, before the monitor ends.
        first = await deferToThread(recv_until, sock, b"late\r\n")
        self.assertEqual(first, b"VALUE q 0 4\r\nlate\r\n")
        await self.fill("q", b"later")
        rest = await deferToThread(recv_until, sock, b"END\r\n")
        self.assertEqual(rest, b"VALUE q 0 5\r\nlater\r\nEND\r\n")
        await deferToThread(sock.sendall, b"confirm q 2\r\n")
        self.assertEqual(await deferToThread(recv_until, sock, b"\r\n"), b"END\r\n")
        self.assertEqual(queue.open_items, 0)

    async def test_disconnect_during_monitor_returns_open_reads(self) -> None:
        await self.fill("q", b"a", b"b")

        def monitor_then_vanish() -> bytes:
            with connect(self.port) as sock:
                sock.sendall(b"monitor q 30\r\n")
                return recv_until(sock, b"b\r\n")

        got = await deferToThread(monitor_then_vanish)
        self.assertEqual(got, b"VALUE q 0 1\r\na\r\nVALUE q 0 1\r\nb\r\n")
        queue = self.service.queue("q")
        assert queue is not None
        await poll_until(lambda: queue.open_items == 0 and queue.waiters == 0)
        got = await deferToThread(command, self.port, b"get q q\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE q 0 1\r\na\r\nVALUE q 0 1\r\nb\r\nEND\r\n")

    async def test_monitor_reads_count_toward_max_open_reads(self) -> None:
        await self.fill("three", b"a", b"b", b"c", b"d")

        def talk() -> bytes:
            with connect(self.port) as sock:
                sock.sendall(b"monitor three 0 2\r\n")
                recv_until(sock, b"END\r\n")
                sock.sendall(b"get three/open\r\n")
                recv_until(sock, b"END\r\n")
                sock.sendall(b"get three/open\r\nversion\r\n")
                return closed_after(sock, b"ERROR\r\n")

        self.assertEqual(await deferToThread(talk), b"ERROR\r\n")
        got = await deferToThread(command, self.port, b"get three/peek\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE three/peek 0 1\r\na\r\nEND\r\n")


class MaxConnectionsTests(ConfiguredCase):
    config = """
        [server]
        max_connections = 1
        """

    async def test_the_connection_over_the_limit_is_told_and_closed(self) -> None:
        def talk() -> bytes:
            with connect(self.port) as first:
                first.sendall(b"version\r\n")
                recv_until(first, b"\r\n")
                with connect(self.port) as second:
                    second.sendall(b"version\r\n")
                    return closed_after(
                        second, b"SERVER_ERROR too many connections\r\n"
                    )

        self.assertEqual(
            await deferToThread(talk), b"SERVER_ERROR too many connections\r\n"
        )
        await poll_until(lambda: not self.service.connections)
        reply = await deferToThread(command, self.port, b"version\r\n")
        self.assertTrue(reply.startswith(b"VERSION "), reply)


class ReloadOverTcpTests(ConfiguredCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        write(
            self.path,
            """
            [queues.q]
            max_items = 2
            """,
        )
        service = QueueService(
            load_config(self.path), reactor=reactor, config_path=self.path
        )
        self.server = start_server(self, service)
        self.port = self.server.port

    async def sets(self, count: int) -> list[bool]:
        client = self.pymemcache(raw=True)
        return [
            await deferToThread(client.set, "q", b"x", noreply=False)
            for _ in range(count)
        ]

    async def test_reload_changes_a_limit_on_a_live_queue(self) -> None:
        self.assertEqual(await self.sets(3), [True, True, False])
        write(
            self.path,
            """
            [queues.q]
            max_items = 3
            """,
        )
        reply = await deferToThread(command, self.port, b"reload\r\n")
        self.assertEqual(reply, b"Reloaded config.\r\n")
        self.assertEqual(await self.sets(2), [True, False])

    async def test_bad_reload_keeps_the_old_settings(self) -> None:
        write(
            self.path,
            """
            [queues.q]
            max_items = 5
            max_size = "10MB"
            """,
        )
        client = self.pymemcache(raw=True)
        with self.assertRaises(MemcacheServerError) as raised:
            await deferToThread(client.raw_command, "reload")
        why = raised.exception.args[0]
        self.assertEqual(
            why,
            b'%s line 3: queues.q.max_size: ambiguous unit MB in "10MB": write'
            b' "10MiB" for MiB (powers of 1024) or the number of bytes'
            % self.path.encode(),
        )
        self.assertEqual(await self.sets(3), [True, True, False])


class TwistdConfigTests(TwistdCase):
    async def wait_for_log(self, process: TwistdProcess, text: str) -> str:
        """Poll the log until it holds ``text``; the log."""
        deadline = time.monotonic() + DEADLINE
        while text not in (log := self.log(process)):
            if process.ended or time.monotonic() > deadline:
                self.fail(f"no {text!r} in the log:\n{log}")
            await deferLater(reactor, 0.02, lambda: None)
        return log

    async def test_sample_config_starts_a_server(self) -> None:
        """The repository's erq.toml, as it is (the port given here wins)."""
        port = free_port()
        process = self.spawn(f"tcp:{port}:interface={LOCALHOST}", "--config", SAMPLE)
        await self.wait_until_serving(process, port)
        stored = await deferToThread(command, port, b"set q 3 0 2\r\nhi\r\n")
        self.assertEqual(stored, b"STORED\r\n")
        got = await deferToThread(command, port, b"get q\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE q 3 2\r\nhi\r\nEND\r\n")
        closed = await deferToThread(command, port, b"shutdown\r\n", b"")
        self.assertEqual(closed, b"")
        self.assertEqual(await self.exit_code(process), 0, self.log(process))

    async def test_sighup_reloads_and_the_command_line_wins(self) -> None:
        path = os.path.join(self.directory, "erq.toml")
        write(
            path,
            """
            [queues.q]
            max_items = 1
            """,
        )
        port = free_port()
        process = self.spawn(str(port), "--config", path, "--no-shutdown")
        await self.wait_until_serving(process, port)

        def set_twice() -> bytes:
            return replies(port, b"set q 0 0 1\r\nx\r\nset q 0 0 1\r\ny\r\n", 2)

        self.assertEqual(await deferToThread(set_twice), b"STORED\r\nNOT_STORED\r\n")

        write(
            path,
            """
            [server]
            allow_shutdown = true

            [queues.q]
            max_items = 3
            """,
        )
        os.kill(self.pid(process), signal.SIGHUP)
        await self.wait_for_log(process, "Reloaded configuration from")
        self.assertEqual(await deferToThread(set_twice), b"STORED\r\nSTORED\r\n")
        refused = await deferToThread(command, port, b"shutdown\r\n")
        self.assertEqual(refused, b"CLIENT_ERROR shutdown disabled\r\n")

        write(
            path,
            """
            [queues.q]
            max_items = 100
            max_open_reads = 0
            """,
        )
        os.kill(self.pid(process), signal.SIGHUP)
        log = await self.wait_for_log(process, "Configuration not reloaded")
        self.assertIn(
            f"{path} line 3: queues.q.max_open_reads: expected a positive integer",
            log,
        )
        self.assertEqual(
            await deferToThread(set_twice), b"NOT_STORED\r\nNOT_STORED\r\n"
        )
        os.kill(self.pid(process), signal.SIGTERM)
        self.assertEqual(await self.exit_code(process), 0, self.log(process))

    async def test_bad_config_at_start_up(self) -> None:
        path = os.path.join(self.directory, "erq.toml")
        write(
            path,
            """
            [server]
            expiry_sweep = 5
            """,
        )
        process = self.spawn(str(free_port()), "--config", path)
        code = await self.exit_code(process)
        log = self.log(process)
        self.assertNotEqual(code, 0, log)
        self.assertIn(f"{path} line 2: server.expiry_sweep: expected a duration", log)

    async def test_missing_auth_file_at_start_up(self) -> None:
        path = os.path.join(self.directory, "users")
        process = self.spawn(str(free_port()), "--auth-file", path)
        code = await self.exit_code(process)
        log = self.log(process)
        self.assertNotEqual(code, 0, log)
        self.assertIn(f"{path}: cannot read: No such file or directory\n", log)
