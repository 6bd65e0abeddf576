"""The installed server as its users run it: ``twistd erq`` in a process."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time

from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from erq import __version__
from erq.datadir import lock_data_dir
from erq.tap import default_idle_poll_us
from tests.support import (
    DEADLINE,
    LOCALHOST,
    TwistdCase,
    TwistdProcess,
    command,
    connect,
    free_port,
    http_request,
    reactor,
    temporary_directory,
    twistd_command,
)


class TwistdTests(TwistdCase):
    async def test_serve_then_shutdown(self) -> None:
        port = free_port()
        process = self.spawn(f"tcp:{port}:interface={LOCALHOST}")
        await self.wait_until_serving(process, port)
        stored = await deferToThread(command, port, b"set q 7 0 5\r\nhello\r\n")
        self.assertEqual(stored, b"STORED\r\n")
        got = await deferToThread(command, port, b"get q\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE q 7 5\r\nhello\r\nEND\r\n")
        # shutdown closes the connection that asked, with no reply.
        closed = await deferToThread(command, port, b"shutdown\r\n", b"")
        self.assertEqual(closed, b"")
        self.assertEqual(await self.exit_code(process), 0, self.log(process))

    async def test_a_set_pipelined_before_shutdown_is_answered(self) -> None:
        """Its reply arrives before the server closes the connection and
        stops, and the item is there after a restart."""
        port = free_port()
        process = self.spawn(str(port))
        await self.wait_until_serving(process, port)

        def set_then_shutdown() -> bytes:
            with connect(port) as sock:
                sock.sendall(b"set q 0 0 1\r\na\r\nshutdown\r\n")
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
                return received

        self.assertEqual(await deferToThread(set_then_shutdown), b"STORED\r\n")
        self.assertEqual(await self.exit_code(process), 0, self.log(process))
        process = self.spawn(str(port))
        await self.wait_until_serving(process, port)
        got = await deferToThread(command, port, b"get q\r\n", b"END\r\n")
        self.assertEqual(got, b"VALUE q 0 1\r\na\r\nEND\r\n")
        os.kill(self.pid(process), 15)
        self.assertEqual(await self.exit_code(process), 0, self.log(process))

    async def test_sigterm_stops_cleanly(self) -> None:
        port = free_port()
        process = self.spawn(str(port))
        await self.wait_until_serving(process, port)
        os.kill(self.pid(process), 15)
        self.assertEqual(await self.exit_code(process), 0, self.log(process))

    async def test_port_in_use(self) -> None:
        with socket.socket() as taken:
            taken.bind((LOCALHOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
            process = self.spawn(f"tcp:{port}:interface={LOCALHOST}")
            code = await self.exit_code(process)
        log = self.log(process)
        self.assertNotEqual(code, 0, log)
        self.assertIn("cannot listen", log)
        self.assertIn(str(port), log)


class ReactorTests(TwistdCase):
    """twistd's epoll reactor reads the cheaper way (``erq.epoll``), unless
    ``--plain-reactor``."""

    if not hasattr(select, "epoll"):
        skip = "no epoll on this system: twistd's reactor is another one"

    async def serves_on(self, *options: str) -> str:
        """The reactor a server says it runs on, once it has served."""
        port = free_port()
        process = self.spawn(str(port), *options)
        await self.wait_until_serving(process, port)
        stored = await deferToThread(command, port, b"set q 0 0 2\r\nhi\r\n")
        got = await deferToThread(command, port, b"get q\r\n", b"END\r\n")
        self.assertEqual(
            (stored, got), (b"STORED\r\n", b"VALUE q 0 2\r\nhi\r\nEND\r\n")
        )
        # A read left open by a client that hangs up (a hang-up, not a
        # plain read: Twisted's own handling) goes back to its queue.
        await deferToThread(command, port, b"set r 0 0 1\r\nx\r\n")
        opened = await deferToThread(command, port, b"get r/open\r\n", b"END\r\n")
        again = await deferToThread(command, port, b"get r/t=5000\r\n", b"END\r\n")
        self.assertEqual(opened, b"VALUE r/open 0 1\r\nx\r\nEND\r\n")
        self.assertEqual(again, b"VALUE r/t=5000 0 1\r\nx\r\nEND\r\n")
        os.kill(self.pid(process), 15)
        code = await self.exit_code(process)
        log = self.log(process)
        self.assertEqual(code, 0, log)
        runs = [line for line in log.splitlines() if "erq runs on " in line]
        self.assertEqual(len(runs), 1, log)
        return runs[0].split("erq runs on ")[1]

    async def test_erqs_reads_by_default(self) -> None:
        micros = default_idle_poll_us()
        polls = (
            f"polling {micros} microseconds before it sleeps"
            if micros
            else "sleeping at once when idle"
        )
        self.assertEqual(
            await self.serves_on(),
            "erq.epoll.EPollReactor (Twisted's epoll reactor, its reads"
            f" dispatched by erq, {polls})",
        )

    async def test_idle_poll_zero_sleeps_at_once(self) -> None:
        self.assertEqual(
            await self.serves_on("--idle-poll", "0"),
            "erq.epoll.EPollReactor (Twisted's epoll reactor, its reads"
            " dispatched by erq, sleeping at once when idle)",
        )

    async def test_plain_reactor_keeps_twisteds(self) -> None:
        self.assertEqual(
            await self.serves_on("--plain-reactor"),
            "twisted.internet.epollreactor.EPollReactor",
        )


class StartupFailureTests(TwistdCase):
    """Whatever stops the server from starting is one line naming the option
    and its value, and exit status 1: no traceback, no usage text, no pid
    file left behind, in the foreground and in the background alike."""

    def launch(self, daemon: bool, options: tuple[str, ...]) -> TwistdProcess:
        mode = "daemon" if daemon else "foreground"
        pidfile = os.path.join(self.directory, f"{mode}.pid")
        arguments = twistd_command() + [
            *([] if daemon else ["-n"]),
            f"--pidfile={pidfile}",
            f"--logfile={os.path.join(self.directory, f'{mode}.log')}",
            "erq",
            *options,
        ]
        process = TwistdProcess()
        transport = reactor.spawnProcess(
            process, arguments[0], arguments, env=dict(os.environ), path=self.directory
        )

        def kill() -> Deferred[int | None] | None:
            # A daemon that started after all is found by its pid file.
            if os.path.exists(pidfile):
                with open(pidfile) as file:
                    os.kill(int(file.read()), 9)
            if process.ended:
                return None
            transport.signalProcess("KILL")
            return process.wait()

        self.addCleanup(kill)
        return process

    async def fails(self, *options: str) -> str:
        """Run twistd with ``options`` in the foreground, then in the
        background; the line both said."""
        said = []
        for daemon in (False, True):
            process = self.launch(daemon, options)
            code = await self.exit_code(process)
            output = process.output.decode("utf-8", "replace")
            self.assertEqual(code, 1, output)
            self.assertEqual(len(output.splitlines()), 1, output)
            self.assertTrue(output.startswith("erq: "), output)
            mode = "daemon" if daemon else "foreground"
            self.assertEqual(
                os.listdir(self.directory).count(f"{mode}.pid"), 0, "pid file left"
            )
            said.append(output.strip())
        self.assertEqual(said[0], said[1])
        return said[0]

    async def test_a_daemon_that_starts_serves(self) -> None:
        """The port bound before twistd forks is the one the daemon serves."""
        port = free_port()
        process = self.launch(True, ("--port", str(port), "-d", self.directory))
        self.assertEqual(await self.exit_code(process), 0, self.log(process))
        await self.wait_until_serving(process, port)
        closed = await deferToThread(command, port, b"shutdown\r\n", b"")
        self.assertEqual(closed, b"")
        pidfile = os.path.join(self.directory, "daemon.pid")
        deadline = time.monotonic() + DEADLINE
        while os.path.exists(pidfile):
            self.assertLess(time.monotonic(), deadline, "the daemon did not stop")
            await deferLater(reactor, 0.05, lambda: None)

    async def test_port_not_a_number(self) -> None:
        line = await self.fails("--port", "tcp:abc")
        self.assertTrue(line.startswith("erq: --port tcp:abc: "), line)

    async def test_unknown_endpoint_type(self) -> None:
        line = await self.fails("--port", "foo:1")
        self.assertTrue(
            line.startswith("erq: --port foo:1: unknown endpoint type 'foo'"), line
        )

    async def test_data_dir_is_a_file(self) -> None:
        path = os.path.join(self.directory, "queues")
        with open(path, "w"):
            pass
        line = await self.fails("--port", "0", "--data-dir", path)
        self.assertEqual(line, f"erq: --data-dir {path}: not a directory")

    async def test_data_dir_in_use(self) -> None:
        path = os.path.join(self.directory, "queues")
        held = lock_data_dir(path)
        self.addCleanup(held.release)
        line = await self.fails("--port", "0", "--data-dir", path)
        self.assertEqual(
            line,
            f"erq: data directory {path} is in use by another erq process"
            f" (pid {os.getpid()})",
        )

    async def test_port_in_use(self) -> None:
        with socket.socket() as taken:
            taken.bind((LOCALHOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
            line = await self.fails("--port", str(port), "-d", self.directory)
        self.assertEqual(
            line,
            f"erq: --port {port}: cannot listen on {LOCALHOST}:{port}:"
            " Address already in use",
        )

    async def test_admin_port_in_use(self) -> None:
        with socket.socket() as taken:
            taken.bind((LOCALHOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
            line = await self.fails(
                "--port", "0", "--admin-port", str(port), "-d", self.directory
            )
        self.assertEqual(
            line,
            f"erq: --admin-port {port}: cannot listen on {LOCALHOST}:{port}:"
            " Address already in use",
        )

    async def test_a_daemon_serves_its_admin_port(self) -> None:
        """The admin port bound before twistd forks is served by the daemon,
        and goes with it."""
        port, admin = free_port(), free_port()
        process = self.launch(
            True,
            ("--port", str(port), "--admin-port", str(admin), "-d", self.directory),
        )
        self.assertEqual(await self.exit_code(process), 0, self.log(process))
        await self.wait_until_serving(process, port)
        response = await http_request(f"http://{LOCALHOST}:{admin}/health")
        self.assertEqual((response.code, response.body), (200, b"UP\n"))
        await deferToThread(command, port, b"shutdown\r\n", b"")
        pidfile = os.path.join(self.directory, "daemon.pid")
        deadline = time.monotonic() + DEADLINE
        while os.path.exists(pidfile):
            self.assertLess(time.monotonic(), deadline, "the daemon did not stop")
            await deferLater(reactor, 0.05, lambda: None)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((LOCALHOST, admin), timeout=5).close()

    async def test_configuration_file_does_not_validate(self) -> None:
        path = os.path.join(self.directory, "erq.toml")
        with open(path, "w") as file:
            file.write("[defaults]\nmax_open_reads = 0\n")
        line = await self.fails("--config", path)
        self.assertEqual(
            line,
            f"erq: {path} line 2: defaults.max_open_reads: expected a positive"
            " integer, got 0",
        )

    async def test_bad_option_value(self) -> None:
        line = await self.fails("--max-memory-size", "12XB")
        self.assertTrue(line.startswith("erq: --max-memory-size 12XB: "), line)


class PluginTests(SynchronousTestCase):
    def test_twistd_lists_erq(self) -> None:
        directory = temporary_directory(self)
        help = subprocess.run(
            twistd_command() + ["--help"],
            capture_output=True,
            timeout=DEADLINE,
            check=True,
            cwd=directory,
        )
        commands = [line.split() for line in help.stdout.decode().splitlines()]
        self.assertIn("erq", [words[0] for words in commands if words])

    def test_version_is_erq_s(self) -> None:
        directory = temporary_directory(self)
        version = subprocess.run(
            twistd_command() + ["-n", "erq", "--version"],
            capture_output=True,
            timeout=DEADLINE,
            check=True,
            cwd=directory,
        )
        self.assertTrue(
            version.stdout.decode().startswith(f"erq {__version__} (Twisted "),
            version.stdout,
        )

    def test_plugin_is_found(self) -> None:
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("erq", makers)
        self.assertEqual(makers["erq"].options.__module__, "erq.tap")
        # What twistd runs: the service on the cheaper reactor.
        self.assertEqual(getattr(makers["erq"], "module", None), "erq.plugin")
