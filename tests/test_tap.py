"""erq.tap: twistd's options, the endpoint listened on, and the server's
start, failures included."""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import resource
import selectors
import socket
import ssl
import stat
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

import erq
from erq import __version__
from erq.config import MiB
from erq.protocol import QueueFactory
from erq.service import QueueService
from erq.status import ServerStatus
from erq.storage import STATUS_FILE
from erq.tap import (
    Announcement,
    ListeningService,
    Options,
    StartupError,
    endpoint_description,
    makeService,
)
from tests.support import (
    CLIENT_TIMEOUT,
    LOCALHOST,
    command,
    reactor,
    recv_until,
    temporary_directory,
)


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def parse(*arguments: str) -> Options:
    options = Options()
    options.parseOptions(list(arguments))
    return options


def listening_of(top: MultiService) -> ListeningService:
    [listening] = [child for child in top if isinstance(child, ListeningService)]
    return listening


def capture_log(case: SynchronousTestCase) -> list[dict[str, Any]]:
    """Every log event from now to the end of the test."""
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def texts(events: list[dict[str, Any]], level: LogLevel) -> list[str]:
    return [
        formatEvent(event) or "" for event in events if event.get("log_level") == level
    ]


class StartedServer:
    """A server as twistd starts it, on this test's reactor."""

    def __init__(self, case: TestCase, *arguments: str) -> None:
        self.options = parse(*arguments)
        self.top = makeService(self.options)
        self.listening = listening_of(self.top)
        self.queues = self.top.getServiceNamed("erq")
        # What twistd does before the reactor runs.
        self.top.privilegedStartService()
        self.top.startService()
        case.addCleanup(self.top.stopService)

    @property
    def port(self) -> int:
        port = self.listening.port
        assert port is not None
        number: int = cast(Any, port.getHost()).port
        return number


# -- options ---------------------------------------------------------------


class ImportTests(SynchronousTestCase):
    def test_no_admin_server_imported_without_an_admin_port(self) -> None:
        """twisted.web and prometheus_client are a good part of a start's
        time: a server without an admin port does not import them."""
        shown = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, erq.tap; print(sorted(m for m in sys.modules"
                " if m.split('.')[0] == 'prometheus_client' or m == 'erq.admin'"
                " or m.startswith('twisted.web')))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            # From the checkout under test, whatever erq is installed.
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(erq.__file__))),
        )
        self.assertEqual(shown.stdout.strip(), "[]")


class OptionTests(SynchronousTestCase):
    """An option takes every value that its key in the file takes."""

    def test_max_memory_size_is_a_size(self) -> None:
        for text, size in (("1048576", MiB), ("128MiB", 128 * MiB), ("1 KiB", 1024)):
            config = parse("--max-memory-size", text).config
            self.assertEqual(config.defaults.max_memory_size, size, text)

    def test_max_connections_may_be_unlimited(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, "[server]\nmax_connections = 5\n")
        self.assertEqual(parse("-c", path).config.server.max_connections, 5)
        options = parse("-c", path, "--max-connections", "unlimited")
        self.assertIsNone(options.config.server.max_connections)
        self.assertEqual(
            parse("--max-connections", "7").config.server.max_connections, 7
        )
        # And it stays lifted when the file is read again.
        queues = makeService(options).getServiceNamed("erq")
        assert isinstance(queues, QueueService)
        queues.live_config.reload()
        self.assertIsNone(queues.max_connections)

    def test_sync_takes_what_sync_journal_takes(self) -> None:
        for text, policy in (("always", "always"), ("never", "never"), ("50ms", 0.05)):
            config = parse("--sync", text).config
            self.assertEqual(config.defaults.sync_journal, policy)

    def test_every_error_names_its_option_and_value(self) -> None:
        for option, value, reason in (
            ("--max-memory-size", "12XB", "unknown size unit XB"),
            ("--max-memory-size", "-1", "expected a non-negative size"),
            ("--max-connections", "lots", 'positive integer or "unlimited"'),
            ("--sync", "sometimes", 'expected "always", "never" or a duration'),
            ("--sync", "0ms", "expected a positive duration"),
            ("--port", "70000", "port number up to 65535"),
            ("--port", "", "a port number or an endpoint description"),
            ("--data-dir", "", "expected a directory path"),
            ("--status", "sideways", 'expected "up", "readonly" or "quiescent"'),
        ):
            with self.assertRaises(StartupError) as raised:
                parse(option, value)
            message = str(raised.exception)
            shown = value or '""'
            self.assertTrue(message.startswith(f"erq: {option} {shown}: "), message)
            self.assertIn(reason, message)
            self.assertNotIn("\n", message)
            self.assertEqual(raised.exception.code, message)

    def test_status_in_any_case(self) -> None:
        options = parse("--status", "ReadOnly")
        self.assertIs(options.config.server.status, ServerStatus.READONLY)
        self.assertEqual(options.overrides["status"], ServerStatus.READONLY)
        self.assertNotIn("status", parse().overrides)

    def test_unknown_option_is_one_line(self) -> None:
        with self.assertRaises(StartupError) as raised:
            parse("--frobnicate")
        self.assertEqual(
            str(raised.exception),
            "erq: option --frobnicate not recognized"
            " (twistd erq --help lists the options)",
        )

    def test_a_bad_configuration_file_is_one_line(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, "[server]\nport = 'x'\n")
        with self.assertRaises(StartupError) as raised:
            parse("-c", path)
        message = str(raised.exception)
        self.assertTrue(message.startswith(f"erq: {path} line 2: server.port: "))
        self.assertNotIn("\n", message)

    def test_version_is_erq_s(self) -> None:
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        with self.assertRaises(SystemExit) as raised:
            parse("--version")
        self.assertEqual(raised.exception.code, 0)
        self.assertTrue(output.getvalue().startswith(f"erq {__version__} "))


# -- endpoint descriptions ---------------------------------------------------


class EndpointDescriptionTests(SynchronousTestCase):
    def test_defaults_fill_what_a_description_leaves_out(self) -> None:
        for given, listened in (
            ("22122", "tcp:22122:interface=127.0.0.1:backlog=1024"),
            ("tcp:22122", "tcp:22122:interface=127.0.0.1:backlog=1024"),
            (
                "ssl:22122:privateKey=key.pem:certKey=cert.pem",
                "ssl:22122:privateKey=key.pem:certKey=cert.pem"
                ":interface=127.0.0.1:backlog=1024",
            ),
            ("tcp6:22122", "tcp6:22122:interface=\\:\\:1:backlog=1024"),
            ("unix:/run/erq.sock", "unix:/run/erq.sock:backlog=1024:mode=600"),
        ):
            self.assertEqual(endpoint_description(given), listened)

    def test_what_a_description_says_stays(self) -> None:
        for given in (
            "tcp:22122:interface=0.0.0.0:backlog=10",
            # Positional: tcp's interface and backlog, ssl's key and cert.
            "tcp:22122:0.0.0.0:10",
            "ssl:22122:key.pem:cert.pem:interface=0.0.0.0:backlog=10",
            "unix:/run/erq.sock:mode=660:backlog=10",
            "unix:/run/erq.sock:660:10",
            "systemd:domain=INET:index=0",
        ):
            self.assertEqual(endpoint_description(given), given)


# -- start-up failures -----------------------------------------------------


class StartupFailureTests(SynchronousTestCase):
    """Everything that can be checked before twistd forks fails in
    ``makeService``, in one line naming the option and its value."""

    def fails(self, *arguments: str, twistd: dict[str, Any] | None = None) -> str:
        options = parse(*arguments)
        if twistd is not None:
            cast(Any, options).parent = twistd
        with self.assertRaises(StartupError) as raised:
            makeService(options)
        message = str(raised.exception)
        self.assertNotIn("\n", message)
        return message

    def test_a_port_that_is_not_a_number(self) -> None:
        self.assertEqual(
            self.fails("--port", "tcp:abc"),
            "erq: --port tcp:abc: expected a port number from 0 to 65535 after tcp:,"
            " got 'abc'",
        )

    def test_an_unknown_endpoint_type(self) -> None:
        message = self.fails("--port", "foo:1")
        self.assertTrue(
            message.startswith("erq: --port foo:1: unknown endpoint type 'foo'; known:")
        )

    def test_a_description_cut_short(self) -> None:
        self.assertEqual(
            self.fails("--port", "tcp:22122\\"),
            "erq: --port tcp:22122\\: the description ends with a lone backslash",
        )

    def test_a_data_directory_that_is_a_file(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, "")
        self.assertEqual(
            self.fails("--port", "0", "--data-dir", path),
            f"erq: --data-dir {path}: not a directory",
        )

    def test_a_data_directory_under_a_file(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, "")
        self.assertEqual(
            self.fails("--port", "0", "--data-dir", os.path.join(path, "queues")),
            f"erq: --data-dir {path}/queues: cannot make it: {path} is not a directory",
        )

    def test_ssl_without_the_tls_libraries(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "OpenSSL": None})
        message = self.fails("--port", "ssl:0:privateKey=key.pem")
        self.assertTrue(message.startswith("erq: --port ssl:0:privateKey=key.pem: "))
        self.assertIn("pip install 'erq[tls]'", message)

    def test_ssl_with_a_missing_key_file(self) -> None:
        missing = os.path.abspath(self.mktemp())
        message = self.fails("--port", f"ssl:0:privateKey={missing}")
        self.assertIn(missing, message)
        self.assertIn("No such file", message)

    def test_a_unix_socket_in_no_directory(self) -> None:
        missing = os.path.abspath(self.mktemp())
        message = self.fails("--port", f"unix:{missing}/erq.sock")
        self.assertEqual(
            message,
            f"erq: --port unix:{missing}/erq.sock: no directory {missing} for the"
            " socket",
        )

    def test_a_port_from_the_file_is_named_there(self) -> None:
        path = os.path.abspath(self.mktemp())
        write(path, '[server]\nport = "tcp:abc"\n')
        message = self.fails("-c", path)
        self.assertTrue(
            message.startswith(f'erq: server.port "tcp:abc" in {path}: expected'),
            message,
        )

    def test_a_port_in_use_under_twistd(self) -> None:
        """Under twistd the port is bound in ``makeService``: before twistd
        forks, so that its failure reaches the operator."""
        with socket.socket() as taken:
            taken.bind((LOCALHOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
            twistd = {"nodaemon": False, "pidfile": "twistd.pid", "rundir": "."}
            message = self.fails("--port", str(port), twistd=twistd)
        self.assertEqual(
            message,
            f"erq: --port {port}: cannot listen on {LOCALHOST}:{port}:"
            " Address already in use",
        )

    def test_a_bad_status_file_under_twistd(self) -> None:
        """Read in ``makeService``, before twistd forks."""
        data_dir = os.path.abspath(self.mktemp())
        os.makedirs(data_dir)
        path = os.path.join(data_dir, STATUS_FILE)
        write(path, "sideways\n")
        twistd = {"nodaemon": True, "pidfile": "", "rundir": "."}
        self.assertEqual(
            self.fails("--port", "0", "-d", data_dir, twistd=twistd),
            f"erq: status file {path}: expected"
            ' "up", "readonly" or "quiescent", got "sideways"; --status replaces it',
        )

    def test_an_admin_port_in_use_under_twistd(self) -> None:
        with socket.socket() as taken:
            taken.bind((LOCALHOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
            twistd = {"nodaemon": False, "pidfile": "twistd.pid", "rundir": "."}
            message = self.fails(
                "--port",
                "0",
                "--admin-port",
                str(port),
                "-d",
                f"{temporary_directory(self)}/q",
                twistd=twistd,
            )
        self.assertEqual(
            message,
            f"erq: --admin-port {port}: cannot listen on {LOCALHOST}:{port}:"
            " Address already in use",
        )

    def test_a_bad_admin_port(self) -> None:
        self.assertEqual(
            self.fails("--port", "0", "--admin-port", "tcp:abc"),
            "erq: --admin-port tcp:abc: expected a port number from 0 to 65535"
            " after tcp:, got 'abc'",
        )
        with self.assertRaises(StartupError) as raised:
            parse("--admin-port", "localhost")
        self.assertEqual(
            str(raised.exception),
            "erq: --admin-port localhost: expected a port number or an endpoint"
            ' description such as "tcp:22122:interface=0.0.0.0", got "localhost"',
        )
        path = os.path.abspath(self.mktemp())
        write(path, '[server]\nadmin_port = "foo:1"\n')
        message = self.fails("-c", path, "--port", "0")
        self.assertTrue(
            message.startswith(
                f'erq: server.admin_port "foo:1" in {path}: unknown endpoint type'
            ),
            message,
        )

    def test_the_port_is_held_until_the_server_listens(self) -> None:
        with socket.socket() as probe:
            probe.bind((LOCALHOST, 0))
            port = probe.getsockname()[1]
        options = parse("--port", str(port), "-d", os.path.abspath(self.mktemp()))
        twistd = {"nodaemon": True, "pidfile": "", "rundir": "."}
        cast(Any, options).parent = twistd
        listening = listening_of(makeService(options))
        reservation = listening.reservation
        assert reservation is not None
        self.addCleanup(reservation.close)
        with socket.socket() as other, self.assertRaises(OSError):
            other.bind((LOCALHOST, port))
        # Nothing is accepted meanwhile: a client is refused.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((LOCALHOST, port), timeout=CLIENT_TIMEOUT).close()


class LateListenFailureTests(SynchronousTestCase):
    """Should the port be taken after all between ``makeService`` and
    listening, twistd must still end, and leave no pid file behind."""

    def setUp(self) -> None:
        self.taken = socket.socket()
        self.addCleanup(self.taken.close)
        self.taken.bind((LOCALHOST, 0))
        self.taken.listen()
        port = self.taken.getsockname()[1]
        description = f"tcp:{port}:interface={LOCALHOST}"
        self.listening = ListeningService(
            reactor, description, QueueFactory(QueueService(reactor=reactor))
        )

    def test_in_the_background_twistd_hears_of_it(self) -> None:
        # Only an Exception reaches twistd's status pipe, which the process
        # that launched the daemon waits on.
        self.listening.daemon = True
        with self.assertRaises(RuntimeError) as raised:
            self.listening.privilegedStartService()
        self.assertIn("cannot listen", str(raised.exception))

    def test_in_the_foreground_the_pid_file_goes(self) -> None:
        pidfile = os.path.abspath(self.mktemp())
        write(pidfile, "123")
        self.listening.pidfile = pidfile
        with self.assertRaises(SystemExit) as raised:
            self.listening.privilegedStartService()
        self.assertIn("Address already in use", str(raised.exception.code))
        self.assertFalse(os.path.exists(pidfile))


# -- listening ---------------------------------------------------------------


class UnixSocketTests(TestCase):
    timeout = 30

    async def check_mode(self, description: str, mode: int) -> None:
        directory = temporary_directory(self)
        path = os.path.join(directory, "erq.sock")
        StartedServer(
            self, "--port", description.format(path), "-d", f"{directory}/queues"
        )
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), mode)

        def version() -> bytes:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(CLIENT_TIMEOUT)
                client.connect(path)
                client.sendall(b"version\r\n")
                return recv_until(client, b"\r\n")

        reply = await deferToThread(version)
        self.assertEqual(reply, b"VERSION %s\r\n" % __version__.encode())

    async def test_only_its_owner_may_connect(self) -> None:
        await self.check_mode("unix:{}", 0o600)

    async def test_unless_the_description_says_otherwise(self) -> None:
        await self.check_mode("unix:{}:mode=660", 0o660)


class BacklogTests(TestCase):
    timeout = 60

    #: Connections made while the server accepts none; memcached's backlog
    #: holds them all, Twisted's default (50) a twentieth of them.
    BURST = 1000

    def setUp(self) -> None:
        with open("/proc/sys/net/core/somaxconn") as file:
            if int(file.read()) < self.BURST + 1:
                self.skipTest("net.core.somaxconn caps the backlog below the burst")
        # Both ends of every connection are in this process.
        needed = 2 * self.BURST + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < needed:
            if hard != resource.RLIM_INFINITY and hard < needed:
                self.skipTest(f"at most {hard} open files")
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

    async def test_a_burst_of_connections_waits_for_the_server(self) -> None:
        directory = temporary_directory(self)
        server = StartedServer(self, "--port", "0", "-d", f"{directory}/queues")
        clients: list[socket.socket] = []

        def close_all() -> None:
            for client in clients:
                client.close()

        self.addCleanup(close_all)
        # The reactor does not run until this test yields, so the server
        # accepts nothing meanwhile: only the backlog holds the connections.
        for _ in range(self.BURST):
            client = socket.socket()
            clients.append(client)
            client.setblocking(False)
            client.connect_ex((LOCALHOST, server.port))
        waiting = set(clients)
        deadline = time.monotonic() + 5
        with selectors.DefaultSelector() as selector:
            for client in clients:
                selector.register(client, selectors.EVENT_WRITE)
            while waiting and time.monotonic() < deadline:
                for key, _ in selector.select(deadline - time.monotonic()):
                    client = cast(socket.socket, key.fileobj)
                    selector.unregister(client)
                    error = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    self.assertEqual(error, 0, os.strerror(error))
                    waiting.discard(client)
        self.assertEqual(
            len(waiting), 0, f"{len(waiting)} of {self.BURST} connections not held"
        )
        for client in clients:
            client.send(b"version\r\n")

        def replies() -> int:
            expected = b"VERSION %s\r\n" % __version__.encode()
            served = 0
            pending = {client: b"" for client in clients}
            deadline = time.monotonic() + 20
            with selectors.DefaultSelector() as selector:
                for client in clients:
                    selector.register(client, selectors.EVENT_READ)
                while pending and time.monotonic() < deadline:
                    for key, _ in selector.select(deadline - time.monotonic()):
                        client = cast(socket.socket, key.fileobj)
                        pending[client] += client.recv(100)
                        if pending[client].endswith(b"\r\n"):
                            assert pending.pop(client) == expected
                            selector.unregister(client)
                            served += 1
            return served

        self.assertEqual(await deferToThread(replies), self.BURST)


def self_signed(directory: str) -> tuple[str, str]:
    """A key and a certificate for 127.0.0.1, in two PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erq test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOCALHOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as file:
        file.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as file:
        file.write(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TLSTests(TestCase):
    timeout = 30

    def tls_server(self) -> tuple[StartedServer, str]:
        """A server on a TLS port with a fresh self-signed certificate, and
        the certificate's file."""
        directory = temporary_directory(self)
        key, cert = self_signed(directory)
        server = StartedServer(
            self,
            "--port",
            f"ssl:0:privateKey={key}:certKey={cert}",
            "-d",
            f"{directory}/queues",
        )
        return server, cert

    async def test_pymemcache_over_tls(self) -> None:
        from pymemcache.client.base import Client

        server, cert = self.tls_server()
        address, loopback = server.listening.address() or ("", False)
        self.assertEqual(address, f"tls {LOCALHOST}:{server.port}")
        self.assertTrue(loopback)
        context = ssl.create_default_context(cafile=cert)

        def talk() -> None:
            client = Client(
                (LOCALHOST, server.port), timeout=CLIENT_TIMEOUT, tls_context=context
            )
            try:
                self.assertTrue(client.set("q", b"secret", noreply=False))
                self.assertEqual(client.get("q"), b"secret")
                self.assertEqual(client.version(), __version__.encode())
            finally:
                client.close()

        await deferToThread(talk)

    async def test_plain_text_gets_nothing(self) -> None:
        server, _ = self.tls_server()

        def plain() -> bytes:
            return command(server.port, b"version\r\n", b"")

        reply = await deferToThread(plain)
        self.assertNotIn(b"VERSION", reply)


# -- the start-up log --------------------------------------------------------


class AnnouncementTests(TestCase):
    timeout = 30

    def test_one_line_says_what_started(self) -> None:
        events = capture_log(self)
        directory = temporary_directory(self)
        config = os.path.join(directory, "erq.toml")
        write(config, "")
        server = StartedServer(
            self, "-c", config, "--port", "0", "-d", f"{directory}/q", "--sync", "50ms"
        )
        [line] = [text for text in texts(events, LogLevel.info) if "listening" in text]
        self.assertEqual(
            line,
            f"erq {__version__} listening on tcp {LOCALHOST}:{server.port};"
            f" data directory {directory}/q; configuration {config}; sync every 50ms",
        )
        self.assertEqual(texts(events, LogLevel.warn), [])

    def announce(
        self,
        address: str,
        loopback: bool,
        status: ServerStatus = ServerStatus.UP,
        **server: Any,
    ) -> list[str]:
        events = capture_log(self)
        queues = QueueService(reactor=reactor)
        queues.status = status
        if server:
            defaults = queues.config.defaults
            queues.config = cast(
                Any,
                SimpleNamespace(server=SimpleNamespace(**server), defaults=defaults),
            )
        listening = cast(
            ListeningService, SimpleNamespace(address=lambda: (address, loopback))
        )
        Announcement(queues, [listening], None).startService()
        self.assertIn(
            f"listening on {address}; data directory none (in memory);"
            " configuration none (defaults); sync always",
            texts(events, LogLevel.info)[0],
        )
        return texts(events, LogLevel.warn)

    def test_the_admin_server_s_address(self) -> None:
        events = capture_log(self)
        directory = temporary_directory(self)
        server = StartedServer(
            self, "--port", "0", "--admin-port", "0", "-d", f"{directory}/q"
        )
        admin = cast(Any, server.top.getServiceNamed("erq-admin")).listening
        port = admin.port.getHost().port
        self.assertIn(
            f"erq admin HTTP server on tcp {LOCALHOST}:{port}",
            texts(events, LogLevel.info),
        )
        self.assertEqual(texts(events, LogLevel.warn), [])

    def test_an_admin_port_beyond_loopback_without_auth_warns(self) -> None:
        events = capture_log(self)
        listening = cast(
            ListeningService,
            SimpleNamespace(address=lambda: (f"tcp {LOCALHOST}:22122", True)),
        )
        admin = cast(
            ListeningService,
            SimpleNamespace(address=lambda: ("tcp 0.0.0.0:8080", False)),
        )
        queues = QueueService(reactor=reactor)
        Announcement(queues, [listening], None, admin).startService()
        self.assertIn(
            "erq admin HTTP server on tcp 0.0.0.0:8080", texts(events, LogLevel.info)
        )
        [warning] = texts(events, LogLevel.warn)
        self.assertIn(
            "admin HTTP server listens beyond loopback on tcp 0.0.0.0", warning
        )

    def test_no_admin_server_unless_asked(self) -> None:
        top = makeService(parse("--port", "0"))
        self.assertEqual([service.name for service in top if service.name], ["erq"])

    def test_beyond_loopback_without_authentication_warns(self) -> None:
        [warning] = self.announce("tcp 0.0.0.0:22122", False)
        self.assertIn("beyond loopback on tcp 0.0.0.0:22122", warning)
        self.assertIn("auth_file", warning)

    def test_beyond_loopback_with_authentication_is_quiet(self) -> None:
        self.assertEqual(
            self.announce("tcp 0.0.0.0:22122", False, auth_file="users"), []
        )

    def test_loopback_and_unix_sockets_are_quiet(self) -> None:
        self.assertEqual(self.announce("tcp 127.0.0.1:22122", True), [])
        self.assertEqual(self.announce("unix /run/erq.sock", True), [])

    def test_a_server_out_of_rotation_says_so(self) -> None:
        self.assertEqual(
            self.announce("tcp 127.0.0.1:22122", True, ServerStatus.READONLY),
            [
                "erq starts READONLY: server is read-only until the status"
                " command (or --status) says otherwise"
            ],
        )


# -- reload ------------------------------------------------------------------


class ReloadCommandTests(SynchronousTestCase):
    def ask(self, queues: QueueService, request: bytes) -> bytes:
        protocol = QueueFactory(queues).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(request)
        return transport.value()

    def test_without_a_file_nothing_is_reloaded(self) -> None:
        events = capture_log(self)
        queues = QueueService(reactor=reactor)
        self.assertEqual(
            self.ask(queues, b"reload\r\n"), b"SERVER_ERROR no configuration file\r\n"
        )
        [error] = texts(events, LogLevel.error)
        self.assertEqual(
            error,
            "Configuration not reloaded on the reload command: no configuration file",
        )

    def test_the_command_is_logged_as_sighup_is(self) -> None:
        events = capture_log(self)
        path = os.path.abspath(self.mktemp())
        write(path, "")
        queues = QueueService(reactor=reactor, config_path=path)
        self.assertEqual(self.ask(queues, b"reload\r\n"), b"Reloaded config.\r\n")
        self.assertIn(
            f"Reloaded configuration from {path} on the reload command",
            texts(events, LogLevel.info),
        )
        write(path, "[server]\nbogus = 1\n")
        reply = self.ask(queues, b"reload\r\n")
        self.assertTrue(reply.startswith(b"SERVER_ERROR "), reply)
        [error] = texts(events, LogLevel.error)
        self.assertTrue(
            error.startswith("Configuration not reloaded on the reload command: "),
            error,
        )
        queues.live_config.reload_logged()
        self.assertTrue(
            texts(events, LogLevel.error)[-1].startswith(
                "Configuration not reloaded on SIGHUP: "
            )
        )
